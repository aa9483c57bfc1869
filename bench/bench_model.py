"""Lite-LLM4Rec on real data: accuracy, wall time of each phase, peak memory and inference speed,
with the text+id model and the id-only ablation (SASRec-CE) side by side.

    .venv/bin/python bench/bench_model.py ../shared/datasets/amazon-toys-2014-5core \\
        ../shared/datasets/amazon-beauty-2014-5core --out bench/results/model

Writes results.json and results.md to --out. Run it on a quiet machine: times are results."""

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from train_test import refit_note, train_and_test  # noqa: E402

from lite_rec.config import PROJECT_ROOT, load_config  # noqa: E402
from lite_rec.evaluate import recommend  # noqa: E402
from lite_rec.item_embeddings import item_embeddings  # noqa: E402
from lite_rec.prepare import prepare  # noqa: E402
from lite_rec.recipe import SPARSE_RECIPE  # noqa: E402
from lite_rec.sequences import load_sequences  # noqa: E402


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def inference(model, data, k: int = 10) -> dict[str, float]:
    """Full-catalog top-k for every user (median of 5 runs), and single-request latency."""
    histories, _ = data.histories_and_targets("test")
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        recommend(model, histories, k=k)
        runs.append(time.perf_counter() - start)
    latencies = []
    for history in histories[:300]:
        start = time.perf_counter()
        recommend(model, history, k=k)
        latencies.append(time.perf_counter() - start)
    return {
        "users_per_s": len(histories) / float(np.median(runs)),
        "users_per_s_best": len(histories) / min(runs),
        "latency_p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "latency_p99_ms": 1000 * float(np.percentile(latencies, 99)),
    }


def bench_dataset(source: Path, work: Path, overrides: list[str], reprs: list[str]) -> dict:
    row: dict = {"dataset": source.name}
    start = time.perf_counter()
    prepare(source, work / "data")
    row["prepare_s"] = time.perf_counter() - start
    data = load_sequences(work / "data")
    config = load_config(overrides=overrides)
    start = time.perf_counter()
    # A fresh cache: the timing includes encoding every item once.
    embeddings, report = item_embeddings(data.items, config.item_llm, work / "cache")
    row["embed_s"], row["encoded_items"] = time.perf_counter() - start, report.encoded
    for item_repr in reprs:
        config = load_config(overrides=[*overrides, f"model.item_repr={item_repr}"])
        result, seconds, test = train_and_test(data, embeddings, config, work / item_repr)
        row[item_repr] = {
            # What train.recipe resolved to, and the settings it sets.
            "recipe": result.train_config.recipe,
            "settings": {
                **{k: getattr(result.model.config, k) for k in SPARSE_RECIPE["model"]},
                **{k: getattr(result.train_config, k) for k in SPARSE_RECIPE["train"]},
            },
            "train_s": seconds,
            "epochs": len(result.history),
            "refit_epochs": len(result.refit_history),
            "best_epoch": result.best_epoch,
            **test,
            **inference(result.model, data),
        }
        print(json.dumps({source.name: {item_repr: row[item_repr]}}), flush=True)
    row["peak_rss_gb"] = peak_rss_gb()
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "| dataset | item repr | recipe | Recall@10 | NDCG@10 | Recall@20 | NDCG@20 | "
        "epochs (best) | train s | users/s (top-10) | p50 / p99 ms | prepare s | embed s | "
        "peak RSS GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for item_repr in [key for key in ("text+id", "id", "text") if key in row]:
            r = row[item_repr]
            lines.append(
                f"| {row['dataset']} | {item_repr} | {r['recipe']} | "
                f"{r['recall@10']:.4f} | {r['ndcg@10']:.4f} | "
                f"{r['recall@20']:.4f} | {r['ndcg@20']:.4f} | "
                f"{r['epochs']} ({r['best_epoch']}){refit_note(r)} | "
                f"{r['train_s']:.0f} | {r['users_per_s']:,.0f} | {r['latency_p50_ms']:.1f} / "
                f"{r['latency_p99_ms']:.1f} | {row['prepare_s']:.1f} | {row['embed_s']:.0f} | "
                f"{row['peak_rss_gb']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", type=Path, help="raw dataset directories")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench/results/model")
    parser.add_argument("--set", action="append", default=[], help="config override")
    parser.add_argument(
        "--reprs", default="text+id,id", help="model.item_repr values to train, comma-separated"
    )
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for source in args.sources:
        work = Path(tempfile.mkdtemp(prefix="bench-model-"))
        try:
            rows.append(bench_dataset(source, work, args.set, args.reprs.split(",")))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": " ".join(sys.argv),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    (args.out / "results.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    (args.out / "results.md").write_text(f"`{meta['command']}`\n\n" + markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
