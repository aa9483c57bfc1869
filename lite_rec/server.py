"""`lite-rec serve`: the model server.

- MLflow's scoring protocol on `POST /invocations` (JSON in the `dataframe_split`,
  `dataframe_records`, `inputs` or `instances` form, optional `params.k`), answered as
  `mlflow models serve` answers: `{"predictions": [{"item_ids": [...], "scores": [...]}]}`.
- Every bad request gets a 4xx and a one-line JSON `{"error_code": ..., "message": ...}`.
- The rows of all the requests waiting at one moment are scored in one batched model call,
  on one scoring thread: under load, requests that arrive while a batch runs form the next.
- An alias (`NAME@champion`) is followed: every `serving.reload_seconds` the server asks the
  registry for the alias's version and, when it moved (a promotion, a rollback), loads that
  version in the background and swaps it in between two batches. A request is answered by
  one model from start to end; none is dropped. The version that answered is in the
  `X-Model-Version` header and in `/health`.
- SIGTERM (and Ctrl-C) stop it after the requests in flight are answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lite_rec.config import ServingConfig
from lite_rec.errors import InputError
from lite_rec.serving import REQUEST, Recommender, parse_requests

log = logging.getLogger(__name__)

VERSION_HEADER = "X-Model-Version"
FORMATS = ("dataframe_split", "dataframe_records", "inputs", "instances")
SETTINGS_VARIABLE = "LITE_REC_SERVE"  # how `serve` hands its settings to uvicorn's workers
DIRECTORY_VERSION = "local"  # the version a model directory is served as
WORKER_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
ERROR_CODES = {
    400: "BAD_REQUEST",
    404: "ENDPOINT_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}
# Seconds a refused (503) client is asked to wait: about one batch's scoring.
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class ModelSource:
    """What to serve: a `lite-rec train` directory, a registered version (`NAME/VERSION`) or
    an alias (`NAME@ALIAS`, followed through promotions and rollbacks)."""

    model: str  # NAME@ALIAS or NAME/VERSION; empty for a directory
    model_dir: str = ""
    tracking_uri: str = ""

    def __post_init__(self) -> None:
        if bool(self.model) == bool(self.model_dir):
            raise ValueError("give either MODEL_DIR or --model NAME@ALIAS, not both or neither")
        if self.model and not ("@" in self.model or "/" in self.model):
            raise ValueError(f"--model {self.model!r}: expected NAME@ALIAS or NAME/VERSION")

    @property
    def follows(self) -> bool:
        return "@" in self.model

    @property
    def name(self) -> str:
        return self.model.partition("@")[0].partition("/")[0]

    @property
    def description(self) -> str:
        return f"models:/{self.model}" if self.model else str(Path(self.model_dir).resolve())

    def registry_uri(self) -> str:
        from lite_rec.tracking import Tracking

        return Tracking(self.tracking_uri).resolved_uri

    def version(self) -> str:
        """The version to serve now: the alias's, the pinned one, or `local`."""
        if not self.model:
            return DIRECTORY_VERSION
        if not self.follows:
            return self.model.partition("/")[2]
        import mlflow

        alias = self.model.partition("@")[2]
        client = mlflow.MlflowClient(tracking_uri=self.registry_uri())
        return str(client.get_model_version_by_alias(self.name, alias).version)

    def load(self, version: str) -> Recommender:
        """The recommender of `version`, through the MLflow pyfunc the registry holds."""
        if not self.model:
            return Recommender.load(self.model_dir)
        import mlflow

        mlflow.set_tracking_uri(self.registry_uri())
        # The pyfunc reads everything into memory: its downloaded copy can go at once, and
        # so can the model's code folder that loading puts first on sys.path (lite_rec is
        # imported already, so the installed package answers).
        with tempfile.TemporaryDirectory(prefix="lite-rec-serve-") as copy:
            pyfunc = mlflow.pyfunc.load_model(f"models:/{self.name}/{version}", dst_path=copy)
        sys.path[:] = [path for path in sys.path if not path.startswith(copy)]
        return pyfunc.unwrap_python_model().recommender


