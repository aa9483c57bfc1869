"""The MLflow model registry: one registered model per dataset, a gate that promotes a new
version to `champion` only when it beats the current one on the same validation data, and
manual promotion and rollback for people.

Aliases: `challenger` always marks the newest registered version (it also carries `champion`
when the gate promoted it); `champion` is what `models:/NAME@champion` serves. The order in
which versions became champion is kept in the registered model's `champion_history` tag, which
`rollback` walks back.

Promotion is atomic across processes and machines: every writer of the champion (the gate,
`promote`, `rollback`) takes one lock per registered model and re-reads the champion inside it.
The lock is a PostgreSQL advisory lock when the tracking store is PostgreSQL or when
`LITE_REC_REGISTRY_LOCK_URI` names a PostgreSQL database every writer reaches (required for a
tracking server over http: the server offers no lock of its own), and an exclusive file lock
beside the store for sqlite and file stores. A killed holder releases it: the database ends
its session, the kernel its file lock.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from lite_rec.config import Config
from lite_rec.metrics import ranking_metrics
from lite_rec.ranking import rank_catalog
from lite_rec.sequences import SequenceData
from lite_rec.tracking import Tracking, metric_name

if TYPE_CHECKING:
    from lite_rec.pipeline import TrainedModel

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"
FINGERPRINT_TAG = "eval_fingerprint"
REFIT_TAG = "train_refit_epochs"
RESCORED_REFIT = (
    "the champion had refit epochs and is re-scored on new validation data, part of which it "
    "trained on: its value is flattered"
)
# On the training run, once the gate has judged its model.
GATE_DECISION_TAG = "lite_rec.gate_decision"
GATE_REASON_TAG = "lite_rec.gate_reason"
MODEL_DESCRIPTION = """\
Lite-LLM4Rec next-item recommender trained on {dataset}. Input: a table with a `history` column
(raw item ids, oldest first) and an optional `k`; output per row: `item_ids` (the top-k raw
ids, best first) and `scores`.

`@champion` is the version serving loads (`models:/{name}@champion`), `@challenger` the newest
version. The gate registers every trained model and promotes it to champion when its
validation metric beats the champion's, both scored on the same validation data; each
version's description says what changed and what the gate decided.
"""
MISS_RANK = 10**9  # the rank of a target the model cannot recommend: outside every top-k
_process_lock = threading.Lock()


@dataclass
class GatePolicy:
    """Promote when `metric` (a logged validation metric) beats the champion's by more than
    `min_margin`."""

    metric: str = "valid_ndcg_at_10"
    min_margin: float = 0.0


@dataclass
class GateDecision:
    name: str
    version: int
    promoted: bool
    reason: str
    metric: str
    challenger_value: float
    champion_version: int | None  # the champion compared against (None: there was none)
    champion_value: float | None


def dataset_name(config: Config) -> str:
    """The dataset a config trains on: its source folder's name, e.g. `ml-latest-small`."""
    return Path(config.data.source).name


def registered_model_name(dataset: str) -> str:
    """`lite_rec_<dataset>`, e.g. `lite_rec_ml-latest-small`."""
    return "lite_rec_" + re.sub(r"[^A-Za-z0-9_-]+", "_", dataset).strip("_")


