"""`lite-rec bench`: every model on the same data, splits, seeds and metrics, in one run.

For each dataset: prepare it (k-core, leave-one-out), embed the items with the Item LLM (cached),
train each model with early stopping on validation NDCG@10, then on the test split measure
Recall/NDCG@{5,10,20} (full ranking; beams for generative models, see
`lite_rec.baselines.generative`), inference time for top-10 and top-20 lists, peak RSS and
parameter counts. Writes `results.json`, `results.md` and PNG plots to the output directory and
logs them to MLflow.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from torch import nn

from lite_rec.baselines.bert4rec import train_bert4rec
from lite_rec.baselines.generative import GenerativeConfig, beam_ranks, train_generative
from lite_rec.baselines.random_item_llm import random_item_embeddings
from lite_rec.baselines.sasrec_bce import train_sasrec_bce
from lite_rec.config import PROJECT_ROOT, Config
from lite_rec.evaluate import evaluate, recommend
from lite_rec.item_embeddings import item_embeddings, item_text
from lite_rec.item_quality import genre_neighbour_agreement, item_genres
from lite_rec.metrics import ranking_metrics
from lite_rec.prepare import prepare
from lite_rec.sequences import SequenceData, load_sequences
from lite_rec.train import train

log = logging.getLogger(__name__)

MODELS = {
    "lite_llm4rec": "Lite-LLM4Rec: text+id items, traversal training, projection head",
    "lite_id": "ablation: id only (no Item LLM) = SASRec with cross-entropy",
    "lite_text": "ablation: text only (no id embedding)",
    "lite_random_item_llm": "ablation: text+id from the Item LLM architecture, random weights",
    "lite_sampling": "ablation: one sampled prefix per user per epoch instead of traversal",
    "lite_finetuned_item_llm": "ablation: the Item LLM's last layer fine-tuned jointly instead "
    "of frozen",
    "sasrec_bce": "SASRec, original BCE loss with one negative per position",
    "bert4rec": "BERT4Rec, bidirectional, masked-item training",
    "generative_sequential": "generative T5, beam search over P5 sequential ids",
    "generative_semantic": "generative T5, beam search over semantic ids (hierarchical k-means)",
    "generative_text": "generative T5 reading a P5-style text prompt (each history item's id "
    "tokens and title/genre word pieces), beam search over sequential ids",
    "generative_head": "ablation: generative_sequential's T5 encoder with a projection head "
    "instead of the decoder and beam search",
}
NOT_RUN = {
    "lite_beam_decoding": "beam search on the Recommendation LLM's encoder: it has no decoder "
    "over item-id tokens; the same-encoder head-vs-beam comparison is generative_head vs "
    "generative_sequential",
}
DEFAULT_DATASETS = ["ml-latest-small"]
REFERENCE = "lite_llm4rec"
BEAM_MODELS = ("generative_sequential", "generative_semantic", "generative_text")
SAME_ENCODER = {"generative_head": "generative_sequential"}  # head model: its beam twin
METRICS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")
TIMED_KS = (10, 20)
TIMING_REPEATS = 3


@dataclass
class BenchData:
    """What every model of one dataset shares."""

    name: str
    data: SequenceData
    embeddings: np.ndarray  # pretrained Item LLM vectors, one row per item
    random_embeddings: np.ndarray | None  # the same architecture with random weights
    config: Config
    generative: GenerativeConfig
    work_dir: Path
    cache_dir: Path


@dataclass
class ModelRun:
    model: nn.Module
    best_epoch: int
    history: list[dict[str, Any]]
    recommend: Callable[[list[np.ndarray], int], np.ndarray]  # -> (B, k) item indices
    test_metrics: Callable[[np.ndarray], dict[str, float]]  # from the timed top-20 lists


def _projection_run(model: nn.Module, bench: BenchData, best_epoch: int, history) -> ModelRun:
    """A model with `score()`: exact full-ranking test metrics."""
    batch = bench.config.train.eval_batch_size
    return ModelRun(
        model,
        best_epoch,
        history,
        lambda histories, k: recommend(model, histories, k, batch_size=batch)[0],
        lambda _top: evaluate(model, bench.data, "test", batch),
    )


def _lite(bench: BenchData, name: str, model_changes: dict, train_changes: dict) -> ModelRun:
    """Lite-LLM4Rec (text+id) with one switch changed: each ablation differs in it alone."""
    changes = {"item_repr": "text+id", **model_changes}
    model_config = dataclasses.replace(bench.config.model, **changes)
    train_config = dataclasses.replace(bench.config.train, **train_changes)
    embeddings = bench.random_embeddings if name == "lite_random_item_llm" else bench.embeddings
    if model_config.item_repr == "id":
        embeddings = None
    result = train(
        bench.data,
        embeddings,
        model_config,
        train_config,
        bench.work_dir / name,
        resume=False,
        progress=False,
        item_llm=bench.config.item_llm,
    )
    return _projection_run(result.model, bench, result.best_epoch, result.history)


def _generative(
    bench: BenchData, scheme: str, decoding: str = "beam", prompt: str = "ids"
) -> ModelRun:
    item_llm = bench.config.item_llm
    config = dataclasses.replace(
        bench.generative,
        id_scheme=scheme,
        decoding=decoding,
        prompt=prompt,
        tokenizer=item_llm.model,
    )
    texts = item_text(bench.data.items, item_llm.template) if prompt == "text" else None
    result = train_generative(
        bench.data, config, bench.config.train, bench.embeddings, log=log.info, texts=texts
    )
    if decoding == "head":
        return _fitted(result, bench)
    histories, targets = bench.data.histories_and_targets("test")
    return ModelRun(
        result.model,
        result.best_epoch,
        result.history,
        lambda users, k: result.model.recommend(users, k)[0],
        lambda top: ranking_metrics(beam_ranks(top, histories, targets, bench.data.n_items)),
    )


def _fitted(result, bench: BenchData) -> ModelRun:
    return _projection_run(result.model, bench, result.best_epoch, result.history)


TRAINERS: dict[str, Callable[[BenchData], ModelRun]] = {
    "lite_llm4rec": lambda b: _lite(b, "lite_llm4rec", {}, {}),
    "lite_id": lambda b: _lite(b, "lite_id", {"item_repr": "id"}, {}),
    "lite_text": lambda b: _lite(b, "lite_text", {"item_repr": "text"}, {}),
    "lite_random_item_llm": lambda b: _lite(b, "lite_random_item_llm", {}, {}),
    "lite_sampling": lambda b: _lite(b, "lite_sampling", {}, {"strategy": "sampling"}),
    "lite_finetuned_item_llm": lambda b: _lite(
        b, "lite_finetuned_item_llm", {"finetune_item_llm": True}, {}
    ),
    "sasrec_bce": lambda b: _fitted(
        train_sasrec_bce(b.data, b.config.model, b.config.train, log.info), b
    ),
    "bert4rec": lambda b: _fitted(
        train_bert4rec(b.data, b.config.model, b.config.train, log=log.info), b
    ),
    "generative_sequential": lambda b: _generative(b, "sequential"),
    "generative_semantic": lambda b: _generative(b, "semantic"),
    "generative_text": lambda b: _generative(b, "sequential", prompt="text"),
    "generative_head": lambda b: _generative(b, "sequential", "head"),
}


class PeakMemory:
    """The process's peak resident memory while the block runs, sampled every 20 ms."""

    def __enter__(self) -> PeakMemory:
        self._process = psutil.Process()
        self.start_mib = self.peak_mib = self._process.memory_info().rss / 2**20
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mib = max(self.peak_mib, self._process.memory_info().rss / 2**20)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, self._process.memory_info().rss / 2**20)


