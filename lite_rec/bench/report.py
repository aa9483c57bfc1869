"""The reports of every `lite-rec bench` tool: one table writer (`markdown_table`), one line
for the machine (`machine_line`), the benchmark's results table, the sweep's, the comparison
of several runs, the plots and the MLflow run."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from lite_rec.baselines.generative import GenerativeConfig
from lite_rec.bench.models import (
    BEAM_MODELS,
    LATENCY_USERS,
    METRICS,
    MODELS,
    NOT_RUN,
    TIMED_KS,
    TIMING_REPEATS,
)
from lite_rec.config import Config


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown_table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table's lines; floats below 10 with 4 decimals, others with 1, None as -."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def machine_line(results: dict[str, Any]) -> str:
    """`command` on N CPU(s)[, GPU], T torch thread(s), platform."""
    machine = results["machine"]
    gpu = f", {machine['gpu']}" if "gpu" in machine else ""
    return (
        f"`{results['command']}` on {machine['cpus']} CPU(s){gpu}, "
        f"{machine['torch_threads']} torch thread(s), {machine['platform']}"
    )


def epochs_cell(row: dict[str, Any]) -> str:
    """'N (best B)', with ' + R refit' after a run with refit epochs."""
    refit = f" + {row['refit_epochs']} refit" if row.get("refit_epochs") else ""
    return f"{row['epochs']} (best {row['best_epoch']}){refit}"


def _timing_cells(row: dict[str, Any]) -> list[Any]:
    cells = [row[f"infer_seconds_per_1000_users_k{k}"] for k in TIMED_KS]
    latency = f"{row['latency_p50_ms']:.1f} / {row['latency_p99_ms']:.1f}"
    return [*cells, latency, row["peak_rss_mib"]]


TIMING_COLUMNS = [*(f"infer s/1k K={k}" for k in TIMED_KS), "p50 / p99 ms", "peak RSS MiB"]
TIMING_NOTE = (
    "Inference: top-K lists for every test user, per 1,000 users, the median of "
    f"{TIMING_REPEATS} runs; p50 / p99: one request of one user, for the first "
    f"{LATENCY_USERS}; peak RSS is the whole process's while the model trained and ran."
)


def _phases_line(section: dict[str, Any]) -> str:
    phases = section.get("phases")
    if not phases:
        return ""
    prepared = phases["prepare_seconds"]
    prepared = f"prepared in {prepared:.1f} s" if prepared is not None else "prepared before"
    return (
        f" {prepared.capitalize()}; Item LLM vectors in {phases['embed_seconds']:.1f} s "
        f"({phases['encoded_items']:,} items encoded, the rest from the cache)."
    )


def results_markdown(results: dict[str, Any]) -> str:
    """The results table per dataset, the beam-search inference ratios with model sizes, the
    item-quality check and what was not run."""
    settings = results["settings"]
    jobs = settings.get("jobs", 1)
    concurrency = (
        f"; {jobs} models trained at once, each in its own process (timings include the contention)"
        if jobs > 1
        else ""
    )
    lines = [
        "# lite-rec benchmark",
        "",
        f"{machine_line(results)}; quick: {settings['quick']}{concurrency}. Test split, "
        "leave-one-out, full ranking (history excluded); generative models rank only their 20 "
        f"beams (a target outside them counts as missed). {TIMING_NOTE}",
        "",
    ]
    if not results.get("complete"):
        lines += [
            "**Incomplete: the run stopped, is still running or a model failed (named under its "
            "dataset); unlisted models have not run.**",
            "",
        ]
    columns = ["model", "parameters", *METRICS, "train s", "epochs", *TIMING_COLUMNS]
    for dataset, section in results["datasets"].items():
        stats = section["stats"]
        rows = [
            [name, row["parameters"], *(row[f"test_{m}"] for m in METRICS)]
            + [row["train_seconds"], epochs_cell(row), *_timing_cells(row)]
            for name, row in section["models"].items()
        ]
        lines += [
            f"## {dataset}",
            "",
            f"{stats['users']:,} users, {stats['items']:,} items, "
            f"{stats['interactions']:,} interactions.{_phases_line(section)}",
            "",
            *markdown_table(columns, rows),
        ]
        lines += ["", *(f"- `{n}`: {MODELS[n]}" for n in section["models"]), ""]
        for name, error in section.get("failed", {}).items():
            lines.append(f"- **`{name}` failed**: {error}")
        for pair, ratio in section["inference_ratio"].items():
            recalls = [section["models"][n]["test_recall@10"] for n in pair.split("/")]
            lines.append(
                f"- **{pair.replace('/', ' / ')} inference time: {ratio['k10']:.1f}x at K=10, "
                f"{ratio['k20']:.1f}x at K=20** (Recall@10 {recalls[0]:.4f} vs {recalls[1]:.4f})."
            )
        if section["inference_ratio"]:
            lines += ["", f"Model sizes: {settings['sizes']}", ""]
        for variant, quality in section["item_quality"].items():
            lines.append(
                f"- Item LLM ({variant}): {quality['neighbour_share']:.1%} of each item's "
                f"{quality['k']} nearest neighbours share a genre with it, vs "
                f"{quality['random_share']:.1%} of random items (lift {quality['lift']:.2f}x)."
            )
        lines.append("")
    lines += ["## Not run", "", *(f"- `{n}`: {why}" for n, why in NOT_RUN.items()), ""]
    return "\n".join(lines)


def best_validation(row: dict[str, Any], metric: str = "valid_ndcg@10") -> float:
    """The metric at the row's best epoch."""
    return next(h[metric] for h in row["history"] if h["epoch"] == row["best_epoch"])


