"""Resources chosen per environment in definitions.py: the run's settings, where outputs go,
where runs are tracked."""

from pathlib import Path

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
