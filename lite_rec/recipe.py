"""`train.recipe`: the settings that sparse data like the Amazon 5-core sets need and that hurt
dense data like MovieLens, chosen from the training data.

Measured with `bench/` (README, Results): on Amazon Beauty and Toys (training histories of about 7
items, about 20,000 users) dropout 0.5, positions counted back from the last item and halving the
learning rate after every epoch without a better validation NDCG@10 raise test Recall@10 by
3.5-10.5%. Whitening the Item LLM table on top raises Beauty's test NDCG@10 from 0.0569 to 0.0583
(means over seeds 42, 1, 2, 3; Recall@10 moves within the seed spread) and its validation NDCG@10
from 0.0702 to 0.0712 (seeds 1, 2, 3). Two refit epochs with the validation items on top raise
Beauty's test Recall@10 from 0.0960 / 0.0971 to 0.1025 / 0.0998 (seeds 42 / 1) and id only's from
0.0916 to 0.0932 (seed 42). Stopping after 3 epochs without a better validation NDCG@10 instead of 5
(replayed on the recorded histories of 27 Beauty and Toys runs, `bench/patience_replay.py`) runs 3.8
fewer epochs on average, at least 2, keeps the same best epoch in 17 of them and gives up 0.00007
validation NDCG@10 on average (at most 0.0004): with the rate halved every bad epoch, the 4th and
5th bad epochs run at 1/8 and 1/16 of the best epoch's rate. Beauty with it (and the larger loss
chunks; `bench_model.py`, session 10): text+id 0.1022 / 0.0610, id 0.0934 / 0.0577 against 0.1025 /
0.0610 and 0.0932 / 0.0576 with patience 5, in two fewer epochs each. On ml-latest-small (610 users,
146 items per training history) dropout, positions and decay cut test Recall@10 from 0.128 to 0.066:
dropout 0.5 underfits its long histories (0.089 without the decay), and the decay halves the rate on
noise, since one epoch's change in a 610-user validation score is mostly noise (0.085 against 0.123
without it, both at dropout 0.3 with end positions, 4 heads and an item bias).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from lite_rec.config import ModelConfig, TrainConfig
from lite_rec.sequences import SequenceData

log = logging.getLogger(__name__)

RECIPES = ("auto", "sparse", "none")

# The sparse ("Amazon") recipe: each key's value unless the config sets another than its default.
SPARSE_RECIPE = {
    "model": {"dropout": 0.5, "positions": "end", "whiten_text": True},
    "train": {
        "lr_decay": 0.5,
        "lr_decay_patience": 1,
        "min_delta": 1e-4,
        "patience": 3,
        "refit_epochs": 2,
    },
}
# `auto` picks it for short training histories (mean length below this) ...
SPARSE_MAX_MEAN_LENGTH = 20.0
# ... and enough users for one epoch's change in the validation score to mean something.
SPARSE_MIN_USERS = 10_000


def choose_recipe(data: SequenceData) -> tuple[str, str]:
    """What `train.recipe=auto` picks for `data` -> (recipe, the reason in words)."""
    users = len(data.sequences)
    mean_length = float(np.mean([len(s) for s in data.train_sequences()])) if users else 0.0
    facts = f"{users:,} users, training histories of {mean_length:.1f} items on average"
    rule = f"sparse: < {SPARSE_MAX_MEAN_LENGTH:g} items and >= {SPARSE_MIN_USERS:,} users"
    sparse = mean_length < SPARSE_MAX_MEAN_LENGTH and users >= SPARSE_MIN_USERS
    return ("sparse" if sparse else "none"), f"{facts} ({rule})"


def apply_recipe(
    model_config: ModelConfig, train_config: TrainConfig, data: SequenceData
) -> tuple[ModelConfig, TrainConfig]:
    """The configs `train` runs with: `train.recipe` resolved to `sparse` or `none`, and with
    `sparse`, each recipe key set to the recipe's value unless the config holds another value
    than the key's default (a value someone chose). Applying it twice changes nothing."""
    recipe = train_config.recipe
    if recipe not in RECIPES:
        raise ValueError(f"train.recipe: expected one of {RECIPES}, got {recipe!r}")
    if recipe == "auto":
        recipe, reason = choose_recipe(data)
        log.info("train.recipe=auto -> %s: %s", recipe, reason)
    train_config = dataclasses.replace(train_config, recipe=recipe)
    if recipe == "none":
        return model_config, train_config
    return (
        _unless_chosen(model_config, SPARSE_RECIPE["model"]),
        _unless_chosen(train_config, SPARSE_RECIPE["train"]),
    )


def _unless_chosen(config, values: dict):
    """`config` with each of `values` set where the config holds the key's default."""
    defaults = type(config)()
    unchosen = {k: v for k, v in values.items() if getattr(config, k) == getattr(defaults, k)}
    return dataclasses.replace(config, **unchosen)
