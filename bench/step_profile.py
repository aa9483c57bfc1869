"""Where one training step's time goes: the median and mean step (forward, backward, gradient
clipping, AdamW) for each batch size, and torch.profiler's top operators, on a prepared dataset
with the default config (recipe resolved) and random 384-d text vectors in place of the Item
LLM's (the same shapes, so the same cost); `--set key=value` changes the config. Run it on a
quiet machine.

    .venv/bin/python bench/step_profile.py cache/bench/amazon-beauty-2014-5core/processed \\
        --batch-sizes 128,64 --threads 2
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import sweep  # noqa: F401  (sets the OpenMP and offline environment before torch loads)
import torch
from torch.profiler import ProfilerActivity, profile

from lite_rec.config import load_config
from lite_rec.model import RecommendationLLM
from lite_rec.recipe import apply_recipe
from lite_rec.sequences import load_sequences
from lite_rec.train import (
    epoch_windows,
    make_batch,
    optimizer_and_scheduler,
    optimizer_step,
    training_loss,
)

TEXT_DIM = 384  # all-MiniLM-L6-v2


def profile_steps(data, text: np.ndarray, config, args: argparse.Namespace) -> None:
    """Time and profile training steps of a fresh model at config.train.batch_size, built and
    stepped as `lite_rec.train.train` does (loss, optimizer, clipping, schedule)."""
    model_config, train_config = apply_recipe(config.model, config.train, data)
    batch_size = train_config.batch_size
    torch.manual_seed(train_config.seed)
    model = RecommendationLLM(model_config, data.n_items, text).train()
    optimizer, scheduler = optimizer_and_scheduler(model, train_config)
    windows = epoch_windows(data.train_sequences(), train_config, model_config.max_len, 1)
    starts = list(range(0, len(windows), batch_size))

    def step(start: int) -> None:
        batch = make_batch(windows[start : start + batch_size], train_config.strategy == "sampling")
        optimizer_step(
            model, optimizer, scheduler, training_loss(model, batch, train_config), train_config
        )

    # Five warm-up steps, then the next batches of the epoch (from its start again if short).
    batches = [starts[i % len(starts)] for i in range(5 + args.steps)]
    for start in batches[:5]:
        step(start)
    seconds = []
    for start in batches[5:]:
        began = time.perf_counter()
        step(start)
        seconds.append(time.perf_counter() - began)
    median, mean = statistics.median(seconds), statistics.mean(seconds)
    # Batches are cut from windows sorted by length, so a few long ones cost most: the mean,
    # not the median, estimates the epoch.
    print(
        f"batch {batch_size}: {len(starts)} steps per epoch, median step {1000 * median:.1f} "
        f"ms, mean {1000 * mean:.1f} ms over {len(seconds)} steps, about "
        f"{mean * len(starts):.1f} s of steps per epoch ({args.threads} threads)"
    )
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for start in batches[5 : 5 + min(args.steps, 30)]:
            step(start)
    print(profiler.key_averages().table(sort_by="cpu_time_total", row_limit=args.top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="a directory `lite-rec prepare` wrote")
    parser.add_argument("--batch-sizes", default="128,64", help="comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=120, help="timed steps per batch size")
    parser.add_argument("--top", type=int, default=12, help="profiler rows to print")
    parser.add_argument("--set", action="append", default=[], help="config override (key=value)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_sequences(args.data_dir)
    text = np.random.default_rng(0).normal(size=(data.n_items, TEXT_DIM)).astype(np.float32)
    config = load_config(overrides=args.set)
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        config.train.batch_size = batch_size
        profile_steps(data, text, config, args)


if __name__ == "__main__":
    main()