def evaluation_fingerprint(data: SequenceData) -> str:
    """A hash of the validation split in raw ids: equal fingerprints mean equal metrics."""
    histories, targets = data.histories_and_targets("valid")
    raw = data.item_ids
    payload = [[raw[h].tolist() for h in histories], raw[targets].tolist(), list(raw)]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def validation_metrics(model_uri: str, data: SequenceData) -> dict[str, float]:
    """Validation metrics of any registered model on `data`, through raw ids, so a model
    trained on another catalog is judged on the same users and targets: history items it does
    not know are dropped, and a target it does not know is a miss."""
    recommender = mlflow.pyfunc.load_model(model_uri).unwrap_python_model().recommender
    model, index_of = recommender.model, recommender.index_of
    histories, targets = data.histories_and_targets("valid")
    raw = data.item_ids
    histories = [
        np.array([index_of[i] for i in raw[h] if i in index_of], dtype=np.int64) for h in histories
    ]
    targets = np.array([index_of.get(item, -1) for item in raw[targets]], dtype=np.int64)
    ranks = np.full(len(targets), MISS_RANK, dtype=np.int64)
    known = np.flatnonzero(targets >= 0)
    ranks[known] = rank_catalog(model, [histories[u] for u in known], targets[known]).ranks
    return {metric_name(f"valid_{k}"): v for k, v in ranking_metrics(ranks).items()}


LOCK_URI_ENV = "LITE_REC_REGISTRY_LOCK_URI"
LOCK_TIMEOUT_SECONDS = 600


def _lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for registered model `name`."""
    digest = hashlib.sha256(f"lite_rec registry {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def libpq_uri(uri: str) -> str:
    """A SQLAlchemy PostgreSQL URI (`postgresql+psycopg://...`) as libpq reads it. A URI
    without a password takes it from libpq's environment (`PGPASSWORD`, `PGPASSFILE`)."""
    scheme, rest = uri.split("://", 1)
    return "postgresql://" + rest if scheme.split("+")[0] in ("postgresql", "postgres") else uri


@contextmanager
def _advisory_lock(uri: str, name: str) -> Iterator[None]:
    import psycopg

    try:
        connection = psycopg.connect(libpq_uri(uri), autocommit=True, connect_timeout=30)
    except psycopg.OperationalError as error:
        first_line = str(error).strip().splitlines()[0]
        where = _redacted(uri)
        raise ValueError(f"registry lock at {where}: cannot connect ({first_line})") from None
    with connection:
        connection.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_SECONDS}s'")
        connection.execute("SELECT pg_advisory_lock(%s)", (_lock_key(name),))
        try:
            yield
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(name),))


@contextmanager
def _file_lock(store: str, name: str) -> Iterator[None]:
    lock_file = Path(store).resolve().parent / f".registry-{name}.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _redacted(uri: str) -> str:
    """`uri` with any password replaced by `***`, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", uri)


@contextmanager
def registry_lock(tracking: Tracking, name: str) -> Iterator[None]:
    """The lock every writer of `name`'s champion takes (see the module docstring)."""
    uri = tracking.resolved_uri
    lock_uri = os.environ.get(LOCK_URI_ENV, "")
    if not lock_uri and uri.split("+")[0].split(":")[0] in ("postgresql", "postgres"):
        lock_uri = uri
    with _process_lock:
        if lock_uri:
            with _advisory_lock(lock_uri, name):
                yield
        elif uri.startswith("sqlite:///"):
            with _file_lock(uri.removeprefix("sqlite:///"), name):
                yield
        elif uri.startswith("file:"):
            with _file_lock(uri.removeprefix("file://").removeprefix("file:"), name):
                yield
        else:
            raise ValueError(
                f"tracking URI {_redacted(uri)}: promotion needs a lock shared by every "
                f"process that moves the champion; expected {LOCK_URI_ENV} set to a PostgreSQL "
                "database they all reach, e.g. postgresql://USER@HOST:5432/DB with the password "
                "in PGPASSWORD (README: The model registry and the gate)"
            )


