"""Model assets: Item LLM embeddings, the trained Recommendation LLM, its evaluation."""

import dagster as dg
import numpy as np
import pandas as pd

from lite_rec import pipeline
from lite_rec.item_embeddings import item_embeddings as encode_items
from lite_rec.sequences import SequenceData
from orchestration.assets.metadata import image
from orchestration.resources import MlflowTracking, Settings, Workspace


@dg.asset(group_name="features")
def item_embeddings(
    settings: Settings, workspace: Workspace, items_5core: pd.DataFrame
) -> dg.Output:
    """One Item LLM vector per catalog item; only new or edited item texts are encoded."""
    item_llm = settings.load_config().item_llm
    matrix, report = encode_items(items_5core, item_llm, workspace.cache_dir)
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
    settings: Settings,
    workspace: Workspace,
    mlflow_tracking: MlflowTracking,
    sequences: SequenceData,
    item_embeddings: np.ndarray,
) -> dg.Output:
    """The Recommendation LLM trained with early stopping on validation NDCG@10, in MLflow."""
    config = settings.load_config()
    embeddings = item_embeddings if "text" in config.model.item_repr else None
    trained = pipeline.train_rec_model(
        sequences,
        embeddings,
        config,
        workspace.model_dir(context.run_id),
        mlflow_tracking.tracking(),
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
        "learning curve": image(trained.model_dir / "learning_curve.png"),
    }
    return dg.Output(trained, metadata=metadata)


@dg.asset(group_name="evaluation")
def evaluation(
    mlflow_tracking: MlflowTracking, sequences: SequenceData, rec_model: pipeline.TrainedModel
) -> dg.Output:
    """Full-ranking test metrics (Recall/NDCG@5,10,20, MRR), logged to the training run."""
    table = rec_model.model_dir.parent / f"{rec_model.model_dir.name}_test_metrics.png"
    metrics = pipeline.evaluate_rec_model(
        sequences, rec_model.model_dir, "test", mlflow_tracking.tracking(), table_path=table
    )
    return dg.Output(metrics, metadata={**metrics, "table": image(table)})
