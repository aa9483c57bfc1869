"""`lite-rec bench step-profile`: where one training step's time goes. For each batch size, the
median and mean step (forward, backward, gradient clipping, AdamW) of a fresh Lite-LLM4Rec built
and stepped as the trainer does, and torch.profiler's top operators. Random 384-d text vectors
stand in for the Item LLM's (the same shapes, so the same cost)."""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from lite_rec.bench.report import machine_line, markdown_table
from lite_rec.bench.run import machine, output_folder, write_results
from lite_rec.config import Config
from lite_rec.model import RecommendationLLM
from lite_rec.recipe import resolve_config
from lite_rec.sequences import SequenceData, epoch_batches, load_sequences
from lite_rec.train import parameter_groups, training_loss
from lite_rec.trainer import adamw_with_warmup, optimizer_step

TEXT_DIM = 384  # all-MiniLM-L6-v2
WARMUP_STEPS = 5
PROFILED_STEPS = 30


def profile_steps(data: SequenceData, config: Config, steps: int, top: int) -> dict[str, Any]:
    """Time `steps` training steps at `config.train.batch_size` after a warm-up, then profile
    up to PROFILED_STEPS of them. -> one row: steps per epoch, median and mean step, the epoch's
    steps estimated from the mean, and the profiler's table of the `top` operators."""
    model_config, train_config = config.model, config.train
    batch_size = train_config.batch_size
    text = np.random.default_rng(0).normal(size=(data.n_items, TEXT_DIM)).astype(np.float32)
    torch.manual_seed(train_config.seed)
    model = RecommendationLLM(model_config, data.n_items, text).train()
    optimizer, scheduler = adamw_with_warmup(parameter_groups(model, train_config), train_config)
    epoch = list(epoch_batches(data.train_sequences(), train_config, model_config.max_len, 1))

    def step(batch: dict[str, torch.Tensor]) -> None:
        loss = training_loss(model, batch, train_config)
        optimizer_step(model, optimizer, scheduler, loss, train_config)

    # The warm-up steps, then the next batches of the epoch (from its start again if short).
    batches = [epoch[i % len(epoch)] for i in range(WARMUP_STEPS + steps)]
    for batch in batches[:WARMUP_STEPS]:
        step(batch)
    seconds = []
    for batch in batches[WARMUP_STEPS:]:
        began = time.perf_counter()
        step(batch)
        seconds.append(time.perf_counter() - began)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for batch in batches[WARMUP_STEPS : WARMUP_STEPS + min(steps, PROFILED_STEPS)]:
            step(batch)
    mean = statistics.mean(seconds)
    return {
        "batch_size": batch_size,
        "steps_per_epoch": len(epoch),
        "timed_steps": len(seconds),
        "median_step_ms": 1000 * statistics.median(seconds),
        # Batches are cut from windows sorted by length, so a few long ones cost most: the
        # mean, not the median, estimates the epoch.
        "mean_step_ms": 1000 * mean,
        "epoch_steps_seconds": mean * len(epoch),
        "operators": profiler.key_averages().table(sort_by="cpu_time_total", row_limit=top),
    }


def step_profile_markdown(results: dict[str, Any]) -> str:
    columns = ["batch", "steps per epoch", "median step ms", "mean step ms", "epoch's steps s"]
    rows = [
        [r["batch_size"], r["steps_per_epoch"], r["median_step_ms"], r["mean_step_ms"]]
        + [r["epoch_steps_seconds"]]
        for r in results["rows"]
    ]
    lines = ["# Training step profile", "", f"{machine_line(results)}.", ""]
    lines += markdown_table(columns, rows)
    for row in results["rows"]:
        lines += ["", f"batch {row['batch_size']}:", "", "```", row["operators"], "```"]
    return "\n".join(lines) + "\n"


def run_step_profile(
    data_dir: str | Path,
    config: Config,
    batch_sizes: list[int],
    steps: int,
    top: int,
    out_dir: str | Path | None = None,
    command: str = "lite-rec bench step-profile",
) -> dict[str, Any]:
    """`profile_steps` at each batch size, with `train.recipe` resolved on the data; the
    report goes to `out_dir` when given. -> results (`rows`: one per batch size)"""
    data = load_sequences(data_dir)
    config = resolve_config(config, data)
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    results = {"command": command, "machine": machine(), "config": config.to_dict(), "rows": []}
    for batch_size in batch_sizes:
        train_config = dataclasses.replace(config.train, batch_size=batch_size)
        row = profile_steps(data, dataclasses.replace(config, train=train_config), steps, top)
        results["rows"].append(row)
    if out_dir is not None:
        write_results(output_folder(out_dir), results, step_profile_markdown(results))
    return results
