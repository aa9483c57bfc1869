import dataclasses
import json

import pytest
import torch

from lite_rec.config import ModelConfig, TrainConfig
from lite_rec.recipe import SPARSE_RECIPE, apply_recipe, choose_recipe
from lite_rec.train import CHECKPOINT_FILE, train
from tests.conftest import cyclic_data


def test_auto_picks_the_sparse_recipe_for_short_histories_and_many_users():
    # Training histories: min_length + u % 3 items minus valid and test -> mean 4 items.
    sparse = cyclic_data(n_items=50, n_users=10_000, min_length=5)
    recipe, reason = choose_recipe(sparse)
    assert recipe == "sparse", reason
    assert "10,000 users" in reason and "4.0 items" in reason
    assert choose_recipe(cyclic_data(n_items=50, n_users=9_999, min_length=5))[0] == "none"
    # Mean training history 20.0 (not below 20): dense enough, whatever the user count.
    long = cyclic_data(n_items=50, n_users=10_000, min_length=22, spread=1)
    assert choose_recipe(long)[0] == "none"
    just_short = cyclic_data(n_items=50, n_users=10_000, min_length=20, spread=2)  # mean 18.5
    assert choose_recipe(just_short)[0] == "sparse"


def test_sparse_sets_each_key_left_at_its_default_and_is_idempotent():
    data = cyclic_data(n_items=20, n_users=30)
    model, train_config = apply_recipe(
        ModelConfig(), TrainConfig(recipe="sparse", lr_decay_patience=2), data
    )
    assert (model.dropout, model.positions, model.whiten_text) == (0.5, "end", True)
    # lr_decay_patience was chosen (2 is not its default 3): it stays.
    assert (train_config.lr_decay, train_config.lr_decay_patience) == (0.5, 2)
    assert train_config.min_delta == SPARSE_RECIPE["train"]["min_delta"]
    assert (train_config.refit_epochs, train_config.patience) == (2, 3)
    assert train_config.recipe == "sparse"
    assert apply_recipe(model, train_config, data) == (model, train_config)
    untouched = ModelConfig(num_heads=4)
    assert (
        dataclasses.replace(untouched, dropout=0.5, positions="end", whiten_text=True)
        == apply_recipe(untouched, TrainConfig(recipe="sparse"), data)[0]
    )


def test_none_and_auto_on_small_data_change_nothing_but_the_recipe_name():
    data = cyclic_data(n_items=20, n_users=30)
    for recipe in ("auto", "none"):
        model, train_config = apply_recipe(ModelConfig(), TrainConfig(recipe=recipe), data)
        assert model == ModelConfig()
        assert train_config == TrainConfig(recipe="none")


def test_an_unknown_recipe_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"train.recipe: expected one of .*got 'amazon'"):
        train(
            cyclic_data(n_items=20, n_users=30),
            None,
            ModelConfig(item_repr="id", hidden_size=16, num_layers=1),
            TrainConfig(recipe="amazon", epochs=1),
            tmp_path / "m",
        )
    assert not (tmp_path / "m").exists()


def test_training_saves_and_resumes_the_resolved_recipe(tmp_path):
    data = cyclic_data(n_items=20, n_users=60, min_length=6)
    model_config = ModelConfig(item_repr="id", hidden_size=16, num_layers=1, max_len=6)
    config = TrainConfig(recipe="sparse", epochs=2, batch_size=16, warmup_steps=2, seed=3)
    result = train(data, None, model_config, config, tmp_path / "m", progress=False)
    assert (result.model.config.dropout, result.model.config.positions) == (0.5, "end")
    saved = json.loads((tmp_path / "m" / "model_config.json").read_text())["model"]
    assert (saved["dropout"], saved["positions"]) == (0.5, "end")
    checkpoint = torch.load(tmp_path / "m" / CHECKPOINT_FILE, weights_only=False)
    assert checkpoint["train_config"]["recipe"] == "sparse"
    assert checkpoint["train_config"]["lr_decay"] == 0.5
    # Resuming with the same (unresolved) config finds the same settings: no mismatch.
    more = dataclasses.replace(config, epochs=3)
    assert len(train(data, None, model_config, more, tmp_path / "m", progress=False).history) == 3
    # A checkpoint from before train.recipe existed ran without it: not resumed as sparse.
    checkpoint = torch.load(tmp_path / "m" / CHECKPOINT_FILE, weights_only=False)
    del checkpoint["train_config"]["recipe"]
    torch.save(checkpoint, tmp_path / "m" / CHECKPOINT_FILE)
    with pytest.raises(ValueError, match=r"train.recipe: 'none' -> 'sparse'"):
        train(data, None, model_config, more, tmp_path / "m", progress=False)
