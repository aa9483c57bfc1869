"""The Dagster wiring: definitions load, run config has one shape, and the data assets
materialize in-process."""

from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from orchestration.definitions import data_assets, data_checks, defs
from orchestration.resources import Settings
from tests.conftest import write_movielens


def run_config(*overrides: str) -> dict:
    """The run config a person passes: overrides of params.yaml, nothing per asset."""
    return {"resources": {"settings": {"config": {"overrides": list(overrides)}}}}


def materialize(source: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        data_assets + data_checks,
        resources={"settings": Settings()},
        run_config=run_config(f"data.source={source}"),
        raise_on_error=False,
    )


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
        "items_5core",
        "sequences",
    } <= keys


def test_every_job_takes_its_settings_from_the_one_settings_resource() -> None:
    for name in ("main_job", "retrain_job", "benchmark_job"):
        job = defs.resolve_job_def(name)
        dg.validate_run_config(job, run_config("train.epochs=5", "data.source=/data/x"))
    dg.validate_run_config(
        defs.resolve_job_def("main_job"),
        {
            "resources": {"settings": {"config": {"params_file": "params.yaml"}}},
            "ops": {"registered_model": {"config": {"min_margin": 0.005}}},
        },
    )
    with pytest.raises(dg.DagsterInvalidConfigError, match="unexpected config entry"):
        dg.validate_run_config(
            defs.resolve_job_def("benchmark_job"),
            {"ops": {"benchmark": {"config": {"overrides": ["train.epochs=5"]}}}},
        )


def test_data_assets_materialize_on_a_tiny_dataset(tmp_path: Path) -> None:
    source = write_movielens(tmp_path / "raw", users=7, items=6)
    result = materialize(source)
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
    sequences = result.output_for_node("sequences")
    assert list(sequences.item_ids) == [str(item) for item in range(1, 7)]
    assert list(sequences.user_ids) == [str(user) for user in range(1, 8)]
    # every user rated every item in item order (timestamps grow with the item id)
    assert all(np.array_equal(seq, np.arange(6)) for seq in sequences.sequences)


def test_failed_expectation_blocks_everything_downstream(tmp_path: Path) -> None:
    source = write_movielens(tmp_path / "raw")
    ratings = source / "ratings.csv"
    ratings.write_text(ratings.read_text().replace(",3.0,", ",11.0,", 1))
    result = materialize(source)
    assert not result.success
    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert [c.check_name for c in failed] == ["raw_interactions_expectations"]
    assert "rating" in str(failed[0].metadata["failures"].value)
    assert failed[0].metadata["source"].value == str(source)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"raw_interactions", "raw_items"}


def test_a_k_core_that_removes_everything_names_the_dataset(tmp_path: Path) -> None:
    source = write_movielens(tmp_path / "raw", users=3, items=3)
    result = dg.materialize(
        data_assets + data_checks,
        resources={"settings": Settings(overrides=[f"data.source={source}", "data.k_core=4"])},
        raise_on_error=False,
    )
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "interactions_5core"
    message = str(failure.event_specific_data.error)
    assert str(source) in message and "4-core filtering removed every interaction" in message
