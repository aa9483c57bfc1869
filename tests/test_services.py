"""The stack as docker/compose.yaml runs it, on real services: PostgreSQL, `mlflow server` with
the Postgres backend store and served artifacts, and a Dagster instance with
docker/dagster.yaml's Postgres storage. The pipeline runs through them, the champion is served
from the tracking server, the registry is checked in Postgres, and three processes race the
gate ten times."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import requests

from lite_rec.registry import HISTORY_TAG, LOCK_URI_ENV, libpq_uri
from lite_rec.tracking import Tracking
from tests import services
from tests.conftest import cyclic_data, write_movielens
from tests.registry_race import gate_in_turn
from tests.test_pipeline import tiny_run_config
from tests.test_registry import train_tiny

pytestmark = pytest.mark.slow

if services.postgres_missing_reason():
    pytest.skip(services.postgres_missing_reason(), allow_module_level=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """Postgres, its roles and databases, `mlflow server` and the Dagster instance settings,
    all from docker/compose.yaml, docker/postgres-init.sh and docker/dagster.yaml."""
    root = tmp_path_factory.mktemp("stack")
    cluster = services.PostgresCluster()
    server = None
    saved = dict(os.environ)
    try:
        cluster.start()
        settings = services.stack_settings(cluster.port, root)
        compose = services.compose_file(settings)
        init_env = {**os.environ, **compose["services"]["postgres"]["environment"]}
        subprocess.run(
            [str(services.DOCKER / "postgres-init.sh")],
            env={**init_env, **cluster.superuser_env()},
            check=True,
            capture_output=True,
        )
        log = root / "mlflow-server.log"
        server = services.start_service(compose["services"]["mlflow"], {}, log, cwd=root)
        tracking_uri = f"http://127.0.0.1:{settings['MLFLOW_PORT']}"
        services.wait_until_healthy(f"{tracking_uri}/health", server, 180, log)
        home = root / "dagster_home"
        home.mkdir()
        shutil.copy(services.DOCKER / "dagster.yaml", home / "dagster.yaml")
        dagster_env = {k: str(v) for k, v in compose["x-lite-rec"]["environment"].items()}
        os.environ.update({**dagster_env, "DAGSTER_HOME": str(home)})
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        yield {
            "root": root,
            "settings": settings,
            "tracking": Tracking(tracking_uri, "services-test"),
            "compose": compose,
            "cluster": cluster,
        }
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if server is not None:
            services.stop_process_group(server)
        cluster.stop()


def query(stack: dict, application: str, sql: str, *params) -> list[tuple]:
    """Rows from an application's own database, logged in as its own role."""
    settings, prefix = stack["settings"], application.upper()
    with psycopg.connect(
        host="127.0.0.1",
        port=int(settings["POSTGRES_PORT"]),
        user=application,
        password=settings[f"{prefix}_DB_PASSWORD"],
        dbname=application,
    ) as connection:
        return connection.execute(sql, params).fetchall()


def test_roles_are_separate_and_not_superusers(stack: dict) -> None:
    assert query(stack, "mlflow", "SELECT rolsuper FROM pg_roles WHERE rolname = 'mlflow'") == [
        (False,)
    ]
    with pytest.raises(psycopg.OperationalError, match="permission denied|not permitted"):
        settings = stack["settings"]
        psycopg.connect(
            host="127.0.0.1",
            port=int(settings["POSTGRES_PORT"]),
            user="mlflow",
            password=settings["MLFLOW_DB_PASSWORD"],
            dbname="dagster",
        )


def test_compose_refuses_to_start_without_passwords(stack: dict) -> None:
    settings = {k: v for k, v in stack["settings"].items() if k != "MLFLOW_DB_PASSWORD"}
    with pytest.raises(ValueError, match="MLFLOW_DB_PASSWORD is not set - copy docker/env"):
        services.compose_file(settings)
    env = {**os.environ, **stack["cluster"].superuser_env()}
    env.pop("MLFLOW_DB_PASSWORD", None)
    init = subprocess.run(
        [str(services.DOCKER / "postgres-init.sh")], env=env, capture_output=True, text=True
    )
    assert init.returncode != 0 and "DAGSTER_DB_PASSWORD is not set" in init.stderr


