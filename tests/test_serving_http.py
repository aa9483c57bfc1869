"""`mlflow models serve -m models:/NAME@champion` for real, on a free 127.0.0.1 port: the pyfunc
refuses what `parse_requests` refuses. Its helpers start and stop `lite-rec serve` as well
(tests/test_server.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from lite_rec import registry
from lite_rec.tracking import Tracking
from tests.conftest import cyclic_data
from tests.services import free_port, wait_until_healthy
from tests.test_registry import train_tiny

NAME = "lite_rec_served"


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group by its PID; every child must exit."""
    children = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"children still running: {alive}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("serve")
    tracking = Tracking(f"sqlite:///{root / 'mlflow.db'}", "serve-test")
    data = cyclic_data(20, 40, spread=4)
    registry.register_and_gate(train_tiny(data, root / "model", tracking, 3), data, NAME, tracking)
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)  # the server execs `uvicorn` from PATH
    command = [
        *[f"{venv_bin}/mlflow", "models", "serve"],
        *["-m", f"models:/{NAME}@champion", "--env-manager", "local"],
        *["-h", "127.0.0.1", "-p", str(port), "-w", "1"],
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.resolved_uri}
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    process = subprocess.Popen(command, env=env, cwd=root, start_new_session=True)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/ping", process)
        yield f"http://127.0.0.1:{port}", data
    finally:
        stop(process)


def records(*rows: dict) -> str:
    return json.dumps({"dataframe_records": list(rows)})


def invoke(url: str, body: str) -> requests.Response:
    return requests.post(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=30
    )


@pytest.mark.slow
def test_champion_answers_top_k_raw_ids_and_rejects_malformed_requests(server) -> None:
    url, data = server
    ids = [str(i) for i in data.item_ids]
    response = invoke(url, records({"history": [*ids[:2], "nope"], "k": 5}))
    assert response.status_code == 200, response.text
    [row] = response.json()["predictions"]
    assert len(row["item_ids"]) == 5 and set(row["item_ids"]) <= set(ids) - set(ids[:2])
    assert row["scores"] == sorted(row["scores"], reverse=True)

    empty = invoke(url, records({"history": [], "k": 3}))
    assert empty.status_code == 200 and len(empty.json()["predictions"][0]["item_ids"]) == 3

    broken = invoke(url, '{"dataframe_records": [{"history": ["1"')
    assert broken.status_code == 400 and "json" in broken.text.lower()
    missing = invoke(url, records({"k": 3}))
    assert missing.status_code == 400 and "history" in missing.json()["message"]
    for k in (0, 1001):  # serving.max_k is 1000
        bad_k = invoke(url, records({"history": ids[:1], "k": k}))
        assert bad_k.status_code == 400 and "from 1 to 1000" in bad_k.json()["message"]
    too_many = invoke(url, records(*[{"history": ids[:1]}] * 1001))  # serving.max_rows
    assert too_many.status_code == 400 and "at most 1000 rows" in too_many.json()["message"]
