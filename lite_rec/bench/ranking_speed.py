"""`lite-rec bench ranking`: how close exact full-catalog ranking comes to the matrix product.

For each catalog size, a fresh process builds the default model (params.yaml's `model`, random
384-d text vectors standing in for the Item LLM's) and times `rank_catalog` on random users
(histories of HISTORY_LENGTH random items, a random target each): evaluation (the rank of
every target) and top-10 recommendation, each the median of `repeats` passes. The same
process times the product that bounds them, the same way the ranking runs it: BATCH users
(B, d) against the whole catalog in the ranking's item chunks (d, chunk), into one reused
buffer. The rows hold users/s, the product's FLOP/s, their fraction (users/s x 2 x d x
n_items / FLOP/s: 1.0 would mean ranking costs nothing beyond the product), the seconds
spent on the user vectors (the transformer, which the product does not count) and the
process's peak RSS, before ranking (the model and its item table) and after. The passes
alternate (product, evaluation, recommendation) so that a slow spell of a shared machine
falls on all three."""

from __future__ import annotations

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
from lite_rec.config import ModelConfig, load_config
from lite_rec.model import RecommendationLLM
from lite_rec.ranking import item_chunk_size, rank_catalog

CATALOG_SIZES = [10_000, 100_000, 1_000_000]
TEXT_DIM = 384  # all-MiniLM-L6-v2
BATCH = 1024  # rank_catalog's default batch of users
HISTORY_LENGTH = 20
TOP_K = 10


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _product_pass(users: torch.Tensor, weights: torch.Tensor, chunk: int) -> None:
    """users (B, d) against every item (n_items, d) in chunks of `chunk`, one reused buffer."""
    buffer = torch.empty(len(users) * chunk)
    for start in range(0, len(weights), chunk):
        rows = weights[start : start + chunk]  # (chunk, d)
        torch.mm(users, rows.T, out=buffer[: len(users) * len(rows)].view(len(users), -1))


def time_ranking(
    config: ModelConfig, n_items: int, n_users: int, item_chunk: int | None, repeats: int
) -> dict[str, Any]:
    """One row: the product's FLOP/s and rank_catalog's users/s at `n_items` (run it in a
    fresh process: the row's peak RSS is the process's)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    text = rng.standard_normal((n_items, TEXT_DIM), dtype=np.float32)
    model = RecommendationLLM(config, n_items, text).eval()
    del text
    histories = [rng.integers(0, n_items, HISTORY_LENGTH) for _ in range(n_users)]
    targets = rng.integers(0, n_items, n_users)
    chunk = item_chunk_size(n_items, BATCH, item_chunk)
    with torch.inference_mode():
        weights, _ = model.output_weights(model.item_table())  # (n_items, d)
        users = model.user_vectors(histories[:BATCH])  # (B, d)
    model_rss = _peak_rss_mb()  # the model and its item table, before any ranking
    times: dict[str, list[float]] = {"product": [], "evaluate": [], "recommend": [], "users": []}
    for _ in range(repeats):
        with torch.inference_mode():
            times["product"].append(_seconds(lambda: _product_pass(users, weights, chunk)))
            times["users"].append(_seconds(lambda: model.user_vectors(histories[:BATCH])))
        times["evaluate"].append(
            _seconds(lambda: rank_catalog(model, histories, targets, item_chunk=item_chunk))
        )
        times["recommend"].append(
            _seconds(lambda: rank_catalog(model, histories, k=TOP_K, item_chunk=item_chunk))
        )
    median = {name: statistics.median(values) for name, values in times.items()}
    flops_per_user = 2 * weights.shape[1] * n_items
    product_flops = len(users) * flops_per_user / median["product"]
    row: dict[str, Any] = {
        "n_items": n_items,
        "d": weights.shape[1],
        "users": n_users,
        "item_chunk": chunk,
        "product_gflops": product_flops / 1e9,
        "user_vector_seconds_per_1k": median["users"] * 1000 / len(users),
    }
    for name in ("evaluate", "recommend"):
        users_per_second = n_users / median[name]
        row[f"{name}_users_per_s"] = users_per_second
        row[f"{name}_fraction"] = users_per_second * flops_per_user / product_flops
    row["model_rss_mb"], row["peak_rss_mb"] = model_rss, _peak_rss_mb()
    row["seconds"] = times
    return row


def run_ranking_speed(
    sizes: list[int] = CATALOG_SIZES,
    item_chunks: list[int | None] = (None,),
    n_users: int = 2 * BATCH,
    repeats: int = 3,
    params: str | Path | None = None,
    out_dir: str | Path | None = None,
    command: str = "lite-rec bench ranking",
) -> dict[str, Any]:
    """`time_ranking` for every catalog size and item chunk (None: rank_catalog's choice),
    each in a fresh process; results.json and results.md to `out_dir` after every row."""
    config = load_config(params).model
    results: dict[str, Any] = {"command": command, "machine": machine(), "rows": []}
    context = multiprocessing.get_context("spawn")
    for n_items in sizes:
        for item_chunk in item_chunks:
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                arguments = (config, n_items, n_users, item_chunk, repeats)
                row = pool.submit(time_ranking, *arguments).result()
            row["chunk_choice"] = "auto" if item_chunk is None else "given"
            results["rows"].append(row)
            if out_dir is not None:
                write_results(output_folder(out_dir), results, ranking_speed_markdown(results))
    return results


def ranking_speed_markdown(results: dict[str, Any]) -> str:
    """The rows as a markdown table under the command and the machine."""
    columns = [
        "items",
        "item chunk",
        "product GFLOP/s",
        "evaluate users/s",
        "evaluate fraction",
        "top-10 users/s",
        "top-10 fraction",
        "user vectors s / 1k users",
        "RSS MB before ranking",
        "peak RSS MB",
    ]
    rows = [
        [
            row["n_items"],
            f"{row['item_chunk']} ({row['chunk_choice']})",
            row["product_gflops"],
            row["evaluate_users_per_s"],
            row["evaluate_fraction"],
            row["recommend_users_per_s"],
            row["recommend_fraction"],
            row["user_vector_seconds_per_1k"],
            row["model_rss_mb"],
            row["peak_rss_mb"],
        ]
        for row in results["rows"]
    ]
    lines = [
        "# Exact ranking against the matrix product",
        "",
        machine_line(results),
        "",
        "Fraction: users/s x 2 x d x items / the product's FLOP/s, both measured in the same "
        "process (medians of 3 alternating passes); the user vectors' seconds are inside "
        "users/s but not in the product.",
        "",
        *markdown_table(columns, rows),
        "",
    ]
    return "\n".join(lines)
