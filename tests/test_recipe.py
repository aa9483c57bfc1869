"""`train.recipe`: an overlay chosen from the data and applied once, when the config is
resolved; a key someone set explicitly always wins over it."""

import dataclasses
import json

import pytest
import torch
import yaml

from lite_rec.cli import main
from lite_rec.config import DEFAULT_RECIPES, Config, ModelConfig, TrainConfig, load_config
from lite_rec.recipe import choose_recipe, resolve_config
from lite_rec.train import CHECKPOINT_FILE, train
from tests.conftest import cyclic_data

SPARSE = DEFAULT_RECIPES["sparse"]


def test_auto_picks_the_sparse_recipe_for_short_histories_and_many_users():
    sparse = cyclic_data(n_items=50, n_users=10_000, min_length=5)
    recipe, reason = choose_recipe(sparse)
    assert recipe == "sparse", reason
    assert "10,000 users" in reason
    assert choose_recipe(cyclic_data(n_items=50, n_users=9_999, min_length=5))[0] == "none"
    long = cyclic_data(n_items=50, n_users=10_000, min_length=40)
    assert choose_recipe(long)[0] == "none"
    just_short = cyclic_data(n_items=50, n_users=10_000, min_length=21)  # 19 training items
    assert choose_recipe(just_short)[0] == "sparse"


def test_sparse_sets_its_keys_and_is_idempotent():
    data = cyclic_data(n_items=20, n_users=30)
    resolved = resolve_config(load_config(overrides=["train.recipe=sparse"]), data)
    assert (resolved.model.dropout, resolved.model.positions, resolved.model.whiten_text) == (
        0.5,
        "end",
        True,
    )
    for key, value in SPARSE["train"].items():
        assert getattr(resolved.train, key) == value, key
    assert resolved.train.recipe == "sparse"
    assert resolve_config(resolved, data) == resolved
    untouched = load_config(overrides=["train.recipe=sparse", "model.num_heads=4"])
    expected = dataclasses.replace(untouched.model, dropout=0.5, positions="end", whiten_text=True)
    assert resolve_config(untouched, data).model == expected


def test_a_key_set_explicitly_wins_over_the_recipe_whatever_its_value():
    """`train.patience=5` is also the default: it must stay 5, not become the recipe's 3."""
    data = cyclic_data(n_items=20, n_users=30)
    overrides = ["train.recipe=sparse", "train.patience=5", "model.dropout=0.3"]
    resolved = resolve_config(load_config(overrides=overrides), data)
    assert resolved.train.patience == 5 and resolved.model.dropout == 0.3
    assert (
        resolved.train.refit_epochs == SPARSE["train"]["refit_epochs"]
    )  # not chosen: the recipe's


def test_none_and_auto_on_small_data_change_nothing_but_the_recipe_name():
    data = cyclic_data(n_items=20, n_users=30)
    for recipe in ("auto", "none"):
        resolved = resolve_config(load_config(overrides=[f"train.recipe={recipe}"]), data)
        assert resolved.model == ModelConfig()
        assert resolved.train == TrainConfig(recipe="none")


def test_a_recipe_from_the_params_file_applies_and_bad_recipes_are_named(tmp_path):
    params = Config().to_dict()
    params["recipes"]["wide"] = {"model": {"hidden_size": "32"}}
    params["train"]["recipe"] = "wide"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    resolved = resolve_config(load_config(path), cyclic_data(n_items=20, n_users=30))
    assert (resolved.model.hidden_size, resolved.train.recipe) == (32, "wide")

    params["recipes"]["wide"] = {"train": {"bogus": 1}}
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"unknown key recipes\.wide\.train\.bogus"):
        load_config(path)
    params["recipes"] = {"auto": {}}
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"recipes\.auto: 'auto' is built in"):
        load_config(path)


def test_an_unknown_recipe_is_refused_before_writing(tmp_path, capsys):
    with pytest.raises(
        ValueError, match=r"train.recipe: expected one of auto, none, sparse, large, got 'amazon'"
    ):
        load_config(overrides=["train.recipe=amazon"])
    data_dir = tmp_path / "missing-data"
    code = main(
        ["train", str(data_dir), "--out", str(tmp_path / "m"), "--set", "train.recipe=amazon"]
    )
    assert code == 2
    assert "train.recipe: expected one of" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_training_saves_and_resumes_the_resolved_recipe(tmp_path):
    data = cyclic_data(n_items=20, n_users=60, min_length=6)
    overrides = [
        "model.item_repr=id",
        "model.hidden_size=16",
        "model.num_layers=1",
        "model.max_len=6",
        "train.recipe=sparse",
        "train.epochs=2",
        "train.batch_size=16",
        "train.warmup_steps=2",
        "train.seed=3",
    ]
    config = resolve_config(load_config(overrides=overrides), data)
    result = train(data, None, config.model, config.train, tmp_path / "m", progress=False)
    assert (result.model.config.dropout, result.model.config.positions) == (0.5, "end")
    saved = json.loads((tmp_path / "m" / "model_config.json").read_text())["model"]
    assert (saved["dropout"], saved["positions"]) == (0.5, "end")
    checkpoint = torch.load(tmp_path / "m" / CHECKPOINT_FILE, weights_only=False)
    assert checkpoint["train_config"]["recipe"] == "sparse"
    assert checkpoint["train_config"]["lr_decay"] == 0.5
    # Resolving the same config again finds the same settings: the run resumes.
    more = resolve_config(load_config(overrides=[*overrides, "train.epochs=3"]), data)
    assert (
        len(train(data, None, more.model, more.train, tmp_path / "m", progress=False).history) == 3
    )
