"""The benchmark's report: the results table as markdown, the plots, and the MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lite_rec.baselines.generative import GenerativeConfig
from lite_rec.bench.models import BEAM_MODELS, METRICS, MODELS, NOT_RUN, TIMED_KS, TIMING_REPEATS
from lite_rec.config import Config


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def results_markdown(results: dict[str, Any]) -> str:
    """The results table per dataset, the beam-search inference ratios with model sizes, the
    item-quality check and what was not run."""
    settings, machine = results["settings"], results["machine"]
    gpu = f", {machine['gpu']}" if "gpu" in machine else ""
    jobs = settings.get("jobs", 1)
    concurrency = (
        f"; {jobs} models trained at once, each in its own process (timings include the contention)"
        if jobs > 1
        else ""
    )
    lines = [
        "# lite-rec benchmark",
        "",
        f"`{results['command']}` on {machine['cpus']} CPU(s){gpu}, "
        f"{machine['torch_threads']} torch thread(s), {machine['platform']}"
        f"; quick: {settings['quick']}{concurrency}. Test split, leave-one-out, full ranking "
        "(history excluded); generative models rank only their 20 beams (a target outside them "
        "counts as missed). Inference: top-K lists for every test user, per 1,000 users, the "
        f"median of {TIMING_REPEATS} runs; peak RSS is the whole process's while the model "
        "trained and ran.",
        "",
    ]
    if not results.get("complete"):
        lines += [
            "**Incomplete: the run stopped, is still running or a model failed (named under its "
            "dataset); unlisted models have not run.**",
            "",
        ]
    columns = ["model", "parameters", *METRICS, "train s", "epochs", "infer s/1k K=10"]
    columns += ["infer s/1k K=20", "peak RSS MiB"]
    for dataset, section in results["datasets"].items():
        stats = section["stats"]
        lines += [
            f"## {dataset}",
            "",
            f"{stats['users']:,} users, {stats['items']:,} items, "
            f"{stats['interactions']:,} interactions.",
            "",
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
        ]
        for name, row in section["models"].items():
            cells = [name, row["parameters"], *(row[f"test_{m}"] for m in METRICS)]
            cells += [row["train_seconds"], f"{row['epochs']} (best {row['best_epoch']})"]
            cells += [row[f"infer_seconds_per_1000_users_k{k}"] for k in TIMED_KS]
            cells += [row["peak_rss_mib"]]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
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
