"""`lite-rec bench --quick` end to end on a tiny dataset, the report's arithmetic, and the
`table` and `data` tools."""

import json
from pathlib import Path

import pytest

from lite_rec.bench import MODELS, inference_ratios
from lite_rec.bench.models import TRAINERS
from lite_rec.cli import main
from orchestration.assets.bench import benchmark
from orchestration.definitions import defs
from tests.conftest import write_movielens


def test_quick_bench_writes_json_markdown_plots_and_mlflow(tmp_path: Path) -> None:
    source = write_movielens(tmp_path / "tiny", users=8, items=8)
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "--datasets",
            str(source),
            "--quick",
            "--out",
            str(out),
            "--work-dir",
            str(tmp_path / "work"),
            "--cache",
            str(tmp_path / "cache"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--set",
            "model.hidden_size=16",
            "--set",
            "model.max_len=6",
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True
    section = results["datasets"]["tiny"]
    assert list(section["models"]) == list(MODELS)
    for row in section["models"].values():
        assert 0.0 <= row["test_recall@10"] <= 1.0 and row["parameters"] > 0
        assert row["infer_seconds_per_1000_users_k10"] > 0 and row["peak_rss_mib"] > 0
        assert row["history"] and "valid_ndcg@10" in row["history"][0]
        assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
    assert section["models"]["lite_llm4rec"]["recipe"] == "none"  # auto on 8 users
    phases = section["phases"]
    assert phases["prepare_seconds"] > 0 and phases["encoded_items"] == 8
    assert set(section["inference_ratio"]) == {
        "generative_sequential/lite_llm4rec",
        "generative_semantic/lite_llm4rec",
        "generative_text/lite_llm4rec",
        "generative_sequential/generative_head",
    }
    assert set(section["item_quality"]) == {"pretrained", "random_init"}
    markdown = (out / "results.md").read_text()
    assert "| lite_llm4rec |" in markdown and "inference time:" in markdown
    assert "p50 / p99 ms" in markdown and "8 items encoded" in markdown
    for name in ("tiny_accuracy_vs_time.png", "tiny_learning_curves.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "mlflow.db").exists()


def test_a_bench_stopped_part_way_keeps_the_models_it_finished(tmp_path, monkeypatch) -> None:
    def crash(bench):
        raise KeyboardInterrupt

    monkeypatch.setitem(TRAINERS, "lite_text", crash)
    source = write_movielens(tmp_path / "tiny", users=8, items=8)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        main(
            [
                "bench",
                *("--datasets", str(source), "--quick", "--out", str(out), "--no-mlflow"),
                *("--models", "lite_id,lite_text", "--work-dir", str(tmp_path / "work")),
                *("--cache", str(tmp_path / "cache"), "--set", "model.hidden_size=16"),
            ]
        )
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is False
    assert list(results["datasets"]["tiny"]["models"]) == ["lite_id"]
    assert "**Incomplete" in (out / "results.md").read_text()


def test_inference_ratio_is_generative_time_over_lite_llm4rec_time() -> None:
    rows = {
        "lite_llm4rec": {
            "infer_seconds_per_1000_users_k10": 2.0,
            "infer_seconds_per_1000_users_k20": 2.0,
        },
        "generative_semantic": {
            "infer_seconds_per_1000_users_k10": 300.0,
            "infer_seconds_per_1000_users_k20": 500.0,
        },
    }
    expected = {"generative_semantic/lite_llm4rec": {"k10": 150.0, "k20": 250.0}}
    assert inference_ratios(rows) == expected
    assert inference_ratios({"generative_semantic": rows["generative_semantic"]}) == {}


def test_benchmark_asset_has_its_own_job_and_stays_out_of_the_pipeline_jobs() -> None:
    repository = defs.get_repository_def()
    bench_job = repository.get_job("benchmark_job")
    assert benchmark.key in bench_job.asset_layer.selected_asset_keys
    # main_job is also the nightly retrain's: it must not run the benchmark
    pipeline = repository.get_job("main_job").asset_layer.selected_asset_keys
    assert benchmark.key not in pipeline and len(pipeline) == 12
    assert benchmark.group_names_by_key[benchmark.key] == "benchmark"


def test_bench_rejects_unknown_models(tmp_path: Path, capsys) -> None:
    assert main(["bench", "--models", "nope", "--out", str(tmp_path), "--no-mlflow"]) == 2
    assert "unknown model(s) ['nope']" in capsys.readouterr().err


def _bench_args(source: Path, tmp_path: Path, out: Path, models: str) -> list[str]:
    return [
        "bench",
        *("--datasets", str(source), "--quick", "--out", str(out), "--no-mlflow"),
        *("--models", models, "--work-dir", str(tmp_path / "work")),
        *("--cache", str(tmp_path / "cache"), "--set", "model.hidden_size=16"),
        *("--set", "train.threads=1"),
    ]


def test_models_trained_at_once_score_as_when_trained_one_by_one(tmp_path: Path) -> None:
    source = write_movielens(tmp_path / "tiny", users=8, items=8)
    models = "lite_llm4rec,lite_id,lite_sampling"
    assert main(_bench_args(source, tmp_path, tmp_path / "one", models)) == 0
    assert main([*_bench_args(source, tmp_path, tmp_path / "three", models), "--jobs", "3"]) == 0
    one, three = (
        json.loads((tmp_path / run / "results.json").read_text()) for run in ("one", "three")
    )
    assert three["settings"]["jobs"] == 3 and three["complete"] is True
    rows_one, rows_three = (r["datasets"]["tiny"]["models"] for r in (one, three))
    assert list(rows_three) == models.split(",")  # table order, whatever finished first
    for name, row in rows_one.items():
        for key in ("test_recall@10", "test_ndcg@10", "parameters", "best_epoch"):
            assert rows_three[name][key] == row[key], (name, key)
    assert "3 models trained at once" in (tmp_path / "three" / "results.md").read_text()


def test_a_failing_model_is_named_and_the_others_are_kept(tmp_path, monkeypatch) -> None:
    def broken(bench):
        raise ValueError("no such weights")

    monkeypatch.setitem(TRAINERS, "lite_text", broken)
    source = write_movielens(tmp_path / "tiny", users=8, items=8)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="lite_text on tiny"):
        main(_bench_args(source, tmp_path, out, "lite_text,lite_id"))
    results = json.loads((out / "results.json").read_text())
    section = results["datasets"]["tiny"]
    assert results["complete"] is False
    assert list(section["models"]) == ["lite_id"]
    assert section["failed"] == {"lite_text": "ValueError: no such weights"}
    assert "**`lite_text` failed**: ValueError: no such weights" in (out / "results.md").read_text()
    assert (out / "tiny_learning_curves.png").read_bytes()[:4] == b"\x89PNG"


def _bench_run(command: str, datasets: dict[str, dict[str, tuple[float, float, int]]]) -> dict:
    """A results.json of `lite-rec bench`: dataset -> model -> (recall@10, ndcg@10, epochs)."""
    return {
        "command": command,
        "datasets": {
            dataset: {
                "models": {
                    model: {"test_recall@10": r, "test_ndcg@10": n, "epochs": e}
                    for model, (r, n, e) in models.items()
                }
            }
            for dataset, models in datasets.items()
        },
    }


def test_table_puts_datasets_side_by_side_taking_each_model_from_the_first_run(
    tmp_path: Path, capsys
) -> None:
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text(json.dumps(_bench_run("one", {"toys": {"lite_id": (0.1, 0.05, 3)}})))
    runs = {"toys": {"lite_id": (0.9, 0.9, 9), "lite_text": (0.2, 0.1, 4)}}
    runs["beauty"] = {"lite_id": (0.3, 0.15, 5)}
    second.write_text(json.dumps(_bench_run("two", runs)))
    assert main(["bench", "table", str(first), str(second), "--models", "lite_text,lite_id"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| model | toys R@10 / N@10 (epochs) | beauty R@10 / N@10 (epochs) | run |"
    assert lines[2] == "| lite_text | 0.2000 / 0.1000 (4) | - | 2 |"
    assert lines[3] == "| lite_id | 0.1000 / 0.0500 (3) | 0.3000 / 0.1500 (5) | 1, 2 |"
    assert lines[-1] == f"run 2: `{second}`: `two`"


def test_data_bench_times_prepare_and_the_cache_on_one_edited_title(
    tmp_path: Path, tiny_model
) -> None:
    source = write_movielens(tmp_path / "tiny", users=8, items=8)
    out = tmp_path / "out"
    args = ["bench", "data", "--datasets", str(source), "--out", str(out)]
    assert main([*args, "--set", f"item_llm.model={tiny_model}"]) == 0
    results = json.loads((out / "results.json").read_text())
    prepared = results["prepare"]["tiny"]
    assert prepared["users"] == 8 and prepared["items"] == 8 and prepared["median_seconds"] > 0
    cache = results["cache"]
    assert (cache["items"], cache["full_encoded"], cache["partial_encoded"]) == (8, 8, 1)
    assert "after editing one title, 1 encoded" in (out / "results.md").read_text()
