"""The one wiring file: every asset, check, job, schedule, sensor and resource of lite-rec."""

import os

import dagster as dg

from orchestration import automation, checks
from orchestration.assets import bench, data, model, registry
from orchestration.jobs import benchmark_job, main_job
from orchestration.resources import MlflowTracking, Settings, TrainingLauncher, Workspace

data_assets = [data.raw_tables, data.interactions_5core, data.loo_splits, data.dataset_stats]
data_assets += [data.items_5core, data.sequences]
data_checks = [checks.raw_items_expectations, checks.raw_interactions_expectations]
data_checks += [checks.interactions_5core_is_k_core, checks.loo_splits_leave_one_out]
model_assets = [model.item_embeddings, model.rec_model, model.item_index, model.evaluation]
model_checks = [checks.item_embeddings_cover_the_catalog, checks.rec_model_metric_floor]
registry_assets = [registry.registered_model]
bench_assets = [bench.benchmark]

nightly_retrain = automation.retrain_schedule(
    os.environ.get("LITE_REC_RETRAIN_CRON", automation.DEFAULT_CRON)
)

defs = dg.Definitions(
    assets=data_assets + model_assets + registry_assets + bench_assets,
    asset_checks=data_checks + model_checks,
    jobs=[main_job, benchmark_job],
    schedules=[nightly_retrain],
    sensors=[automation.catalog_changed],
    resources={
        "settings": Settings(),
        "workspace": Workspace(),
        "mlflow_tracking": MlflowTracking(),
        # The training process, through Dagster Pipes; a deployment on Kubernetes binds
        # K8sTrainingLauncher(image=...) here instead (docs/operations.md).
        "training_launcher": TrainingLauncher(),
    },
    executor=dg.in_process_executor,
)
