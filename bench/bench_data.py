"""The data half and the Item LLM cache, timed: `lite-rec prepare` on each dataset (median of
3 runs) and a full vs one-edited-item re-embedding of the embedded MovieLens catalog.

    .venv/bin/python bench/bench_data.py --out bench/results/data

Writes results.json and results.md to --out."""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from lite_rec.config import PROJECT_ROOT, ItemLLMConfig  # noqa: E402
from lite_rec.item_embeddings import item_embeddings  # noqa: E402
from lite_rec.prepare import prepare  # noqa: E402

SHARED = PROJECT_ROOT.parent / "shared" / "datasets"
SOURCES = {
    "ml-latest-small (embedded)": PROJECT_ROOT / "data/raw/ml-latest-small",
    "ml-100k": SHARED / "ml-100k",
    "amazon-toys-2014-5core": SHARED / "amazon-toys-2014-5core",
    "amazon-beauty-2014-5core": SHARED / "amazon-beauty-2014-5core",
}


def time_prepare(source: Path, work: Path, runs: int = 3) -> dict:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        processed = prepare(source, work / "prepared")
        seconds.append(time.perf_counter() - start)
    return {**processed.stats, "median_s": statistics.median(seconds)}


def time_reembedding(work: Path) -> dict:
    items = prepare(SOURCES["ml-latest-small (embedded)"], work / "ml").items
    config, cache = ItemLLMConfig(), work / "cache"
    _, full = item_embeddings(items, config, cache)
    edited = items.copy()
    edited.loc[0, "title"] = edited.loc[0, "title"] + " (director's cut)"
    _, partial = item_embeddings(edited, config, cache)
    return {
        "items": len(items),
        "full_s": full.seconds,
        "full_encoded": full.encoded,
        "partial_s": partial.seconds,
        "partial_encoded": partial.encoded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench/results/data")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        prepared = {name: time_prepare(src, work) for name, src in SOURCES.items() if src.exists()}
        cache = time_reembedding(work)
    lines = [
        f"`{' '.join(sys.argv)}` on {os.cpu_count()} CPUs",
        "",
        "| dataset | users | items | interactions | prepare s (median of 3) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {r['users']:,} | {r['items']:,} | {r['interactions']:,} | "
        f"{r['median_s']:.1f} |"
        for name, r in prepared.items()
    ]
    lines += [
        "",
        f"Item LLM cache, {cache['items']:,} items: all encoded in "
        f"{cache['full_s']:.1f} s; after editing one title, {cache['partial_encoded']} "
        f"encoded in {cache['partial_s']:.2f} s.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"prepare": prepared, "cache": cache}, indent=2)
    )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
