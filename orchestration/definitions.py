"""The one wiring file: every asset, check, job, schedule, sensor and resource of lite-rec."""

import os

import dagster as dg

from orchestration import automation
from orchestration.assets import bench, data, model, registry
from orchestration.resources import MlflowTracking, Settings, Workspace

data_assets = [data.raw_tables, data.interactions_5core, data.loo_splits, data.dataset_stats]
data_assets += [data.items_5core, data.sequences]
data_checks = [data.raw_items_expectations, data.raw_interactions_expectations]
model_assets = [model.item_embeddings, model.rec_model, model.evaluation]
registry_assets = [registry.registered_model]
bench_assets = [bench.benchmark]

main_job = dg.define_asset_job(
    "main_job",
    selection=automation.PIPELINE,
    description="The whole pipeline on the configured dataset, raw files to a gated champion.",
    tags=automation.RETRAIN_TAGS,  # one pipeline run at a time in the run queue, as retrains
)
benchmark_job = dg.define_asset_job(
    "benchmark_job",
    selection=dg.AssetSelection.assets(*bench_assets),
    description="Every model and ablation on the same splits (lite-rec bench); hours on a CPU.",
)
nightly_retrain = automation.retrain_schedule(
    os.environ.get("LITE_REC_RETRAIN_CRON", automation.DEFAULT_CRON)
)

defs = dg.Definitions(
    assets=data_assets + model_assets + registry_assets + bench_assets,
    asset_checks=data_checks,
    jobs=[main_job, automation.retrain_job, benchmark_job],
    schedules=[nightly_retrain],
    sensors=[automation.catalog_changed],
    resources={
        "settings": Settings(),
        "workspace": Workspace(),
        "mlflow_tracking": MlflowTracking(),
    },
    executor=dg.in_process_executor,
)
