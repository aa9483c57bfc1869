"""Resources chosen per environment in definitions.py: where outputs go, where runs are
tracked."""

from pathlib import Path

import dagster as dg

from lite_rec.config import PROJECT_ROOT
from lite_rec.tracking import EXPERIMENT, Tracking


class Workspace(dg.ConfigurableResource):
    """Directories for the Item LLM cache and trained models."""

    root: str = str(PROJECT_ROOT)

    @property
    def cache_dir(self) -> Path:
        return Path(self.root) / "cache" / "item_embeddings"

    def model_dir(self, run_id: str) -> Path:
        return Path(self.root) / "models" / "dagster" / run_id


class MlflowTracking(dg.ConfigurableResource):
    """The MLflow store: empty `uri` means $MLFLOW_TRACKING_URI or the local sqlite store."""

    uri: str = ""
    experiment: str = EXPERIMENT

    def tracking(self) -> Tracking:
        return Tracking(self.uri, self.experiment)