def run_model(name: str, bench: BenchData) -> dict[str, Any]:
    """Train one model, then time its top-10 and top-20 lists for every test user and score
    it; one row of the results table."""
    histories, _ = bench.data.histories_and_targets("test")
    with PeakMemory() as memory:
        started = time.perf_counter()
        run = TRAINERS[name](bench)
        train_seconds = time.perf_counter() - started
        run.recommend(histories[:8], max(TIMED_KS))  # warm-up: lazy initialisation
        seconds, top = {}, None
        for k in TIMED_KS:
            # The best of a few runs, as timeit does: other load only ever adds time.
            seconds[k] = float("inf")
            for _ in range(TIMING_REPEATS):
                started = time.perf_counter()
                top = run.recommend(histories, k)
                seconds[k] = min(seconds[k], time.perf_counter() - started)
        metrics = run.test_metrics(top)
    parameters = sum(p.numel() for p in run.model.parameters())
    row = {
        "model": name,
        "description": MODELS[name],
        "parameters": parameters,
        **{f"test_{k}": v for k, v in metrics.items()},
        "train_seconds": train_seconds,
        "best_epoch": run.best_epoch,
        "epochs": len(run.history),
        **{
            f"infer_seconds_per_1000_users_k{k}": s / len(histories) * 1000
            for k, s in seconds.items()
        },
        "peak_rss_mib": memory.peak_mib,
        "rss_before_mib": memory.start_mib,
        "history": run.history,
    }
    log.info("%s: test recall@10 %.4f, %.1f s training", name, metrics["recall@10"], train_seconds)
    return row


def dataset_source(name: str) -> Path:
    """A dataset by path, by name under data/raw (embedded), or by name under
    ../shared/datasets."""
    for candidate in (
        Path(name),
        PROJECT_ROOT / "data" / "raw" / name,
        PROJECT_ROOT.parent / "shared" / "datasets" / name,
    ):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"dataset {name!r}: not a directory, nor in data/raw or ../shared/datasets"
    )


