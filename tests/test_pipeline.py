"""The model half end to end on a tiny dataset: CLI, MLflow run and pyfunc, Dagster job."""

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest

from lite_rec.cli import main
from lite_rec.config import ModelConfig, TrainConfig, load_config
from lite_rec.evaluate import evaluate
from lite_rec.model import RecommendationLLM
from lite_rec.pipeline import held_out_validation, load_trained_model, train_rec_model
from lite_rec.sequences import load_sequences
from lite_rec.tracking import Tracking, data_digest
from lite_rec.train import TrainResult
from orchestration.definitions import data_assets, data_checks, model_assets
from orchestration.resources import MlflowTracking, Settings, TrainingLauncher, Workspace
from tests.conftest import cyclic_data, write_movielens


def tiny_settings(tiny_model: str) -> list[str]:
    return [
        f"item_llm.model={tiny_model}",
        "model.hidden_size=16",
        "model.num_heads=2",
        "train.epochs=2",
        "train.batch_size=16",
        "train.warmup_steps=1",
    ]


def tiny_run_config(source: Path, tiny_model: str) -> dict:
    """Run config of the pipeline's assets on `source` with the tiny models."""
    overrides = [f"data.source={source}", *tiny_settings(tiny_model)]
    return {"resources": {"settings": {"config": {"overrides": overrides}}}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> dict:
    root = tmp_path_factory.mktemp("pipeline")
    source = write_movielens(root / "raw", users=10, items=8)
    data_dir, model_dir = root / "data", root / "model"
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    assert main(["prepare", "--source", str(source), "--out", str(data_dir)]) == 0
    overrides = [arg for s in tiny_settings(tiny_model) for arg in ("--set", s)]
    common = ["--cache", str(root / "cache"), *overrides]
    assert main(["embed", str(data_dir), "--out", str(root / "emb"), *common]) == 0
    train_args = ["train", str(data_dir), "--out", str(model_dir), "--tracking-uri", uri]
    assert main([*train_args, "--embeddings", str(root / "emb"), *common]) == 0
    return {"root": root, "data": data_dir, "model": model_dir, "uri": uri}


def test_train_writes_a_model_and_an_mlflow_run(trained: dict) -> None:
    model_dir = trained["model"]
    assert {"model.pt", "model_config.json", "catalog.json", "learning_curve.png"} <= {
        p.name for p in model_dir.iterdir()
    }
    run_id = json.loads((model_dir / "mlflow_run.json").read_text())["run_id"]
    run = mlflow.MlflowClient(trained["uri"]).get_run(run_id)
    assert run.data.params["model.hidden_size"] == "16"
    assert run.data.params["train.recipe"] == "none"  # resolved from auto: few users
    assert "valid_ndcg_at_10" in run.data.metrics and "loss" in run.data.metrics
    history = mlflow.MlflowClient(trained["uri"]).get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [1, 2]
    valid = mlflow.MlflowClient(trained["uri"]).get_metric_history(run_id, "valid_ndcg_at_10")
    assert len(valid) == 1, "the model's validation score, not one per epoch"


def test_the_run_is_named_tagged_and_described_with_its_data_and_model(trained: dict) -> None:
    client = mlflow.MlflowClient(trained["uri"])
    run_id = json.loads((trained["model"] / "mlflow_run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    # The CLI's config names the dataset by `data.source` (params.yaml's ml-latest-small).
    assert re.fullmatch(r"ml-latest-small text\+id \d{4}-\d\d-\d\d \d\d:\d\d", run.info.run_name)
    assert run.data.tags["lite_rec.dataset"] == "ml-latest-small"
    assert "trained on ml-latest-small (10 users, 8 items)" in run.data.tags["mlflow.note.content"]
    (data_input,) = run.inputs.dataset_inputs
    assert data_input.dataset.name == "ml-latest-small"
    assert data_input.dataset.digest == data_digest(load_sequences(trained["data"]))
    assert json.loads(data_input.dataset.profile)["num_rows"] == 80  # 10 users x 8 items
    assert {tag.key: tag.value for tag in data_input.tags}["mlflow.data.context"] == "training"
    assert len(data_input.dataset.schema) < 1000, "the schema and counts, not the rows"
    (output,) = run.outputs.model_outputs
    assert client.get_logged_model(output.model_id).name == "lite_rec_ml-latest-small"


def test_train_rec_model_tags_the_run_and_reports_each_epoch(tmp_path: Path) -> None:
    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    config = load_config(overrides=["model.item_repr=id", "model.hidden_size=16", "train.epochs=2"])
    rows = []
    trained = train_rec_model(
        cyclic_data(6, 8),
        None,
        config,
        tmp_path / "model",
        tracking,
        progress=False,
        tags={"dagster.run_id": "run-1"},
        on_epoch_end=rows.append,
    )
    assert [row["epoch"] for row in rows] == [1, 2] and rows == trained.history
    run = tracking.client().get_run(trained.run_id)
    assert run.data.tags["dagster.run_id"] == "run-1"
    assert trained.experiment_id == run.info.experiment_id
    assert load_trained_model(tmp_path / "model", tracking).experiment_id == trained.experiment_id


def test_a_refit_model_reports_the_validation_metrics_of_its_best_epoch(
    trained: dict, tiny_model: str, caplog, capsys
) -> None:
    """After refit epochs the model has trained on the validation items: the run logs the
    best epoch's (held-out) validation metrics, and scoring it on them again warns."""
    root, model_dir = trained["root"], trained["root"] / "refit_model"
    overrides = [arg for s in tiny_settings(tiny_model) for arg in ("--set", s)]
    args = [
        "train",
        str(trained["data"]),
        "--out",
        str(model_dir),
        "--tracking-uri",
        trained["uri"],
    ]
    args += ["--cache", str(root / "cache"), "--embeddings", str(root / "emb"), *overrides]
    assert main([*args, "--set", "train.refit_epochs=1"]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])
    history = json.loads((model_dir / "history.json").read_text())
    best = history[printed["best_epoch"] - 1]
    assert printed["ndcg@10"] == best["valid_ndcg@10"] and printed["mrr"] == best["valid_mrr"]
    run_id = json.loads((model_dir / "mlflow_run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(trained["uri"])
    assert client.get_run(run_id).data.metrics["valid_ndcg_at_10"] == best["valid_ndcg@10"]
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3]
    per_epoch = client.get_metric_history(run_id, "epoch_valid_ndcg_at_10")
    assert [(m.step, m.value) for m in per_epoch] == [
        (row["epoch"], row["valid_ndcg@10"]) for row in history
    ]
    assert json.loads((model_dir / "model_config.json").read_text())["refit_epochs"] == 1
    with caplog.at_level("WARNING"):
        assert main(["evaluate", str(trained["data"]), str(model_dir), "--split", "valid"]) == 0
    assert "trained on the validation items" in caplog.text


def test_held_out_validation_is_the_best_epochs_once_the_model_saw_the_validation_items():
    data = cyclic_data(n_items=12, n_users=30)
    config = ModelConfig(hidden_size=8, num_layers=1, num_heads=1, item_repr="id")
    model = RecommendationLLM(config, data.n_items).eval()
    rows = [
        {"epoch": e, "loss": 1.0, "valid_ndcg@10": v, "valid_mrr": v / 2}
        for e, v in ((1, 0.2), (2, 0.3), (3, 0.1))
    ]
    result = TrainResult(model, 2, rows, TrainConfig(), refit_history=[{"epoch": 4, "loss": 0.5}])
    assert held_out_validation(result, data) == {"ndcg@10": 0.3, "mrr": 0.15}
    without_refit = dataclasses.replace(result, refit_history=[])
    assert held_out_validation(without_refit, data) == evaluate(model, data, "valid")


def test_evaluate_prints_json_and_logs_test_metrics(trained: dict, capsys) -> None:
    args = ["evaluate", str(trained["data"]), str(trained["model"]), "--json"]
    assert main([*args, "--tracking-uri", trained["uri"]]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {f"{m}@{k}" for m in ("recall", "ndcg") for k in (5, 10, 20)} | {"mrr"}
    assert 0 <= metrics["ndcg@10"] <= metrics["recall@10"] <= metrics["recall@20"] == 1.0
    run_id = json.loads((trained["model"] / "mlflow_run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(trained["uri"])
    logged = client.get_run(run_id).data.metrics
    assert logged["test_recall_at_10"] == pytest.approx(metrics["recall@10"])
    artifacts = {file.path for file in client.list_artifacts(run_id)}
    assert {"test_metrics.json", "test_metrics.png", "learning_curve.png"} <= artifacts
    table = json.loads(Path(client.download_artifacts(run_id, "test_metrics.json")).read_text())
    assert table == pytest.approx(metrics)


def test_pyfunc_from_mlflow_returns_raw_ids(trained: dict) -> None:
    mlflow.set_tracking_uri(trained["uri"])
    run_id = json.loads((trained["model"] / "mlflow_run.json").read_text())["run_id"]
    model_id = mlflow.MlflowClient(trained["uri"]).get_run(run_id).outputs.model_outputs[0].model_id
    pyfunc = mlflow.pyfunc.load_model(f"models:/{model_id}")
    answer = pyfunc.predict(
        pd.DataFrame({"history": [["1", "2", "3"], ["4", "nope"]], "k": [3, 2]})
    )
    assert [len(ids) for ids in answer["item_ids"]] == [3, 2]
    catalog = {str(i) for i in range(1, 9)}
    assert set(answer["item_ids"][0]) <= catalog - {"1", "2", "3"}
    assert answer["scores"][0] == sorted(answer["scores"][0], reverse=True)
    without_k = pyfunc.predict(pd.DataFrame({"history": [["1", "2"]]}))
    assert len(without_k["item_ids"][0]) == 6  # default k = 10, capped by the 6 unseen items
    with pytest.raises(Exception, match="history"):
        pyfunc.predict(pd.DataFrame({"items": [["1"]]}))


def test_recommend_cli_prints_raw_ids(trained: dict, capsys) -> None:
    assert main(["recommend", str(trained["model"]), "--history", "1,2,3", "--k", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.split("\t")[0] in set("45678") for line in lines)


def test_main_job_assets_run_end_to_end(tmp_path: Path, tiny_model: str) -> None:
    source = write_movielens(tmp_path / "raw", users=9, items=7)
    result = dg.materialize(
        data_assets + data_checks + model_assets,
        resources={
            "settings": Settings(),
            "workspace": Workspace(root=str(tmp_path)),
            "mlflow_tracking": MlflowTracking(uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
            "training_launcher": TrainingLauncher(),
        },
        run_config=tiny_run_config(source, tiny_model),
    )
    assert result.success
    metrics = result.output_for_node("evaluation")
    assert 0.0 <= metrics["ndcg@10"] <= metrics["recall@10"] <= 1.0
    trained = result.output_for_node("rec_model")
    assert (trained.model_dir / "model.pt").exists() and trained.best_epoch in (1, 2)


def test_register_runs_the_gate_from_the_command_line(trained: dict, capsys) -> None:
    register = ["register", str(trained["data"]), str(trained["model"]), "--model", "cli_gate"]
    register += ["--tracking-uri", trained["uri"]]
    assert main(register) == 0
    assert capsys.readouterr().out.startswith("cli_gate version 1 promoted to champion: first")
    assert main(register) == 0  # the same model again: not better than itself
    assert "cli_gate version 2 not promoted: " in capsys.readouterr().out
    client = mlflow.MlflowClient(trained["uri"])
    assert int(client.get_model_version_by_alias("cli_gate", "champion").version) == 1
    assert (
        client.get_model_version("cli_gate", "1").tags["run_id"]
        == json.loads((trained["model"] / "mlflow_run.json").read_text())["run_id"]
    )
    not_a_model = ["register", str(trained["data"]), str(trained["root"]), "--model", "cli_gate"]
    assert main([*not_a_model, "--tracking-uri", trained["uri"]]) == 2
    assert "no mlflow_run.json; expected a folder `lite-rec train` wrote" in capsys.readouterr().err


def test_an_indexed_folder_registers_the_model_that_answers_through_its_index(
    trained: dict, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(trained["model"], folder)
    before = json.loads((folder / "mlflow_run.json").read_text())
    index = ["index", str(folder), "--data", str(trained["data"]), "--tracking-uri", trained["uri"]]
    assert main([*index, "--sample-users", "5"]) == 0
    after = json.loads((folder / "mlflow_run.json").read_text())
    assert json.loads(capsys.readouterr().out)["model_uri"] == after["model_uri"]
    assert after == {**before, "model_uri": after["model_uri"]} != before  # same run, new model
    register = ["register", str(trained["data"]), str(folder), "--model", "cli_indexed"]
    assert main([*register, "--tracking-uri", trained["uri"]]) == 0
    champion = mlflow.pyfunc.load_model("models:/cli_indexed@champion")
    assert champion.unwrap_python_model().recommender.index is not None
    # --no-log leaves the run's model alone; a store that never saw the run is refused.
    assert main([*index, "--no-log"]) == 0
    assert json.loads((folder / "mlflow_run.json").read_text()) == after
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert main(["index", str(folder), "--tracking-uri", other]) == 2
    assert f"is not in the tracking store at {other}" in capsys.readouterr().err


def test_recommend_from_a_folder_imports_neither_mlflow_nor_pandas(trained: dict) -> None:
    """One answer from a model folder pays for torch and the model only: not for MLflow,
    pandas or torch.compile's exit report."""
    script = (
        "from lite_rec.cli import main; "
        f"main(['recommend', {str(trained['model'])!r}, '--history', '1,2', '--k', '2'])"
    )
    # -X importtime reports every import up to the process's end, the exit handlers' included.
    command = [sys.executable, "-X", "importtime", "-c", script]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "torch" in imported and not imported & {"mlflow", "pandas", "tabulate"}
