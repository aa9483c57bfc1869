"""`lite-rec bench ddp` on tiny data: both modes trained and tested per seed through the real
commands (two gloo ranks under torchrun), the rows read back from the runs' own files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lite_rec.bench.ddp import summary
from lite_rec.cli import main
from tests.conftest import write_movielens

SETTINGS = ["model.item_repr=id", "model.hidden_size=16", "model.num_heads=2"]
SETTINGS += ["train.epochs=2", "train.batch_size=16", "train.warmup_steps=1"]


def test_the_summary_is_the_mean_and_sample_spread() -> None:
    rows = [
        {"valid_ndcg@10": v, "valid_recall@10": 0.5, "test_ndcg@10": t, "test_recall@10": 1.0}
        | {"epoch_seconds": s}
        for v, t, s in ((0.1, 0.2, 3.0), (0.3, 0.4, 1.0), (0.2, 0.3, 2.0))
    ]
    values = summary(rows)
    assert values["valid_ndcg@10"] == pytest.approx(0.2)
    assert values["valid_ndcg@10_sd"] == pytest.approx(0.1)  # sqrt(((0.1)^2 + 0 + (0.1)^2) / 2)
    assert values["test_recall@10_sd"] == 0.0 and values["epoch_seconds"] == 2.0


@pytest.mark.slow
def test_bench_ddp_trains_both_modes_and_reports_their_own_files(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = write_movielens(tmp_path / "raw", users=12, items=8)
    assert main(["prepare", "--source", str(source), "--out", str(tmp_path / "data")]) == 0
    out, work = tmp_path / "out", tmp_path / "work"
    command = ["bench", "ddp", str(tmp_path / "data"), "--seeds", "5", "--out", str(out)]
    command += ["--work", str(work), *(arg for s in SETTINGS for arg in ("--set", s))]
    assert main(command) == 0
    results = json.loads((out / "results.json").read_text())
    assert [(row["mode"], row["seed"]) for row in results["rows"]] == [
        ("one process", 5),
        ("2 processes", 5),
    ]
    for row in results["rows"]:
        folder = work / f"{row['mode'].replace(' ', '_')}_seed5"
        history = json.loads((folder / "history.json").read_text())
        assert row["epochs"] == len(history) == 2
        best = max(history, key=lambda r: r["valid_ndcg@10"])
        assert row["valid_ndcg@10"] == best["valid_ndcg@10"]
        assert 0.0 <= row["test_ndcg@10"] <= row["test_recall@10"] <= 1.0
    config = (work / "2_processes_seed5" / "config.yaml").read_text()
    assert "nproc: 2" in config and "threads: 1" in config
    assert "Median epoch time, 2 processes / one: **" in capsys.readouterr().out
