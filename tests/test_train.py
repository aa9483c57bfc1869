import dataclasses
import functools

import numpy as np
import pytest
import torch

from lite_rec.config import ModelConfig, TrainConfig
from lite_rec.evaluate import evaluate, recommend
from lite_rec.model import RecommendationLLM
from lite_rec.model_io import load_model
from lite_rec.sequences import SequenceData, epoch_batches, traversal_windows
from lite_rec.train import CHECKPOINT_FILE, train, training_loss
from lite_rec.trainer import Trainer, TrainState, seed_everything
from tests.conftest import assert_lr_follows_plateaus, cyclic_data

DATA = {"n_items": 20, "n_users": 60, "min_length": 6, "spread": 5}


def id_only(model_config: ModelConfig) -> ModelConfig:
    """The same model without the Item LLM (SASRec with cross-entropy)."""
    return dataclasses.replace(model_config, item_repr="id")


def text_embeddings(n_items: int = 20) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n_items, 5)).astype(np.float32)


def small_configs(**train_overrides) -> tuple[ModelConfig, TrainConfig]:
    model = ModelConfig(hidden_size=16, num_layers=1, num_heads=2, dropout=0.1, max_len=6)
    values = dict(epochs=3, batch_size=16, lr=1e-2, warmup_steps=2, patience=100, seed=3)
    return model, TrainConfig(**{**values, **train_overrides})


def test_training_learns_cyclic_sequences(tmp_path):
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(epochs=25)
    untrained = train(
        data, text_embeddings(), model_config, small_configs(epochs=0)[1], tmp_path / "u"
    )
    trained = train(
        data, text_embeddings(), model_config, train_config, tmp_path / "t", progress=False
    )
    assert evaluate(untrained.model, data, "test")["recall@5"] < 0.6
    metrics = evaluate(trained.model, data, "test")
    assert metrics["recall@5"] > 0.9, metrics
    assert len(trained.history) == 25
    assert {"epoch", "loss", "valid_ndcg@10", "seconds"} <= set(trained.history[0])


