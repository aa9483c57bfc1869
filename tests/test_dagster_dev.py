"""`dagster dev` starts on 127.0.0.1, lists the assets, schedule and sensor over GraphQL, and
stops with every child process when its PID gets SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator

from lite_rec.config import PROJECT_ROOT
from tests.services import compose_file, free_port, wait_until_healthy

QUERY = """{
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        assetNodes { assetKey { path } }
        jobs { name }
        schedules { name cronSchedule executionTimezone scheduleState { status } }
        sensors { name sensorState { status } }
      }
    }
  }
}"""


@pytest.mark.slow
def test_dagster_dev_serves_the_definitions_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    command = [f"{venv_bin}/dagster", "dev", "-m", "orchestration.definitions"]
    # dagster dev's SIGTERM handler is whatever SIGINT's is (STACK.md): when this test runs in a
    # background job of a non-interactive shell, SIGINT is ignored and the child would inherit
    # that and ignore SIGTERM too. A handled signal is reset to its default in the child.
    sigint_before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        signal.signal(signal.SIGINT, sigint_before)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{url}/server_info", process, seconds=120)
        response = requests.post(f"{url}/graphql", json={"query": QUERY}, timeout=60)
        [repository] = response.json()["data"]["repositoriesOrError"]["nodes"]
        children = psutil.Process(process.pid).children(recursive=True)
    finally:
        process.send_signal(signal.SIGTERM)
        try:  # seconds when idle; a loaded 2-core machine (CI beside a training job) is slower
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:  # leave no server behind on the port
            for stray in [*psutil.Process(process.pid).children(recursive=True), process]:
                stray.kill()
            raise
    gone, alive = psutil.wait_procs(children, timeout=30)
    for leftover in alive:
        leftover.kill()
    assert not alive, f"dagster dev left {[p.pid for p in alive]} running"

    assets = {"/".join(node["assetKey"]["path"]) for node in repository["assetNodes"]}
    assert {"raw_items", "item_embeddings", "rec_model", "registered_model"} <= assets
    assert {"main_job", "retrain_job"} <= {job["name"] for job in repository["jobs"]}
    [schedule] = repository["schedules"]
    assert (schedule["name"], schedule["cronSchedule"]) == ("nightly_retrain", "0 2 * * *")
    assert schedule["scheduleState"]["status"] == "RUNNING"
    [sensor] = repository["sensors"]
    assert sensor["name"] == "catalog_changed" and sensor["sensorState"]["status"] == "RUNNING"


# Docker cannot run on these machines: check what can be checked without it.
DOCKER = PROJECT_ROOT / "docker"


def pip_installs(lines: list[str]) -> list[list[str]]:
    """The arguments of each `pip install`: without --quiet, the index (where torch comes from,
    not what is installed) or the dev extra."""
    steps = []
    for line in lines:
        if "pip install" not in line:
            continue
        words = iter(line.split("pip install", 1)[1].replace("'", "").split())
        step = []
        for word in words:
            if word == "--index-url":
                next(words)
            elif word != "--quiet":
                step.append(word.removesuffix("[dev]"))
        steps.append(step)
    return steps


def test_dockerfile_installs_like_the_makefile() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text().splitlines()
    dockerfile = (DOCKER / "Dockerfile").read_text().splitlines()
    make_steps = pip_installs(makefile)
    docker_steps = pip_installs([line for line in dockerfile if line.startswith("RUN ")])
    assert make_steps == [["torch==2.13.0"], ["-c", "constraints.txt", "-e", "."]]
    assert docker_steps[:2] == make_steps
    assert all(step[:2] == ["-c", "constraints.txt"] for step in docker_steps[1:])


def test_compose_stack_and_dagster_instance_config_are_valid() -> None:
    settings = {"POSTGRES_SUPERUSER_PASSWORD": "pw-s", "DAGSTER_DB_PASSWORD": "pw-d"}
    compose = compose_file({**settings, "MLFLOW_DB_PASSWORD": "pw-m"})
    services = compose["services"]
    assert set(services) == {
        "postgres",
        "mlflow",
        "dagster-webserver",
        "dagster-daemon",
        "model-server",
    }
    assert services["postgres"]["image"].startswith("postgres:15.")  # pinned, as tested
    mlflow_env = services["mlflow"]["environment"]
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"] == "postgresql://mlflow@postgres:5432/mlflow"
    assert mlflow_env["PGPASSWORD"] == "pw-m" and "pw-d" not in mlflow_env.values()
    assert "mlflow-artifacts:/mlartifacts" in services["mlflow"]["volumes"]
    assert services["dagster-daemon"]["command"].startswith("dagster-daemon run")
    assert "@champion" in services["model-server"]["command"]
    for name, service in services.items():
        assert all(port.startswith("127.0.0.1:") for port in service.get("ports", [])), name
        assert "pw-" not in service.get("command", ""), name  # no secret on a command line
    for name in ("mlflow", "dagster-webserver", "dagster-daemon", "model-server"):
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile"
    for name in ("dagster-webserver", "dagster-daemon", "model-server"):
        assert services[name]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "pw-d" not in services["model-server"]["environment"].values()
    with pytest.raises(ValueError, match="MLFLOW_DB_PASSWORD is not set"):
        compose_file(settings)

    instance, _ = dagster_instance_config(str(DOCKER))  # raises on any schema error
    assert "postgres" in instance["storage"]
    queue = process_config(
        QueuedRunCoordinator.config_type(), instance["run_coordinator"]["config"]
    )
    assert queue.success, queue.errors
    [location] = yaml.safe_load((DOCKER / "workspace.yaml").read_text())["load_from"]
    assert location["python_module"]["module_name"] == "orchestration.definitions"
