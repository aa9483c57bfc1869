"""`lite-rec bench step-cost`: how a training step's time and memory grow with the catalog,
for the full loss and the sampled one. For each catalog size and variant (a recipe and `--set`
changes), a fresh process builds the model of the config at that size, with random 384-d text
vectors standing in for the Item LLM's, and times training steps (forward, backward, clipping,
optimizer) as the trainer takes them, on random full-length windows: batch `train.batch_size`,
every one of `model.max_len` positions a target, items drawn uniformly from the catalog (the
most distinct items a batch can touch). Every variant and size reads the same draws, so the
rows differ by the catalog and the loss alone. The rows also hold the process's peak RSS and
the most rows the text projection saw in one step."""

from __future__ import annotations

import dataclasses
import multiprocessing
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lite_rec.bench.report import machine_line, markdown_table
from lite_rec.bench.run import machine, output_folder, write_results
from lite_rec.bench.sweep import Variant
from lite_rec.config import Config, load_config
from lite_rec.model import RecommendationLLM
from lite_rec.recipe import resolve_config
from lite_rec.train import (
    negative_sampler,
    parameter_groups,
    set_sparse_id_gradients,
    training_loss,
)
from lite_rec.trainer import adamw_with_warmup, optimizer_step

TEXT_DIM = 384  # all-MiniLM-L6-v2
CATALOG_SIZES = [10_000, 30_000, 100_000, 300_000, 1_000_000]
VARIANTS = [
    Variant("full", ["train.recipe=none"]),
    Variant("sampled", ["train.recipe=large"]),
    Variant("sampled, no in-batch", ["train.recipe=large", "train.in_batch_negatives=false"]),
    Variant(
        "sampled, dense id gradients", ["train.recipe=large", "train.sparse_id_gradients=false"]
    ),
]
WARMUP_STEPS = 2  # one when the first step takes over SLOW_STEP_SECONDS
SLOW_STEP_SECONDS = 5.0
MIN_TIMED_STEPS = 3


def variant_config(
    variant: Variant, common: list[str] = (), params: str | Path | None = None
) -> Config:
    """The config of a variant: params, `common` then the variant's changes, its recipe applied
    (named: the random batches hold no data for `auto` to read)."""
    config = load_config(params, [*common, *variant.changes])
    if config.train.recipe == "auto":
        raise ValueError(f"variant {variant.name!r}: name train.recipe (auto needs data)")
    return resolve_config(config, None)


