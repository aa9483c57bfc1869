"""MLflow: one run per training, with params, per-epoch metrics, test metrics, plots and the
model as a pyfunc that answers in raw item ids.

A run ends FINISHED, FAILED on an exception, or KILLED when SIGTERM or SIGINT stops it. A run
whose process died without ending it (SIGKILL, a power cut) is marked KILLED by the next run
that starts: every run is tagged with the host, pid and start time of its process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlparse

import mlflow
import numpy as np
import pandas as pd
import psutil
from mlflow.entities import RunStatus
from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array

from lite_rec.config import PROJECT_ROOT
from lite_rec.split import SPLITS

if TYPE_CHECKING:
    from lite_rec.sequences import SequenceData

EXPERIMENT = "lite_rec"
PIP_REQUIREMENTS = ["torch==2.13.0", "pandas==3.1.1", "mlflow==3.17.2", "transformers==5.24.0"]
ITEM_INDEX_TAG = "lite_rec.item_index"  # on a run whose logged model answers through an index
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
# What MLflow's UI reads from the experiment: its kind (model training, not GenAI, so that the
# UI does not ask a person to choose; the page's view it takes from the browser, see
# `experiment_url`), its description, and a saved runs-table view (the columns a person sees
# first), listed by its name under the runs table's "Views".
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"
RUNS_VIEW = "lite_rec_runs"
RUNS_VIEW_NAME = "lite-rec runs"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW}"
RUNS_VIEW_METRICS = (
    "valid_ndcg_at_10",
    "valid_recall_at_10",
    "test_ndcg_at_10",
    "test_recall_at_10",
)
RUNS_VIEW_PARAMS = ("model.item_repr", "train.recipe", "data.users", "data.items")
EXPERIMENT_DESCRIPTION = """\
Lite-LLM4Rec training runs: one run per training of the Recommendation LLM on one dataset.

- Run name: dataset, item representation (`model.item_repr`) and start time.
- Params: the resolved config (`train.recipe` applied); `data.users`, `data.items`.
- Metrics: `epoch_valid_*` per epoch, `valid_*` of the trained model (full ranking over the
  catalog), `test_*` once `lite-rec evaluate` has run.
- Dataset input: the training interactions, with a digest of the processed data.
- Tags: `lite_rec.dataset`, `dagster.run_id` when Dagster ran it, `lite_rec.gate_decision` and
  `lite_rec.gate_reason` once the gate has judged its model.
- Model: a pyfunc named `lite_rec_<dataset>` that answers in raw item ids, registered as a
  version of the registered model of the same name; `@champion` is what serving loads.
