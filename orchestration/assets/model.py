"""Model assets: Item LLM embeddings, the trained Recommendation LLM, its item index, its
evaluation."""

import shutil
from typing import Any

import dagster as dg
import pandas as pd

from lite_rec import ann, pipeline, pipes, prepare
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
from orchestration.resources import MlflowTracking, Settings, TrainingLauncher, Workspace

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


@dg.asset(group_name="model", kinds={"pytorch", "mlflow"}, deps=["item_embeddings"], **CATALOG)
def rec_model(
    context: dg.AssetExecutionContext,
    settings: Settings,
    workspace: Workspace,
    mlflow_tracking: MlflowTracking,
    training_launcher: TrainingLauncher,
    items_5core: pd.DataFrame,
    loo_splits: pd.DataFrame,
    dataset_stats: dict,
) -> dg.Output:
    """The Recommendation LLM trained with early stopping on validation NDCG@10 by `lite-rec
    train`, launched through Dagster Pipes (torchrun when train.nproc > 1) and logged to MLflow;
    each epoch is a log line while it trains and an observation of this asset."""
    data_dir = workspace.training_data_dir(context.run_id)
    prepare.write_processed(prepare.Processed(items_5core, loo_splits, dataset_stats), data_dir)
    model_dir, tracking = workspace.model_dir(context.run_id), mlflow_tracking.tracking()
    arguments = [str(data_dir), "--out", str(model_dir), "--cache", str(workspace.cache_dir)]
    arguments += ["--tracking-uri", tracking.resolved_uri, "--experiment", tracking.experiment]
    arguments += settings.cli_options()
    extras = {"tags": {"dagster.run_id": context.run_id}}
    try:
        invocation = training_launcher.launch(context, arguments, extras)
    finally:  # the run's copy of the tables: the model folder and MLflow keep what matters
        shutil.rmtree(data_dir, ignore_errors=True)
    for message in invocation.get_custom_messages():
        row = epoch_row(message[pipes.EPOCH_MESSAGE])
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata=row))
    reported = invocation.get_materialize_result().metadata  # what the training reported
    trained = pipeline.load_trained_model(model_dir, tracking)
    return dg.Output(trained, metadata={**trained_metadata(trained, settings), **reported})


def trained_metadata(trained: pipeline.TrainedModel, settings: Settings) -> dict[str, Any]:
    """What `rec_model` shows beside what the training reported: the validation table, links,
    the resolved recipe, the epochs and the learning curve."""
    ui = settings.mlflow_ui_url
    epochs = [epoch_row(row) for row in trained.history]
    return {
        "validation": metrics_table(trained.valid_metrics),
        "mlflow run": dg.MetadataValue.url(run_url(ui, trained.experiment_id, trained.run_id)),
        "model dir": dg.MetadataValue.path(str(trained.model_dir)),
        "train.recipe": trained.config.train.recipe,  # what auto chose
        "train.nproc": trained.config.train.nproc,
        # epochs after the best one that trained on the validation items too
        "refit epochs": trained.config.train.refit_epochs,
        "epochs": table(epochs, {k: v for k, v in EPOCH_COLUMNS.items() if k in epochs[0]}),
        "learning curve": mlflow_image(ui, trained.run_id, "learning_curve.png"),
    }


class ItemIndexSettings(dg.Config):
    """The approximate serving index (`lite_rec.ann.IndexConfig`: `kind` hnsw | ivf | scann and
    its parameters) and how many validation users its recall@10 is measured on."""

    kind: str = ann.IndexConfig.kind
    hnsw_m: int = ann.IndexConfig.hnsw_m
    ef_construction: int = ann.IndexConfig.ef_construction
    ef_search: int = ann.IndexConfig.ef_search
    nlist: int = ann.IndexConfig.nlist
    nprobe: int = ann.IndexConfig.nprobe
    reorder: int = ann.IndexConfig.reorder
    sample_users: int = 1000


@dg.asset(group_name="model", kinds={"faiss", "scann"}, **CATALOG)
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
    index_path = rec_model.model_dir / ann.index_file(info["kind"])
    metadata = {
        "kind": info["kind"],
        "recall@10": info["recall@10"],
        "recall users": info["recall_users"],
        "n items": info["n_items"],
        "build seconds": info["build_seconds"],
        "index users/s": info["index_users_per_second"],
        "exact users/s": info["exact_users_per_second"],
        "params": dg.MetadataValue.json(info["params"]),
        "index file": dg.MetadataValue.path(str(index_path)),
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
