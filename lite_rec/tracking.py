"""MLflow: one run per training, with params, per-epoch metrics, test metrics, plots and the
model as a pyfunc that answers in raw item ids."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array

from lite_rec.config import PROJECT_ROOT

EXPERIMENT = "lite_rec"
PIP_REQUIREMENTS = ["torch==2.13.0", "pandas==3.1.1", "mlflow==3.17.2", "transformers==5.24.0"]


def default_tracking_uri() -> str:
    """A local SQLite store, `mlruns/mlflow.db`, with artifacts beside it."""
    return f"sqlite:///{PROJECT_ROOT / 'mlruns' / 'mlflow.db'}"


@dataclass
class Tracking:
    """Where runs go. `uri` accepts any MLflow tracking URI."""

    uri: str = ""
    experiment: str = EXPERIMENT

    @property
    def resolved_uri(self) -> str:
        return self.uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()

    def activate(self) -> None:
        """Point MLflow at the store and experiment, creating them with a stable absolute
        artifact location when they do not exist."""
        uri = self.resolved_uri
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(uri)
        if mlflow.get_experiment_by_name(self.experiment) is None:
            artifacts = None
            if uri.startswith("sqlite:///"):
                artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
            mlflow.create_experiment(self.experiment, artifact_location=artifacts)
        mlflow.set_experiment(self.experiment)

    @contextmanager
    def run(self, name: str | None = None, run_id: str | None = None):
        self.activate()
        with mlflow.start_run(run_name=name, run_id=run_id) as active:
            yield active

    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(tracking_uri=self.resolved_uri)


def metric_name(name: str) -> str:
    """MLflow forbids '@': `recall@10` is logged as `recall_at_10`."""
    return name.replace("@", "_at_")


def log_metrics(metrics: dict[str, float], prefix: str = "", step: int | None = None) -> None:
    mlflow.log_metrics({metric_name(prefix + k): v for k, v in metrics.items()}, step=step)


class LiteRecPyfunc(mlflow.pyfunc.PythonModel):
    """Input: a table with a `history` column (a list of raw item ids, oldest first) and an
    optional `k`. Output: per row, `item_ids` (the top-k raw ids, best first) and `scores`."""

    def load_context(self, context) -> None:
        from lite_rec.serving import Recommender

        self.recommender = Recommender.load(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from lite_rec.errors import InputError
        from lite_rec.serving import parse_requests

        default_k = int((params or {}).get("k", 10))
        try:
            histories, ks = parse_requests(pd.DataFrame(model_input), default_k)
            rows = [
                self.recommender.recommend([h], k)[0] for h, k in zip(histories, ks, strict=True)
            ]
        except (InputError, ValueError) as error:
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error
        return pd.DataFrame(
            {
                "item_ids": [[item for item, _ in row] for row in rows],
                "scores": [[score for _, score in row] for row in rows],
            }
        )


SERVING_FILES = ("model.pt", "model_config.json", "catalog.json")


def log_pyfunc(model_dir: str | Path, registered_model_name: str | None = None):
    """Log the servable part of a model directory (weights, config, catalog: not the training
    checkpoint) as a pyfunc in the active run; optionally register it."""
    model_dir = Path(model_dir)
    item_ids = json.loads((model_dir / "catalog.json").read_text())["item_ids"]
    example = pd.DataFrame({"history": [item_ids[:3]], "k": [10]})
    # Explicit, so that `k` is optional: inferring from the example would require it.
    signature = ModelSignature(
        inputs=Schema(
            [
                ColSpec(Array(DataType.string), "history"),
                ColSpec(DataType.long, "k", required=False),
            ]
        ),
        outputs=Schema(
            [ColSpec(Array(DataType.string), "item_ids"), ColSpec(Array(DataType.double), "scores")]
        ),
    )
    with tempfile.TemporaryDirectory() as staging:
        for name in SERVING_FILES:
            shutil.copy2(model_dir / name, Path(staging) / name)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=LiteRecPyfunc(),
            artifacts={"model_dir": staging},
            code_paths=[str(PROJECT_ROOT / "lite_rec")],
            pip_requirements=PIP_REQUIREMENTS,
            input_example=example,
            signature=signature,
            registered_model_name=registered_model_name,
        )
