"""`lite-rec bench ddp`: data-parallel training (`lite-rec train --nproc N`, one thread per
rank) against one process with as many threads, same data, seeds and settings: validation and
test NDCG@10 / Recall@10 per seed with their mean and spread, epochs, and the median epoch
time of each, with their ratio. Every run is the `lite-rec train` and `lite-rec evaluate`
commands a person runs, in their own processes, into `--work`."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lite_rec.bench.report import markdown_table
from lite_rec.bench.run import machine, write_results

METRICS = ("ndcg@10", "recall@10")


def modes(nproc: int) -> dict[str, list[str]]:
    """The two ways of spending `nproc` cores, as `--set` changes."""
    return {
        "one process": ["train.nproc=1", f"train.threads={nproc}"],
        f"{nproc} processes": [f"train.nproc={nproc}", "train.threads=1"],
    }


def _lite_rec(*arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lite_rec.cli", *arguments]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-2000:]}")
    return done


def train_and_test(
    data_dir: Path,
    model_dir: Path,
    tracking_uri: str,
    changes: list[str],
    cache: Path,
    params: Path | None = None,
) -> dict[str, Any]:
    """One training and its test evaluation. -> the row: wall seconds, epochs, the median
    epoch's seconds, validation and test metrics"""
    settings = [option for change in changes for option in ("--set", change)]
    settings += ["--params", str(params)] if params else []
    started = time.perf_counter()
    _lite_rec(
        "train", str(data_dir), "--out", str(model_dir), "--tracking-uri", tracking_uri,
        "--cache", str(cache), *settings,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    history = json.loads((model_dir / "history.json").read_text())
    evaluated = _lite_rec("evaluate", str(data_dir), str(model_dir), "--json", "--no-mlflow")
    test = json.loads(evaluated.stdout.strip().splitlines()[-1])
    best = max(history, key=lambda row: row["valid_ndcg@10"])
    return {
        "seconds": seconds,
        "epochs": len(history),
        "best_epoch": best["epoch"],
        "epoch_seconds": statistics.median(row["seconds"] for row in history),
        **{f"valid_{m}": best[f"valid_{m}"] for m in METRICS},
        **{f"test_{m}": test[m] for m in METRICS},
    }


def run_ddp(
    data_dir: Path,
    out_dir: Path,
    work: Path,
    seeds: list[int],
    nproc: int = 2,
    changes: list[str] | None = None,
    params: Path | None = None,
    cache: Path = Path("cache/item_embeddings"),
    command: str = "lite-rec bench ddp",
) -> dict[str, Any]:
    """Both modes for every seed, taking turns; results.json and results.md in `out_dir`.
    `changes` (`--set`) and `params` apply to every run; Item LLM vectors come from `cache`."""
    tracking_uri = f"sqlite:///{(work / 'mlflow.db').resolve()}"
    rows = []
    for seed in seeds:
        for mode, mode_changes in modes(nproc).items():
            model_dir = work / f"{mode.replace(' ', '_')}_seed{seed}"
            settings = [*(changes or []), *mode_changes, f"train.seed={seed}"]
            row = train_and_test(data_dir, model_dir, tracking_uri, settings, cache, params)
            rows.append({"mode": mode, "seed": seed, **row})
    results = {
        "command": command,
        "machine": machine(),
        "data": str(data_dir),
        "nproc": nproc,
        "changes": changes or [],
        "rows": rows,
    }
    write_results(out_dir, results, ddp_markdown(results))
    return results


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean and sample standard deviation of each metric, the median epoch time."""
    values: dict[str, float] = {}
    for key in [f"{split}_{m}" for split in ("valid", "test") for m in METRICS]:
        column = [row[key] for row in rows]
        values[key] = statistics.mean(column)
        values[f"{key}_sd"] = statistics.stdev(column) if len(column) > 1 else 0.0
    values["epoch_seconds"] = statistics.median(row["epoch_seconds"] for row in rows)
    return values


def ddp_markdown(results: dict[str, Any]) -> str:
    rows, nproc = results["rows"], results["nproc"]
    by_mode = {mode: [r for r in rows if r["mode"] == mode] for mode in modes(nproc)}
    names = ["mode", "seed", "epochs", "best epoch", "median epoch s", "wall s"]
    names += [f"{split} {m}" for split in ("valid", "test") for m in METRICS]
    cells = [
        [r["mode"], r["seed"], r["epochs"], r["best_epoch"], r["epoch_seconds"], r["seconds"]]
        + [r[f"{split}_{m}"] for split in ("valid", "test") for m in METRICS]
        for r in rows
    ]
    summaries = {mode: summary(mode_rows) for mode, mode_rows in by_mode.items() if mode_rows}
    mean_names = ["mode", "median epoch s"]
    mean_names += [f"{split} {m} (sd)" for split in ("valid", "test") for m in METRICS]
    means = [
        [mode, s["epoch_seconds"]]
        + [
            f"{s[f'{split}_{m}']:.4f} ({s[f'{split}_{m}_sd']:.4f})"
            for split in ("valid", "test")
            for m in METRICS
        ]
        for mode, s in summaries.items()
    ]
    one, many = (summaries.get(mode) for mode in modes(nproc))
    ratio = many["epoch_seconds"] / one["epoch_seconds"] if one and many else None
    lines = [
        "# Data-parallel training against one process",
        "",
        f"`{results['command']}` on {results['machine']['cpus']} CPU(s), "
        f"{results['machine']['platform']}; data {results['data']}; settings "
        f"{', '.join(results['changes']) or 'params.yaml'}.",
        "",
        *markdown_table(names, cells),
        "",
        "Mean (sample standard deviation) over the seeds:",
        "",
        *markdown_table(mean_names, means),
        "",
    ]
    if ratio is not None:
        lines.append(f"Median epoch time, {nproc} processes / one: **{ratio:.2f}**.")
    return "\n".join(lines) + "\n"
