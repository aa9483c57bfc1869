"""The benchmark: every model and ablation on the same splits, in its own job (not main_job)."""

from pathlib import Path

import dagster as dg

from lite_rec.bench import DEFAULT_DATASETS, MODELS, generative_config, run_bench
from lite_rec.config import load_config
from orchestration.assets.model import _image
from orchestration.resources import MlflowTracking, Workspace


class BenchSettings(dg.Config):
    """What `lite-rec bench` takes: datasets, models (empty: all), a quick smoke run,
    and overrides of params.yaml in the CLI's `--set` syntax."""

    datasets: list[str] = DEFAULT_DATASETS
    models: list[str] = []
    quick: bool = False
    generative_epochs: int = 30
    overrides: list[str] = []
    jobs: int = 1  # models trained at once (timings then include the contention)


@dg.asset(group_name="evaluation")
def benchmark(
    config: BenchSettings, workspace: Workspace, mlflow_tracking: MlflowTracking
) -> dg.Output:
    """Accuracy, inference time, memory and size of every model, and beam search's time ratio."""
    settings = load_config(overrides=config.overrides)
    out_dir = Path(workspace.root) / "bench" / "results"
    results = run_bench(
        config.datasets,
        config.models or list(MODELS),
        out_dir,
        settings,
        generative_config(settings, config.generative_epochs),
        work_dir=Path(workspace.root) / "cache" / "bench",
        cache_dir=workspace.cache_dir,
        tracking=mlflow_tracking.tracking(),
        quick=config.quick,
        command="dagster: benchmark",
        jobs=config.jobs,
    )
    metadata = {"results": dg.MetadataValue.md((out_dir / "results.md").read_text())}
    for dataset, section in results["datasets"].items():
        for pair, ratio in section["inference_ratio"].items():
            metadata[f"{dataset} {pair} time ratio K=10"] = round(ratio["k10"], 1)
        metadata[f"{dataset} accuracy vs time"] = _image(
            out_dir / f"{dataset}_accuracy_vs_time.png"
        )
    return dg.Output(results, metadata=metadata)