@dataclass(frozen=True)
class Served:
    """One loaded model and the version it is."""

    recommender: Recommender
    version: str
    loaded_at: float


class Follower:
    """The model being served, replaced by the alias's new version when it moves."""

    def __init__(self, source: ModelSource):
        self.source = source
        version = source.version()
        self.served = Served(self.load(version), version, time.time())
        log.info("serving %s version %s", source.description, version)

    def load(self, version: str) -> Recommender:
        """`version`'s recommender, warmed up: the first call builds the item table, which
        should not fall on a request."""
        recommender = self.source.load(version)
        recommender.recommend([list(recommender.item_ids[:1])], 1)
        return recommender

    def refresh(self) -> bool:
        """Load and swap in the alias's version when it changed; True when it did. A registry
        that cannot be reached or a version that cannot be loaded keeps the current model."""
        try:
            version = self.source.version()
        except Exception as error:  # the registry is down: keep serving, try again later
            log.warning("could not read %s: %s", self.source.description, error)
            return False
        if version == self.served.version:
            return False
        started = time.monotonic()
        try:
            recommender = self.load(version)
        except Exception as error:  # a broken version must not take the served one down
            log.error(
                "could not load %s version %s, still serving version %s: %s",
                *(self.source.name, version, self.served.version, error),
            )
            return False
        previous, self.served = self.served, Served(recommender, version, time.time())
        log.info(
            "now serving %s version %s (was version %s; loaded in %.1f s)",
            *(self.source.description, version, previous.version, time.monotonic() - started),
        )
        return True

    def follow(self, every_seconds: float, stop: threading.Event) -> None:
        while not stop.wait(every_seconds):
            self.refresh()


@dataclass
class Pending:
    """One request's rows, waiting for its batch."""

    histories: list
    ks: list[int]
    answer: asyncio.Future  # -> (JSON body, version)


class Batcher:
    """Scores the rows of every request waiting at once in one model call on one thread;
    requests that arrive meanwhile wait for the next call. A batch holds at most `max_rows`
    rows (a request is never split) and is answered by one model. At most `max_queued_rows`
    rows wait: a request that would exceed it is refused at once (503), so that a burst
    larger than the server can score gets a fast answer to retry instead of a growing delay
    for everyone."""

    def __init__(self, follower: Follower, max_rows: int, max_queued_rows: int):
        self.follower = follower
        self.max_rows = max_rows
        self.max_queued_rows = max_queued_rows
        self.queued_rows = 0  # rows waiting in `queue` (read and written on the event loop)
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.scoring = ThreadPoolExecutor(1, thread_name_prefix="lite-rec-scoring")

    async def answer(self, histories: list, ks: list[int]) -> tuple[bytes, str]:
        if self.queued_rows + len(histories) > self.max_queued_rows:
            raise RequestError(
                503,
                f"{self.queued_rows} rows already waiting (serving.max_queued_rows "
                f"{self.max_queued_rows}); retry after {RETRY_AFTER_SECONDS} s",
            )
        pending = Pending(histories, ks, asyncio.get_running_loop().create_future())
        self.queued_rows += len(histories)
        self.queue.put_nowait(pending)
        return await pending.answer

    def _take(self, pending: Pending) -> Pending:
        self.queued_rows -= len(pending.histories)
        return pending

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        carried: Pending | None = None
        while True:
            batch = [carried or self._take(await self.queue.get())]
            carried, rows = None, len(batch[0].histories)
            while not self.queue.empty():
                pending = self._take(self.queue.get_nowait())
                if rows + len(pending.histories) > self.max_rows:
                    carried = pending
                    break
                batch.append(pending)
                rows += len(pending.histories)
            served = self.follower.served
            try:
                bodies = await loop.run_in_executor(self.scoring, score, served, batch)
            except Exception as error:  # reaches each request's handler as a 500
                log.exception("scoring a batch of %d rows failed", rows)
                outcomes = [error] * len(batch)
            else:
                outcomes = [(body, served.version) for body in bodies]
            for pending, outcome in zip(batch, outcomes, strict=True):
                if pending.answer.done():
                    continue
                if isinstance(outcome, Exception):
                    pending.answer.set_exception(outcome)
                else:
                    pending.answer.set_result(outcome)