def test_the_pipeline_runs_through_the_stack_and_the_champion_is_served(
    stack: dict, tiny_model: str
) -> None:
    from orchestration.definitions import data_assets, data_checks, model_assets, registry_assets
    from orchestration.resources import MlflowTracking, Settings, TrainingLauncher, Workspace

    root, tracking_uri = stack["root"], stack["tracking"].resolved_uri
    source = write_movielens(root / "raw", users=9, items=7)
    instance = dg.DagsterInstance.get()  # docker/dagster.yaml: Postgres storage
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    result = dg.materialize(
        data_assets + data_checks + model_assets + registry_assets,
        instance=instance,
        resources={
            "settings": Settings(),
            "workspace": Workspace(root=str(root)),
            "mlflow_tracking": MlflowTracking(experiment="services-test"),
            "training_launcher": TrainingLauncher(),
        },
        run_config=tiny_run_config(source, tiny_model),
    )
    assert result.success
    decision = result.output_for_node("registered_model")
    assert decision.promoted and decision.name == "lite_rec_raw"

    runs = query(stack, "dagster", "SELECT run_id, status FROM runs")
    assert (result.run_id, "SUCCESS") in runs
    aliases = query(
        stack,
        "mlflow",
        "SELECT alias, version FROM registered_model_aliases WHERE name = %s ORDER BY alias",
        decision.name,
    )
    assert aliases == [("challenger", decision.version), ("champion", decision.version)]
    artifacts = Path(stack["settings"]["MLFLOW_ARTIFACTS_DESTINATION"])
    assert any(artifacts.rglob("model.pt")), "the server stored no model artifacts"

    model_server = stack["compose"]["services"]["model-server"]
    log, port = root / "model-server.log", stack["settings"]["MODEL_SERVER_PORT"]
    server = services.start_service(model_server, {"MLFLOW_TRACKING_URI": tracking_uri}, log)
    try:
        services.wait_until_healthy(f"http://127.0.0.1:{port}/health", server, 180, log)
        answer = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"dataframe_records": [{"history": ["1", "2", "3"], "k": 3}]},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Model-Version"] == str(decision.version)
        [prediction] = answer.json()["predictions"]
        assert len(prediction["item_ids"]) == 3 and set(prediction["item_ids"]) <= set("4567")
    finally:
        services.stop_process_group(server)


def test_three_processes_racing_the_gate_always_crown_the_best_model(stack: dict) -> None:
    tracking, root = stack["tracking"], stack["root"]
    assert os.environ[LOCK_URI_ENV].startswith("postgresql://dagster@127.0.0.1:")
    data = cyclic_data(20, 40, spread=4)
    models = [train_tiny(data, root / f"race{e}", tracking, e) for e in (0, 1, 8)]
    values = {m.run_id: m.valid_metrics["ndcg@10"] for m in models}
    assert len(set(values.values())) == 3, values
    best = max(values, key=values.get)
    names = [f"race_{attempt}" for attempt in range(10)]

    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(len(models)), spawn.Queue()
    racers = [
        spawn.Process(
            target=gate_in_turn, args=(barrier, tracking.resolved_uri, m, data, names, results)
        )
        for m in models
    ]
    for racer in racers:
        racer.start()
    outcomes = [results.get(timeout=600) for _ in range(len(models) * len(names))]
    for racer in racers:
        racer.join(timeout=60)
    errors = [error for *_, error in outcomes if error]
    assert not errors, errors[0]

    client = tracking.client()
    for name in names:
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.run_id == best, name
        history = [int(v) for v in client.get_registered_model(name).tags[HISTORY_TAG].split(",")]
        promoted = {version for n, _, version, was, _ in outcomes if n == name and was}
        assert sorted(history) == sorted(promoted), (name, history, promoted)
        run_of = {int(v.version): v.run_id for v in client.search_model_versions(f"name='{name}'")}
        crowned = [values[run_of[version]] for version in history]
        assert crowned == sorted(set(crowned)), (name, crowned)  # each beat the one before


def test_the_registry_lock_names_a_database_it_cannot_reach(stack: dict) -> None:
    from lite_rec.registry import registry_lock

    unreachable = f"postgresql+psycopg://dagster@127.0.0.1:{services.free_port()}/dagster"
    assert libpq_uri(unreachable).startswith("postgresql://dagster@")
    os.environ[LOCK_URI_ENV], saved = unreachable, os.environ[LOCK_URI_ENV]
    try:
        with pytest.raises(ValueError, match="registry lock at postgresql.*cannot connect"):
            with registry_lock(stack["tracking"], "any"):
                pass
    finally:
        os.environ[LOCK_URI_ENV] = saved
