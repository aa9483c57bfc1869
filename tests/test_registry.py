"""The model registry for real, on a temporary sqlite store: gate, races, manual promotion,
rollback, loading `models:/NAME@champion`."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from lite_rec import registry
from lite_rec.cli import main
from lite_rec.config import load_config
from lite_rec.pipeline import TrainedModel, train_rec_model
from lite_rec.sequences import SequenceData
from lite_rec.tracking import Tracking
from tests.conftest import cyclic_data

TINY = ["model.item_repr=id", "model.hidden_size=16", "model.num_layers=1", "model.max_len=8"]
TINY += ["train.batch_size=8", "train.warmup_steps=1", "train.threads=1", "train.lr=0.01"]


def train_tiny(data: SequenceData, out: Path, tracking: Tracking, epochs: int) -> TrainedModel:
    config = load_config(overrides=TINY + [f"train.epochs={epochs}", f"train.seed={epochs}"])
    return train_rec_model(data, None, config, out, tracking, progress=False)


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory: pytest.TempPathFactory):
    """One store and three models trained on the same tiny data, sorted worst to best."""
    root = tmp_path_factory.mktemp("registry")
    tracking = Tracking(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}", "registry-test")
    data = cyclic_data(20, 40, spread=4)
    models = [train_tiny(data, root / f"m{e}", tracking, e) for e in (0, 1, 8)]
    models.sort(key=lambda m: m.valid_metrics["ndcg@10"])
    return tracking, data, models


def without_first_user(data: SequenceData) -> SequenceData:
    """The same catalog, one user fewer: stored validation numbers no longer apply."""
    return dataclasses.replace(
        data,
        user_ids=data.user_ids[1:],
        sequences=data.sequences[1:],
        train_lengths=data.train_lengths[1:],
    )


def value(tracking: Tracking, name: str, version: int, key: str) -> str:
    return tracking.client().get_model_version(name, version).tags[key]


def test_first_model_is_champion_a_better_one_replaces_it_a_worse_one_stays_challenger(
    lifecycle,
) -> None:
    tracking, data, (worst, middle, best) = lifecycle
    if worst.valid_metrics["ndcg@10"] == best.valid_metrics["ndcg@10"]:
        pytest.fail(f"tiny models should differ: {[m.valid_metrics for m in lifecycle[2]]}")
    name = "lite_rec_gate"
    first = registry.register_and_gate(middle, data, name, tracking)
    assert first.promoted and first.champion_version is None
    better = registry.register_and_gate(best, data, name, tracking)
    worse = registry.register_and_gate(worst, data, name, tracking)
    client = tracking.client()
    assert better.promoted and better.champion_version == first.version
    assert not worse.promoted and worse.champion_value == better.challenger_value
    assert registry.champion_version(client, name) == better.version
    assert int(client.get_model_version_by_alias(name, "challenger").version) == worse.version
    assert value(tracking, name, worse.version, "gate_decision") == "rejected"
    assert float(value(tracking, name, worse.version, "gate_challenger_value")) == pytest.approx(
        worst.valid_metrics["ndcg@10"]
    )
    assert float(value(tracking, name, worse.version, "gate_champion_value")) == pytest.approx(
        best.valid_metrics["ndcg@10"]
    )
    margin = registry.GatePolicy(min_margin=1.0)
    assert not registry.register_and_gate(best, data, name, tracking, margin).promoted


def test_the_gate_tags_the_training_run_and_describes_the_model_and_each_version(
    lifecycle,
) -> None:
    tracking, data, (worst, middle, best) = lifecycle
    name = "lite_rec_described"
    first = registry.register_and_gate(middle, data, name, tracking)
    worse = registry.register_and_gate(worst, data, name, tracking)
    client = tracking.client()
    tags = client.get_run(worst.run_id).data.tags
    assert tags["lite_rec.gate_decision"] == "rejected"
    assert tags["lite_rec.gate_reason"] == worse.reason
    assert client.get_run(middle.run_id).data.tags["lite_rec.gate_decision"] == "promoted"
    assert f"models:/{name}@champion" in client.get_registered_model(name).description
    described = client.get_model_version(name, first.version).description
    assert described.startswith("First version: data.source=") and "model.item_repr=id" in described
    assert described.endswith("Gate (valid_ndcg_at_10): promoted, first model: no champion yet.")
    epochs = (middle.config.train.epochs, worst.config.train.epochs)
    described = client.get_model_version(name, worse.version).description
    assert f"Against version {first.version}: " in described
    assert f"train.epochs: {epochs[0]} -> {epochs[1]}" in described
    assert described.endswith(f"rejected, {worse.reason}.")
    client.update_registered_model(name, description="a person's words")
    registry.register_and_gate(best, data, name, tracking)
    assert client.get_registered_model(name).description == "a person's words"


def test_champion_evaluated_on_other_data_is_re_evaluated_on_the_new_data(
    lifecycle, tmp_path: Path
) -> None:
    tracking, data, (_, middle, best) = lifecycle
    name = "lite_rec_redata"
    registry.register_and_gate(best, data, name, tracking)
    # Same catalog, one user fewer: the stored numbers no longer apply.
    fewer = without_first_user(data)
    expected = registry.validation_metrics(best.model_uri, fewer)["valid_ndcg_at_10"]
    decision = registry.register_and_gate(middle, fewer, name, tracking)
    assert decision.champion_value == pytest.approx(expected)
    # On the data it was trained on, re-evaluation through raw ids gives the logged numbers.
    again = registry.validation_metrics(best.model_uri, data)["valid_ndcg_at_10"]
    assert again == pytest.approx(best.valid_metrics["ndcg@10"])


def test_the_gate_drops_unknown_history_items_and_counts_an_unknown_target_as_a_miss(
    lifecycle,
) -> None:
    """Data with an item the model never saw, first in every history and the validation
    target of one more user: the histories score as without it, the new user is a miss."""
    _, data, (_, _, best) = lifecycle
    reference = registry.validation_metrics(best.model_uri, data)
    new = data.n_items  # raw id "unseen"
    other = dataclasses.replace(
        data,
        item_ids=np.append(data.item_ids, "unseen").astype(object),
        items=pd.concat([data.items, pd.DataFrame({"item_id": ["unseen"]})], ignore_index=True),
        user_ids=np.append(data.user_ids, "newcomer").astype(object),
        sequences=[np.r_[new, seq] for seq in data.sequences] + [np.array([0, 1, new, 2])],
        train_lengths=np.r_[data.train_lengths + 1, 2],
    )
    assert other.histories_and_targets("valid")[1][-1] == new
    metrics = registry.validation_metrics(best.model_uri, other)
    users = len(data.sequences)
    for name, got in metrics.items():
        assert got == pytest.approx(reference[name] * users / (users + 1)), name


def test_a_refit_champion_re_scored_on_new_data_is_named_in_the_gate_reason(
    lifecycle, tmp_path: Path
) -> None:
    """A champion with refit epochs trained on the validation items of its own data: on other
    data its re-scored value is flattered, and the gate says so."""
    tracking, data, (_, middle, _) = lifecycle
    config = load_config(overrides=TINY + ["train.epochs=2", "train.refit_epochs=1"])
    refit = train_rec_model(data, None, config, tmp_path / "refit", tracking, progress=False)
    name, keep = "lite_rec_refit", registry.GatePolicy(min_margin=1.0)
    first = registry.register_and_gate(refit, data, name, tracking)
    assert value(tracking, name, first.version, "train_refit_epochs") == "1"
    same_data = registry.register_and_gate(middle, data, name, tracking, keep)
    assert same_data.reason.endswith(f"margin {keep.min_margin}")  # held-out value, no flag
    fewer = without_first_user(data)
    new_data = registry.register_and_gate(middle, fewer, name, tracking, keep)
    assert new_data.champion_version == first.version
    assert "its value is flattered" in new_data.reason
    assert "its value is flattered" in value(tracking, name, new_data.version, "gate_reason")


def gate_concurrently(models: list[TrainedModel], data, name: str, tracking: Tracking) -> None:
    """Start one gate per model in its own thread, all released at once."""
    barrier = threading.Barrier(len(models))
    errors: list[BaseException] = []

    def gate(model: TrainedModel) -> None:
        try:
            barrier.wait()
            registry.register_and_gate(model, data, name, tracking)
        except BaseException as error:  # re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=gate, args=(model,)) for model in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def test_two_concurrent_promotions_end_with_the_better_champion(lifecycle) -> None:
    tracking, data, (worst, _, best) = lifecycle
    for attempt, order in enumerate([[worst, best], [best, worst]]):
        name = f"lite_rec_race{attempt}"
        gate_concurrently(order, data, name, tracking)
        champion = registry.champion_version(tracking.client(), name)
        assert float(value(tracking, name, champion, "valid_ndcg_at_10")) == pytest.approx(
            best.valid_metrics["ndcg@10"]
        )


def test_manual_promote_and_rollback_through_the_cli(lifecycle) -> None:
    tracking, data, (worst, _, best) = lifecycle
    name = "lite_rec_manual"
    registry.register_and_gate(best, data, name, tracking)
    worse = registry.register_and_gate(worst, data, name, tracking).version
    uri = ["--tracking-uri", tracking.resolved_uri]
    assert main(["promote", "--model", name, "--version", str(worse), "--reason", "A/B"] + uri) == 0
    client = tracking.client()
    assert registry.champion_version(client, name) == worse
    assert "A/B" in value(tracking, name, worse, "champion_reason")
    assert value(tracking, name, worse, "promoted_by")
    assert main(["rollback", "--model", name] + uri) == 0
    assert registry.champion_version(client, name) == worse - 1
    assert main(["rollback", "--model", name] + uri) == 2  # nothing before the first champion
    assert main(["promote", "--model", name, "--version", "99"] + uri) == 2
    assert main(["rollback", "--model", "lite_rec_nothing"] + uri) == 2


def test_recommend_from_the_registry(lifecycle, capsys: pytest.CaptureFixture[str]) -> None:
    tracking, data, (_, _, best) = lifecycle
    name = "lite_rec_serve"
    registry.register_and_gate(best, data, name, tracking)
    history = ",".join(data.item_ids[:2])
    args = ["--model", f"{name}@champion", "--history", history, "--k", "3"]
    assert main(["recommend", *args, "--tracking-uri", tracking.resolved_uri]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.split("\t")[0] in set(data.item_ids) for line in lines)
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    requests = pd.DataFrame({"history": [["unknown-id", data.item_ids[0]], []], "k": [4, 3]})
    out = model.predict(requests)  # an unknown id is ignored; an empty history gets popularity
    assert [len(row) for row in out["item_ids"]] == [4, 3]
    catalog = json.loads((best.model_dir / "catalog.json").read_text())
    popular = np.argsort(-np.array(catalog["train_counts"]), kind="stable")[:3]
    assert out["item_ids"][1] == [catalog["item_ids"][i] for i in popular]
