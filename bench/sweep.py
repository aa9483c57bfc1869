"""Configuration variants of Lite-LLM4Rec on one prepared dataset, trained side by side: the
tool for recipe searches (on a GPU or a many-core machine, one process per variant).

    .venv/bin/python bench/sweep.py cache/bench/amazon-beauty-2014-5core/processed \\
        --variant base: --variant long:train.patience=20 \\
        --variant wide:model.hidden_size=128,model.dropout=0.5,train.patience=20 \\
        --set train.device=cuda --set train.threads=1 --jobs 8 --out bench/results/sweep

Each variant is `NAME:key=value,key=value` on top of params.yaml and the `--set` overrides.
With `--seeds 42,1`, each variant runs once per seed (`NAME_seed42`, ...) and the table adds each
variant's mean and standard deviation over the seeds: runs differ by about 0.0015 Recall@10
from the seed alone on Beauty, so judge a change by its mean.
The Item LLM vectors are computed (or read from `--cache`) once, before any variant starts.
results.json and results.md are rewritten after every variant. Train seconds of variants that
ran at once include the contention; compare accuracy, not time."""

import argparse
import json
import logging
import multiprocessing
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from train_test import refit_note, train_and_test  # noqa: E402

from lite_rec.config import PROJECT_ROOT, load_config  # noqa: E402
from lite_rec.item_embeddings import item_embeddings  # noqa: E402
from lite_rec.sequences import load_sequences  # noqa: E402

log = logging.getLogger("sweep")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """`NAME:a.b=1,c.d=x` -> ("NAME", ["a.b=1", "c.d=x"])."""
    name, sep, changes = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected NAME:key=value,...")
    return name, [change for change in changes.split(",") if change]


def parse_seeds(text: str) -> list[int]:
    """`42,1,2` -> [42, 1, 2]"""
    try:
        seeds = [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected integers") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: a seed is repeated")
    return seeds


def runs(
    variants: list[tuple[str, list[str]]], seeds: list[int] | None
) -> list[tuple[str, str, list[str]]]:
    """(variant, run name, changes) for each variant, once per seed when seeds are given."""
    if not seeds:
        return [(name, name, changes) for name, changes in variants]
    return [
        (name, f"{name}_seed{seed}", [*changes, f"train.seed={seed}"])
        for name, changes in variants
        for seed in seeds
    ]


def run_variant(
    name: str, overrides: list[str], data_dir: Path, embeddings_file: Path | None, work: Path
) -> dict:
    """Train one variant and score it on the test split (worker process)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = load_config(overrides=overrides)
    data = load_sequences(data_dir)
    embeddings = None
    if config.model.item_repr != "id":
        embeddings = np.load(embeddings_file)
    result, seconds, test = train_and_test(data, embeddings, config, work / name)
    best = result.history[result.best_epoch - 1]
    log.info("%s: test recall@10 %.4f ndcg@10 %.4f", name, test["recall@10"], test["ndcg@10"])
    return {
        "variant": name,
        "overrides": overrides,
        "recipe": result.train_config.recipe,  # what train.recipe resolved to
        "seed": result.train_config.seed,
        "train_s": seconds,
        "epochs": len(result.history),
        "refit_epochs": len(result.refit_history),
        "best_epoch": result.best_epoch,
        "valid_ndcg@10": best["valid_ndcg@10"],
        **{f"test_{key}": value for key, value in test.items()},
        "history": result.history,
    }


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        f"`{meta['command']}` ({meta['machine']})",
        "",
        "| variant | changes | recipe | valid N@10 | test R@10 | test N@10 | test R@20 | "
        "epochs (best) | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: -r["test_ndcg@10"]):
        lines.append(
            f"| {r['variant']} | {', '.join(r['overrides'][len(meta['common']) :]) or '-'} | "
            f"{r['recipe']} | {r['valid_ndcg@10']:.4f} | {r['test_recall@10']:.4f} | "
            f"{r['test_ndcg@10']:.4f} | {r['test_recall@20']:.4f} | "
            f"{r['epochs']} ({r['best_epoch']}){refit_note(r)} | {r['train_s']:.0f} |"
        )
    if any(r["base"] != r["variant"] for r in rows):
        lines += ["", seed_means(rows)]
    return "\n".join(lines) + "\n"


def seed_means(rows: list[dict]) -> str:
    """Each variant's mean (standard deviation) over its seeds, as a markdown table."""
    metrics = ["valid_ndcg@10", "test_recall@10", "test_ndcg@10", "test_recall@20"]
    lines = [
        "| variant | seeds | valid N@10 | test R@10 | test N@10 | test R@20 |",
        "|---|---|---|---|---|---|",
    ]
    for base in sorted({r["base"] for r in rows}):
        runs_of = [r for r in rows if r["base"] == base]
        cells = []
        for metric in metrics:
            values = [r[metric] for r in runs_of]
            spread = statistics.stdev(values) if len(values) > 1 else float("nan")
            cells.append(f"{statistics.mean(values):.4f} ({spread:.4f})")
        seeds = ", ".join(str(r["seed"]) for r in sorted(runs_of, key=lambda r: r["variant"]))
        lines.append(f"| {base} | {seeds} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_dir", type=Path, help="a directory `lite-rec prepare` wrote")
    parser.add_argument(
        "--variant", type=parse_variant, action="append", required=True, help="NAME:k=v,k=v"
    )
    parser.add_argument("--set", action="append", default=[], help="override for every variant")
    parser.add_argument(
        "--seeds", type=parse_seeds, help="run each variant once per seed (train.seed), e.g. 42,1"
    )
    parser.add_argument("--jobs", type=int, default=1, help="variants trained at once")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench/results/sweep")
    parser.add_argument("--cache", type=Path, default=PROJECT_ROOT / "cache/item_embeddings")
    parser.add_argument("--work-dir", type=Path, help="trained models (default: OUT/work)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    names = [name for name, _ in args.variant]
    if len(set(names)) != len(names):
        parser.error(f"variant names must differ: {names}")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work_dir or args.out / "work"
    embeddings_file = None
    planned = runs(args.variant, args.seeds)
    configs = [load_config(overrides=[*args.set, *changes]) for _, _, changes in planned]
    if any(config.model.item_repr != "id" for config in configs):
        data = load_sequences(args.data_dir)
        matrix, report = item_embeddings(data.items, configs[0].item_llm, args.cache)
        log.info("item embeddings: %d encoded, %d cached", report.encoded, report.reused)
        work.mkdir(parents=True, exist_ok=True)
        embeddings_file = work / "item_embeddings.npy"
        np.save(embeddings_file, matrix)
    device = configs[0].train.device
    meta = {
        "command": " ".join(sys.argv),
        "common": args.set,
        "machine": f"{os.cpu_count()} CPUs"
        + (f", {torch.cuda.get_device_name(device)}" if device.startswith("cuda") else "")
        + f", torch {torch.__version__}, {args.jobs} variant(s) at once",
    }
    rows: list[dict] = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        futures = {
            pool.submit(
                run_variant, name, [*args.set, *changes], args.data_dir, embeddings_file, work
            ): (base, name)
            for base, name, changes in planned
        }
        for future in as_completed(futures):
            base, name = futures[future]
            try:
                rows.append({**future.result(), "base": base})
            except Exception:
                log.exception("variant %s failed", name)
                continue
            (args.out / "results.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
            (args.out / "results.md").write_text(markdown(meta, rows))
    print(markdown(meta, rows))
    return 0 if len(rows) == len(futures) else 1


if __name__ == "__main__":
    sys.exit(main())
