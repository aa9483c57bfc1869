"""The Dagster wiring: definitions load, run config has one shape, and the data assets
materialize in-process with their row counts, column schemas and checks."""

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


def materialization(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset]]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def checks_by_name(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        f"{c.asset_key.to_user_string()}:{c.check_name}": c
        for c in result.get_asset_check_evaluations()
    }


def rows(evaluation: dg.AssetCheckEvaluation, key: str) -> list[dict]:
    return [record.data for record in evaluation.metadata[key].value.records]


def test_definitions_resolve_every_job_schedule_and_sensor() -> None:
    repository = defs.get_repository_def()
    assert {job.name for job in repository.get_all_jobs()} >= {"main_job", "benchmark_job"}
    for schedule in defs.schedules or []:
        assert repository.get_schedule_def(schedule.name).job_name == "main_job"
    for sensor in defs.sensors or []:
        assert repository.get_sensor_def(sensor.name).job_name == "main_job"
    graph = repository.asset_graph
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {
        "raw_interactions",
        "raw_items",
        "interactions_5core",
        "loo_splits",
        "dataset_stats",
        "items_5core",
        "sequences",
    } <= keys
    checks = {f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys}
    assert checks == {
        "raw_items:expectations",
        "raw_interactions:expectations",
        "interactions_5core:k_core",
        "loo_splits:leave_one_out",
        "item_embeddings:one_finite_vector_per_item",
        "rec_model:metric_floor",
    }
    for key in graph.get_all_asset_keys():  # what the catalog shows for every asset
        node = graph.get(key)
        assert node.owners == ["team:lite-rec"] and node.code_version and node.kinds, key
    descriptions = {
        graph.get(dg.AssetKey(k)).description for k in ("raw_items", "raw_interactions")
    }
    assert len(descriptions) == 2


def test_every_job_takes_its_settings_from_the_one_settings_resource() -> None:
    for name in ("main_job", "benchmark_job"):
        job = defs.resolve_job_def(name)
        dg.validate_run_config(job, run_config("train.epochs=5", "data.source=/data/x"))
    dg.validate_run_config(
        defs.resolve_job_def("main_job"),
        {
            "resources": {
                "settings": {
                    "config": {"params_file": "params.yaml", "mlflow_ui_url": "http://mlflow"}
                }
            },
            "ops": {
                "registered_model": {"config": {"min_margin": 0.005}},
                "rec_model_metric_floor": {"config": {"floor": 0.05}},
            },
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

    raw = materialization(result, "raw_interactions")
    assert raw["dagster/row_count"] == 42 and raw["file"] == str(source / "ratings.csv")
    columns = {c.name: c.type for c in raw["dagster/column_schema"].columns}
    assert columns == {
        "user_id": "str",
        "item_id": "str",
        "timestamp": "int64",
        "rating": "float64",
    }
    splits = materialization(result, "loo_splits")
    assert (splits["dagster/row_count"], splits["test rows"], splits["valid rows"]) == (42, 7, 7)
    assert "split" in {c.name for c in splits["dagster/column_schema"].columns}
    assert materialization(result, "items_5core")["dagster/row_count"] == 6

    checks = checks_by_name(result)
    assert all(check.passed for check in checks.values())
    expectations = rows(checks["raw_interactions:expectations"], "expectations")
    assert len(expectations) == 16 and all(row["passed"] for row in expectations)
    rating = {row["expectation"] for row in expectations if row["column"] == "rating"}
    assert rating == {"expect_column_to_exist", "expect_column_values_to_be_between"}
    rules = rows(checks["loo_splits:leave_one_out"], "rules")
    assert [(row["rule"], row["checked"], row["failing"]) for row in rules] == [
        ("every user has one valid item", 7, 0),
        ("every user has one test item", 7, 0),
        ("valid and test come after every training row of the user", 7, 0),
        ("no test item in the user's training part", 7, 0),
    ]
    kcore = rows(checks["interactions_5core:k_core"], "rules")
    assert [(row["checked"], row["failing"]) for row in kcore] == [(7, 0), (6, 0)]


def test_failed_expectation_blocks_everything_downstream(tmp_path: Path) -> None:
    source = write_movielens(tmp_path / "raw")
    ratings = source / "ratings.csv"
    ratings.write_text(ratings.read_text().replace(",3.0,", ",11.0,", 1))
    result = materialize(source)
    assert not result.success
    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert [(c.asset_key.to_user_string(), c.check_name) for c in failed] == [
        ("raw_interactions", "expectations")
    ]
    assert "rating" in str(failed[0].metadata["failures"].value)
    assert failed[0].metadata["source"].value == str(source)
    [broken] = [row for row in rows(failed[0], "expectations") if not row["passed"]]
    assert (broken["column"], broken["unexpected"], broken["severity"]) == ("rating", 1, "critical")
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