def sweep_markdown(results: dict[str, Any]) -> str:
    """The sweep's runs, best test NDCG@10 first, and with seeds each variant's mean (sd)."""
    lines = [
        "# Lite-LLM4Rec configuration sweep",
        "",
        f"{machine_line(results)}; {results['settings']['jobs']} run(s) at once (train s "
        f"includes the contention). Test split, full ranking (history excluded). {TIMING_NOTE}",
        "",
    ]
    if not results.get("complete"):
        lines += ["**Incomplete: the run stopped, is still running or a run failed.**", ""]
    columns = ["run", "changes", "recipe", "valid N@10", "test R@10", "test N@10", "test R@20"]
    columns += ["epochs", "train s", "s/epoch (median)", *TIMING_COLUMNS]
    rows = [
        [r["variant"], ", ".join(r["overrides"]) or "-", r["recipe"], best_validation(r)]
        + [r["test_recall@10"], r["test_ndcg@10"], r["test_recall@20"], epochs_cell(r)]
        + [r["train_seconds"], statistics.median(h["seconds"] for h in r["history"])]
        + _timing_cells(r)
        for r in sorted(results["rows"], key=lambda r: -r["test_ndcg@10"])
    ]
    lines += markdown_table(columns, rows)
    for name, error in results.get("failed", {}).items():
        lines.append(f"\n- **`{name}` failed**: {error}")
    if results["settings"]["seeds"]:
        lines += ["", *seed_means(results["rows"])]
    return "\n".join(lines) + "\n"


def seed_means(runs: list[dict[str, Any]]) -> list[str]:
    """Each variant's mean (standard deviation) over its seeds, as markdown table lines."""
    metrics = ["test_recall@10", "test_ndcg@10", "test_recall@20"]
    rows = []
    for variant in dict.fromkeys(r["base"] for r in runs):
        of_variant = sorted((r for r in runs if r["base"] == variant), key=lambda r: r["seed"])
        cells = [variant, ", ".join(str(r["seed"]) for r in of_variant)]
        for values in [[best_validation(r) for r in of_variant]] + [
            [r[m] for r in of_variant] for m in metrics
        ]:
            spread = statistics.stdev(values) if len(values) > 1 else float("nan")
            cells.append(f"{statistics.mean(values):.4f} ({spread:.4f})")
        rows.append(cells)
    columns = ["variant", "seeds", "valid N@10", "test R@10", "test N@10", "test R@20"]
    return markdown_table(columns, rows)