"""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # how MLflow's runs table names a column


# The runs table's saved view: the dataset, the headline metrics and params (MLflow shows
# attribute columns first: its default source and models columns would push the metrics out
# of sight), best validation NDCG@10 first.
RUNS_VIEW_STATE = json.dumps(
    {
        "selectedColumns": [
            _column("attributes", "Dataset"),
            *(_column("metrics", key) for key in RUNS_VIEW_METRICS),
            *(_column("params", key) for key in RUNS_VIEW_PARAMS),
        ],
        "orderByKey": _column("metrics", "valid_ndcg_at_10"),
        "orderByAsc": False,
    }
)
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


def _set_experiment_tag(client, experiment_id: str, key: str, value: str, keep: bool) -> None:
    """Set an experiment tag that processes starting together may all set at once: a tracking
    server backed by a database refuses the second insert of a new key. That is fine when the
    tag now exists (`keep`: whatever its value) or holds `value`; otherwise set it again."""
    try:
        client.set_experiment_tag(experiment_id, key, value)
    except mlflow.exceptions.MlflowException:
        tags = client.get_experiment(experiment_id).tags
        if key not in tags:
            raise
        if not keep and tags[key] != value:
            client.set_experiment_tag(experiment_id, key, value)


def _runs_view_tag(current: str | None) -> str | None:
    """The runs-view tag to write, or None when `current` already holds lite-rec's view: a
    saved view as MLflow's "Views" list reads it (name, state, and its creation and update
    times in milliseconds), keeping the creation time of the view it replaces."""
    try:
        saved = json.loads(current or "")
    except json.JSONDecodeError:
        saved = None
    if not isinstance(saved, dict):
        saved = {}
    if saved.get("name") == RUNS_VIEW_NAME and saved.get("state") == RUNS_VIEW_STATE:
        return None
    now = int(datetime.now().timestamp() * 1000)
    created = saved.get("createdAt")
    return json.dumps(
        {
            "name": RUNS_VIEW_NAME,
            "createdAt": created if isinstance(created, int) else now,
            "updatedAt": now,
            "state": RUNS_VIEW_STATE,
        }
    )


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
        experiment = mlflow.set_experiment(self.experiment)
        self._describe_experiment(experiment)

    def _describe_experiment(self, experiment) -> None:
        """Tag the experiment as model training with a description, where a person has not
        set them, and (re)write lite-rec's runs-table view."""
        client = self.client()
        wanted = {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND, NOTE_TAG: EXPERIMENT_DESCRIPTION}
        for key, value in wanted.items():
            if key not in experiment.tags:
                _set_experiment_tag(client, experiment.experiment_id, key, value, keep=True)
        view = _runs_view_tag(experiment.tags.get(RUNS_VIEW_TAG))
        if view is not None:
            _set_experiment_tag(client, experiment.experiment_id, RUNS_VIEW_TAG, view, keep=False)

    @contextmanager
    def run(
        self, name: str | None = None, run_id: str | None = None, tags: dict[str, str] | None = None
    ):
        """The active MLflow run, new or resumed by `run_id`, with `tags`. It ends FINISHED,
        FAILED on an exception, or KILLED on SIGTERM/SIGINT, after which the process ends as it
        would have.
        A finished run reopened to add to it stays FINISHED whatever stops the addition (tag
        `lite_rec.reopened_outcome` says what). Runs of this experiment whose process died
        first are marked KILLED (a reopened finished run: FINISHED) before it starts."""
        self.activate()
        self.sweep_stale_runs()
        tags = {**(tags or {}), **_process_tags()}
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


def experiment_url(ui_url: str, experiment_id: str) -> str:
    """The MLflow UI page of the experiment's runs in its model-training view, with lite-rec's
    metric and param columns shown. MLflow 3.17.2's UI takes its view (GenAI or model
    training) from the link's `workflowType`, else from the choice last made in the browser's
    sidebar, GenAI in a new browser; it ignores the experiment's kind tag. A link without
    `viewStateShareKey` opens the columns the browser last kept for the experiment: MLflow's
    defaults, none of them a metric, in a new browser (lite-rec's with
    `mlflow server --app-name lite-rec`, `lite_rec.mlflow_server`)."""
    query = f"workflowType=machine_learning&viewStateShareKey={RUNS_VIEW}"
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def model_version_url(ui_url: str, name: str, version: int | str) -> str:
    """The MLflow UI page of a registered model's version."""
    return f"{ui_url.rstrip('/')}/#/models/{quote(name, safe='')}/versions/{version}"


def metric_name(name: str) -> str:
    """MLflow forbids '@': `recall@10` is logged as `recall_at_10`."""
    return name.replace("@", "_at_")


def log_metrics(metrics: dict[str, float], prefix: str = "", step: int | None = None) -> None:
    mlflow.log_metrics({metric_name(prefix + k): v for k, v in metrics.items()}, step=step)


