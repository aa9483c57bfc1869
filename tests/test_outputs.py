"""Commands that write never delete or mix what is there: `--out` is refused unless lite-rec
wrote it, a model folder is replaced whole, and one writer at a time."""

import json
import os
from pathlib import Path

import pytest

from lite_rec import pipeline
from lite_rec.cli import main
from lite_rec.config import Config, ModelConfig, TrainConfig
from lite_rec.outputs import (
    MARKER_FILE,
    OutputError,
    output_lock,
    staged_output,
    write_file_atomically,
)
from lite_rec.tracking import Tracking
from tests.conftest import cyclic_data, write_movielens


def prepare(source: Path, out: Path) -> int:
    return main(["prepare", "--source", str(source), "--out", str(out)])


def listing(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def test_prepare_refuses_a_folder_it_did_not_write_and_keeps_its_files(tmp_path, capsys):
    source = write_movielens(tmp_path / "raw")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    assert prepare(source, out) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert f"--out {out}" in error and "not written by lite-rec" in error and "notes.txt" in error
    assert listing(out) == {"notes.txt": b"my notes"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "raw"]


@pytest.mark.parametrize("where", ["equal", "inside"])
def test_prepare_never_writes_into_its_source(tmp_path, capsys, where):
    source = write_movielens(tmp_path / "raw")
    before = listing(source)
    out = source if where == "equal" else source / "processed"
    assert prepare(source, out) == 2
    assert "inside the input" in capsys.readouterr().err
    assert listing(source) == before


def test_prepare_refuses_a_file_as_out_and_leaves_it_in_place(tmp_path, capsys):
    source = write_movielens(tmp_path / "raw")
    out = tmp_path / "out.parquet"
    out.write_bytes(b"a user's file")
    assert prepare(source, out) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert out.read_bytes() == b"a user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet", "raw"]


def test_prepare_replaces_its_own_output_whole(tmp_path):
    source = write_movielens(tmp_path / "raw")
    out = tmp_path / "processed"
    assert prepare(source, out) == 0
    assert json.loads((out / MARKER_FILE).read_text())["kind"] == "prepared"
    (out / "stats.json").write_text("{}")  # an older output's file
    assert prepare(source, out) == 0
    assert json.loads((out / "stats.json").read_text())["users"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["processed", "raw"]  # no leftovers


def test_an_output_of_another_kind_is_refused(tmp_path):
    out = tmp_path / "out"
    with staged_output(out, "prepared", ["stats.json"]):
        pass
    with pytest.raises(OutputError, match="holds lite-rec's 'prepared' output, not a 'model'"):
        with staged_output(out, "model", ["model.pt"]):
            pass


def test_a_second_writer_is_refused_while_the_first_writes(tmp_path):
    out = tmp_path / "model"
    with output_lock(out):
        with pytest.raises(OutputError, match=r"another lite-rec command \(pid \d+\) is writing"):
            with staged_output(out, "model", ["model.pt"]):
                pass
    assert not out.with_name(".model.lock").exists()
    with staged_output(out, "model", ["model.pt"]) as staging:
        (staging / "model.pt").write_text("weights")
    assert (out / "model.pt").read_text() == "weights"


def test_a_failed_write_leaves_the_older_output_as_it_was(tmp_path):
    out = tmp_path / "out"
    with staged_output(out, "prepared", ["stats.json"]) as staging:
        (staging / "stats.json").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_output(out, "prepared", ["stats.json"]) as staging:
            (staging / "stats.json").write_text("new")
            raise RuntimeError("killed")
    assert (out / "stats.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def tiny_config(epochs: int) -> Config:
    return Config(
        model=ModelConfig(item_repr="id", hidden_size=16, num_layers=1, num_heads=2, max_len=8),
        train=TrainConfig(epochs=epochs, batch_size=16, patience=epochs, threads=1),
    )


def test_a_training_killed_midway_leaves_the_model_folder_whole_and_resumes(tmp_path, monkeypatch):
    data = cyclic_data(12, 24)
    tracking = Tracking(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    out = tmp_path / "model"
    first = pipeline.train_rec_model(data, None, tiny_config(2), out, tracking, progress=False)
    before = listing(out)
    real_train = pipeline.train

    def killed_after_one_epoch(*args, on_epoch_end, **kwargs):
        def stop(row):
            on_epoch_end(row)
            raise KeyboardInterrupt  # a kill between two epochs

        return real_train(*args, on_epoch_end=stop, **kwargs)

    monkeypatch.setattr(pipeline, "train", killed_after_one_epoch)
    with pytest.raises(KeyboardInterrupt):
        pipeline.train_rec_model(data, None, tiny_config(4), out, tracking, progress=False)
    assert listing(out) == before  # the older model, whole: weights, run file and history
    assert (tmp_path / ".model.partial" / "checkpoint.pt").exists()

    monkeypatch.setattr(pipeline, "train", real_train)
    second = pipeline.train_rec_model(data, None, tiny_config(4), out, tracking, progress=False)
    assert len(second.history) == 4 and second.run_id != first.run_id
    assert json.loads((out / pipeline.RUN_FILE).read_text())["run_id"] == second.run_id
    assert json.loads((out / "history.json").read_text()) == second.history
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlruns", "model"]


def test_evaluate_refuses_to_overwrite_a_file_that_is_not_its_metrics(tmp_path, capsys):
    out = tmp_path / "report.json"
    out.write_text('{"title": "my report"}')
    code = main(["evaluate", str(tmp_path / "data"), str(tmp_path / "model"), "--out", str(out)])
    assert code == 2
    assert "not a metrics file lite-rec wrote" in capsys.readouterr().err
    assert out.read_text() == '{"title": "my report"}'


def test_outputs_get_the_permissions_mkdir_and_open_would_give(tmp_path):
    with staged_output(tmp_path / "out", "prepared", ["stats.json"]) as staging:
        (staging / "stats.json").write_text("{}")
    write_file_atomically(tmp_path / "metrics.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~mask
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~mask