def score(served: Served, batch: list[Pending]) -> list[bytes]:
    """Each request's JSON answer, from one model call over all the batch's rows."""
    histories = [history for pending in batch for history in pending.histories]
    ks = [k for pending in batch for k in pending.ks]
    rows = served.recommender.recommend(histories, ks)
    bodies, start = [], 0
    for pending in batch:
        mine = rows[start : start + len(pending.histories)]
        start += len(pending.histories)
        predictions = [
            {"item_ids": [item for item, _ in row], "scores": [value for _, value in row]}
            for row in mine
        ]
        bodies.append(json.dumps({"predictions": predictions}).encode())
    return bodies


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str) -> JSONResponse:
    """One line of JSON, shaped as MLflow's scoring server shapes its errors."""
    message = " ".join(str(message).split())
    return JSONResponse(
        {"error_code": ERROR_CODES.get(status, "ERROR"), "message": message}, status
    )


def request_columns(payload: Any) -> tuple[dict[str, list], Any]:
    """The columns and the default k (`params.k`) of a scoring request in any of MLflow's
    JSON forms."""
    if not isinstance(payload, dict):
        raise InputError(REQUEST, f"expected a JSON object with one of {', '.join(FORMATS)}")
    forms = [form for form in FORMATS if form in payload]
    if len(forms) != 1:
        raise InputError(
            REQUEST, f"expected exactly one of {', '.join(FORMATS)}; got keys {sorted(payload)}"
        )
    params = payload.get("params") or {}
    if not isinstance(params, dict):
        raise InputError(REQUEST, "expected an object of parameters", column="params")
    form, data = forms[0], payload[forms[0]]
    if form == "dataframe_split":
        return split_columns(data), params.get("k", 10)
    if isinstance(data, list):
        return record_columns(data, form), params.get("k", 10)
    if isinstance(data, dict) and form != "dataframe_records":
        for name, values in data.items():
            if not isinstance(values, list):
                raise InputError(REQUEST, "expected a list, one value per row", column=name)
        return data, params.get("k", 10)
    raise InputError(REQUEST, f"expected a list of rows, got {type(data).__name__}", column=form)


def record_columns(records: list, form: str) -> dict[str, list]:
    """`[{"history": [...], "k": 5}, ...]` as columns; a key missing from a row is None."""
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            got = type(record).__name__
            raise InputError(REQUEST, f"expected an object, got {got}", row=row, column=form)
    names = {name for record in records for name in record}
    return {name: [record.get(name) for record in records] for name in names}


def split_columns(split: Any) -> dict[str, list]:
    """`{"columns": [...], "data": [[...], ...]}` as columns."""
    if not isinstance(split, dict) or not isinstance(split.get("columns"), list):
        raise InputError(REQUEST, "expected an object with 'columns' and 'data'", column="columns")
    names, rows = split["columns"], split.get("data")
    if not isinstance(rows, list):
        raise InputError(REQUEST, "expected a list of rows", column="data")
    for row, values in enumerate(rows):
        if not isinstance(values, list) or len(values) != len(names):
            raise InputError(
                REQUEST, f"expected a list of {len(names)} values ({names})", row=row, column="data"
            )
    return {str(name): [values[i] for values in rows] for i, name in enumerate(names)}


