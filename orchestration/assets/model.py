"""Model assets: Item LLM embeddings, the trained Recommendation LLM, its item index, its
evaluation."""

from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from lite_rec import ann, pipeline
from lite_rec.item_embeddings import item_embeddings as encode_items
from lite_rec.sequences import SequenceData
from lite_rec.tracking import log_indexed_model, run_url
from orchestration.assets.metadata import (
    CATALOG,
    DIGITS,
    metrics_table,
    mlflow_image,
    rounded,
    table,
)
from orchestration.resources import MlflowTracking, Settings, Workspace

EPOCH_COLUMNS = {"epoch": "int", "loss": "float", "valid_ndcg@10": "float"}
EPOCH_COLUMNS |= {"valid_recall@10": "float", "seconds": "float"}


@dg.asset(group_name="features", kinds={"pytorch", "numpy"}, **CATALOG)
def item_embeddings(
    settings: Settings, workspace: Workspace, items_5core: pd.DataFrame
) -> dg.Output:
    """One Item LLM vector per catalog item; only new or edited item texts are encoded."""
    item_llm = settings.load_config().item_llm
    matrix, report = encode_items(items_5core, item_llm, workspace.cache_dir)
    metadata = {
        "dagster/row_count": len(matrix),
        "dimensions": int(matrix.shape[1]),
        "model": report.model,
        "encoded": report.encoded,
        "reused from cache": report.reused,
        "seconds": round(report.seconds, 2),
    }
    return dg.Output(matrix, metadata=metadata)


def epoch_row(row: dict[str, Any]) -> dict[str, Any]:
    """An epoch's history row as a person reads it: floats to 4 digits."""
    return {k: round(v, DIGITS) if isinstance(v, float) else v for k, v in row.items()}


@dg.asset(group_name="model", kinds={"pytorch", "mlflow"}, **CATALOG)
def rec_model(
    context: dg.AssetExecutionContext,
    settings: Settings,
    workspace: Workspace,
    mlflow_tracking: MlflowTracking,
    sequences: SequenceData,
    item_embeddings: np.ndarray,
) -> dg.Output:
    """The Recommendation LLM trained with early stopping on validation NDCG@10, in MLflow;
    each epoch is an observation of this asset while it trains."""
    config = settings.load_config()
    embeddings = item_embeddings if "text" in config.model.item_repr else None

    def observe_epoch(row: dict[str, Any]) -> None:
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata=epoch_row(row)))

    trained = pipeline.train_rec_model(
        sequences,
        embeddings,
        config,
        workspace.model_dir(context.run_id),
        mlflow_tracking.tracking(),
        tags={"dagster.run_id": context.run_id},
        on_epoch_end=observe_epoch,
    )
    ui = settings.mlflow_ui_url
    epochs = [epoch_row(row) for row in trained.history]
    metadata = {
        "validation": metrics_table(trained.valid_metrics),
        **rounded(trained.valid_metrics, "valid "),
        "best epoch": trained.best_epoch,
        "mlflow run": dg.MetadataValue.url(run_url(ui, trained.experiment_id, trained.run_id)),
        "mlflow run id": trained.run_id,
        "model uri": trained.model_uri,
        "model dir": dg.MetadataValue.path(str(trained.model_dir)),
        "train.recipe": trained.config.train.recipe,  # what auto chose
        # epochs after the best one that trained on the validation items too
        "refit epochs": trained.config.train.refit_epochs,
        "training seconds": round(trained.seconds, 1),
        "epochs": table(epochs, {k: v for k, v in EPOCH_COLUMNS.items() if k in epochs[0]}),
        "learning curve": mlflow_image(ui, trained.run_id, "learning_curve.png"),
    }
    return dg.Output(trained, metadata=metadata)


class ItemIndexSettings(dg.Config):
    """The approximate serving index (`lite_rec.ann.IndexConfig`: `kind` hnsw | ivf and its
    parameters) and how many validation users its recall@10 is measured on."""

    kind: str = ann.IndexConfig.kind
    hnsw_m: int = ann.IndexConfig.hnsw_m
    ef_construction: int = ann.IndexConfig.ef_construction
    ef_search: int = ann.IndexConfig.ef_search
    nlist: int = ann.IndexConfig.nlist
    nprobe: int = ann.IndexConfig.nprobe
    sample_users: int = 1000


@dg.asset(group_name="model", kinds={"faiss"}, **CATALOG)
def item_index(
    config: ItemIndexSettings,
    mlflow_tracking: MlflowTracking,
    sequences: SequenceData,
    rec_model: pipeline.TrainedModel,
) -> dg.Output:
    """The approximate item index that serving answers through, in the model folder, with its
    recall@10 against exact ranking on validation users; the training run's model is logged
    again with it, and that model is the one `registered_model` registers."""
    settings = config.model_dump()
    sample_users = settings.pop("sample_users")
    info = ann.index_model_folder(
        rec_model.model_dir, ann.IndexConfig(**settings), sequences, sample_users
    )
    info["model_uri"] = log_indexed_model(rec_model.model_dir, mlflow_tracking.tracking())
    metadata = {
        "kind": info["kind"],
        "recall@10": info["recall@10"],
        "recall users": info["recall_users"],
        "n items": info["n_items"],
        "build seconds": info["build_seconds"],
        "index users/s": info["index_users_per_second"],
        "exact users/s": info["exact_users_per_second"],
        "params": dg.MetadataValue.json(info["params"]),
        "index file": dg.MetadataValue.path(str(rec_model.model_dir / ann.INDEX_FILE)),
        "model uri": info["model_uri"],
    }
    return dg.Output(info, metadata=metadata)


@dg.asset(group_name="evaluation", kinds={"pytorch", "mlflow"}, **CATALOG)
def evaluation(
    settings: Settings,
    mlflow_tracking: MlflowTracking,
    sequences: SequenceData,
    rec_model: pipeline.TrainedModel,
) -> dg.Output:
    """Full-ranking test metrics (Recall/NDCG@5,10,20, MRR), logged to the training run."""
    metrics = pipeline.evaluate_rec_model(
        sequences, rec_model.model_dir, "test", mlflow_tracking.tracking()
    )
    url = run_url(settings.mlflow_ui_url, rec_model.experiment_id, rec_model.run_id)
    metadata = {
        "test": metrics_table(metrics),
        **rounded(metrics, "test "),
        "mlflow run": dg.MetadataValue.url(url),
    }
    return dg.Output(metrics, metadata=metadata)
