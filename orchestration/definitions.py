"""The one wiring file: every asset, check, job, schedule, sensor and resource of lite-rec."""

import dagster as dg

from orchestration.assets import data, model
from orchestration.resources import MlflowTracking, Workspace

data_assets = [data.raw_tables, data.interactions_5core, data.loo_splits, data.dataset_stats]
data_checks = [data.raw_items_expectations, data.raw_interactions_expectations]
model_assets = [model.items_5core, model.item_embeddings, model.rec_model, model.evaluation]

main_job = dg.define_asset_job(
    "main_job",
    selection=dg.AssetSelection.all(),
    description="The whole pipeline on the configured dataset, raw files to evaluation.",
)

defs = dg.Definitions(
    assets=data_assets + model_assets,
    asset_checks=data_checks,
    jobs=[main_job],
    resources={"workspace": Workspace(), "mlflow_tracking": MlflowTracking()},
    executor=dg.in_process_executor,
)
