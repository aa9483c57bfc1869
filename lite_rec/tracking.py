"""MLflow: one run per training, with params, per-epoch metrics, test metrics, plots and the
model as a pyfunc that answers in raw item ids.

A run ends FINISHED, FAILED on an exception, or KILLED when SIGTERM or SIGINT stops it. A run
whose process died without ending it (SIGKILL, a power cut) is marked KILLED by the next run
that starts: every run is tagged with the host, pid and start time of its process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pandas as pd
import psutil
from mlflow.entities import RunStatus
from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array

from lite_rec.config import PROJECT_ROOT

EXPERIMENT = "lite_rec"
PIP_REQUIREMENTS = ["torch==2.13.0", "pandas==3.1.1", "mlflow==3.17.2", "transformers==5.24.0"]
ACCEPTED_URIS = (
    "sqlite:///PATH.db (four slashes for an absolute path), postgresql://USER@HOST/DB, "
    "http(s)://HOST:PORT, or file:///ABS/DIR with MLFLOW_ALLOW_FILE_STORE=true"
)
HOST_TAG = "lite_rec.host"
PID_TAG = "lite_rec.pid"
PROCESS_START_TAG = "lite_rec.process_start"  # seconds since the epoch, as psutil gives it
KILLED_REASON_TAG = "lite_rec.killed_reason"
# On a finished run reopened to add to it (evaluate logs test metrics onto the training run):
# an interrupted addition leaves the run FINISHED, its training having finished, and says so.
REOPENED_TAG = "lite_rec.reopened_finished_run"
REOPENED_OUTCOME_TAG = "lite_rec.reopened_outcome"
# psutil derives a start time from boot time and clock ticks: it can move by a tick or so.
START_TIME_TOLERANCE_SECONDS = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
KILLED = RunStatus.to_string(RunStatus.KILLED)
FINISHED = RunStatus.to_string(RunStatus.FINISHED)

log = logging.getLogger(__name__)


def default_tracking_uri() -> str:
    """A local SQLite store, `mlruns/mlflow.db`, with artifacts beside it."""
    return f"sqlite:///{PROJECT_ROOT / 'mlruns' / 'mlflow.db'}"


def check_tracking_uri(uri: str, source: str) -> str:
    """`uri` unchanged, or a ValueError naming `source` (the option or variable it came from)
    and the accepted forms when it is a plain path, which MLflow would take for its file store,
    or a file store URI that MLflow refuses to open."""
    scheme = urlparse(uri).scheme
    if len(scheme) <= 1:  # no scheme, or a Windows drive letter
        raise ValueError(f"{source} {uri!r} is a plain path; give a tracking URI: {ACCEPTED_URIS}")
    if scheme == "file" and not MLFLOW_ALLOW_FILE_STORE.get():
        raise ValueError(
            f"{source} {uri!r}: MLflow opens a file store only with MLFLOW_ALLOW_FILE_STORE=true "
            f"(it keeps that store in maintenance mode); give a tracking URI: {ACCEPTED_URIS}"
        )
    return uri


class _Stopped(BaseException):
    """Unwinds a run on a signal that, before the run, would have ended the process."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """While open (in the main thread: only it receives signals), SIGTERM and SIGINT unwind the
    code inside before doing what they did before: a default handler ends the process by the
    same signal once the block has closed, a Python handler (SIGINT's KeyboardInterrupt) runs
    as it would have. Yields the signals received. An ignored signal stays ignored."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    # None is a handler installed outside Python, which signal.signal could not put back.
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    previous = {s: h for s, h in handlers.items() if h not in (None, signal.SIG_IGN)}

    def on_signal(signum: int, frame) -> None:
        received.append(signum)
        handler = previous[signum]
        if not callable(handler):  # SIG_DFL
            raise _Stopped(signum)
        handler(signum, frame)

    for signum in previous:
        signal.signal(signum, on_signal)
    try:
        yield received
    except _Stopped as stopped:
        signal.signal(stopped.signum, signal.SIG_DFL)
        os.kill(os.getpid(), stopped.signum)
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _process_tags() -> dict[str, str]:
    process = psutil.Process()
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(process.pid),
        PROCESS_START_TAG: f"{process.create_time():.2f}",
    }


