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
from orchestration.assets import data, model
from orchestration.assets import registry as registry_assets
from orchestration.definitions import defs
from orchestration.resources import MlflowTracking, Workspace
from tests.conftest import write_movielens

ASSETS = [data.raw_tables, data.interactions_5core, data.loo_splits, data.dataset_stats]
ASSETS += [model.items_5core, model.item_embeddings, model.rec_model, model.evaluation]
ASSETS += [registry_assets.registered_model]
CHECKS = [data.raw_items_expectations, data.raw_interactions_expectations]
NAME = "lite_rec_tiny"


def run_config(source: Path, item_llm: str, *extra: str) -> dg.RunConfig:
    overrides = [f"item_llm.model={item_llm}", "model.hidden_size=16", "model.num_layers=1"]
    overrides += ["model.max_len=8", "train.epochs=2", "train.threads=1", *extra]
    settings = model.ModelSettings(overrides=overrides)
    return dg.RunConfig(
        ops={
            "raw_tables": data.DatasetConfig(source=str(source)),
            "item_embeddings": settings,
            "rec_model": settings,
            "registered_model": registry_assets.RegistrySettings(model_name=NAME),
        }
    )


def retrain(root: Path, config: dg.RunConfig) -> dg.ExecuteInProcessResult:
    resources = {
        "workspace": Workspace(root=str(root)),
        "mlflow_tracking": MlflowTracking(uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"),
    }
    return dg.materialize(
        ASSETS + CHECKS, resources=resources, run_config=config, raise_on_error=False
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
    sensor = automation.catalog_change_sensor(str(source), "auto")

    def tick(cursor: str | None) -> tuple[dg.RunRequest | dg.SkipReason, str | None]:
        with dg.build_sensor_context(cursor=cursor) as context:
            result = sensor(context)
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
    assert request.run_config["ops"]["raw_tables"]["config"]["source"] == str(source)
    assert isinstance(tick(edited)[0], dg.SkipReason)

    with open(source / "ratings.csv", "a") as ratings:
        ratings.write("1,1,5.0,2000000\n")
    request, _ = tick(edited)
    assert isinstance(request, dg.RunRequest) and request.run_key != edited