def champion_version(client: mlflow.MlflowClient, name: str) -> int | None:
    try:
        return int(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def _require(client: mlflow.MlflowClient, name: str, version: int | None = None) -> None:
    """A person's typo gets one line naming what is missing, not an MLflow traceback."""
    try:
        if version is None:
            client.get_registered_model(name)
        else:
            client.get_model_version(name, version)
    except MlflowException as error:
        what = name if version is None else f"{name} version {version}"
        raise ValueError(f"{what} is not in the registry at {client.tracking_uri}") from error


def _history(client: mlflow.MlflowClient, name: str) -> list[int]:
    tags = client.get_registered_model(name).tags
    return [int(v) for v in tags.get(HISTORY_TAG, "").split(",") if v]


def _set_champion(client: mlflow.MlflowClient, name: str, version: int, why: str) -> None:
    """Move the alias and append to the history; the caller holds the registry lock."""
    client.set_registered_model_alias(name, CHAMPION, version)
    history = _history(client, name) + [version]
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(map(str, history)))
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    client.set_model_version_tag(name, version, "champion_since", stamp)
    client.set_model_version_tag(name, version, "champion_reason", why)
    log.info("%s version %d is champion: %s", name, version, why)


def _champion_value(
    client: mlflow.MlflowClient,
    name: str,
    version: int,
    data: SequenceData,
    fingerprint: str,
    metric: str,
) -> tuple[float, bool]:
    """The champion's metric on this evaluation data (`fingerprint`): its stored value when it
    was evaluated on the same data, else re-evaluated now (and stored for the next comparison).
    -> (value, flattered): flattered when a champion with refit epochs (`train.refit_epochs`)
    is scored on other data than its own, whose users with an unchanged validation item it
    trained on, so the gate leans towards keeping it."""
    tags = client.get_model_version(name, version).tags
    own_data = tags.get(FINGERPRINT_TAG) == fingerprint
    flattered = not own_data and int(tags.get(REFIT_TAG, "0")) > 0
    key = f"{metric}_on_{fingerprint}"
    if own_data and metric in tags:
        return float(tags[metric]), flattered
    if key in tags:
        return float(tags[key]), flattered
    value = validation_metrics(f"models:/{name}/{version}", data)[metric]
    client.set_model_version_tag(name, version, key, repr(value))
    return value, flattered


def register_and_gate(
    trained: TrainedModel,
    data: SequenceData,
    name: str,
    tracking: Tracking,
    policy: GatePolicy | None = None,
) -> GateDecision:
    """Register `trained` as a new version of `name` (alias `challenger`) and promote it to
    `champion` when it beats the current champion by more than the margin on `data`'s
    validation split. The decision and both numbers become tags of the new version."""
    policy = policy or GatePolicy()
    metrics = {metric_name(f"valid_{k}"): v for k, v in trained.valid_metrics.items()}
    if policy.metric not in metrics:
        raise ValueError(f"gate metric {policy.metric!r}: expected one of {sorted(metrics)}")
    value = metrics[policy.metric]
    tracking.activate()
    client = tracking.client()
    with registry_lock(tracking, name):
        version = int(mlflow.register_model(trained.model_uri, name).version)
        _describe_model(client, name, dataset_name(trained.config))
        tags = {**{k: repr(v) for k, v in metrics.items()}, "run_id": trained.run_id}
        tags[REFIT_TAG] = str(trained.config.train.refit_epochs)
        fingerprint = evaluation_fingerprint(data)
        for key, tag in {**tags, FINGERPRINT_TAG: fingerprint}.items():
            client.set_model_version_tag(name, version, key, tag)
        client.set_registered_model_alias(name, CHALLENGER, version)
        current = champion_version(client, name)
        best, flattered = None, False
        if current is not None:
            best, flattered = _champion_value(
                client, name, current, data, fingerprint, policy.metric
            )
        if best is None:
            promoted, reason = True, "first model: no champion yet"
        elif value > best + policy.min_margin:
            promoted, reason = True, f"{value:.4f} > {best:.4f} + margin {policy.min_margin}"
        else:
            promoted, reason = False, f"{value:.4f} <= {best:.4f} + margin {policy.min_margin}"
        if flattered:
            log.warning("%s version %d: %s", name, current, RESCORED_REFIT)
            reason += f" ({RESCORED_REFIT})"
        decision = GateDecision(
            name, version, promoted, reason, policy.metric, value, current, best
        )
        gate_tags = {
            "gate_decision": "promoted" if promoted else "rejected",
            "gate_reason": reason,
            "gate_metric": policy.metric,
            "gate_challenger_value": repr(value),
            "gate_champion_version": "" if current is None else str(current),
            "gate_champion_value": "" if best is None else repr(best),
        }
        for key, tag in gate_tags.items():
            client.set_model_version_tag(name, version, key, tag)
        client.set_tag(trained.run_id, GATE_DECISION_TAG, gate_tags["gate_decision"])
        client.set_tag(trained.run_id, GATE_REASON_TAG, reason)
        changes = _changes(client, trained.run_id, name, current)
        verdict = f"Gate ({policy.metric}): {gate_tags['gate_decision']}, {reason}."
        client.update_model_version(name, version, description=f"{changes}\n\n{verdict}")
        if promoted:
            _set_champion(client, name, version, f"gate: {reason}")
    return decision


