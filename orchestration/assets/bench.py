"""The benchmark: every model and ablation on the same splits, in its own group and job, outside
the pipeline."""

import dagster as dg

from lite_rec.bench import DEFAULT_DATASETS, MODELS, generative_config, run_bench
from orchestration.assets.metadata import CATALOG, DIGITS, image, table
from orchestration.jobs import BENCHMARK_GROUP
from orchestration.resources import MlflowTracking, Settings, Workspace

# What the per-dataset table shows of each model, and the column types.
MODEL_COLUMNS = {"model": "string", "test_recall@10": "float", "test_ndcg@10": "float"}
MODEL_COLUMNS |= {"train_seconds": "float", "infer_seconds_per_1000_users_k10": "float"}
MODEL_COLUMNS |= {"parameters": "int"}


def model_rows(models: dict[str, dict]) -> list[dict]:
    """One row per model with the table's columns, floats to 4 digits."""
    rows = []
    for name, row in models.items():
        shown = {column: row.get(column) for column in MODEL_COLUMNS} | {"model": name}
        rows.append({k: round(v, DIGITS) if isinstance(v, float) else v for k, v in shown.items()})
    return rows


class BenchSettings(dg.Config):
    """`lite-rec bench`'s own options: datasets, models (empty: all), a quick smoke run, the
    generative baselines' epochs and training targets per user (0: every position), models
    trained at once. Its `--set` overrides of params.yaml are the `settings` resource's."""

    datasets: list[str] = DEFAULT_DATASETS
    models: list[str] = []
    quick: bool = False
    generative_epochs: int = 30
    generative_examples_per_user: int = 0
    jobs: int = 1  # models trained at once (timings then include the contention)


@dg.asset(group_name=BENCHMARK_GROUP, kinds={"pytorch", "mlflow"}, **CATALOG)
def benchmark(
    config: BenchSettings,
    settings: Settings,
    workspace: Workspace,
    mlflow_tracking: MlflowTracking,
) -> dg.Output:
    """Accuracy, inference time, memory and size of every model, and beam search's time ratio."""
    params = settings.load_config()
    out_dir = workspace.bench_dir
    results = run_bench(
        config.datasets,
        config.models or list(MODELS),
        out_dir,
        params,
        generative_config(params, config.generative_epochs, config.generative_examples_per_user),
        work_dir=workspace.bench_work_dir,
        cache_dir=workspace.cache_dir,
        tracking=mlflow_tracking.tracking(),
        quick=config.quick,
        command="dagster: benchmark",
        jobs=config.jobs,
    )
    metadata = {"results": dg.MetadataValue.md((out_dir / "results.md").read_text())}
    for dataset, section in results["datasets"].items():
        metadata[f"{dataset} models"] = table(model_rows(section["models"]), MODEL_COLUMNS)
        for pair, ratio in section["inference_ratio"].items():
            metadata[f"{dataset} {pair} time ratio K=10"] = round(ratio["k10"], 1)
        metadata[f"{dataset} accuracy vs time"] = image(out_dir / f"{dataset}_accuracy_vs_time.png")
    return dg.Output(results, metadata=metadata)
