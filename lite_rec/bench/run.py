"""The benchmark runner every `lite-rec bench` tool shares: datasets prepared and embedded once
(phases timed), each model trained, timed and scored on them (`run_model`, `run_models`), the
process's peak memory (`PeakMemory`), the machine a run measured (`machine`) and the results
written (`write_results`); `run_bench` is the whole-benchmark run."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import multiprocessing
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from lite_rec.baselines.generative import GenerativeConfig
from lite_rec.baselines.random_item_llm import random_item_embeddings
from lite_rec.bench.models import (
    BEAM_MODELS,
    LATENCY_USERS,
    MODELS,
    REFERENCE,
    SAME_ENCODER,
    TIMED_KS,
    TIMING_REPEATS,
    TRAINERS,
    BenchData,
)
from lite_rec.bench.report import log_bench, model_sizes, plot_results, results_markdown
from lite_rec.config import PROJECT_ROOT, Config
from lite_rec.item_embeddings import item_embeddings
from lite_rec.item_quality import genre_neighbour_agreement, item_genres
from lite_rec.outputs import OutputError, write_file_atomically
from lite_rec.prepare import prepare
from lite_rec.sequences import load_sequences

log = logging.getLogger(__name__)

DEFAULT_DATASETS = ["ml-latest-small"]


class PeakMemory:
    """Peak resident memory of a process and its children (default: this process) while the
    block runs, sampled every 20 ms."""

    def __init__(self, pid: int | None = None) -> None:
        self._process = psutil.Process(pid)

    def rss_mib(self) -> float:
        try:
            processes = [self._process, *self._process.children(recursive=True)]
            return sum(p.memory_info().rss for p in processes) / 2**20
        except psutil.NoSuchProcess:
            return 0.0

    def __enter__(self) -> PeakMemory:
        self.start_mib = self.peak_mib = self.rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mib = max(self.peak_mib, self.rss_mib())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, self.rss_mib())


def machine(device: str = "cpu") -> dict[str, Any]:
    """What a measurement ran on: CPUs, torch threads, platform, torch, device (and GPU)."""
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "device": device,
        **({"gpu": torch.cuda.get_device_name(device)} if device.startswith("cuda") else {}),
    }


def write_results(out_dir: Path, results: dict[str, Any], markdown: str) -> None:
    """`out_dir/results.json` and `out_dir/results.md`, each replaced atomically."""
    write_file_atomically(out_dir / "results.json", json.dumps(results, indent=1) + "\n")
    write_file_atomically(out_dir / "results.md", markdown)


def output_folder(out_dir: str | Path) -> Path:
    """`--out`, created; an existing file there is refused."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir}: exists and is not a folder; expected a folder path")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def time_inference(
    recommend: Callable[[list[np.ndarray], int], np.ndarray], histories: list[np.ndarray]
) -> tuple[dict[str, float], np.ndarray]:
    """Top-K lists for every history at each K of TIMED_KS (seconds per 1,000 users, the median
    of TIMING_REPEATS passes) and one request of one history for the first LATENCY_USERS (p50
    and p99 ms). -> (those numbers, the top-max(K) lists of the last pass)"""
    recommend(histories[:8], max(TIMED_KS))  # warm-up: lazy initialisation
    timings, top = {}, None
    for k in TIMED_KS:
        passes = []
        for _ in range(TIMING_REPEATS):
            started = time.perf_counter()
            top = recommend(histories, k)
            passes.append(time.perf_counter() - started)
        timings[f"infer_seconds_per_1000_users_k{k}"] = (
            statistics.median(passes) / len(histories) * 1000
        )
    latencies = []
    for history in histories[:LATENCY_USERS]:
        started = time.perf_counter()
        recommend([history], min(TIMED_KS))
        latencies.append(1000 * (time.perf_counter() - started))
    timings["latency_p50_ms"] = float(np.percentile(latencies, 50))
    timings["latency_p99_ms"] = float(np.percentile(latencies, 99))
    return timings, top


