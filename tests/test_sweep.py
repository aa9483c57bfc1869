"""`bench/sweep.py`: variants trained side by side, each scored, a broken one named; and
`bench/step_profile.py` and `bench/patience_replay.py`."""

import json
import statistics
import subprocess
import sys

from lite_rec.config import PROJECT_ROOT
from lite_rec.prepare import prepare
from tests.conftest import write_movielens


def prepared(tmp_path):
    """A tiny prepared dataset (8 users, 8 items) -> its directory."""
    data_dir = tmp_path / "processed"
    prepare(write_movielens(tmp_path / "raw", users=8, items=8), data_dir)
    return data_dir


def run_bench_script(script: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(PROJECT_ROOT / "bench" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def run_tiny_sweep(tmp_path, tiny_model, *args: str) -> subprocess.CompletedProcess:
    """bench/sweep.py on `prepared`'s dataset, 2 epochs of a small model, results in tmp/out."""
    return run_bench_script(
        "sweep.py",
        str(prepared(tmp_path)),
        *args,
        *("--set", "train.epochs=2", "--set", "model.hidden_size=16"),
        *("--set", "model.max_len=6", "--set", f"item_llm.model={tiny_model}"),
        *("--set", "train.threads=1", "--out", str(tmp_path / "out")),
        *("--cache", str(tmp_path / "cache")),
    )


def test_sweep_scores_each_variant_and_names_the_one_that_failed(tmp_path, tiny_model) -> None:
    out = tmp_path / "out"
    done = run_tiny_sweep(
        tmp_path,
        tiny_model,
        *("--variant", "ids:model.item_repr=id"),
        *("--variant", "wide:model.hidden_size=32"),
        *("--variant", "broken:model.item_repr=pixels", "--jobs", "3"),
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "variant broken failed" in done.stderr and "pixels" in done.stderr
    results = json.loads((out / "results.json").read_text())
    rows = {row["variant"]: row for row in results["rows"]}
    assert set(rows) == {"ids", "wide"}
    assert rows["wide"]["overrides"][-1] == "model.hidden_size=32"
    for row in rows.values():
        assert 0.0 <= row["test_recall@10"] <= 1.0 and row["epochs"] == 2
        assert row["valid_ndcg@10"] == row["history"][row["best_epoch"] - 1]["valid_ndcg@10"]
    markdown = (out / "results.md").read_text()
    assert "| ids | model.item_repr=id | none |" in markdown and "| wide |" in markdown
    assert {row["recipe"] for row in rows.values()} == {"none"}  # auto on 8 users


def test_sweep_runs_each_variant_per_seed_and_reports_the_mean(tmp_path, tiny_model) -> None:
    out = tmp_path / "out"
    done = run_tiny_sweep(tmp_path, tiny_model, "--variant", "base:", "--seeds", "3,5", "--jobs=2")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {row["variant"]: row for row in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {"base_seed3", "base_seed5"}
    assert [rows[name]["seed"] for name in ("base_seed3", "base_seed5")] == [3, 5]
    assert rows["base_seed3"]["history"] != rows["base_seed5"]["history"]
    recalls = [row["test_recall@10"] for row in rows.values()]
    mean, spread = statistics.mean(recalls), statistics.stdev(recalls)
    summary = (out / "results.md").read_text().splitlines()[-1]
    assert summary.startswith("| base | 3, 5 | ")
    assert summary.split(" | ")[3] == f"{mean:.4f} ({spread:.4f})"  # test R@10


def test_sweep_rejects_a_variant_without_a_name(tmp_path) -> None:
    done = run_bench_script("sweep.py", str(tmp_path), "--variant", "x")
    assert done.returncode == 2 and "expected NAME:key=value" in done.stderr
    done = run_bench_script("sweep.py", str(tmp_path), "--variant", "x:", "--seeds", "1,a")
    assert done.returncode == 2 and "--seeds '1,a': expected integers" in done.stderr


def test_step_profile_times_each_batch_size_and_names_the_loss(tmp_path) -> None:
    """`bench/step_profile.py`: one timing line and one operator table per batch size."""
    done = run_bench_script(
        "step_profile.py",
        str(prepared(tmp_path)),
        *("--batch-sizes", "4,2", "--threads", "1", "--steps", "2", "--top", "40"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for batch_size in (4, 2):
        assert f"batch {batch_size}: " in done.stdout
    assert done.stdout.count("median step") == 2
    assert done.stdout.count("LinearCrossEntropy") == 2  # the fused loss, in each table
    refused = run_bench_script(
        "step_profile.py", str(tmp_path / "processed"), "--set", "model.item_repr=pixels"
    )
    assert refused.returncode == 1 and "pixels" in refused.stderr  # --set reaches the model
    sampled = run_bench_script(
        "step_profile.py",
        str(tmp_path / "processed"),
        *("--batch-sizes", "2", "--steps", "2", "--top", "40"),
        *("--set", "train.loss=sampled", "--set", "train.num_negatives=3"),
    )
    assert sampled.returncode == 0, sampled.stderr[-2000:]  # the step trains as train() does:
    assert "median step" in sampled.stdout and "LinearCrossEntropy" not in sampled.stdout


def _recorded_run(path, scores: list[float]):
    """A sweep results.json with one run whose validation NDCG@10 per epoch is `scores`."""
    history = [{"epoch": e, "valid_ndcg@10": v} for e, v in enumerate(scores, start=1)]
    path.write_text(json.dumps({"rows": [{"variant": "v", "seed": 1, "history": history}]}))
    return str(path)


def test_patience_replay_stops_where_training_would_and_refuses_a_wrong_record(tmp_path) -> None:
    # Recorded with patience 3, min_delta 0.005: 0.26 beats 0.25 by 0.01, so epoch 5 is the best
    # and epochs 6-8 are the three bad ones that stopped it.
    run = _recorded_run(tmp_path / "results.json", [0.1, 0.2, 0.25, 0.24, 0.26, 0.2, 0.2, 0.2])
    common = (run, "--recorded", "3", "--min-delta", "0.005")
    done = run_bench_script("patience_replay.py", *common, "--patience", "1,2")
    assert done.returncode == 0, done.stderr[-2000:]
    # Patience 1 stops at the first bad epoch (4), keeping epoch 3: 0.26 - 0.25 given up;
    # patience 2 survives epoch 4, reaches epoch 5 and stops at 7.
    assert "| 8 (5), 0.2600 | 4 (3), 0.0100 | 7 (5), 0.0000 |" in done.stdout
    assert "patience 1: 4 epochs fewer over 1 runs" in done.stdout
    # With min_delta 0.02, 0.26 is no better than 0.25: a patience-3 run would have stopped
    # at epoch 6, so these are not the recorded settings.
    wrong = run_bench_script(
        "patience_replay.py", run, "--recorded", "3", "--min-delta", "0.02", "--patience", "2"
    )
    assert wrong.returncode == 1
    assert "ran 8 epochs, but patience 3 with min_delta 0.02 stops it at 6" in wrong.stderr
    longer = run_bench_script("patience_replay.py", *common, "--patience", "4")
    assert longer.returncode == 2 and "at most the recorded patience 3" in longer.stderr
