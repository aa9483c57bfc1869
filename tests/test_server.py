"""`lite-rec serve` for real: a subprocess on a free 127.0.0.1 port serving NAME@champion from a
temporary sqlite store, refusing bad requests, following a promotion, stopping on SIGTERM.
The request checks it shares with the MLflow pyfunc (`parse_requests`) are tested first."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from lite_rec import registry
from lite_rec.config import ServingConfig
from lite_rec.errors import InputError
from lite_rec.sequences import SequenceData
from lite_rec.serving import Recommender, parse_requests
from lite_rec.tracking import Tracking
from tests.conftest import cyclic_data
from tests.services import free_port, wait_until_healthy
from tests.test_registry import train_tiny
from tests.test_serving_http import stop

NAME = "lite_rec_server"
LIMITS = ServingConfig(max_k=50, max_rows=5)


@pytest.mark.parametrize(
    ("k", "message"),
    [
        (2.5, "row 0, column 'k': expected an integer from 1 to 50, got 2.5"),
        (True, "row 0, column 'k': expected an integer from 1 to 50, got true"),
        (0, "row 0, column 'k': expected an integer from 1 to 50, got 0"),
        (51, "row 0, column 'k': expected an integer from 1 to 50, got 51"),
        ("5", "row 0, column 'k': expected an integer from 1 to 50, got \"5\""),
    ],
)
def test_parse_requests_refuses_a_k_that_is_not_an_integer_in_bounds(k, message) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_requests({"history": [["a"]], "k": [k]}, limits=LIMITS)


def test_parse_requests_bounds_rows_and_names_bad_rows() -> None:
    with pytest.raises(InputError, match="request: expected at most 5 rows, got 6"):
        parse_requests({"history": [["a"]] * 6}, limits=LIMITS)
    with pytest.raises(InputError, match="row 1, column 'history': expected a list of item ids"):
        parse_requests({"history": [["a"], 7]}, limits=LIMITS)
    with pytest.raises(InputError, match="column 'params.k': expected an integer from 1 to 50"):
        parse_requests({"history": [["a"]]}, default_k=True, limits=LIMITS)
    histories, ks = parse_requests({"history": [["a"], "b,c"], "k": [5.0, None]}, 3, LIMITS)
    assert histories == [["a"], ["b", "c"]] and ks == [5, 3]


@dataclass
class Served:
    url: str
    process: subprocess.Popen
    log_file: Path
    tracking: Tracking
    data: SequenceData
    models: dict[str, Path]  # version -> its model folder


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """The server on NAME@champion, which is version 1; version 2 is registered, not
    promoted."""
    root = tmp_path_factory.mktemp("server")
    tracking = Tracking(f"sqlite:///{root / 'mlflow.db'}", "server-test")
    data = cyclic_data(20, 40, spread=4)
    first, second = (train_tiny(data, root / f"m{e}", tracking, e) for e in (1, 6))
    registry.register_and_gate(first, data, NAME, tracking)
    never = registry.GatePolicy(min_margin=1.0)
    assert not registry.register_and_gate(second, data, NAME, tracking, never).promoted
    port = free_port()
    command = [
        *[str(Path(sys.executable).parent / "lite-rec"), "serve"],
        *["--model", f"{NAME}@champion", "--tracking-uri", tracking.resolved_uri],
        *["--port", str(port), "--set", "serving.reload_seconds=0.5"],
        *["--set", f"serving.max_k={LIMITS.max_k}", "--set", f"serving.max_rows={LIMITS.max_rows}"],
    ]
    log_file = root / "server.log"
    with open(log_file, "w") as output:
        process = subprocess.Popen(
            command, cwd=root, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/ping", process)
        models = {"1": first.model_dir, "2": second.model_dir}
        yield Served(f"http://127.0.0.1:{port}", process, log_file, tracking, data, models)
    finally:
        if process.poll() is None:
            stop(process)
        print(log_file.read_text())  # shown when a test failed


def invoke(url: str, body: object, content_type: str | None = "application/json"):
    headers = {"Content-Type": content_type} if content_type else {}
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.post(f"{url}/invocations", data=data, headers=headers, timeout=30)


def expected(model_dir, histories: list[list[str]], k: int) -> list[list[str]]:
    rows = Recommender.load(model_dir).recommend(histories, k)
    return [[item for item, _ in row] for row in rows]


@pytest.mark.slow
def test_bad_requests_get_a_4xx_and_one_line_of_json(served) -> None:
    url = served.url
    record = {"history": ["i1", "i2"]}
    cases = [
        (invoke(url, {"dataframe_records": [record]}, None), 415, "Content-Type"),
        (invoke(url, {"dataframe_records": [record]}, "text/csv"), 415, "Content-Type"),
        (invoke(url, {"dataframe_records": [{**record, "k": 2.5}]}), 400, "got 2.5"),
        (invoke(url, {"dataframe_records": [{**record, "k": True}]}), 400, "got true"),
        (invoke(url, {"dataframe_records": [{**record, "k": 51}]}), 400, "from 1 to 50"),
        (invoke(url, {"dataframe_records": [record] * 6}), 400, "at most 5 rows, got 6"),
        (invoke(url, '{"dataframe_records": [{"history": ["i1"'), 400, "expected valid JSON"),
        (invoke(url, {"dataframe_records": [{"k": 3}]}), 400, "expected a column 'history'"),
        (invoke(url, {"rows": [record]}), 400, "expected exactly one of dataframe_split"),
        (requests.get(f"{url}/invocations", timeout=10), 405, "Method Not Allowed"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.text
        assert message in response.json()["message"], response.text
        assert "\n" not in response.text.strip()


@pytest.mark.slow
def test_every_scoring_form_gets_the_models_top_k_and_the_served_version(served) -> None:
    url, data, models = served.url, served.data, served.models
    histories = [list(data.item_ids[:3]), list(data.item_ids[5:7])]
    forms = [
        {"dataframe_records": [{"history": h, "k": 4} for h in histories]},
        {"dataframe_split": {"columns": ["history", "k"], "data": [[h, 4] for h in histories]}},
        {"inputs": {"history": histories, "k": [4, 4]}},
        {"inputs": [{"history": h} for h in histories], "params": {"k": 4}},
    ]
    for body in forms:
        response = invoke(url, body)
        assert response.status_code == 200, response.text
        assert response.headers["X-Model-Version"] == "1"
        rows = response.json()["predictions"]
        assert [row["item_ids"] for row in rows] == expected(models["1"], histories, 4)
        assert all(row["scores"] == sorted(row["scores"], reverse=True) for row in rows)
    health = requests.get(f"{url}/health", timeout=10).json()
    assert health["version"] == "1" and health["model"] == f"models:/{NAME}@champion"


@pytest.mark.slow
def test_a_promotion_is_followed_without_failing_a_request(served) -> None:
    url, data, models = served.url, served.data, served.models
    history = list(data.item_ids[:4])
    body = {"dataframe_records": [{"history": history, "k": 5}]}
    answers: list[tuple[int, str, list[str]]] = []
    done = threading.Event()

    def keep_asking() -> None:
        with requests.Session() as session:
            while not done.is_set():
                response = session.post(f"{url}/invocations", json=body, timeout=30)
                version = response.headers.get("X-Model-Version", "")
                items = response.json()["predictions"][0]["item_ids"] if response.ok else []
                answers.append((response.status_code, version, items))

    asking = threading.Thread(target=keep_asking)
    asking.start()
    try:
        time.sleep(0.5)
        registry.promote(NAME, 2, served.tracking, "test: follow the alias")
        promoted = time.monotonic()
        while not (answers and answers[-1][1] == "2") and time.monotonic() < promoted + 30:
            time.sleep(0.05)
        switched = time.monotonic() - promoted
        time.sleep(0.3)
    finally:
        done.set()
        asking.join()
    assert all(status == 200 for status, _, _ in answers), answers[-5:]
    versions = [version for _, version, _ in answers]
    assert versions[0] == "1" and versions[-1] == "2", versions
    assert switched < 10, f"switched {switched:.1f} s after the promotion (polls every 0.5 s)"
    assert versions == sorted(versions), "an answer from version 1 came after version 2"
    for version, model_dir in models.items():
        answered = {tuple(items) for _, v, items in answers if v == version}
        assert answered == {tuple(expected(model_dir, [history], 5)[0])}
    assert requests.get(f"{url}/health", timeout=10).json()["version"] == "2"


@pytest.mark.slow
def test_histories_are_capped_at_the_window_said_once_per_request(
    served, caplog: pytest.LogCaptureFixture
) -> None:
    recommender = Recommender.load(served.models["1"])
    window = recommender.window
    cycle = list(recommender.item_ids)
    long = [cycle[i % len(cycle)] for i in range(3 * window)]
    with caplog.at_level(logging.INFO, logger="lite_rec.serving"):
        capped = recommender.recommend([long, long], 3)
    assert capped == recommender.recommend([long[-window:]] * 2, 3)
    said = [r for r in caplog.records if "window" in r.getMessage()]
    assert len(said) == 1 and said[0].getMessage().startswith("2 of 2 histories")


@pytest.mark.slow
def test_sigterm_stops_the_server_and_its_children(served) -> None:
    stop(served.process)  # SIGTERM by PID to the process group; asserts every child exited
    assert served.process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    said = served.log_file.read_text()
    assert "Application shutdown complete" in said and "stopped serving" in said
    assert "now serving models:/lite_rec_server@champion version 2 (was version 1" in said


def test_rows_beyond_the_queue_bound_get_503_at_once_and_the_queued_ones_their_answers(
    tmp_path: Path,
) -> None:
    import asyncio

    from lite_rec.server import Batcher, Follower, ModelSource, RequestError

    data = cyclic_data(20, 40, spread=4)
    model = train_tiny(data, tmp_path / "m", Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}"), 1)
    follower = Follower(ModelSource("", model_dir=str(model.model_dir)))
    histories = [[str(data.item_ids[0]), str(data.item_ids[1])]] * 3

    async def burst() -> tuple[list, int]:
        batcher = Batcher(follower, max_rows=5, max_queued_rows=7)
        waiting = [asyncio.ensure_future(batcher.answer(histories, [2] * 3)) for _ in range(2)]
        await asyncio.sleep(0)  # both are queued: 6 rows wait, nothing scores them yet
        with pytest.raises(RequestError, match="6 rows already waiting .* 7\\); retry") as refused:
            await batcher.answer(histories[:2], [2] * 2)
        assert refused.value.status == 503 and batcher.queued_rows == 6
        running = asyncio.ensure_future(batcher.run())
        answers = await asyncio.gather(*waiting)
        after = await batcher.answer(histories[:2], [2] * 2)  # room again
        running.cancel()
        batcher.scoring.shutdown(wait=True)
        return [*answers, after], batcher.queued_rows

    answers, left = asyncio.run(burst())
    assert left == 0
    top = expected(model.model_dir, histories, 2)
    assert [json.loads(body)["predictions"][0]["item_ids"] for body, _ in answers] == [top[0]] * 3
