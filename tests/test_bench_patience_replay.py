import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
from patience_replay import replay  # noqa: E402


def test_replay_stops_where_training_would():
    scores = [0.1, 0.2, 0.25, 0.24, 0.26, 0.2, 0.2, 0.2]
    # min_delta 0.005: 0.26 beats 0.25 by 0.01 -> best epoch 5; three bad epochs after it.
    assert replay(scores, patience=3, min_delta=0.005) == (8, 5)
    # Patience 1 stops at the first bad epoch (4) with epoch 3 kept.
    assert replay(scores, patience=1, min_delta=0.005) == (4, 3)
    # 0.26 does not beat 0.25 by more than 0.02: epoch 3 stays best, stop 3 epochs after it.
    assert replay(scores, patience=3, min_delta=0.02) == (6, 3)
    # Never stopped: every epoch ran.
    assert replay(scores[:5], patience=3, min_delta=0.0) == (5, 5)


def _write_run(path: Path, scores: list[float]) -> Path:
    history = [{"epoch": e, "valid_ndcg@10": s} for e, s in enumerate(scores, start=1)]
    path.write_text(json.dumps({"rows": [{"variant": "v", "seed": 1, "history": history}]}))
    return path


def test_replay_table_and_a_history_that_does_not_match_the_recorded_patience(tmp_path):
    run = _write_run(tmp_path / "results.json", [0.1, 0.3, 0.29, 0.28, 0.31, 0.3, 0.3, 0.3])
    command = [sys.executable, str(BENCH / "patience_replay.py"), str(run), "--recorded", "3"]
    out = subprocess.run(
        [*command, "--patience", "2", "--min-delta", "0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # Patience 2 stops at epoch 4 keeping epoch 2: 0.31 - 0.3 given up.
    assert "| 8 (5), 0.3100 | 4 (2), 0.0100 |" in out
    assert "patience 2: 4 epochs fewer over 1 runs" in out
    # A run recorded with patience 2 would have stopped at epoch 4, not run 8 epochs.
    wrong = subprocess.run(
        [*command[:-1], "2", "--patience", "1", "--min-delta", "0"], capture_output=True, text=True
    )
    assert wrong.returncode != 0
    assert "ran 8 epochs, but patience 2 with min_delta 0 stops it at 4" in wrong.stderr
    longer = subprocess.run([*command, "--patience", "4"], capture_output=True, text=True)
    assert longer.returncode == 2 and "at most the recorded patience 3" in longer.stderr