def comparison_table(paths: list[Path], models: list[str] | None = None) -> str:
    """Recall@10 / NDCG@10 (epochs) per model with the datasets side by side, from several
    `lite-rec bench` results.json files; a model found in several is taken from the first that
    has it, and the `run` column says which. `models` picks and orders the rows (default:
    every model, in the order the files list them)."""
    runs = [json.loads(path.read_text()) for path in paths]
    datasets = list(dict.fromkeys(d for run in runs for d in run["datasets"]))
    models = models or list(
        dict.fromkeys(m for run in runs for s in run["datasets"].values() for m in s["models"])
    )
    rows = []
    for model in models:
        cells, sources = [model], []
        for dataset in datasets:
            found = [
                (index, run["datasets"][dataset]["models"][model])
                for index, run in enumerate(runs)
                if model in run["datasets"].get(dataset, {}).get("models", {})
            ]
            if found:
                index, row = found[0]
                r10, n10 = row["test_recall@10"], row["test_ndcg@10"]
                cells.append(f"{r10:.4f} / {n10:.4f} ({row['epochs']})")
                sources.append(str(index + 1))
            else:
                cells.append("-")
        rows.append([*cells, ", ".join(dict.fromkeys(sources))])
    columns = ["model", *(f"{d} R@10 / N@10 (epochs)" for d in datasets), "run"]
    lines = [*markdown_table(columns, rows), ""]
    lines += [
        f"run {i + 1}: `{path}`: `{run['command']}`"
        for i, (path, run) in enumerate(zip(paths, runs, strict=True))
    ]
    return "\n".join(lines) + "\n"


def plot_results(section: dict[str, Any], dataset: str, out_dir: Path) -> list[Path]:
    """`<dataset>_accuracy_vs_time.png` (Recall@10 and NDCG@10 against inference time, log
    scale) and `<dataset>_learning_curves.png` (validation NDCG@10 per epoch)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = section["models"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("recall@10", "ndcg@10"), strict=True):
        for name, row in rows.items():
            x, y = row["infer_seconds_per_1000_users_k10"], row[f"test_{metric}"]
            axis.scatter(x, y, marker="*" if name in BEAM_MODELS else "o")
            axis.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.set(xscale="log", xlabel="inference s per 1,000 users (top-10)", ylabel=metric)
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_title(f"{dataset}: test {metric} vs inference time", fontsize=9)
    figure.tight_layout()
    accuracy = out_dir / f"{dataset}_accuracy_vs_time.png"
    figure.savefig(accuracy, dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 4))
    for name, row in rows.items():
        epochs = [h["epoch"] for h in row["history"]]
        axis.plot(
            epochs, [h["valid_ndcg@10"] for h in row["history"]], marker="o", ms=3, label=name
        )
    axis.set(xlabel="epoch", ylabel="validation NDCG@10", title=f"{dataset}: learning curves")
    axis.legend(fontsize=7)
    figure.tight_layout()
    curves = out_dir / f"{dataset}_learning_curves.png"
    figure.savefig(curves, dpi=110)
    plt.close(figure)
    return [accuracy, curves]


def model_sizes(config: Config, generative: GenerativeConfig) -> str:
    model = config.model
    return (
        f"Lite-LLM4Rec: {model.backbone} d={model.hidden_size}, {model.num_layers} layers, "
        f"{model.num_heads} heads, history {model.max_len} items, over frozen "
        f"{config.item_llm.model} vectors computed once per item; generative: T5 "
        f"d={generative.hidden_size}, {generative.num_layers} encoder + {generative.num_layers} "
        f"decoder layers, {generative.num_heads} heads, history {generative.max_len} items. "
        "Trainable parameter counts are in the table."
    )


def log_bench(results: dict[str, Any], out_dir: Path, plots: list[Path], tracking) -> None:
    """One MLflow run: `<dataset>/<model>/<metric>` metrics, the table and the plots."""
    import mlflow

    from lite_rec.tracking import metric_name

    with tracking.run(name="lite-rec bench"):
        mlflow.log_params(
            {"quick": results["settings"]["quick"], **results["settings"]["config"]["model"]}
        )
        for dataset, section in results["datasets"].items():
            for model, row in section["models"].items():
                mlflow.log_metrics(
                    {
                        f"{dataset}/{model}/{metric_name(k)}": float(v)
                        for k, v in row.items()
                        if isinstance(v, int | float) and not isinstance(v, bool)
                    }
                )
            for variant, quality in section["item_quality"].items():
                mlflow.log_metric(f"{dataset}/item_llm_{variant}/genre_lift", quality["lift"])
            for pair, ratio in section["inference_ratio"].items():
                mlflow.log_metrics(
                    {f"{dataset}/{pair}/time_ratio_{k}": v for k, v in ratio.items()}
                )
        for path in [out_dir / "results.json", out_dir / "results.md", *plots]:
            mlflow.log_artifact(str(path))
