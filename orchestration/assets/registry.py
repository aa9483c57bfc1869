"""The registry asset: register the trained model and let the gate decide on `champion`."""

import dataclasses

import dagster as dg

from lite_rec import pipeline, registry
from lite_rec.sequences import SequenceData
from lite_rec.tracking import model_version_url
from orchestration.assets.metadata import CATALOG, DIGITS, table
from orchestration.resources import MlflowTracking, Settings

GATE_COLUMNS = {"role": "string", "version": "int", "value": "float"}


class RegistrySettings(dg.Config):
    """Empty `model_name` means `lite_rec_<dataset directory>`; the gate promotes when
    `metric` beats the champion's by more than `min_margin` on the same validation data."""

    model_name: str = ""
    metric: str = registry.GatePolicy.metric
    min_margin: float = registry.GatePolicy.min_margin


def gate_metadata(decision: registry.GateDecision, mlflow_ui_url: str) -> dict[str, object]:
    """The gate's verdict, the versions it compared, and where the champion now is."""
    name, version = decision.name, decision.version
    champion = version if decision.promoted else decision.champion_version
    compared = [{"role": "challenger", "version": version, "value": decision.challenger_value}]
    if decision.champion_version is not None:
        compared.append(
            {
                "role": "champion",
                "version": decision.champion_version,
                "value": decision.champion_value,
            }
        )
    for row in compared:
        row["value"] = round(row["value"], DIGITS)
    metadata = {
        "gate_decision": "promoted" if decision.promoted else "rejected",
        "reason": decision.reason,
        "registered model": name,
        "version": version,
        "model uri": f"models:/{name}/{version}",
        "mlflow model version": dg.MetadataValue.url(
            model_version_url(mlflow_ui_url, name, version)
        ),
        f"compared on {decision.metric}": table(compared, GATE_COLUMNS),
    }
    if champion is not None:
        metadata["champion uri"] = f"models:/{name}@{registry.CHAMPION}"
        metadata["champion version"] = champion
        url = model_version_url(mlflow_ui_url, name, champion)
        metadata["mlflow champion"] = dg.MetadataValue.url(url)
    return metadata


@dg.asset(group_name="model", deps=["evaluation"], kinds={"mlflow"}, **CATALOG)
def registered_model(
    context: dg.AssetExecutionContext,
    config: RegistrySettings,
    settings: Settings,
    mlflow_tracking: MlflowTracking,
    sequences: SequenceData,
    rec_model: pipeline.TrainedModel,
    item_index: dict,
) -> dg.Output:
    """A new version of the dataset's registered model (the one with the item index), promoted
    to champion only if it wins."""
    name = config.model_name or registry.registered_model_name(settings.dataset_dir().name)
    decision = registry.register_and_gate(
        dataclasses.replace(rec_model, model_uri=item_index["model_uri"]),
        sequences,
        name,
        mlflow_tracking.tracking(),
        registry.GatePolicy(config.metric, config.min_margin),
    )
    context.log.info("%s version %d: %s", name, decision.version, decision.reason)
    return dg.Output(decision, metadata=gate_metadata(decision, settings.mlflow_ui_url))
