"""Resources chosen per environment in definitions.py: the run's settings, where outputs go,
where runs are tracked, how training is launched."""

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from lite_rec.config import PROJECT_ROOT, Config, load_config, project_path
from lite_rec.tracking import EXPERIMENT, Tracking


class Settings(dg.ConfigurableResource):
    """The one config of a run, read by every asset, check and sensor: `params_file` (empty:
    the project's params.yaml) with `overrides` in the CLI's `--set` syntax, e.g.
    `train.epochs=5` or `data.source=/path/to/dataset`; `mlflow_ui_url` is where the
    materializations' links to MLflow runs and model versions point."""

    params_file: str = ""
    overrides: list[str] = []
    mlflow_ui_url: str = "http://127.0.0.1:5000"

    def load_config(self) -> Config:
        """The typed config, as `lite-rec --params FILE --set ...` builds it (a relative
        `params_file` is taken from the project root)."""
        return load_config(
            project_path(self.params_file) if self.params_file else None, self.overrides
        )

    def cli_options(self) -> list[str]:
        """The same settings as `lite-rec` options: `--params FILE` and a `--set` each."""
        options = ["--params", str(project_path(self.params_file))] if self.params_file else []
        return options + [option for change in self.overrides for option in ("--set", change)]

    def dataset_dir(self) -> Path:
        """The dataset's directory: `data.source`, or the folder of the file it names."""
        source = project_path(self.load_config().data.source)
        return source.parent if source.is_file() else source


class Workspace(dg.ConfigurableResource):
    """Directories for the Item LLM cache, trained models and the benchmark."""

    root: str = str(PROJECT_ROOT)

    @property
    def cache_dir(self) -> Path:
        return Path(self.root) / "cache" / "item_embeddings"

    def model_dir(self, run_id: str) -> Path:
        return Path(self.root) / "models" / "dagster" / run_id

    def training_data_dir(self, run_id: str) -> Path:
        """The processed tables a run's training process reads (`lite-rec train DATA`),
        removed once it ends."""
        return Path(self.root) / "cache" / "training_data" / run_id

    @property
    def bench_dir(self) -> Path:
        return Path(self.root) / "bench" / "results"

    @property
    def bench_work_dir(self) -> Path:
        return Path(self.root) / "cache" / "bench"


class MlflowTracking(dg.ConfigurableResource):
    """The MLflow store: empty `uri` means $MLFLOW_TRACKING_URI or the local sqlite store."""

    uri: str = ""
    experiment: str = EXPERIMENT

    def tracking(self) -> Tracking:
        return Tracking(self.uri, self.experiment)


class TrainingLauncher(dg.ConfigurableResource):
    """How `rec_model` runs its training: `python -m lite_rec.cli train ...` as a subprocess
    through Dagster Pipes (`dg.PipesSubprocessClient`), which relaunches itself under torchrun
    when `train.nproc` > 1; its log lines, per-epoch messages and final metadata come back to
    the asset. A deployment binds another launcher to the same resource key, such as
    `K8sTrainingLauncher`, and the asset does not change. `environment`: extra environment
    variables of the training process (on top of this process's)."""

    environment: dict[str, str] = {}

    def launch(
        self, context: dg.AssetExecutionContext, arguments: Sequence[str], extras: Mapping[str, Any]
    ) -> dg.PipesClientCompletedInvocation:
        """`lite-rec train *arguments`, until it ends; a failure raises with its exit code."""
        command = [sys.executable, "-m", "lite_rec.cli", "train", *arguments]
        client = dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT))
        return client.run(
            context=context, command=command, extras=dict(extras), env=self.environment
        )


class K8sTrainingLauncher(TrainingLauncher):
    """`lite-rec train` in a Kubernetes pod through dagster-k8s's `PipesK8sClient` (install
    `dagster-k8s`; not exercised here): `image` holds lite-rec (docker/Dockerfile), the
    persistent volume claim `volume_claim` is mounted at `mount_path`, which must be the
    `workspace` resource's root as the Dagster process sees it, so that the data, cache and
    model paths mean the same in both. `nproc` > 1 runs torchrun inside the pod (one rank per
    GPU of `gpus`); several pods are the indexed Job in deploy/k8s/."""

    image: str
    namespace: str = "default"
    volume_claim: str = "lite-rec-workspace"
    mount_path: str = str(PROJECT_ROOT)
    gpus: int = 0

    def pod_spec(self) -> dict[str, Any]:
        """The pod's spec around the container PipesK8sClient adds: the workspace volume and,
        with `gpus`, the GPU limit."""
        container: dict[str, Any] = {
            "volume_mounts": [{"name": "workspace", "mount_path": self.mount_path}],
        }
        if self.gpus:
            container["resources"] = {"limits": {"nvidia.com/gpu": str(self.gpus)}}
        return {
            "restart_policy": "Never",
            "volumes": [
                {
                    "name": "workspace",
                    "persistent_volume_claim": {"claim_name": self.volume_claim},
                }
            ],
            "containers": [container],
        }

    def launch(
        self, context: dg.AssetExecutionContext, arguments: Sequence[str], extras: Mapping[str, Any]
    ) -> dg.PipesClientCompletedInvocation:
        from dagster_k8s import PipesK8sClient

        return PipesK8sClient().run(
            context=context,
            image=self.image,
            command=["lite-rec", "train", *arguments],
            namespace=self.namespace,
            env=self.environment,
            base_pod_spec=self.pod_spec(),
            extras=dict(extras),
        )