class ModelServer:
    """The ASGI application: routes, the follower, the batcher and their lifetimes."""

    def __init__(self, source: ModelSource, limits: ServingConfig):
        self.source = source
        self.limits = limits
        self.follower: Follower | None = None
        self.batcher: Batcher | None = None

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/invocations", self.invocations, methods=["POST"]),
                Route("/ping", self.health, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self.http_error, Exception: self.server_error},
            lifespan=self.lifespan,
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            self.follower = await asyncio.to_thread(Follower, self.source)
        except Exception as error:
            log.error("cannot serve %s: %s", self.source.description, error)
            raise
        self.batcher = Batcher(self.follower, self.limits.max_rows, self.limits.max_queued_rows)
        batching = asyncio.create_task(self.batcher.run())
        stop = threading.Event()
        following = threading.Thread(
            target=self.follower.follow,
            args=(self.limits.reload_seconds, stop),
            name="lite-rec-follow",
            daemon=True,
        )
        if self.source.follows:
            following.start()
        try:
            yield
        finally:
            stop.set()
            batching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await batching
            self.batcher.scoring.shutdown(wait=True)
            if following.is_alive():
                following.join(timeout=30)
            log.info("stopped serving %s", self.source.description)

    async def health(self, request: Request) -> JSONResponse:
        served = self.follower.served
        loaded = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(served.loaded_at))
        body = {
            "status": "ok",
            "model": self.source.description,
            "version": served.version,
            "loaded_at": loaded,
            "follows_alias": self.source.follows,
            "reload_seconds": self.limits.reload_seconds,
        }
        return JSONResponse(body, headers={VERSION_HEADER: served.version})

    async def http_error(self, request: Request, error: HTTPException) -> JSONResponse:
        return error_response(error.status_code, error.detail)

    async def server_error(self, request: Request, error: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(error).__name__}: {error}")

    async def invocations(self, request: Request) -> Response:
        try:
            histories, ks = parse_requests(
                *request_columns(await self.read_json(request)), self.limits
            )
        except RequestError as error:
            return error_response(error.status, str(error))
        except InputError as error:
            return error_response(400, str(error))
        try:
            body, version = await self.batcher.answer(histories, ks)
        except RequestError as error:  # the queue is full
            response = error_response(error.status, str(error))
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response
        return Response(body, media_type="application/json", headers={VERSION_HEADER: version})

    async def read_json(self, request: Request) -> Any:
        """The request's JSON body: application/json in UTF-8, at most
        `serving.max_request_mb`."""
        content_type = request.headers.get("content-type")
        media_type, _, parameters = (content_type or "").partition(";")
        charset = parameters.strip().lower().removeprefix("charset=").strip('"') or "utf-8"
        if media_type.strip().lower() != "application/json" or charset != "utf-8":
            got = repr(content_type) if content_type else "none"
            raise RequestError(415, f"expected Content-Type: application/json, got {got}")
        limit = int(self.limits.max_request_mb * 1e6)
        declared = request.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"request body of {declared} bytes; at most {limit} accepted")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"request body over {limit} bytes")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            raise RequestError(400, f"request body: expected valid JSON: {error}") from error


def app_from_environment() -> Starlette:
    """The application for one uvicorn worker, from the settings `serve` put in the
    environment."""
    settings = json.loads(os.environ[SETTINGS_VARIABLE])
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per reload
    if not logging.getLogger().handlers:  # a worker process of `--workers N`
        logging.basicConfig(level=settings["log_level"], format=WORKER_LOG_FORMAT)
    limits = ServingConfig(**settings["limits"])
    import torch

    torch.set_num_threads(limits.threads)
    return ModelServer(ModelSource(**settings["source"]), limits).app()


def serve(
    source: ModelSource,
    limits: ServingConfig,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
) -> None:
    """Run the server until SIGTERM or SIGINT; each of `workers` processes loads the model
    and follows the alias on its own."""
    import uvicorn

    os.environ[SETTINGS_VARIABLE] = json.dumps(
        {
            "source": dataclasses.asdict(source),
            "limits": dataclasses.asdict(limits),
            "log_level": logging.getLevelName(logging.getLogger().level),
        }
    )
    uvicorn.run(
        "lite_rec.server:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # a log line per request costs more than scoring one
        log_config=None,  # keep lite-rec's logging
        timeout_graceful_shutdown=30,
    )
