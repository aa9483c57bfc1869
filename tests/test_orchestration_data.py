"""The Dagster wiring: definitions load, and the data assets materialize in-process."""

from pathlib import Path

import dagster as dg

from orchestration.assets import data
from orchestration.definitions import defs
from tests.conftest import write_movielens

DATA_ASSETS = [data.raw_tables, data.interactions_5core, data.loo_splits, data.dataset_stats]
DATA_CHECKS = [data.raw_items_expectations, data.raw_interactions_expectations]


def run_config(source: Path) -> dg.RunConfig:
    return dg.RunConfig(ops={"raw_tables": data.DatasetConfig(source=str(source))})


def test_definitions_resolve_every_job_schedule_and_sensor() -> None:
    repository = defs.get_repository_def()
    for job in repository.get_all_jobs():
        assert job.name
    for schedule in defs.schedules or []:
        assert repository.get_schedule_def(schedule.name)
    for sensor in defs.sensors or []:
        assert repository.get_sensor_def(sensor.name)
    keys = {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()}
    assert {
        "raw_interactions",
        "raw_items",
        "interactions_5core",
        "loo_splits",
        "dataset_stats",
    } <= keys


def test_data_assets_materialize_on_a_tiny_dataset(tmp_path: Path) -> None:
    source = write_movielens(tmp_path / "raw", users=7, items=6)
    result = dg.materialize(DATA_ASSETS + DATA_CHECKS, run_config=run_config(source))
    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations())
    assert result.output_for_node("dataset_stats") == {
        "users": 7,
        "items": 6,
        "interactions": 42,
        "mean_sequence_length": 6.0,
        "median_sequence_length": 6.0,
        "density": 1.0,
    }


def test_failed_expectation_blocks_everything_downstream(tmp_path: Path) -> None:
    source = write_movielens(tmp_path / "raw")
    ratings = source / "ratings.csv"
    ratings.write_text(ratings.read_text().replace(",3.0,", ",11.0,", 1))
    result = dg.materialize(
        DATA_ASSETS + DATA_CHECKS, run_config=run_config(source), raise_on_error=False
    )
    assert not result.success
    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert [c.check_name for c in failed] == ["raw_interactions_expectations"]
    assert "rating" in str(failed[0].metadata["failures"].value)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"raw_interactions", "raw_items"}
