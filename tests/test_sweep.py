"""`lite-rec bench sweep`: variants trained side by side, each scored, a broken one named, seeds
averaged; `lite-rec bench step-profile` and `lite-rec bench patience-replay`."""

import json
import statistics

import pytest

from lite_rec.cli import main
from lite_rec.prepare import prepare
from tests.conftest import write_movielens


def prepared(tmp_path):
    """A tiny prepared dataset (8 users, 8 items) -> its directory."""
    data_dir = tmp_path / "processed"
    prepare(write_movielens(tmp_path / "raw", users=8, items=8), data_dir)
    return data_dir


def tiny_sweep(tmp_path, tiny_model, *args: str) -> list[str]:
    """`lite-rec bench sweep` on `prepared`'s dataset, 2 epochs of a small model, into tmp/out."""
    return [
        *("bench", "sweep", str(prepared(tmp_path)), *args),
        *("--set", "train.epochs=2", "--set", "model.hidden_size=16"),
        *("--set", "model.max_len=6", "--set", f"item_llm.model={tiny_model}"),
        *("--set", "train.threads=1", "--out", str(tmp_path / "out")),
        *("--cache", str(tmp_path / "cache")),
    ]


def test_sweep_scores_each_variant_and_names_the_one_that_failed(tmp_path, tiny_model) -> None:
    out = tmp_path / "out"
    args = tiny_sweep(
        tmp_path,
        tiny_model,
        *("--variant", "ids:model.item_repr=id"),
        *("--variant", "wide:model.hidden_size=32"),
        *("--variant", "broken:model.item_repr=pixels", "--jobs", "3"),
    )
    with pytest.raises(RuntimeError, match="sweep run.* failed: lite_llm4rec on broken"):
        main(args)
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is False and "pixels" in results["failed"]["broken"]
    rows = {row["variant"]: row for row in results["rows"]}
    assert list(rows) == ["ids", "wide"]  # plan order, whatever finished first
    assert rows["wide"]["overrides"] == ["model.hidden_size=32"]
    assert rows["wide"]["parameters"] > rows["ids"]["parameters"]  # the variant reached the model
    for row in rows.values():
        assert 0.0 <= row["test_recall@10"] <= 1.0 and row["epochs"] == 2
        assert row["recipe"] == "none"  # auto on 8 users
        assert row["infer_seconds_per_1000_users_k10"] > 0 and row["peak_rss_mib"] > 0
    markdown = (out / "results.md").read_text()
    assert "| ids | model.item_repr=id | none |" in markdown and "| wide |" in markdown
    assert "**`broken` failed**" in markdown and "**Incomplete" in markdown


def test_sweep_runs_each_variant_per_seed_and_reports_the_mean(tmp_path, tiny_model) -> None:
    out = tmp_path / "out"
    args = tiny_sweep(tmp_path, tiny_model, "--variant", "base:", "--seeds", "5,3", "--jobs=2")
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {row["variant"]: row for row in results["rows"]}
    assert list(rows) == ["base_seed5", "base_seed3"] and results["complete"] is True
    assert [rows[name]["seed"] for name in ("base_seed5", "base_seed3")] == [5, 3]
    assert rows["base_seed3"]["history"] != rows["base_seed5"]["history"]
    recalls = [rows[name]["test_recall@10"] for name in ("base_seed3", "base_seed5")]
    mean, spread = statistics.mean(recalls), statistics.stdev(recalls)
    summary = (out / "results.md").read_text().splitlines()[-1]
    assert summary.startswith("| base | 3, 5 | ")
    assert summary.split(" | ")[3] == f"{mean:.4f} ({spread:.4f})"  # test R@10


def test_sweep_rejects_a_variant_without_a_name_and_bad_seeds(tmp_path, capsys) -> None:
    assert main(["bench", "sweep", str(tmp_path), "--variant", "x"]) == 2
    assert "expected NAME:key=value" in capsys.readouterr().err
    assert main(["bench", "sweep", str(tmp_path), "--variant", "x:", "--seeds", "1,a"]) == 2
    assert "--seeds '1,a': expected integers" in capsys.readouterr().err
    assert main(["bench", "sweep", str(tmp_path), "--variant", "x:", "--variant", "x:a=1"]) == 2
    assert "names must differ" in capsys.readouterr().err


def test_step_profile_times_each_batch_size_and_names_the_loss(tmp_path, capsys) -> None:
    """One row and one operator table per batch size; --set reaches the model and the loss."""
    data_dir, out = prepared(tmp_path), tmp_path / "out"
    common = ["bench", "step-profile", str(data_dir), "--steps", "2", "--top", "40"]
    assert (
        main([*common, "--batch-sizes", "4,2", "--set", "train.threads=1", "--out", str(out)]) == 0
    )
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [row["batch_size"] for row in rows] == [4, 2]
    for row in rows:
        assert row["timed_steps"] == 2 and row["median_step_ms"] > 0
        assert "LinearCrossEntropy" in row["operators"]  # the fused loss, in each table
    assert (out / "results.md").read_text().count("LinearCrossEntropy") == 2
    capsys.readouterr()
    assert main([*common, "--set", "model.item_repr=pixels"]) == 2
    assert "pixels" in capsys.readouterr().err
    sampled = [
        "--batch-sizes",
        "2",
        "--set",
        "train.loss=sampled",
        "--set",
        "train.num_negatives=3",
    ]
    assert main([*common, *sampled]) == 0  # the step trains as the trainer does:
    printed = capsys.readouterr().out
    assert "| 2 |" in printed and "LinearCrossEntropy" not in printed


def _recorded_run(path, scores: list[float]):
    """A sweep results.json with one run whose validation NDCG@10 per epoch is `scores`."""
    history = [{"epoch": e, "valid_ndcg@10": v} for e, v in enumerate(scores, start=1)]
    path.write_text(json.dumps({"rows": [{"variant": "v", "seed": 1, "history": history}]}))
    return str(path)


def test_patience_replay_stops_where_training_would_and_refuses_a_wrong_record(
    tmp_path, capsys
) -> None:
    # Recorded with patience 3, min_delta 0.005: 0.26 beats 0.25 by 0.01, so epoch 5 is the best
    # and epochs 6-8 are the three bad ones that stopped it.
    run = _recorded_run(tmp_path / "results.json", [0.1, 0.2, 0.25, 0.24, 0.26, 0.2, 0.2, 0.2])
    common = ["bench", "patience-replay", run, "--recorded", "3", "--min-delta", "0.005"]
    assert main([*common, "--patience", "1,2"]) == 0
    printed = capsys.readouterr().out
    # Patience 1 stops at the first bad epoch (4), keeping epoch 3: 0.26 - 0.25 given up;
    # patience 2 survives epoch 4, reaches epoch 5 and stops at 7.
    assert "| 8 (5), 0.2600 | 4 (3), 0.0100 | 7 (5), 0.0000 |" in printed
    assert "patience 1: 4 epochs fewer over 1 runs" in printed
    # With min_delta 0.02, 0.26 is no better than 0.25: a patience-3 run would have stopped
    # at epoch 6, so these are not the recorded settings.
    wrong = ["bench", "patience-replay", run, "--recorded", "3", "--min-delta", "0.02"]
    assert main([*wrong, "--patience", "2"]) == 2
    assert (
        "ran 8 epochs, but patience 3 with min_delta 0.02 stops it at 6" in capsys.readouterr().err
    )
    assert main([*common, "--patience", "4"]) == 2
    assert "at most the recorded patience 3" in capsys.readouterr().err
