"""MLflow runs end with the status of how their training ended, killed ones included; the
experiment opens in MLflow's UI as model training, with a description and a runs view."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import pytest

from lite_rec.cli import main
from lite_rec.tracking import (
    EXPERIMENT_KIND_TAG,
    HOST_TAG,
    KILLED_REASON_TAG,
    PID_TAG,
    PROCESS_START_TAG,
    REOPENED_OUTCOME_TAG,
    REOPENED_TAG,
    RUNS_VIEW_TAG,
    Tracking,
    experiment_url,
    model_version_url,
    run_url,
)

REPO = Path(__file__).resolve().parents[1]
# A training that takes long enough to be stopped: it prints its run id, then waits.
VICTIM = """
import signal, sys, time
from lite_rec.tracking import Tracking
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, not a background job
with Tracking(sys.argv[1]).run(name="victim") as run:
    print(run.info.run_id, flush=True)
    time.sleep(120)
"""


@pytest.fixture
def tracking(tmp_path: Path) -> Tracking:
    return Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")


def status(tracking: Tracking, run_id: str) -> str:
    return tracking.client().get_run(run_id).info.status


def start_victim(tracking: Tracking) -> tuple[subprocess.Popen, str]:
    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM, tracking.uri],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_id = victim.stdout.readline().strip()
    if not run_id:
        victim.kill()
        pytest.fail(f"the tracked process died before its run started: {victim.stderr.read()}")
    return victim, run_id


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_stopped_run_ends_killed_and_the_process_exits_by_the_signal(
    tracking: Tracking, stop: signal.Signals
) -> None:
    victim, run_id = start_victim(tracking)
    assert status(tracking, run_id) == "RUNNING"
    victim.send_signal(stop)
    assert victim.wait(timeout=60) == -stop
    victim.stderr.close()
    assert status(tracking, run_id) == "KILLED"


def test_run_of_a_process_killed_outright_is_marked_killed_by_the_next_start(
    tracking: Tracking, caplog: pytest.LogCaptureFixture
) -> None:
    victim, run_id = start_victim(tracking)
    victim.kill()
    assert victim.wait(timeout=60) == -signal.SIGKILL
    victim.stderr.close()
    assert status(tracking, run_id) == "RUNNING"

    with caplog.at_level(logging.WARNING, logger="lite_rec.tracking"):
        with tracking.run(name="next"):
            pass
        with tracking.run(name="after"):
            pass
    run = tracking.client().get_run(run_id)
    assert run.info.status == "KILLED"
    assert f"process {victim.pid} on {socket.gethostname()}" in run.data.tags[KILLED_REASON_TAG]
    (warning,) = caplog.records  # once: a KILLED run is not swept again
    assert run_id in warning.getMessage()


def test_exception_ends_run_failed(tracking: Tracking) -> None:
    with pytest.raises(RuntimeError), tracking.run(name="broken") as run:
        raise RuntimeError("diverged")
    assert status(tracking, run.info.run_id) == "FAILED"


def test_a_finished_run_reopened_stays_finished_whatever_stops_the_addition(
    tracking: Tracking,
) -> None:
    with tracking.run(name="training") as run:
        pass
    with pytest.raises(KeyboardInterrupt), tracking.run(run_id=run.info.run_id):
        mlflow.log_metric("test_recall_at_10", 0.1)
        raise KeyboardInterrupt  # evaluate stopped half-way
    finished = tracking.client().get_run(run.info.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.tags[REOPENED_OUTCOME_TAG] == "failed: KeyboardInterrupt"


def test_a_reopened_finished_run_whose_process_died_is_swept_back_to_finished(
    tracking: Tracking,
) -> None:
    tracking.activate()
    client = tracking.client()
    experiment_id = client.get_experiment_by_name(tracking.experiment).experiment_id
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    tags |= {PROCESS_START_TAG: "1000000000.00", REOPENED_TAG: "true"}
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    assert tracking.sweep_stale_runs() == [run_id]
    assert status(tracking, run_id) == "FINISHED"
    assert "marked FINISHED" in client.get_run(run_id).data.tags[KILLED_REASON_TAG]


def test_live_run_of_this_process_is_never_swept(tracking: Tracking) -> None:
    with tracking.run(name="live") as run:
        assert tracking.sweep_stale_runs() == []
        assert status(tracking, run.info.run_id) == "RUNNING"
    assert status(tracking, run.info.run_id) == "FINISHED"


def test_sweep_tells_a_reused_pid_from_its_first_process_and_skips_other_hosts(
    tracking: Tracking,
) -> None:
    tracking.activate()
    client = tracking.client()
    experiment_id = client.get_experiment_by_name(tracking.experiment).experiment_id

    def running_run(host: str, pid: int, started: str) -> str:
        tags = {HOST_TAG: host, PID_TAG: str(pid), PROCESS_START_TAG: started}
        return client.create_run(experiment_id, tags=tags).info.run_id

    reused = running_run(socket.gethostname(), os.getpid(), "1000000000.00")  # 2001
    elsewhere = running_run("another-host", 1, "1000000000.00")
    untagged = client.create_run(experiment_id).info.run_id
    assert tracking.sweep_stale_runs() == [reused]
    assert [status(tracking, run_id) for run_id in (reused, elsewhere, untagged)] == [
        "KILLED",
        "RUNNING",
        "RUNNING",
    ]


def test_signal_handlers_are_installed_for_the_run_only(tracking: Tracking) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with tracking.run(name="handled"):
        assert signal.getsignal(signal.SIGTERM) not in before
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_run_in_a_worker_thread_leaves_signal_handlers_alone(tracking: Tracking) -> None:
    tracking.activate()  # the experiment, created once outside the thread
    before = signal.getsignal(signal.SIGTERM)
    seen, errors = [], []

    def train() -> None:
        try:
            with tracking.run(name="threaded") as run:
                seen.append(signal.getsignal(signal.SIGTERM))
            seen.append(run.info.run_id)
        except Exception as error:  # reported below, in the main thread
            errors.append(error)

    worker = threading.Thread(target=train)
    worker.start()
    worker.join(timeout=60)
    assert not errors and seen[0] is before
    assert status(tracking, seen[1]) == "FINISHED"


@pytest.mark.parametrize("uri", ["mlruns", "/tmp/mlruns", "./runs/mlflow.db"])
def test_plain_path_uri_is_refused_naming_the_option_and_the_accepted_forms(uri: str) -> None:
    with pytest.raises(ValueError, match=r"--tracking-uri .* plain path") as error:
        Tracking(uri).activate()
    for accepted in ("sqlite:///", "file:///", "http(s)://", "postgresql://"):
        assert accepted in str(error.value)


def test_plain_path_in_the_environment_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "mlruns")
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_URI 'mlruns' is a plain path"):
        Tracking().client()


def test_file_store_is_refused_unless_mlflow_allows_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ValueError, match="MLFLOW_ALLOW_FILE_STORE=true"):
        Tracking(tmp_path.as_uri()).activate()


def test_cli_turns_a_plain_path_uri_into_one_line_and_exit_2(
    capsys: pytest.CaptureFixture,
) -> None:
    assert main(["rollback", "--model", "m", "--tracking-uri", "mlruns"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "--tracking-uri 'mlruns' is a plain path" in line


def test_relative_sqlite_uri_keeps_artifacts_at_an_absolute_location(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    tracking = Tracking("sqlite:///runs/mlflow.db")
    with tracking.run(name="relative") as run:
        pass
    assert run.info.artifact_uri.startswith((tmp_path / "runs" / "artifacts").as_uri())
    assert status(tracking, run.info.run_id) == "FINISHED"
    mlflow.set_tracking_uri(None)  # the relative URI means another store once the cwd is back


def test_ui_links_name_the_run_the_model_version_and_the_training_view() -> None:
    ui = "http://127.0.0.1:5000/"
    assert run_url(ui, "3", "abc") == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    assert (
        model_version_url(ui, "lite_rec_ml-latest-small", 2)
        == "http://127.0.0.1:5000/#/models/lite_rec_ml-latest-small/versions/2"
    )
    assert experiment_url(ui, "3") == (
        "http://127.0.0.1:5000/#/experiments/3/runs"
        "?workflowType=machine_learning&viewStateShareKey=lite_rec_runs"
    )


def test_the_experiment_is_model_training_with_a_description_and_a_runs_view(
    tracking: Tracking,
) -> None:
    with tracking.run(name="tagged", tags={"dagster.run_id": "r-1"}) as run:
        pass
    client = tracking.client()
    assert client.get_run(run.info.run_id).data.tags["dagster.run_id"] == "r-1"
    experiment = client.get_experiment_by_name(tracking.experiment)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert "one run per training" in experiment.tags["mlflow.note.content"]
    saved = json.loads(experiment.tags[RUNS_VIEW_TAG])  # as MLflow's "Views" list reads it
    assert saved["name"] == "lite-rec runs"
    assert isinstance(saved["createdAt"], int) and saved["updatedAt"] == saved["createdAt"]
    view = json.loads(saved["state"])
    assert "metrics.`valid_ndcg_at_10`" in view["selectedColumns"]
    assert "params.`model.item_repr`" in view["selectedColumns"]
    assert view["orderByKey"] == "metrics.`valid_ndcg_at_10`" and view["orderByAsc"] is False
    # A current view is left as it is: its times do not move.
    tracking.activate()
    assert (
        client.get_experiment(experiment.experiment_id).tags[RUNS_VIEW_TAG]
        == (experiment.tags[RUNS_VIEW_TAG])
    )
    # What a person wrote stays; the view is lite-rec's own and is kept current, created when
    # the view it replaces was.
    client.set_experiment_tag(experiment.experiment_id, "mlflow.note.content", "mine")
    stale = {"name": "old", "createdAt": 123, "updatedAt": 456, "state": "{}"}
    client.set_experiment_tag(experiment.experiment_id, RUNS_VIEW_TAG, json.dumps(stale))
    tracking.activate()
    tags = client.get_experiment(experiment.experiment_id).tags
    assert tags["mlflow.note.content"] == "mine"
    rewritten = json.loads(tags[RUNS_VIEW_TAG])
    assert (rewritten["name"], rewritten["createdAt"]) == ("lite-rec runs", 123)
    assert rewritten["updatedAt"] > 456 and json.loads(rewritten["state"]) == view
    # A view in the form MLflow wrote before it named views (the bare state) is replaced.
    client.set_experiment_tag(experiment.experiment_id, RUNS_VIEW_TAG, json.dumps(view))
    tracking.activate()
    rewritten = json.loads(client.get_experiment(experiment.experiment_id).tags[RUNS_VIEW_TAG])
    assert rewritten["name"] == "lite-rec runs" and json.loads(rewritten["state"]) == view
