"""The model half of the pipeline, one function per step: train the Recommendation LLM and
evaluate it, each tracked in MLflow. The CLI, DVC and Dagster all call these."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import yaml

from lite_rec import distributed
from lite_rec.config import Config, config_from_dict
from lite_rec.evaluate import evaluate
from lite_rec.model_io import MODEL_CONFIG_FILE, MODEL_FILE, load_model, trained_on_validation_items
from lite_rec.outputs import OutputError, staged_output
from lite_rec.plots import learning_curve, metrics_table
from lite_rec.recipe import resolve_config
from lite_rec.registry import dataset_name, registered_model_name
from lite_rec.sequences import SequenceData
from lite_rec.serving import CATALOG_FILE, write_catalog
from lite_rec.tracking import NOTE_TAG, Tracking, log_metrics, log_pyfunc, log_training_data
from lite_rec.train import CHECKPOINT_FILE, TrainResult, train

log = logging.getLogger(__name__)

RUN_FILE = "mlflow_run.json"
DATASET_TAG = "lite_rec.dataset"
# Everything `train_rec_model` writes into a model folder.
MODEL_DIR_FILES = (
    MODEL_FILE,
    MODEL_CONFIG_FILE,
    CHECKPOINT_FILE,
    CATALOG_FILE,
    RUN_FILE,
    "history.json",
    "config.yaml",
    "learning_curve.png",
)


@dataclass
class TrainedModel:
    model_dir: Path
    run_id: str
    experiment_id: str
    best_epoch: int
    valid_metrics: dict[str, float]
    history: list[dict[str, Any]]
    seconds: float
    model_uri: str
    config: Config  # as the run used it: train.recipe resolved


def train_rec_model(
    data: SequenceData,
    text_embeddings: np.ndarray | None,
    config: Config,
    out_dir: str | Path,
    tracking: Tracking,
    progress: bool = True,
    tags: dict[str, str] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> TrainedModel | None:
    """Train, write the model directory, and log the run (params, the training data,
    per-epoch metrics, learning curve, validation metrics, the pyfunc model) to MLflow.
    `tags` go on the run; `on_epoch_end(row)` is called after each epoch's row is logged.
    Data-parallel (`lite_rec.distributed`), rank 0 does all of this and returns the
    `TrainedModel`; the other ranks train beside it, write nothing and return None."""
    # Resolved before logging: the run's params and config.yaml show the settings it used.
    config = resolve_config(config, data)
    out_dir = Path(out_dir)
    if not distributed.is_main():
        train(
            data,
            text_embeddings,
            config.model,
            config.train,
            out_dir,
            progress=False,
            item_llm=config.item_llm,
        )
        return None
    dataset = dataset_name(config)
    started = datetime.now().strftime("%Y-%m-%d %H:%M")
    run_tags = {
        **(tags or {}),
        DATASET_TAG: dataset,
        NOTE_TAG: run_description(config, data),
    }
    with (
        staged_output(out_dir, "model", MODEL_DIR_FILES, keep_partial=True) as staging,
        tracking.run(f"{dataset} {config.model.item_repr} {started}", tags=run_tags) as run,
    ):
        _resume_from_finished(out_dir, staging)
        model_dir = staging
        mlflow.log_params(config.flat())
        mlflow.log_params({"data.users": len(data.user_ids), "data.items": data.n_items})
        mlflow.log_text(yaml.safe_dump(config.to_dict()), "config.yaml")
        log_training_data(data, dataset, config.data.source)

        def log_epoch(row: dict[str, Any]) -> None:
            # `epoch_valid_*` per epoch: MLflow shows a metric's highest step as the run's
            # value, and `valid_*` must be the trained model's (logged once, below).
            metrics = {k.replace("valid_", "epoch_valid_"): v for k, v in row.items()}
            log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=row["epoch"])
            if on_epoch_end is not None:
                on_epoch_end(row)

        result = train(
            data,
            text_embeddings,
            config.model,
            config.train,
            model_dir,
            progress=progress,
            on_epoch_end=log_epoch,
            item_llm=config.item_llm,
        )
        valid = held_out_validation(result, data)
        log_metrics(valid, prefix="valid_")
        mlflow.log_metric("best_epoch", result.best_epoch)
        write_catalog(data, model_dir)
        (model_dir / "history.json").write_text(json.dumps(result.history, indent=1))
        (model_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
        mlflow.log_artifact(str(learning_curve(result.history, model_dir / "learning_curve.png")))
        info = log_pyfunc(model_dir, name=registered_model_name(dataset))
        run_record = {
            "run_id": run.info.run_id,
            "tracking_uri": tracking.resolved_uri,
            "model_uri": info.model_uri,
        }
        (model_dir / RUN_FILE).write_text(json.dumps(run_record))
    seconds = sum(row["seconds"] for row in result.history + result.refit_history)
    log.info("model in %s, MLflow run %s (valid %s)", out_dir, run.info.run_id, valid)
    return TrainedModel(
        out_dir,
        run.info.run_id,
        run.info.experiment_id,
        result.best_epoch,
        valid,
        result.history,
        seconds,
        info.model_uri,
        config,
    )


def load_trained_model(model_dir: str | Path, tracking: Tracking) -> TrainedModel:
    """The `TrainedModel` that `train_rec_model` returned for `model_dir`, rebuilt from the
    folder and its MLflow run (for `lite-rec register`)."""
    model_dir = Path(model_dir)
    run_file = model_dir / RUN_FILE
    if not run_file.is_file():
        raise ValueError(f"{model_dir}: no {RUN_FILE}; expected a folder `lite-rec train` wrote")
    record = json.loads(run_file.read_text())
    try:
        run = tracking.client().get_run(record["run_id"])
    except mlflow.exceptions.MlflowException as error:
        raise ValueError(
            f"{run_file}: run {record['run_id']} is not in the tracking store at "
            f"{tracking.resolved_uri}; expected the store that trained it: "
            f"{record['tracking_uri']}"
        ) from error
    valid = {
        key.removeprefix("valid_").replace("_at_", "@"): value
        for key, value in run.data.metrics.items()
        if key.startswith("valid_")
    }
    history = json.loads((model_dir / "history.json").read_text())
    return TrainedModel(
        model_dir,
        record["run_id"],
        run.info.experiment_id,
        int(run.data.metrics.get("best_epoch", 0)),
        valid,
        history,
        sum(row["seconds"] for row in history),
        record["model_uri"],
        config_from_dict(yaml.safe_load((model_dir / "config.yaml").read_text())),
    )


def run_description(config: Config, data: SequenceData) -> str:
    """The run's description in MLflow: what was trained on what."""
    model, train = config.model, config.train
    return (
        f"Recommendation LLM ({model.item_repr} items, {model.num_layers} layers of "
        f"{model.hidden_size}) trained on {dataset_name(config)} ({len(data.user_ids)} users, "
        f"{data.n_items} items), recipe {train.recipe}, early stopping on validation NDCG@10."
    )


