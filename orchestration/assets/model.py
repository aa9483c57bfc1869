"""Model assets: Item LLM embeddings, the trained Recommendation LLM, its evaluation."""

import base64
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from lite_rec import pipeline, prepare
from lite_rec.config import load_config
from lite_rec.item_embeddings import item_embeddings as encode_items
from lite_rec.sequences import sequences_from_frames
from orchestration.resources import MlflowTracking, Workspace


class ModelSettings(dg.Config):
    """Overrides of params.yaml, in the CLI's `--set` syntax, e.g. `train.epochs=5`."""

    overrides: list[str] = []


def _config(config: ModelSettings):
    return load_config(overrides=config.overrides)


def _image(path: Path) -> dg.MetadataValue:
    encoded = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{path.stem}](data:image/png;base64,{encoded})")


@dg.asset(group_name="data")
def items_5core(raw_items: pd.DataFrame, loo_splits: pd.DataFrame) -> dg.Output:
    """The catalog: items that still have interactions after filtering, in item-table order."""
    items = prepare.items_in(raw_items, loo_splits)
    return dg.Output(items, metadata={"items": len(items)})


@dg.asset(group_name="features")
def item_embeddings(
    config: ModelSettings, workspace: Workspace, items_5core: pd.DataFrame
) -> dg.Output:
    """One Item LLM vector per catalog item; only new or edited item texts are encoded."""
    matrix, report = encode_items(items_5core, _config(config).item_llm, workspace.cache_dir)
    metadata = {
        "shape": str(matrix.shape),
        "model": report.model,
        "encoded": report.encoded,
        "reused from cache": report.reused,
        "seconds": round(report.seconds, 2),
    }
    return dg.Output(matrix, metadata=metadata)


@dg.asset(group_name="model")
def rec_model(
    context: dg.AssetExecutionContext,
    config: ModelSettings,
    workspace: Workspace,
    mlflow_tracking: MlflowTracking,
    items_5core: pd.DataFrame,
    loo_splits: pd.DataFrame,
    item_embeddings: np.ndarray,
) -> dg.Output:
    """The Recommendation LLM trained with early stopping on validation NDCG@10, in MLflow."""
    settings = _config(config)
    data = sequences_from_frames(items_5core, loo_splits)
    embeddings = item_embeddings if "text" in settings.model.item_repr else None
    trained = pipeline.train_rec_model(
        data, embeddings, settings, workspace.model_dir(context.run_id), mlflow_tracking.tracking()
    )
    metadata = {
        "mlflow run": trained.run_id,
        "model dir": str(trained.model_dir),
        "best epoch": trained.best_epoch,
        "train.recipe": trained.config.train.recipe,  # what auto chose
        # epochs after the best one that trained on the validation items too
        "refit epochs": trained.config.train.refit_epochs,
        "training seconds": round(trained.seconds, 1),
        **{f"valid {k}": v for k, v in trained.valid_metrics.items()},
        "learning curve": _image(trained.model_dir / "learning_curve.png"),
    }
    return dg.Output(trained, metadata=metadata)


@dg.asset(group_name="evaluation")
def evaluation(
    mlflow_tracking: MlflowTracking,
    items_5core: pd.DataFrame,
    loo_splits: pd.DataFrame,
    rec_model: pipeline.TrainedModel,
) -> dg.Output:
    """Full-ranking test metrics (Recall/NDCG@5,10,20, MRR), logged to the training run."""
    data = sequences_from_frames(items_5core, loo_splits)
    table = rec_model.model_dir.parent / f"{rec_model.model_dir.name}_test_metrics.png"
    metrics = pipeline.evaluate_rec_model(
        data, rec_model.model_dir, "test", mlflow_tracking.tracking(), table_path=table
    )
    return dg.Output(metrics, metadata={**metrics, "table": _image(table)})