def run_model(name: str, bench: BenchData) -> dict[str, Any]:
    """Train one model, time its top-K lists (`time_inference`) and score it on the test split;
    one row of the results table."""
    histories, _ = bench.data.histories_and_targets("test")
    with PeakMemory() as memory:
        started = time.perf_counter()
        run = TRAINERS[name](bench)
        train_seconds = time.perf_counter() - started
        timings, top = time_inference(run.recommend, histories)
        metrics = run.test_metrics(top)
    row = {
        "model": name,
        "description": MODELS[name],
        "parameters": sum(p.numel() for p in run.model.parameters()),
        **{f"test_{k}": v for k, v in metrics.items()},
        "train_seconds": train_seconds,
        "best_epoch": run.best_epoch,
        "epochs": len(run.history),
        **run.details,
        **timings,
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


def load_bench_data(
    name: str,
    models: list[str],
    config: Config,
    generative: GenerativeConfig,
    work_dir: Path,
    cache_dir: Path,
) -> tuple[BenchData, dict[str, Any]]:
    """One dataset prepared (once: `work_dir/<name>/processed` is reused) and embedded, each
    phase timed -> what its models share, and its section of results.json with no model run
    yet (`phases`: prepare seconds, null when reused; embedding seconds and items encoded)."""
    processed = work_dir / Path(name).name / "processed"
    prepare_seconds = None
    if not (processed / "stats.json").is_file():
        started = time.perf_counter()
        prepare(dataset_source(name), processed, config.data.format, config.data.k_core)
        prepare_seconds = time.perf_counter() - started
    data = load_sequences(processed)
    # Item vectors are computed (or read from the cache) before any model's clock starts.
    embeddings, report = item_embeddings(data.items, config.item_llm, cache_dir)
    random_embeddings = (
        random_item_embeddings(data.items, config.item_llm, cache_dir, config.train.seed)
        if "lite_random_item_llm" in models
        else None
    )
    label = Path(name).name
    bench = BenchData(
        label, data, embeddings, random_embeddings, config, generative, work_dir / label, cache_dir
    )
    section: dict[str, Any] = {
        "stats": json.loads((processed / "stats.json").read_text()),
        "phases": {
            "prepare_seconds": prepare_seconds,
            "embed_seconds": report.seconds,
            "encoded_items": report.encoded,
        },
        "models": {},
        "inference_ratio": {},
        "item_quality": item_quality(bench),
    }
    return bench, section


def _run_model_job(name: str, bench: BenchData, threads: int, level: int) -> dict[str, Any]:
    """`run_model` in a worker process of `run_bench(jobs > 1)`, logging at the parent's
    `level`."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if threads > 0:
        torch.set_num_threads(threads)
    return run_model(name, bench)


def run_models(
    benches: list[tuple[BenchData, dict[str, Any]]],
    models: list[str],
    jobs: int,
    on_model_done: Callable[[str, dict[str, Any]], None],
) -> list[str]:
    """Every model on every dataset, into each dataset's section; `on_model_done(label,
    section)` after each. `jobs > 1` trains that many (dataset, model) pairs at once in worker
    processes (each with `train.threads` threads): for accuracy tables on a many-core machine
    or a GPU; their timings then include the contention. A model that fails is logged and
    recorded in its section's `failed` (model -> error) while the others go on.
    -> the failures, as "model on dataset"."""
    failed = []

    def store(bench: BenchData, section: dict[str, Any], model: str, run) -> None:
        try:
            row = run()
        except Exception as error:
            log.exception("%s on %s failed", model, bench.name)
            section.setdefault("failed", {})[model] = f"{type(error).__name__}: {error}"
            failed.append(f"{model} on {bench.name}")
        else:
            section["models"][model] = row
            # Table order is `models` order, whatever order the workers finish in.
            section["models"] = {m: section["models"][m] for m in models if m in section["models"]}
            section["inference_ratio"] = inference_ratios(section["models"])
        on_model_done(bench.name, section)

    if jobs <= 1:
        for bench, section in benches:
            for model in models:
                store(bench, section, model, functools.partial(run_model, model, bench))
        return failed
    context = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
    level = logging.getLogger().getEffectiveLevel()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {
            pool.submit(_run_model_job, model, bench, bench.config.train.threads, level): (
                bench,
                section,
                model,
            )
            for bench, section in benches
            for model in models
        }
        for future in as_completed(futures):
            store(*futures[future], future.result)
    return failed


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
    jobs: int = 1,
) -> dict[str, Any]:
    """Benchmark `models` on `datasets`; write results.json, results.md and the PNGs into
    `out_dir`, and log them to MLflow when `tracking` (a `Tracking`) is given. With `quick`,
    every model trains at most 2 epochs (generative: 1, on 5 targets per user): a smoke run.
    `jobs`: models trained at once (see `run_models`)."""
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

    out_dir, work_dir = output_folder(out_dir), Path(work_dir)
    results: dict[str, Any] = {
        "command": command,
        "machine": machine(config.train.device),
        "settings": {
            "quick": quick,
            "jobs": jobs,
            "models": models,
            "config": config.to_dict(),
            "generative": dataclasses.asdict(generative),
            "sizes": model_sizes(config, generative),
        },
        "datasets": {},
        "complete": False,  # True once every model of every dataset has run
    }

    def write() -> None:
        # Rewritten after every model, so a run stopped part-way keeps what it measured.
        write_results(out_dir, results, results_markdown(results))

    def store(label: str, section: dict[str, Any]) -> None:
        results["datasets"][label] = section
        write()

    benches = [
        load_bench_data(name, models, config, generative, work_dir, Path(cache_dir))
        for name in datasets
    ]
    failed = run_models(benches, models, jobs, store)
    plots = []
    for bench, section in benches:
        plots += plot_results(section, bench.name, out_dir)
    results["complete"] = not failed
    write()
    if tracking is not None:
        log_bench(results, out_dir, plots, tracking)
    if failed:  # after writing what the others measured
        raise RuntimeError(f"benchmark model(s) failed: {', '.join(failed)} (see the log)")
    return results
