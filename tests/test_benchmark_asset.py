"""The benchmark asset on a tiny dataset: its per-dataset model table reads in place."""

from pathlib import Path

import dagster as dg

from orchestration.assets.bench import benchmark
from orchestration.resources import MlflowTracking, Settings, Workspace
from tests.conftest import write_movielens


def test_benchmark_asset_shows_a_rounded_table_per_dataset(tmp_path: Path) -> None:
    source = write_movielens(tmp_path / "tiny", users=8, items=7)
    overrides = ["model.hidden_size=16", "model.num_layers=1", "model.max_len=8"]
    result = dg.materialize(
        [benchmark],
        resources={
            "settings": Settings(overrides=[*overrides, "train.epochs=1", "train.threads=1"]),
            "workspace": Workspace(root=str(tmp_path)),
            "mlflow_tracking": MlflowTracking(uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
        },
        run_config={
            "ops": {
                "benchmark": {
                    "config": {"datasets": [str(source)], "models": ["lite_id"], "quick": True}
                }
            }
        },
    )
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    [row] = [record.data for record in metadata["tiny models"].value.records]
    measured = result.output_for_node("benchmark")["datasets"]["tiny"]["models"]["lite_id"]
    assert row["model"] == "lite_id" and row["parameters"] == measured["parameters"]
    assert row["test_ndcg@10"] == round(measured["test_ndcg@10"], 4)
    assert row["train_seconds"] == round(measured["train_seconds"], 4)
    assert (tmp_path / "bench" / "results" / "results.md").is_file()