def random_batches(
    n_items: int, batch_size: int, max_len: int, steps: int, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """`steps` batches of full-length windows of uniformly drawn items: every position has a
    target. The draws are uniform numbers scaled to the catalog, so each size reads the same
    ones. -> input_ids, target_ids (B, max_len) internal indices"""
    uniform = np.random.default_rng(seed).random((steps, batch_size, max_len + 1))
    windows = torch.from_numpy((uniform * n_items).astype(np.int64) + 1)  # (S, B, T + 1)
    return [{"input_ids": w[:, :-1], "target_ids": w[:, 1:]} for w in windows]


def time_steps(config: Config, n_items: int, steps: int, seconds: float) -> dict[str, Any]:
    """Build the model for `n_items` and time up to `steps` training steps after a warm-up,
    stopping once `seconds` have been timed (at least MIN_TIMED_STEPS). -> one row"""
    model_config, train_config = config.model, config.train
    if train_config.threads > 0:
        torch.set_num_threads(train_config.threads)
    torch.manual_seed(train_config.seed)
    text = torch.randn(n_items, TEXT_DIM).numpy()  # (n_items, 384)
    model = RecommendationLLM(model_config, n_items, text).train()
    del text  # the model holds its own copy
    set_sparse_id_gradients(model, train_config)
    optimizer, scheduler = adamw_with_warmup(parameter_groups(model, train_config), train_config)
    # Popularity negatives count the items: the uniform batches' are equally popular.
    sampler = negative_sampler(train_config, n_items, [np.arange(n_items)])
    projected = []
    if model.items.use_text:
        model.items.text_projection.register_forward_hook(
            lambda module, inputs, output: projected.append(inputs[0].shape[0])
        )
    batches = random_batches(n_items, train_config.batch_size, model_config.max_len, steps + 2)
    timed, warmup = [], WARMUP_STEPS
    for index, batch in enumerate(batches):
        began = time.perf_counter()
        loss = training_loss(model, batch, train_config, sampler)
        optimizer_step(model, optimizer, scheduler, loss, train_config)
        took = time.perf_counter() - began
        if index == 0 and took > SLOW_STEP_SECONDS:
            warmup = 1  # what a first step sets up is small next to such a step
        if index >= warmup:
            timed.append(took)
        if len(timed) >= MIN_TIMED_STEPS and (len(timed) >= steps or sum(timed) >= seconds):
            break
    return {
        "n_items": n_items,
        "loss": train_config.loss,
        "timed_steps": len(timed),
        "median_step_ms": 1000 * statistics.median(timed),
        "mean_step_ms": 1000 * statistics.mean(timed),
        "projected_rows": max(projected, default=0),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def step_cost_markdown(results: dict[str, Any]) -> str:
    variants = list(dict.fromkeys(row["variant"] for row in results["rows"]))
    sizes = list(dict.fromkeys(row["n_items"] for row in results["rows"]))
    cell = {(row["variant"], row["n_items"]): row for row in results["rows"]}
    columns = (
        ["items"] + [f"{v}: step ms" for v in variants] + [f"{v}: peak RSS MiB" for v in variants]
    )
    rows = [
        [size]
        + [cell[v, size]["median_step_ms"] if (v, size) in cell else None for v in variants]
        + [cell[v, size]["peak_rss_mib"] if (v, size) in cell else None for v in variants]
        for size in sizes
    ]
    lines = ["# Training step cost by catalog size", "", f"{machine_line(results)}.", ""]
    lines += [
        f"Batch {results['batch_size']}, {results['max_len']} positions, every one a target; "
        "median step (forward, backward, clipping, optimizer) in a fresh process per cell, "
        f"the median of {results['rounds']} round(s).",
        "",
    ]
    lines += markdown_table(columns, rows)
    lines += ["", "Variants:", ""]
    lines += [f"- {v['name']}: `{' '.join(v['changes'])}`" for v in results["variants"]]
    detail = ["variant", "items", "loss", "timed steps", "median ms", "mean ms", "projected rows"]
    lines += [
        "",
        *markdown_table(
            detail,
            [
                [r["variant"], r["n_items"], r["loss"], r["timed_steps"], r["median_step_ms"]]
                + [r["mean_step_ms"], r["projected_rows"]]
                for r in results["rows"]
            ],
        ),
    ]
    return "\n".join(lines) + "\n"


def run_step_cost(
    variants: list[Variant],
    sizes: list[int],
    common: list[str] = (),
    params: str | Path | None = None,
    steps: int = 20,
    seconds: float = 30.0,
    rounds: int = 1,
    out_dir: str | Path | None = None,
    command: str = "lite-rec bench step-cost",
) -> dict[str, Any]:
    """`time_steps` for every catalog size and variant, each in a fresh process (its own peak
    RSS), `rounds` times over (round after round, so that a slow spell of a shared machine
    touches every cell alike); a row's step time is the median of its rounds' medians. The
    report goes to `out_dir` (rewritten after each round) when given.
    -> results (`rows`: one per size and variant)"""
    configs = {v.name: variant_config(v, common, params) for v in variants}
    first = next(iter(configs.values()))
    results = {
        "command": command,
        "machine": machine(),
        "batch_size": first.train.batch_size,
        "max_len": first.model.max_len,
        "rounds": rounds,
        "variants": [dataclasses.asdict(v) for v in variants],
        "configs": {name: config.to_dict() for name, config in configs.items()},
        "rows": [],
    }
    cells = [(size, variant.name) for size in sizes for variant in variants]
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {cell: [] for cell in cells}
    context = multiprocessing.get_context("spawn")
    for _ in range(rounds):
        for size, name in cells:
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                runs[size, name].append(
                    pool.submit(time_steps, configs[name], size, steps, seconds).result()
                )
        results["rows"] = [combined_row(name, runs[size, name]) for size, name in cells]
        if out_dir is not None:
            write_results(output_folder(out_dir), results, step_cost_markdown(results))
    return results


def combined_row(variant: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell's rounds as one row: the median of their median steps, the highest peak RSS."""
    medians = [run["median_step_ms"] for run in runs]
    return {
        "variant": variant,
        **runs[0],
        "median_step_ms": statistics.median(medians),
        "round_median_step_ms": medians,
        "mean_step_ms": statistics.mean(run["mean_step_ms"] for run in runs),
        "timed_steps": sum(run["timed_steps"] for run in runs),
        "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
    }