def _process_alive(pid: int, started: float) -> bool:
    """Whether process `pid` of this host still runs and is the one that started at `started`
    (a pid freed by its process can be given to a new one)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(process.create_time() - started) <= START_TIME_TOLERANCE_SECONDS
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # another user's process: it exists, and it may be the one


@dataclass
class Tracking:
    """Where runs go. `uri` accepts any MLflow tracking URI but a plain path."""

    uri: str = ""
    experiment: str = EXPERIMENT

    @property
    def resolved_uri(self) -> str:
        if self.uri:
            return check_tracking_uri(self.uri, "--tracking-uri")
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return check_tracking_uri(os.environ["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI")
        return default_tracking_uri()

    def activate(self) -> None:
        """Point MLflow at the store and experiment, creating them with a stable absolute
        artifact location when they do not exist."""
        uri = self.resolved_uri
        artifacts = None
        if uri.startswith("sqlite:///"):
            database = Path(uri.removeprefix("sqlite:///")).resolve()  # relative to the cwd
            database.parent.mkdir(parents=True, exist_ok=True)
            artifacts = (database.parent / "artifacts").as_uri()
        mlflow.set_tracking_uri(uri)
        if mlflow.get_experiment_by_name(self.experiment) is None:
            try:
                mlflow.create_experiment(self.experiment, artifact_location=artifacts)
            except mlflow.exceptions.MlflowException:
                # Another process created it first (first runs started together): use it.
                if mlflow.get_experiment_by_name(self.experiment) is None:
                    raise
        mlflow.set_experiment(self.experiment)

    @contextmanager
    def run(self, name: str | None = None, run_id: str | None = None):
        """The active MLflow run, new or resumed by `run_id`. It ends FINISHED, FAILED on an
        exception, or KILLED on SIGTERM/SIGINT, after which the process ends as it would have.
        A finished run reopened to add to it stays FINISHED whatever stops the addition (tag
        `lite_rec.reopened_outcome` says what). Runs of this experiment whose process died
        first are marked KILLED (a reopened finished run: FINISHED) before it starts."""
        self.activate()
        self.sweep_stale_runs()
        tags = _process_tags()
        reopened = run_id is not None and self.client().get_run(run_id).info.status == FINISHED
        if reopened:
            tags[REOPENED_TAG] = "true"
        with (
            _stop_signals() as received,
            mlflow.start_run(run_name=name, run_id=run_id, tags=tags) as active,
        ):
            try:
                yield active
            except BaseException as error:
                outcome = "killed" if received else f"failed: {type(error).__name__}"
                if reopened:
                    mlflow.set_tag(REOPENED_OUTCOME_TAG, outcome)
                    mlflow.end_run(FINISHED)
                elif received:
                    mlflow.end_run(KILLED)
                raise

    def sweep_stale_runs(self) -> list[str]:
        """Mark KILLED, with a tag saying why, the experiment's RUNNING runs that a process of
        this host started and that process is gone; returns their ids. Runs of other hosts, or
        without the process tags, are left as they are: nothing here can tell if they live."""
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return []
        host = socket.gethostname()
        running = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
        stale = []
        for run in running:
            tags = run.data.tags
            if tags.get(HOST_TAG) != host or PID_TAG not in tags or PROCESS_START_TAG not in tags:
                continue
            pid, started = int(tags[PID_TAG]), float(tags[PROCESS_START_TAG])
            if _process_alive(pid, started):
                continue
            since = datetime.fromtimestamp(started).isoformat(timespec="seconds")
            # A reopened finished run (evaluate adding to its training run) stays FINISHED.
            ended = FINISHED if tags.get(REOPENED_TAG) == "true" else KILLED
            reason = (
                f"process {pid} on {host} (started {since}) ended without ending the run; "
                f"marked {ended} by process {os.getpid()}"
            )
            client.set_tag(run.info.run_id, KILLED_REASON_TAG, reason)
            client.set_terminated(run.info.run_id, ended)
            stale.append(run.info.run_id)
        if stale:
            log.warning(
                "marked %d MLflow run(s) KILLED whose process on %s is gone: %s",
                len(stale),
                host,
                ", ".join(stale),
            )
        return stale

    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(tracking_uri=self.resolved_uri)


def metric_name(name: str) -> str:
    """MLflow forbids '@': `recall@10` is logged as `recall_at_10`."""
    return name.replace("@", "_at_")


def log_metrics(metrics: dict[str, float], prefix: str = "", step: int | None = None) -> None:
    mlflow.log_metrics({metric_name(prefix + k): v for k, v in metrics.items()}, step=step)


class LiteRecPyfunc(mlflow.pyfunc.PythonModel):
    """Input: a table with a `history` column (a list of raw item ids, oldest first) and an
    optional `k` (1 to `serving.max_k`), at most `serving.max_rows` rows. Output: per row,
    `item_ids` (the top-k raw ids, best first) and `scores`. A bad request raises an
    `INVALID_PARAMETER_VALUE` error (HTTP 400 under `mlflow models serve`) naming the row."""

    def load_context(self, context) -> None:
        from lite_rec.config import load_config
        from lite_rec.serving import Recommender

        self.recommender = Recommender.load(context.artifacts["model_dir"])
        self.limits = load_config().serving

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from lite_rec.errors import InputError
        from lite_rec.serving import parse_requests

        try:
            histories, ks = parse_requests(
                pd.DataFrame(model_input), (params or {}).get("k", 10), self.limits
            )
            rows = self.recommender.recommend(histories, ks)
        except (InputError, ValueError) as error:
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error
        return pd.DataFrame(
            {
                "item_ids": [[item for item, _ in row] for row in rows],
                "scores": [[score for _, score in row] for row in rows],
            }
        )


SERVING_FILES = ("model.pt", "model_config.json", "catalog.json")


def log_pyfunc(model_dir: str | Path, registered_model_name: str | None = None):
    """Log the servable part of a model directory (weights, config, catalog: not the training
    checkpoint) as a pyfunc in the active run; optionally register it."""
    model_dir = Path(model_dir)
    item_ids = json.loads((model_dir / "catalog.json").read_text())["item_ids"]
    example = pd.DataFrame({"history": [item_ids[:3]], "k": [10]})
    # Explicit, so that `k` is optional: inferring from the example would require it.
    signature = ModelSignature(
        inputs=Schema(
            [
                ColSpec(Array(DataType.string), "history"),
                ColSpec(DataType.long, "k", required=False),
            ]
        ),
        outputs=Schema(
            [ColSpec(Array(DataType.string), "item_ids"), ColSpec(Array(DataType.double), "scores")]
        ),
    )
    with tempfile.TemporaryDirectory() as staging:
        for name in SERVING_FILES:
            shutil.copy2(model_dir / name, Path(staging) / name)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=LiteRecPyfunc(),
            artifacts={"model_dir": staging},
            code_paths=[str(PROJECT_ROOT / "lite_rec")],
            pip_requirements=PIP_REQUIREMENTS,
            input_example=example,
            signature=signature,
            registered_model_name=registered_model_name,
        )
