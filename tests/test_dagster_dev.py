"""`make dev` starts `dagster dev` on 127.0.0.1 with the `lite_rec` code location, lists the
assets, jobs, schedule and sensor over GraphQL, and stops with every child process when its
process group gets SIGTERM, even started as a background job, which inherits SIGINT ignored."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
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
        name
        location { name }
        assetNodes { assetKey { path } groupName }
        jobs { name }
        schedules { name cronSchedule executionTimezone scheduleState { status } }
        sensors { name sensorState { status } }
      }
    }
  }
}"""


def ignore_sigint() -> None:
    """What a shell does to a command it starts in the background without job control."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_dev_serves_the_definitions_and_stops_on_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    port = free_port()
    # -o: the venv counts as installed, whatever the dates of pyproject.toml and constraints.txt
    command = ["make", "-o", ".venv/.installed", "dev", f"DAGSTER_HOME={home}"]
    process = subprocess.Popen(
        [*command, f"DAGSTER_PORT={port}"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=ignore_sigint,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{url}/server_info", process, seconds=120)
        response = requests.post(f"{url}/graphql", json={"query": QUERY}, timeout=60)
        [repository] = response.json()["data"]["repositoriesOrError"]["nodes"]
        children = psutil.Process(process.pid).children(recursive=True)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:  # seconds when idle; a loaded 2-core machine (CI beside a training job) is slower
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:  # leave no server behind on the port
            os.killpg(process.pid, signal.SIGKILL)
            raise
    gone, alive = psutil.wait_procs(children, timeout=30)
    for leftover in alive:
        leftover.kill()
    assert not alive, f"make dev left {[p.pid for p in alive]} running"

    assert (repository["name"], repository["location"]["name"]) == ("__repository__", "lite_rec")
    groups = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in repository["assetNodes"]}
    assert {"raw_items", "item_embeddings", "rec_model", "registered_model"} <= set(groups)
    assert groups["benchmark"] == "benchmark"
    jobs = {job["name"] for job in repository["jobs"]} - {"__ASSET_JOB"}  # Dagster's own
    assert jobs == {"main_job", "benchmark_job"}
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