def _describe_model(client: mlflow.MlflowClient, name: str, dataset: str) -> None:
    """Give the registered model its description, unless a person has written one."""
    if not client.get_registered_model(name).description:
        description = MODEL_DESCRIPTION.format(dataset=dataset, name=name)
        client.update_registered_model(name, description=description)


def _changes(client: mlflow.MlflowClient, run_id: str, name: str, champion: int | None) -> str:
    """What a new version changes: its training run's params that differ from the champion's
    run, or, with no champion, the dataset and the headline params."""
    run = client.get_run(run_id)
    params = {**run.data.params, "training data digest": _data_digest(run)}
    if champion is None:
        shown = ("data.source", "data.users", "data.items", "model.item_repr", "train.recipe")
        listed = ", ".join(f"{key}={params[key]}" for key in shown if key in params)
        return f"First version: {listed}."
    held = client.get_model_version(name, champion)
    champion_run = held.tags.get("run_id", held.run_id)
    try:
        before_run = client.get_run(champion_run)
    except MlflowException:
        return f"Against version {champion}: its training run {champion_run} is gone."
    before = {**before_run.data.params, "training data digest": _data_digest(before_run)}
    changed = [
        f"{key}: {before.get(key, '(unset)')} -> {params.get(key, '(unset)')}"
        for key in sorted(set(params) | set(before))
        if params.get(key) != before.get(key)
    ]
    if not changed:
        return f"Against version {champion}: the same params."
    return f"Against version {champion}: " + "; ".join(changed) + "."


def _data_digest(run) -> str:
    """The digest of the dataset a run trained on (its MLflow dataset input)."""
    digests = [item.dataset.digest for item in run.inputs.dataset_inputs]
    return digests[0] if digests else "(none logged)"


def promote(
    name: str, version: int, tracking: Tracking, reason: str, user: str | None = None
) -> None:
    """Make `version` the champion by hand, recording who and why."""
    client = tracking.client()
    _require(client, name, version)
    with registry_lock(tracking, name):
        user = user or getpass.getuser()
        client.set_model_version_tag(name, version, "promoted_by", user)
        _set_champion(client, name, version, f"manual by {user}: {reason}")


def rollback(name: str, tracking: Tracking, reason: str = "", user: str | None = None) -> int:
    """Give `champion` back to the version that held it before the current one; returns it."""
    client = tracking.client()
    _require(client, name)
    with registry_lock(tracking, name):
        history = _history(client, name)
        if len(history) < 2:
            raise ValueError(f"{name}: no previous champion to roll back to (history {history})")
        current, previous = history[-1], history[-2]
        user = user or getpass.getuser()
        client.set_registered_model_alias(name, CHAMPION, previous)
        client.set_registered_model_tag(name, HISTORY_TAG, ",".join(map(str, history[:-1])))
        client.set_model_version_tag(name, current, "rolled_back_by", f"{user}: {reason}")
        log.info("%s: champion rolled back from version %d to %d", name, current, previous)
    return previous