def inference_ratios(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """`<beam model>/<reference>` -> {k10, k20}: the beam-search model's inference time over
    Lite-LLM4Rec's, and over its own encoder with a projection head (generative_head)."""
    pairs = [(beam, REFERENCE) for beam in BEAM_MODELS]
    pairs += [(beam, head) for head, beam in SAME_ENCODER.items()]
    return {
        f"{beam}/{reference}": {
            f"k{k}": rows[beam][f"infer_seconds_per_1000_users_k{k}"]
            / rows[reference][f"infer_seconds_per_1000_users_k{k}"]
            for k in TIMED_KS
        }
        for beam, reference in pairs
        if beam in rows and reference in rows
    }


def item_quality(bench: BenchData) -> dict[str, Any]:
    """Genre agreement of Item LLM neighbours (k=10), pretrained and (when the ablation runs)
    randomly initialised; empty when the items have no genres (only MovieLens has them)."""
    if "genres" not in bench.data.items.columns:
        return {}
    genres = item_genres(bench.data.items)
    k = min(10, sum(bool(g) for g in genres) - 1)  # tiny catalogs have fewer neighbours
    if k < 1:
        return {}
    quality = {"pretrained": genre_neighbour_agreement(bench.embeddings, genres, k)}
    if bench.random_embeddings is not None:
        quality["random_init"] = genre_neighbour_agreement(bench.random_embeddings, genres, k)
    return quality


def bench_dataset(
    name: str,
    models: list[str],
    config: Config,
    generative: GenerativeConfig,
    work_dir: Path,
    cache_dir: Path,
) -> dict[str, Any]:
    """Every model on one dataset; the dataset's section of results.json."""
    processed = work_dir / Path(name).name / "processed"
    if not (processed / "stats.json").is_file():
        prepare(dataset_source(name), processed, config.data.format, config.data.k_core)
    data = load_sequences(processed)
    # Item vectors are computed (or read from the cache) before any model's clock starts.
    embeddings, _ = item_embeddings(data.items, config.item_llm, cache_dir)
    random_embeddings = (
        random_item_embeddings(data.items, config.item_llm, cache_dir, config.train.seed)
        if "lite_random_item_llm" in models
        else None
    )
    label = Path(name).name
    bench = BenchData(
        label, data, embeddings, random_embeddings, config, generative, work_dir / label, cache_dir
    )
    rows = {model: run_model(model, bench) for model in models}
    return {
        "stats": json.loads((processed / "stats.json").read_text()),
        "models": rows,
        "inference_ratio": inference_ratios(rows),
        "item_quality": item_quality(bench),
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def results_markdown(results: dict[str, Any]) -> str:
    """The results table per dataset, the beam-search inference ratios with model sizes, the
    item-quality check and what was not run."""
    settings = results["settings"]
    lines = [
        "# lite-rec benchmark",
        "",
        f"`{results['command']}` on {results['machine']['cpus']} CPU(s), "
        f"{results['machine']['torch_threads']} torch thread(s), {results['machine']['platform']}"
        f"; quick: {settings['quick']}. Test split, leave-one-out, full ranking (history "
        "excluded); generative models rank only their 20 beams (a target outside them counts "
        "as missed). Inference: top-K lists for every test user, per 1,000 users, the best of "
        f"{TIMING_REPEATS} runs; peak RSS is the whole process's while the model trained and ran.",
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


def generative_config(
    config: Config, epochs: int = 30, examples_per_user: int = 0
) -> GenerativeConfig:
    """The generative baseline at the Recommendation LLM's width, depth and head count."""
    model = config.model
    return GenerativeConfig(
        hidden_size=model.hidden_size,
        num_layers=model.num_layers,
        num_heads=model.num_heads,
        epochs=epochs,
        examples_per_user=examples_per_user,
    )


def run_bench(
    datasets: list[str],
    models: list[str],
    out_dir: str | Path,
    config: Config,
    generative: GenerativeConfig,
    work_dir: str | Path = PROJECT_ROOT / "cache" / "bench",
    cache_dir: str | Path = PROJECT_ROOT / "cache" / "item_embeddings",
    tracking=None,
    quick: bool = False,
    command: str = "lite-rec bench",
) -> dict[str, Any]:
    """Benchmark `models` on `datasets`; write results.json, results.md and the PNGs into
    `out_dir`, and log them to MLflow when `tracking` (a `Tracking`) is given. With `quick`,
    every model trains at most 2 epochs (generative: 1, on 5 targets per user): a smoke run."""
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    if quick:
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, epochs=min(config.train.epochs, 2))
        )
        generative = dataclasses.replace(generative, epochs=1, examples_per_user=5)
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    # Imported up front, so that no model's training time includes importing its architecture.
    from transformers import BertModel, GPT2Model, T5ForConditionalGeneration  # noqa: F401

    out_dir, work_dir = Path(out_dir), Path(work_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": command,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "settings": {
            "quick": quick,
            "models": models,
            "config": config.to_dict(),
            "generative": dataclasses.asdict(generative),
            "sizes": model_sizes(config, generative),
        },
        "datasets": {},
    }
    plots = []
    for name in datasets:
        section = bench_dataset(name, models, config, generative, work_dir, Path(cache_dir))
        results["datasets"][Path(name).name] = section
        plots += plot_results(section, Path(name).name, out_dir)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / "results.md").write_text(results_markdown(results))
    if tracking is not None:
        log_bench(results, out_dir, plots, tracking)
    return results


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
