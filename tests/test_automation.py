"""Retraining for real on tiny data: the pipeline ends with a champion, an edited item is the
only one re-encoded, a failed run leaves the champion alone; the schedule and the sensor."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from lite_rec import registry
from lite_rec.tracking import Tracking
from orchestration import automation
from orchestration.definitions import data_assets, data_checks, defs, model_assets, registry_assets
from orchestration.resources import MlflowTracking, Settings, Workspace
from tests.conftest import write_movielens

NAME = "lite_rec_tiny"


def run_config(source: Path, item_llm: str, *extra: str) -> dict:
    """What a person passes: params.yaml overrides in the one settings resource, and the
    registered model's name."""
    overrides = [f"data.source={source}", f"item_llm.model={item_llm}", "model.hidden_size=16"]
    overrides += ["model.num_layers=1", "model.max_len=8", "train.epochs=2", "train.threads=1"]
    return {
        "resources": {"settings": {"config": {"overrides": [*overrides, *extra]}}},
        "ops": {"registered_model": {"config": {"model_name": NAME}}},
    }


def retrain(root: Path, config: dict) -> dg.ExecuteInProcessResult:
    resources = {
        "settings": Settings(),
        "workspace": Workspace(root=str(root)),
        "mlflow_tracking": MlflowTracking(uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"),
    }
    return dg.materialize(
        data_assets + data_checks + model_assets + registry_assets,
        resources=resources,
        run_config=config,
        raise_on_error=False,
    )


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset]]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def edit_one_title(source: Path) -> None:
    movies = source / "movies.csv"
    movies.write_text(movies.read_text().replace("Movie 3, The", "Movie 3, Heat"))


@pytest.mark.slow
def test_retrains_register_a_champion_reencode_one_edited_item_and_survive_a_failure(
    tmp_path: Path, tiny_model: str
) -> None:
    source = write_movielens(tmp_path / "raw", users=8, items=7)
    tracking = Tracking(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")

    started = time.perf_counter()
    first = retrain(tmp_path, run_config(source, tiny_model))
    print(f"full pipeline run: {time.perf_counter() - started:.1f} s")
    assert first.success
    full = metadata(first, "item_embeddings")
    assert (full["encoded"], full["reused from cache"]) == (7, 0)
    # the Item LLM that embedded the items is the one training recorded
    assert full["model"] == tiny_model
    run = tracking.client().get_run(metadata(first, "rec_model")["mlflow run"])
    assert run.data.params["item_llm.model"] == tiny_model
    gate = metadata(first, "registered_model")
    assert gate["decision"] == "promoted" and gate["version"] == 1
    assert registry.champion_version(tracking.client(), NAME) == 1

    edit_one_title(source)
    second = retrain(tmp_path, run_config(source, tiny_model))
    assert second.success
    partial = metadata(second, "item_embeddings")
    assert (partial["encoded"], partial["reused from cache"]) == (1, 6)
    print(f"item embeddings: full {full['seconds']} s, one edited item {partial['seconds']} s")
    decision = metadata(second, "registered_model")
    assert decision["version"] == 2 and decision["champion version"] == 1
    champion = registry.champion_version(tracking.client(), NAME)
    assert champion == (2 if decision["decision"] == "promoted" else 1)

    # 16 hidden units do not split into 3 heads: training fails, so nothing is registered.
    broken = retrain(tmp_path, run_config(source, tiny_model, "model.num_heads=3"))
    assert not broken.success
    failed = [e.step_key for e in broken.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failed == ["rec_model"]
    assert registry.champion_version(tracking.client(), NAME) == champion
    assert len(tracking.client().search_model_versions(f"name = '{NAME}'")) == 2


def test_schedule_requests_a_retrain_nightly_by_default() -> None:
    schedule = defs.get_repository_def().get_schedule_def("nightly_retrain")
    assert schedule.job_name == "retrain_job"
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "UTC")
    with dg.build_schedule_context() as context:
        assert len(schedule.evaluate_tick(context).run_requests) == 1
    assert automation.retrain_job.tags == automation.RETRAIN_TAGS
    assert defs.resolve_job_def("main_job").tags == automation.RETRAIN_TAGS
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
    assert request.tags == automation.RETRAIN_TAGS
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
