"""Retraining for real on tiny data, as `make run` launches it: the run belongs to the code
location, the materializations and checks say what a person needs, an edited item is the only
one re-encoded, a failed run leaves the champion alone; the schedule and the sensor."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from lite_rec import registry
from lite_rec.tracking import Tracking, model_version_url, run_url
from orchestration import automation, launch
from orchestration.definitions import defs
from orchestration.jobs import RETRAIN_TAGS
from orchestration.resources import Settings
from tests.conftest import write_movielens

NAME = "lite_rec_tiny"
UI = "http://127.0.0.1:5000"  # Settings.mlflow_ui_url's default
REPOSITORY_LABEL = ".dagster/repository"  # the tag the UI's job page and timeline filter on
Event = dg.DagsterEventType


def run_config(root: Path, source: Path, item_llm: str, *extra: str, floor: float = 0.01) -> dict:
    """What a person passes: params.yaml overrides in the one settings resource, where outputs
    and MLflow runs go, the registered model's name and the metric floor."""
    overrides = [f"data.source={source}", f"item_llm.model={item_llm}", "model.hidden_size=16"]
    overrides += ["model.num_layers=1", "model.max_len=8", "train.epochs=2", "train.threads=1"]
    return {
        "resources": {
            "settings": {"config": {"overrides": [*overrides, *extra]}},
            "workspace": {"config": {"root": str(root)}},
            "mlflow_tracking": {"config": {"uri": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"}},
        },
        "ops": {
            "registered_model": {"config": {"model_name": NAME}},
            "rec_model_metric_floor": {"config": {"floor": floor}},
        },
    }


def events(instance: dg.DagsterInstance, run: dg.DagsterRun, kind: Event) -> list:
    return [entry.dagster_event for entry in instance.all_logs(run.run_id, of_type=kind)]


def metadata(instance: dg.DagsterInstance, run: dg.DagsterRun, asset: str) -> dict:
    [event] = [
        e.event_specific_data.materialization
        for e in events(instance, run, Event.ASSET_MATERIALIZATION)
        if e.asset_key.path == [asset]
    ]
    return {k: v.value for k, v in event.metadata.items()}


def checks(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, object]:
    evaluations = [
        e.event_specific_data for e in events(instance, run, Event.ASSET_CHECK_EVALUATION)
    ]
    return {f"{c.asset_key.to_user_string()}:{c.check_name}": c for c in evaluations}


def table(value) -> list[dict]:
    return [record.data for record in value.records]


def edit_one_title(source: Path) -> None:
    movies = source / "movies.csv"
    movies.write_text(movies.read_text().replace("Movie 3, The", "Movie 3, Heat"))


@pytest.mark.slow
def test_retrains_register_a_champion_reencode_one_edited_item_and_survive_a_failure(
    tmp_path: Path, tiny_model: str
) -> None:
    source = write_movielens(tmp_path / "raw", users=8, items=7)
    tracking = Tracking(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        started = time.perf_counter()
        first = launch.launch("main_job", instance, run_config(tmp_path, source, tiny_model))
        print(f"full pipeline run: {time.perf_counter() - started:.1f} s")
        assert first.status == dg.DagsterRunStatus.SUCCESS
        # the code location's run, as the UI's job page and the timeline look it up
        label = {REPOSITORY_LABEL: "__repository__@lite_rec"}
        listed = instance.get_runs(dg.RunsFilter(job_name="main_job", tags=label))
        assert [run.run_id for run in listed] == [first.run_id]
        assert first.tags["lite_rec/retrain"] == "true"

        full = metadata(instance, first, "item_embeddings")
        assert (full["encoded"], full["reused from cache"], full["dagster/row_count"]) == (7, 0, 7)
        # the Item LLM that embedded the items is the one training recorded
        assert full["model"] == tiny_model
        model = metadata(instance, first, "rec_model")
        run = tracking.client().get_run(model["mlflow run id"])
        assert run.data.params["item_llm.model"] == tiny_model
        assert run.data.tags["dagster.run_id"] == first.run_id
        assert model["mlflow run"] == run_url(UI, run.info.experiment_id, run.info.run_id)
        valid = {row["metric"]: row["value"] for row in table(model["validation"])}
        assert valid["ndcg@10"] == round(run.data.metrics["valid_ndcg_at_10"], 4)
        assert model["valid ndcg@10"] == valid["ndcg@10"]
        assert f"path=learning_curve.png&run_uuid={run.info.run_id}" in model["learning curve"]
        epochs = table(model["epochs"])
        observed = [
            {k: v.value for k, v in e.event_specific_data.asset_observation.metadata.items()}
            for e in events(instance, first, Event.ASSET_OBSERVATION)
        ]
        assert [row["epoch"] for row in observed] == [row["epoch"] for row in epochs] == [1, 2]
        assert observed[0]["loss"] == epochs[0]["loss"] == round(observed[0]["loss"], 4)
        test = {
            row["metric"]: row["value"]
            for row in table(metadata(instance, first, "evaluation")["test"])
        }
        assert test["ndcg@10"] == round(run.data.metrics["test_ndcg_at_10"], 4)

        gate = metadata(instance, first, "registered_model")
        assert (gate["gate_decision"], gate["version"], gate["champion version"]) == (
            "promoted",
            1,
            1,
        )
        assert gate["champion uri"] == f"models:/{NAME}@champion"
        assert gate["mlflow model version"] == model_version_url(UI, NAME, 1)
        assert registry.champion_version(tracking.client(), NAME) == 1
        verdicts = checks(instance, first)
        assert len(verdicts) == 6 and all(c.passed for c in verdicts.values())
        assert verdicts["rec_model:metric_floor"].severity == dg.AssetCheckSeverity.WARN

        # A floor above any metric: the check warns and the pipeline goes on to the gate.
        edit_one_title(source)
        second = launch.launch(
            "main_job", instance, run_config(tmp_path, source, tiny_model, floor=1.5)
        )
        assert second.status == dg.DagsterRunStatus.SUCCESS
        floor = checks(instance, second)["rec_model:metric_floor"]
        assert not floor.passed and floor.severity == dg.AssetCheckSeverity.WARN
        assert table(floor.metadata["rules"].value)[0]["rule"] == "ndcg@10 >= 1.5"
        partial = metadata(instance, second, "item_embeddings")
        assert (partial["encoded"], partial["reused from cache"]) == (1, 6)
        print(f"item embeddings: full {full['seconds']} s, one edited item {partial['seconds']} s")
        decision = metadata(instance, second, "registered_model")
        assert decision["version"] == 2
        champion = registry.champion_version(tracking.client(), NAME)
        assert champion == (2 if decision["gate_decision"] == "promoted" else 1)
        assert decision["champion version"] == champion

        # 16 hidden units do not split into 3 heads: training fails, so nothing is registered,
        # and the launcher (what `make run` calls) exits 1.
        broken = tmp_path / "broken.yaml"
        broken.write_text(
            yaml.safe_dump(run_config(tmp_path, source, tiny_model, "model.num_heads=3"))
        )
        assert launch.main(["main_job", "-c", str(broken)]) == 1
        [failed_run] = instance.get_runs(limit=1)
        assert failed_run.status == dg.DagsterRunStatus.FAILURE
        assert [e.step_key for e in events(instance, failed_run, Event.STEP_FAILURE)] == [
            "rec_model"
        ]
    assert registry.champion_version(tracking.client(), NAME) == champion
    assert len(tracking.client().search_model_versions(f"name = '{NAME}'")) == 2


def test_schedule_requests_a_retrain_nightly_by_default() -> None:
    schedule = defs.get_repository_def().get_schedule_def("nightly_retrain")
    assert schedule.job_name == "main_job"
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "UTC")
    with dg.build_schedule_context() as context:
        assert len(schedule.evaluate_tick(context).run_requests) == 1
    assert defs.resolve_job_def("main_job").tags == RETRAIN_TAGS
    hourly = automation.retrain_schedule("0 * * * *", "Europe/Paris")
    assert (hourly.cron_schedule, hourly.execution_timezone) == ("0 * * * *", "Europe/Paris")


def test_sensor_fires_on_a_changed_catalog_and_skips_an_unchanged_one(tmp_path: Path) -> None:
    source = write_movielens(tmp_path / "raw")
    (source / "README.txt").write_text("not part of the catalog")
    settings = Settings(overrides=[f"data.source={source}"])

    def tick(cursor: str | None) -> tuple[dg.RunRequest | dg.SkipReason, str | None]:
        with dg.build_sensor_context(cursor=cursor, resources={"settings": settings}) as context:
            result = automation.catalog_changed(context)
            return result, context.cursor

    first, cursor = tick(None)
    assert isinstance(first, dg.SkipReason) and cursor == automation.catalog_digest(source)
    same, cursor_again = tick(cursor)
    assert isinstance(same, dg.SkipReason) and cursor_again == cursor

    (source / "README.txt").write_text("edited, still not the catalog")
    assert isinstance(tick(cursor)[0], dg.SkipReason)

    edit_one_title(source)
    request, edited = tick(cursor)
    assert isinstance(request, dg.RunRequest) and request.run_key == edited != cursor
    assert request.tags == RETRAIN_TAGS
    assert isinstance(tick(edited)[0], dg.SkipReason)

    with open(source / "ratings.csv", "a") as ratings:
        ratings.write("1,1,5.0,2000000\n")
    request, _ = tick(edited)
    assert isinstance(request, dg.RunRequest) and request.run_key != edited


def test_sensor_skips_a_dataset_directory_without_catalog_files(tmp_path: Path) -> None:
    settings = Settings(overrides=[f"data.source={tmp_path}"])
    with dg.build_sensor_context(resources={"settings": settings}) as context:
        skip = automation.catalog_changed(context)
    assert isinstance(skip, dg.SkipReason) and str(tmp_path) in skip.skip_message
    assert context.cursor is None
