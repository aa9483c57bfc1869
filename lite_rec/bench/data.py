"""`lite-rec bench data`: the data half and the Item LLM cache, timed. `prepare` on each dataset
(in-process, the median of PREPARE_RUNS), then the first dataset's catalog embedded from an
empty cache and again after one item's title changed."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from lite_rec.bench.report import machine_line, markdown_table
from lite_rec.bench.run import dataset_source, machine, output_folder, write_results
from lite_rec.config import Config
from lite_rec.item_embeddings import item_embeddings
from lite_rec.prepare import prepare

PREPARE_RUNS = 3


def time_prepare(source: Path, out: Path, config: Config) -> dict[str, Any]:
    """-> the prepared dataset's stats and the median seconds of PREPARE_RUNS runs"""
    seconds = []
    for _ in range(PREPARE_RUNS):
        started = time.perf_counter()
        processed = prepare(source, out, config.data.format, config.data.k_core)
        seconds.append(time.perf_counter() - started)
    return {**processed.stats, "median_seconds": statistics.median(seconds)}


def time_reembedding(source: Path, work: Path, config: Config) -> dict[str, Any]:
    """Every item encoded into an empty cache, then the catalog again with one title edited."""
    items = prepare(source, work / "items", config.data.format, config.data.k_core).items
    cache = work / "cache"
    _, full = item_embeddings(items, config.item_llm, cache)
    edited = items.copy()
    edited.loc[0, "title"] = edited.loc[0, "title"] + " (director's cut)"
    _, partial = item_embeddings(edited, config.item_llm, cache)
    return {
        "dataset": source.name,
        "items": len(items),
        "full_seconds": full.seconds,
        "full_encoded": full.encoded,
        "partial_seconds": partial.seconds,
        "partial_encoded": partial.encoded,
    }


def data_markdown(results: dict[str, Any]) -> str:
    columns = ["dataset", "users", "items", "interactions", f"prepare s (median of {PREPARE_RUNS})"]
    rows = [
        [name, r["users"], r["items"], r["interactions"], r["median_seconds"]]
        for name, r in results["prepare"].items()
    ]
    cache = results["cache"]
    lines = ["# Data preparation and the Item LLM cache", "", f"{machine_line(results)}.", ""]
    lines += markdown_table(columns, rows)
    lines += [
        "",
        f"Item LLM cache, {cache['dataset']}, {cache['items']:,} items: all encoded in "
        f"{cache['full_seconds']:.1f} s; after editing one title, {cache['partial_encoded']} "
        f"encoded in {cache['partial_seconds']:.2f} s.",
    ]
    return "\n".join(lines) + "\n"


def run_data_bench(
    datasets: list[str], config: Config, out_dir: str | Path, command: str = "lite-rec bench data"
) -> dict[str, Any]:
    """Time `prepare` on each dataset and the cache on the first; write the report."""
    sources = [dataset_source(name) for name in datasets]
    results: dict[str, Any] = {"command": command, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="bench-data-") as scratch:
        work = Path(scratch)
        results["prepare"] = {
            source.name: time_prepare(source, work / source.name, config) for source in sources
        }
        results["cache"] = time_reembedding(sources[0], work, config)
    write_results(output_folder(out_dir), results, data_markdown(results))
    return results