def _resume_from_finished(out_dir: Path, staging: Path) -> None:
    """A rerun of a finished training resumes from its last checkpoint, as a crashed one
    resumes from the partial folder: the new model folder starts from a copy of it."""
    finished = out_dir / CHECKPOINT_FILE
    if finished.is_file() and not (staging / CHECKPOINT_FILE).exists():
        shutil.copy2(finished, staging / CHECKPOINT_FILE)


def held_out_validation(result: TrainResult, data: SequenceData) -> dict[str, float]:
    """The trained model's validation metrics; after refit epochs (`train.refit_epochs`), which
    trained on the validation items, those of the best epoch, the last model they held out."""
    if not result.refit_history:
        return evaluate(result.model, data, "valid", result.train_config.eval_batch_size)
    best = result.history[result.best_epoch - 1]
    return {k.removeprefix("valid_"): v for k, v in best.items() if k.startswith("valid_")}


def check_metrics_file(path: str | Path) -> None:
    """Refuse to overwrite a file that is not a metrics table `evaluate` wrote."""
    path = Path(path)
    if not path.exists():
        return
    try:
        written = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError):
        written = None
    if not isinstance(written, dict) or not all("@" in key or key == "mrr" for key in written):
        raise OutputError(
            f"--out {path}: exists and is not a metrics file lite-rec wrote; expected a new "
            "path or one `lite-rec evaluate` wrote. Nothing was changed"
        )


def evaluate_rec_model(
    data: SequenceData,
    model_dir: str | Path,
    split: str = "test",
    tracking: Tracking | None = None,
    batch_size: int = 1024,
    table_path: str | Path | None = None,
) -> dict[str, float]:
    """Full-ranking metrics of the model in `model_dir` on `split`; with `tracking`, logged to
    the run that trained it, with a metric-table image (kept at `table_path` when given; the
    model directory itself is never written, it is the training step's output)."""
    model_dir = Path(model_dir)
    model = load_model(model_dir)
    catalog = json.loads((model_dir / "catalog.json").read_text())
    if list(catalog["item_ids"]) != [str(i) for i in data.item_ids]:
        raise ValueError(
            f"{model_dir} was trained on another item catalog than this data "
            f"({len(catalog['item_ids'])} vs {data.n_items} items)"
        )
    if split == "valid" and trained_on_validation_items(model_dir):
        log.warning(
            "%s trained on the validation items (train.refit_epochs): its validation metrics "
            "are not held out; its training run logged those of its best epoch",
            model_dir,
        )
    metrics = evaluate(model, data, split, batch_size)
    run_file = model_dir / RUN_FILE
    if tracking is not None and run_file.exists():
        run_id = json.loads(run_file.read_text())["run_id"]
        with tracking.run(run_id=run_id), tempfile.TemporaryDirectory() as scratch:
            log_metrics(metrics, prefix=f"{split}_")
            mlflow.log_dict(metrics, f"{split}_metrics.json")
            table = metrics_table({split: metrics}, Path(scratch) / f"{split}_metrics.png", split)
            mlflow.log_artifact(str(table))
            if table_path is not None:
                shutil.copy2(table, table_path)
    return metrics
