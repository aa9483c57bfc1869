"""The registry asset: register the trained model and let the gate decide on `champion`."""

import dagster as dg

from lite_rec import pipeline, registry
from lite_rec.sequences import SequenceData
from orchestration.resources import MlflowTracking, Settings


class RegistrySettings(dg.Config):
    """Empty `model_name` means `lite_rec_<dataset directory>`; the gate promotes when
    `metric` beats the champion's by more than `min_margin` on the same validation data."""

    model_name: str = ""
    metric: str = registry.GatePolicy.metric
    min_margin: float = registry.GatePolicy.min_margin


@dg.asset(group_name="model", deps=["evaluation"])
def registered_model(
    context: dg.AssetExecutionContext,
    config: RegistrySettings,
    settings: Settings,
    mlflow_tracking: MlflowTracking,
    sequences: SequenceData,
    rec_model: pipeline.TrainedModel,
) -> dg.Output:
    """A new version of the dataset's registered model, promoted to champion only if it wins."""
    name = config.model_name or registry.registered_model_name(settings.dataset_dir().name)
    decision = registry.register_and_gate(
        rec_model,
        sequences,
        name,
        mlflow_tracking.tracking(),
        registry.GatePolicy(config.metric, config.min_margin),
    )
    context.log.info("%s version %d: %s", name, decision.version, decision.reason)
    metadata = {
        "registered model": name,
        "version": decision.version,
        "decision": "promoted" if decision.promoted else "rejected",
        "reason": decision.reason,
        "metric": decision.metric,
        "challenger value": decision.challenger_value,
        "model uri": f"models:/{name}/{decision.version}",
    }
    if decision.champion_version is not None:
        metadata["champion version"] = decision.champion_version
        metadata["champion value"] = decision.champion_value
    return dg.Output(decision, metadata=metadata)