def data_digest(data: SequenceData) -> str:
    """A hash of the processed data (catalog, users, sequences, split points): equal digests
    mean the same training and evaluation data."""
    digest = hashlib.sha256()
    for ids in (data.item_ids, data.user_ids):
        digest.update("\0".join(map(str, ids)).encode())
    digest.update(np.asarray(data.train_lengths, dtype=np.int64).tobytes())
    for sequence in data.sequences:
        digest.update(np.asarray(sequence, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def log_training_data(data: SequenceData, dataset: str, source: str) -> None:
    """Log the interactions the run trains on as the run's MLflow dataset input (its name,
    `data_digest`, source, schema and row count; not the rows themselves)."""
    lengths = [len(sequence) for sequence in data.sequences]
    # Each user's rows are its train items, then its validation item, then its test item.
    per_split = np.column_stack([data.train_lengths, np.ones((len(lengths), 2), dtype=int)])
    splits = np.repeat(np.tile(np.array(SPLITS, dtype=object), len(lengths)), per_split.ravel())
    interactions = pd.DataFrame(
        {
            "user_id": np.repeat(data.user_ids.astype(str), lengths),
            "item_id": data.item_ids.astype(str)[np.concatenate(data.sequences)],
            "split": splits,
        }
    )
    uri = Path(source).resolve().as_uri() if urlparse(source).scheme == "" else source
    with warnings.catch_warnings():
        # MLflow registers its local-file source class twice and warns that it picked one.
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        frame = mlflow.data.from_pandas(
            interactions, source=uri, name=dataset, digest=data_digest(data)
        )
    mlflow.log_input(frame, context="training")


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


def log_pyfunc(
    model_dir: str | Path, name: str = "lite_rec", registered_model_name: str | None = None
):
    """Log the servable part of a model directory (weights, config, catalog and the item
    index when there is one: not the training checkpoint) as a pyfunc model called `name` in
    the active run; optionally register it."""
    from lite_rec.ann import INDEX_FILES, INDEX_REQUIREMENTS

    model_dir = Path(model_dir)
    index_files = [file for file in INDEX_FILES if (model_dir / file).is_file()]
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
        for file in (*SERVING_FILES, *index_files):
            shutil.copy2(model_dir / file, Path(staging) / file)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=LiteRecPyfunc(),
            artifacts={"model_dir": staging},
            code_paths=[str(PROJECT_ROOT / "lite_rec")],
            pip_requirements=PIP_REQUIREMENTS
            + [INDEX_REQUIREMENTS[file] for file in index_files if file in INDEX_REQUIREMENTS],
            input_example=example,
            signature=signature,
            registered_model_name=registered_model_name,
        )


def log_indexed_model(model_dir: str | Path, tracking: Tracking) -> str:
    """Log `model_dir`'s pyfunc again, now holding the item index that `lite-rec index` wrote,
    into the run that trained the folder and under the same name, and point the folder's run
    record (`mlflow_run.json`) at it: what is registered from the folder afterwards answers
    through the index. -> the new model URI"""
    from lite_rec.ann import INDEX_INFO_FILE, index_file
    from lite_rec.errors import InputError
    from lite_rec.outputs import write_file_atomically
    from lite_rec.pipeline import RUN_FILE

    model_dir = Path(model_dir)
    record_file = model_dir / RUN_FILE
    if not (model_dir / INDEX_INFO_FILE).is_file():
        raise InputError(model_dir, f"no {INDEX_INFO_FILE}: run `lite-rec index {model_dir}` first")
    kind = json.loads((model_dir / INDEX_INFO_FILE).read_text())["kind"]
    if not (model_dir / index_file(kind)).is_file():
        raise InputError(
            model_dir, f"no {index_file(kind)}: run `lite-rec index {model_dir}` first"
        )
    record = json.loads(record_file.read_text())
    tracking.activate()
    try:
        logged = mlflow.get_logged_model(record["model_uri"].removeprefix("models:/"))
        run = mlflow.start_run(run_id=record["run_id"])
    except mlflow.exceptions.MlflowException as error:
        raise InputError(
            record_file,
            f"run {record['run_id']} or its model {record['model_uri']} is not in the tracking "
            f"store at {tracking.resolved_uri}; expected the store that trained it: "
            f"{record['tracking_uri']} (or pass --no-log)",
        ) from error
    with run:
        info = log_pyfunc(model_dir, name=logged.name)
        mlflow.set_tag(ITEM_INDEX_TAG, kind)
    write_file_atomically(record_file, json.dumps({**record, "model_uri": info.model_uri}))
    log.info(
        "%s: model with its item index logged to run %s as %s",
        model_dir,
        record["run_id"],
        info.model_uri,
    )
    return info.model_uri
