"""Training launched by Dagster through Pipes: `rec_model` runs `lite-rec train` (under torchrun
with 2 gloo processes) through the real `PipesSubprocessClient`, and its materialization holds
what rank 0 reported; the Kubernetes variant's manifests and pod spec against the schema."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import kubernetes_validate
import mlflow
import pytest
import yaml

from orchestration.assets.model import item_embeddings, rec_model
from orchestration.definitions import data_assets
from orchestration.resources import (
    K8sTrainingLauncher,
    MlflowTracking,
    Settings,
    TrainingLauncher,
    Workspace,
)
from tests.conftest import write_movielens
from tests.test_pipeline import tiny_run_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
KUBERNETES = "1.37.0"  # the schema kubernetes-validate ships


def materialize(
    tmp_path: Path, tiny_model: str, instance: dg.DagsterInstance, *settings: str
) -> dg.ExecuteInProcessResult:
    source = write_movielens(tmp_path / "raw", users=9, items=7)
    run_config = tiny_run_config(source, tiny_model)
    run_config["resources"]["settings"]["config"]["overrides"] += list(settings)
    return dg.materialize(
        [*data_assets, item_embeddings, rec_model],
        resources={
            "settings": Settings(),
            "workspace": Workspace(root=str(tmp_path)),
            "mlflow_tracking": MlflowTracking(uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
            "training_launcher": TrainingLauncher(),
        },
        run_config=run_config,
        instance=instance,
        raise_on_error=False,
    )


@pytest.mark.slow
def test_the_materialization_holds_what_two_torchrun_ranks_reported_through_pipes(
    tmp_path: Path, tiny_model: str
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(tmp_path, tiny_model, instance, "train.nproc=2", "train.epochs=3")
    assert result.success
    trained = result.output_for_node("rec_model")
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(trained.run_id)
    [materialization] = result.asset_materializations_for_node("rec_model")
    shown = {key: value.value for key, value in materialization.metadata.items()}
    # Reported by rank 0 of the training process: the MLflow run's values, to 4 digits.
    assert shown["valid ndcg@10"] == round(run.data.metrics["valid_ndcg_at_10"], 4)
    assert shown["valid recall@10"] == round(run.data.metrics["valid_recall_at_10"], 4)
    assert shown["best epoch"] == int(run.data.metrics["best_epoch"]) == trained.best_epoch
    assert shown["mlflow run id"] == trained.run_id
    assert shown["model uri"] == trained.model_uri
    assert shown["train.nproc"] == 2
    assert not any((tmp_path / "cache" / "training_data").iterdir())  # the run's copy, removed
    # The Dagster run id reached the MLflow run through the launcher's extras.
    assert run.data.tags["dagster.run_id"] == result.run_id
    # One observation per epoch (rank 0 alone reports, so no epoch twice), as in history.json.
    observations = [
        event.event_specific_data.asset_observation.metadata
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.ASSET_OBSERVATION
    ]
    assert [o["epoch"].value for o in observations] == [row["epoch"] for row in trained.history]
    assert observations[0]["loss"].value == round(trained.history[0]["loss"], 4)
    # Each epoch was also a log line of the Dagster run while it trained.
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert sum(message.startswith("epoch 1, loss ") for message in logs) == 1, logs


@pytest.mark.slow
def test_a_training_that_fails_fails_the_asset_and_says_why(
    tmp_path: Path, tiny_model: str
) -> None:
    settings = ["train.negatives=bogus", "train.loss=sampled"]
    result = materialize(tmp_path, tiny_model, dg.DagsterInstance.ephemeral(), *settings)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert re.search(r"exit code 2|code 2", str(failure.event_specific_data.error)), failure
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("model.pt"))


def _camel(value):
    """The pod spec as Kubernetes spells it: PipesK8sClient accepts snake_case keys."""
    if isinstance(value, dict):
        return {
            re.sub(r"_(\w)", lambda m: m.group(1).upper(), k): _camel(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_camel(item) for item in value]
    return value


@pytest.mark.parametrize("manifest", sorted(DEPLOY.glob("*.yaml")), ids=lambda p: p.name)
def test_the_kubernetes_manifests_are_valid_against_the_schema(manifest: Path) -> None:
    documents = list(yaml.safe_load_all(manifest.read_text()))
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_schema_check_catches_a_wrong_field_and_a_wrong_type() -> None:
    job = yaml.safe_load((DEPLOY / "embed-job.yaml").read_text())
    job["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []  # volumeMounts
    with pytest.raises(kubernetes_validate.ValidationError, match="'volumeMount' was unexpected"):
        kubernetes_validate.validate(job, KUBERNETES, strict=True)
    job = yaml.safe_load((DEPLOY / "embed-job.yaml").read_text())
    job["spec"]["completions"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError, match="'four' is not of type"):
        kubernetes_validate.validate(job, KUBERNETES, strict=True)


def test_the_k8s_launchers_pod_is_valid_against_the_schema() -> None:
    launcher = K8sTrainingLauncher(image="lite-rec:latest", gpus=2, mount_path="/workspace")
    spec = _camel(launcher.pod_spec())
    spec["containers"][0] |= {"name": "dagster-pipes-execution", "image": launcher.image}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "train"}, "spec": spec}
    kubernetes_validate.validate(pod, KUBERNETES, strict=True)
    assert spec["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == "lite-rec-workspace"