def without_seconds(history: list[dict]) -> list[dict]:
    """History rows without their timing, which no two runs share."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def assert_resume_after_crash_is_identical(run, tmp_path, crash_after: int = 2) -> None:
    """`run(out_dir, **train_kwargs)` trains one fixed setting. A run killed after epoch
    `crash_after` and started again must end with the weights, last checkpoint and history of
    an uninterrupted run."""
    straight = run(tmp_path / "a")

    def crash(row):
        if row["epoch"] == crash_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", on_epoch_end=crash)
    resumed = run(tmp_path / "b")

    assert straight.best_epoch == resumed.best_epoch
    expected, actual = straight.model.state_dict(), resumed.model.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    last_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    last_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["model"]
    assert last_a.keys() == last_b.keys()
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)
    assert without_seconds(straight.history) == without_seconds(resumed.history)
    assert without_seconds(straight.refit_history) == without_seconds(resumed.refit_history)


def test_resume_after_crash_gives_identical_weights(tmp_path):
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(epochs=4, loss="sampled", num_negatives=5)
    assert_resume_after_crash_is_identical(
        lambda out, **kwargs: train(
            data, text_embeddings(), model_config, train_config, out, progress=False, **kwargs
        ),
        tmp_path,
    )


def test_a_crash_during_the_refit_resumes_to_identical_weights(tmp_path):
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(epochs=3, refit_epochs=2)

    def run(out, **kwargs):
        return train(data, None, id_only(model_config), train_config, out, progress=False, **kwargs)

    assert_resume_after_crash_is_identical(run, tmp_path, crash_after=4)  # refit epoch 1
    refits = run(tmp_path / "a").refit_history
    assert [(row["epoch"], row["refit_epoch"]) for row in refits] == [(4, 1), (5, 2)]


def test_refit_trains_the_best_weights_at_the_best_rate_on_the_test_histories(tmp_path):
    """The refit epochs start from the best epoch's weights and rate, and their windows are
    every position of the histories the test split reads: each validation item is a target,
    no test item is. `train` is the Trainer below, whose refit batches record what they see."""
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(
        epochs=30, patience=2, lr=0.05, lr_decay=0.5, lr_decay_patience=1
    )
    model_config = id_only(model_config)
    plain = train(data, None, model_config, train_config, tmp_path / "plain", progress=False)
    assert plain.best_epoch < len(plain.history) - 1, "the test needs decayed epochs after the best"
    refit_config = dataclasses.replace(train_config, refit_epochs=1)
    refit = train(data, None, model_config, refit_config, tmp_path / "refit", progress=False)

    seed_everything(refit_config.seed)
    model = RecommendationLLM(model_config, data.n_items)
    seen = []

    def refit_batches(epoch):
        batches = epoch_batches(data.refit_sequences(), refit_config, model_config.max_len, epoch)
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        seen.append((weights, [group["lr"] for group in trainer.optimizer.param_groups], batches))
        return batches

    trainer = Trainer(
        model,
        lambda epoch: epoch_batches(
            data.train_sequences(), refit_config, model_config.max_len, epoch
        ),
        functools.partial(training_loss, config=refit_config),
        lambda m: evaluate(m, data, "valid"),
        refit_config,
        refit_batches=refit_batches,
    )
    observed = trainer.fit()
    final, expected = refit.model.state_dict(), observed.model.state_dict()
    assert all(torch.equal(final[k], expected[k]) for k in expected), "train is not this Trainer"
    assert without_seconds(observed.refit_history) == without_seconds(refit.refit_history)

    assert without_seconds(refit.history) == without_seconds(plain.history)
    assert refit.best_epoch == plain.best_epoch
    [(weights, rates, batches)] = seen
    checkpoint = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=False)
    best, last = checkpoint["state"]["best_weights"], checkpoint["model"]
    assert all(torch.equal(weights[k], best[k]) for k in best)
    assert not all(torch.equal(weights[k], last[k]) for k in last)
    assert rates == [pytest.approx(plain.history[plain.best_epoch - 1]["lr"])]
    assert rates[0] > plain.history[-1]["lr"], "the rate went back up to the best epoch's"
    test_histories = data.histories_and_targets("test")[0]
    expected_windows = traversal_windows(test_histories, model_config.max_len)
    assert sorted(map(tuple, batches.windows)) == sorted(map(tuple, expected_windows))
    valid_targets = data.histories_and_targets("valid")[1]
    assert [int(h[-1]) for h in test_histories] == valid_targets.tolist()
    assert not all(torch.equal(final[k], best[k]) for k in best), "the refit trained nothing"


def test_a_finished_run_resumed_with_refit_epochs_ends_like_a_fresh_one(tmp_path):
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(epochs=3)
    model_config = id_only(model_config)
    with_refit = dataclasses.replace(train_config, refit_epochs=2)
    train(data, None, model_config, train_config, tmp_path / "a", progress=False)
    resumed = train(data, None, model_config, with_refit, tmp_path / "a", progress=False)
    fresh = train(data, None, model_config, with_refit, tmp_path / "b", progress=False)
    expected, actual = fresh.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    with pytest.raises(ValueError, match="holds 2 refit epochs, more than train.refit_epochs=1"):
        train(
            data,
            None,
            model_config,
            dataclasses.replace(train_config, refit_epochs=1),
            tmp_path / "a",
            progress=False,
        )


def test_learning_rate_decays_on_plateau_and_resumes(tmp_path):
    """With lr_decay, each lr_decay_patience-th epoch without a better validation NDCG@10 cuts
    the rate for the epochs after it; the optimizer steps with it; a resumed run matches."""
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(epochs=8, lr=0.05, lr_decay=0.5, lr_decay_patience=1)

    def run(out, **kwargs):
        return train(data, None, id_only(model_config), train_config, out, progress=False, **kwargs)

    # Crash after epoch 5, whose plateau decays the rate for epoch 6 (and epoch 4's for 5).
    assert_resume_after_crash_is_identical(run, tmp_path, crash_after=5)
    history = run(tmp_path / "a").history  # finished: reads the history back
    assert_lr_follows_plateaus(history, 0.05, 0.5, train_config.min_delta)
    assert history[5]["lr"] < history[4]["lr"] < history[3]["lr"], "no decay at the crash"
    optimizer = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["optimizer"]
    assert optimizer["param_groups"][0]["lr"] == pytest.approx(history[-1]["lr"])
    with pytest.raises(ValueError, match="train.lr_decay must be in"):
        train(
            data,
            None,
            id_only(model_config),
            dataclasses.replace(train_config, lr_decay=0.0),
            tmp_path / "c",
        )


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"label_smoothing": -0.1}, r"train.label_smoothing must be in \[0, 1\)"),
        ({"label_smoothing": 1.0}, r"train.label_smoothing must be in \[0, 1\)"),
        ({"min_delta": -1e-4}, r"train.min_delta must be >= 0"),
        ({"loss": "bce"}, r"train.loss: expected ce or sampled, got 'bce'"),
    ],
)
def test_meaningless_loss_settings_are_refused_before_writing(tmp_path, setting, message):
    model_config, train_config = small_configs(epochs=1, **setting)
    with pytest.raises(ValueError, match=message):
        train(cyclic_data(**DATA), None, id_only(model_config), train_config, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_an_epoch_is_better_only_by_more_than_min_delta():
    """Early stopping and the best weights follow gains above train.min_delta only."""
    model = RecommendationLLM(ModelConfig(hidden_size=8, num_heads=2, item_repr="id"), 5)
    config = TrainConfig(patience=2, min_delta=0.01)
    state = TrainState()
    for epoch, score in enumerate([0.10, 0.105, 0.12, 0.125], start=1):
        state.record_epoch({"epoch": epoch, "valid_ndcg@10": score}, model, config)
    assert (state.best_epoch, state.best_score, state.bad_epochs) == (3, 0.12, 1)
    assert not state.finished
    state.record_epoch({"epoch": 5, "valid_ndcg@10": 0.1299}, model, config)
    assert state.finished and state.best_epoch == 3
    assert [row["epoch"] for row in state.history] == [1, 2, 3, 4, 5]


def test_the_rate_decays_on_the_epoch_that_stops_the_run_too(tmp_path):
    """The rate schedule follows the validation scores alone, whatever train.patience is: the
    checkpoint of a stopped run holds the rate its next epoch would train at. A stopped run
    stays stopped when resumed with more patience."""
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(
        epochs=12, patience=1, lr=0.05, lr_decay=0.5, lr_decay_patience=1
    )
    model_config = id_only(model_config)
    stopped = train(data, None, model_config, train_config, tmp_path, progress=False)
    assert len(stopped.history) < 12, "the test needs an early stop"
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert checkpoint["scheduler"]["base_lrs"][0] == pytest.approx(stopped.history[-1]["lr"] / 2)
    patient = dataclasses.replace(train_config, patience=100)
    resumed = train(data, None, model_config, patient, tmp_path, progress=False)
    assert without_seconds(resumed.history) == without_seconds(stopped.history)


@dataclasses.dataclass
class EndPositionsByDefault(ModelConfig):
    """ModelConfig as it would be if the default positions became "end"."""

    positions: str = "end"


@dataclasses.dataclass
class DecayByDefault(TrainConfig):
    """TrainConfig as it would be if the rate decayed by default."""

    lr_decay: float = 0.5
    lr_decay_patience: int = 1


def test_resume_from_a_checkpoint_older_than_a_config_key(tmp_path):
    """A checkpoint without the `train.lr_decay` and `model.positions` keys trained without
    decay and with positions from the first item, whatever the defaults are (made different
    here): it resumes with that behaviour and is refused, naming the key, with the
    defaults."""
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(epochs=1)
    model_config = EndPositionsByDefault(**dataclasses.asdict(id_only(model_config)))
    model_config.positions = "start"
    train_config = DecayByDefault(**dataclasses.asdict(train_config))
    train_config.lr_decay, train_config.lr_decay_patience = 1.0, 3
    train(data, None, model_config, train_config, tmp_path, progress=False)
    path = tmp_path / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=False)
    for key in ("lr_decay", "lr_decay_patience"):
        del checkpoint["train_config"][key]
    del checkpoint["model_config"]["positions"]
    del checkpoint["format_version"]  # written before format versions: version 1
    torch.save(checkpoint, path)

    def resume(model=model_config, **changes):
        changed = dataclasses.replace(train_config, epochs=2, **changes)
        return train(data, None, model, changed, tmp_path, progress=False)

    with pytest.raises(ValueError, match=r"train.lr_decay: 1.0 -> 0.5"):
        resume(lr_decay=0.5)
    with pytest.raises(ValueError, match=r"model.positions: 'start' -> 'end'"):
        resume(dataclasses.replace(model_config, positions="end"))
    result = resume()
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert result.history[1]["lr"] == train_config.lr


def test_resume_refuses_another_config(tmp_path):
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(epochs=1)
    train(data, None, id_only(model_config), train_config, tmp_path, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(
            data,
            None,
            id_only(model_config),
            dataclasses.replace(train_config, lr=0.5),
            tmp_path,
            progress=False,
        )


@pytest.mark.parametrize("item_repr", ["text", "id", "text+id"])
@pytest.mark.parametrize("strategy,loss", [("traversal", "ce"), ("sampling", "sampled")])
def test_strategies_losses_and_item_representations_run(tmp_path, item_repr, strategy, loss):
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(
        epochs=2, strategy=strategy, loss=loss, num_negatives=4
    )
    model_config.item_repr = item_repr
    result = train(data, text_embeddings(), model_config, train_config, tmp_path, progress=False)
    assert np.isfinite([row["loss"] for row in result.history]).all()
    reloaded = load_model(tmp_path)
    histories, _ = data.histories_and_targets("test")
    torch.testing.assert_close(reloaded.score(histories[:5]), result.model.score(histories[:5]))


def test_a_model_with_a_reduced_whitened_text_table_reloads_and_scores_the_same(tmp_path):
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(epochs=2)
    model_config = dataclasses.replace(model_config, whiten_text=True, text_dim=3)
    result = train(data, text_embeddings(), model_config, train_config, tmp_path, progress=False)
    reloaded = load_model(tmp_path)
    assert reloaded.items.text.shape == (21, 3)
    histories, _ = data.histories_and_targets("test")
    torch.testing.assert_close(reloaded.score(histories[:5]), result.model.score(histories[:5]))


def test_early_stopping_keeps_best_epoch(tmp_path):
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(epochs=30, patience=1, lr=0.05)
    result = train(data, None, id_only(model_config), train_config, tmp_path, progress=False)
    scores = [row["valid_ndcg@10"] for row in result.history]
    assert len(scores) < 30
    assert result.best_epoch == int(np.argmax(scores)) + 1
    assert evaluate(result.model, data, "valid")["ndcg@10"] == pytest.approx(max(scores))


def test_evaluate_does_not_depend_on_batch_size_or_user_order(tmp_path):
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(epochs=2)
    model = train(
        data, text_embeddings(), model_config, train_config, tmp_path, progress=False
    ).model
    reference = evaluate(model, data, "test", batch_size=1000)
    assert evaluate(model, data, "test", batch_size=7) == reference
    order = np.random.default_rng(0).permutation(len(data.sequences))
    shuffled = SequenceData(
        data.item_ids,
        data.user_ids[order],
        [data.sequences[u] for u in order],
        data.items,
        data.train_lengths[order],
    )
    assert evaluate(model, shuffled, "test", batch_size=16) == reference


def test_traversal_windows_cover_every_target_once():
    windows = traversal_windows([np.arange(12), np.arange(2)], max_len=5)
    targets = sorted(int(t) for w in windows for t in w[1:][w[1:] > 0])
    assert targets == sorted(list(range(2, 13)) + [2])  # internal indices = item + 1


def test_recommend_excludes_history_and_sorts(tmp_path):
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(epochs=2)
    model = train(
        data, text_embeddings(), model_config, train_config, tmp_path, progress=False
    ).model
    indices, scores = recommend(model, [3, 4, 5], k=5)
    assert indices.shape == (5,) and not set(indices.tolist()) & {3, 4, 5}
    assert (np.diff(scores) <= 0).all()
    batch_indices, _ = recommend(model, [np.array([3, 4, 5]), np.array([1])], k=5)
    assert batch_indices.shape == (2, 5) and (batch_indices[0] == indices).all()
    assert 4 in recommend(model, [3, 4, 5], k=20, exclude_history=False)[0]


@pytest.mark.parametrize("threads", [1, 2])
def test_two_uninterrupted_runs_end_with_bit_identical_weights(tmp_path, threads):
    data = cyclic_data(60, 120, min_length=8, spread=6)
    model_config = ModelConfig(item_repr="id", hidden_size=32, num_heads=2, max_len=16)
    train_config = TrainConfig(epochs=2, batch_size=32, threads=threads, patience=2)
    runs = [
        train(data, None, model_config, train_config, tmp_path / str(run), progress=False)
        for run in range(2)
    ]
    first, second = (run.model.state_dict() for run in runs)
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_a_checkpoint_from_before_the_text_transform_was_renamed_resumes(tmp_path):
    """A checkpoint without `format_version` holds version 1 state-dict names (the whitened
    text table's transform as `items.text_whitening`): it resumes to the same weights."""
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(epochs=2)
    model_config = dataclasses.replace(model_config, whiten_text=True)

    def run(out, **changes):
        config = dataclasses.replace(train_config, **changes)
        return train(data, text_embeddings(), model_config, config, out, progress=False)

    straight = run(tmp_path / "a")
    run(tmp_path / "b", epochs=1)
    path = tmp_path / "b" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint.pop("format_version") > 1

    def version_1(state):
        return {
            k.replace("items.text_transform", "items.text_whitening"): v for k, v in state.items()
        }

    checkpoint["model"] = version_1(checkpoint["model"])
    checkpoint["state"]["best_weights"] = version_1(checkpoint["state"]["best_weights"])
    assert "items.text_whitening" in checkpoint["model"]
    torch.save(checkpoint, path)
    resumed = run(tmp_path / "b")
    expected, actual = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert without_seconds(resumed.history) == without_seconds(straight.history)


def test_max_steps_stops_mid_epoch_validates_that_epoch_and_resumes_to_more(tmp_path):
    """60 users with 3-5 training items in windows of 6: a few batches of 16 per epoch."""
    data = cyclic_data(**DATA)
    model_config, train_config = small_configs(epochs=10, max_steps=0)
    model_config = id_only(model_config)
    full = train(data, None, model_config, train_config, tmp_path / "full", progress=False)
    steps_per_epoch = torch.load(tmp_path / "full" / CHECKPOINT_FILE, weights_only=False)["state"][
        "steps"
    ] // len(full.history)
    assert steps_per_epoch >= 2
    limit = steps_per_epoch + 1  # one epoch and one step of the next
    capped = dataclasses.replace(train_config, max_steps=limit)
    result = train(data, None, model_config, capped, tmp_path / "capped", progress=False)
    assert [row["epoch"] for row in result.history] == [1, 2]  # the partial epoch validated
    checkpoint = torch.load(tmp_path / "capped" / CHECKPOINT_FILE, weights_only=False)
    assert checkpoint["state"]["steps"] == limit
    assert checkpoint["scheduler"]["last_epoch"] == limit  # the schedule stepped as often
    # The first epoch is the uncapped run's first epoch, step for step.
    assert result.history[0]["loss"] == full.history[0]["loss"]
    more = dataclasses.replace(train_config, max_steps=3 * steps_per_epoch)
    resumed = train(data, None, model_config, more, tmp_path / "capped", progress=False)
    assert (
        torch.load(tmp_path / "capped" / CHECKPOINT_FILE, weights_only=False)["state"]["steps"]
        == 3 * steps_per_epoch
    )
    # Epoch 2 ended at the cap; the resumed run goes on with epochs 3 and 4 (4 partial).
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"train.max_steps must be >= 0"):
        train(
            data,
            None,
            model_config,
            dataclasses.replace(train_config, max_steps=-1),
            tmp_path / "bad",
        )
