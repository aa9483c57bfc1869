"""`train.recipe`: a named overlay of settings (params.yaml `recipes`) applied once, when the
config is resolved against the training data, before anything is trained or logged.

`auto` picks `large` for catalogs of LARGE_MIN_ITEMS items or more, where the full softmax's
step grows with the catalog (LARGE_MIN_ITEMS says why that size); below it, `sparse` for short
training histories and many users (the Amazon 5-core sets) and `none` otherwise (MovieLens):
the measurements behind the rule and the recipes' values are in docs/findings.md. A key set
explicitly (`--set`, Dagster's overrides) always wins over the recipe, whatever its value.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from lite_rec.config import SECTIONS, Config
from lite_rec.sequences import SequenceData

log = logging.getLogger(__name__)

# `auto` picks `large` (the sampled loss) from this many items. Below it the full loss is
# kept: on Beauty (12k items) every sampled variant scored lower (test NDCG@10 0.0551-0.0579
# against 0.0610), while at 1M items its step stays near its 10k-item time (354 vs 308 ms,
# `lite-rec bench step-cost --items 10000,1000000`). 100,000 is a provisional line between
# the two, not yet placed by a full-loss step measurement at that size.
LARGE_MIN_ITEMS = 100_000
# Otherwise `sparse` for short training histories (mean length below this) ...
SPARSE_MAX_MEAN_LENGTH = 20.0
# ... and enough users for one epoch's change in the validation score to mean something.
SPARSE_MIN_USERS = 10_000


def choose_recipe(data: SequenceData) -> tuple[str, str]:
    """What `train.recipe=auto` picks for `data` -> (recipe, the reason in words)."""
    if data.n_items >= LARGE_MIN_ITEMS:
        return "large", f"{data.n_items:,} items (large: >= {LARGE_MIN_ITEMS:,} items)"
    users = len(data.sequences)
    mean_length = float(np.mean([len(s) for s in data.train_sequences()])) if users else 0.0
    facts = f"{users:,} users, training histories of {mean_length:.1f} items on average"
    rule = f"sparse: < {SPARSE_MAX_MEAN_LENGTH:g} items and >= {SPARSE_MIN_USERS:,} users"
    sparse = mean_length < SPARSE_MAX_MEAN_LENGTH and users >= SPARSE_MIN_USERS
    return ("sparse" if sparse else "none"), f"{facts} ({rule})"


def resolve_config(config: Config, data: SequenceData) -> Config:
    """`config` with `train.recipe` resolved (`auto` -> `large`, `sparse` or `none`) and the
    recipe's settings applied, except to the keys in `config.chosen`. Resolving twice changes
    nothing."""
    recipe = config.train.recipe
    if recipe == "auto":
        recipe, reason = choose_recipe(data)
        log.info("train.recipe=auto -> %s: %s", recipe, reason)
    overlay = {} if recipe == "none" else config.recipes[recipe]
    sections = {
        section: dataclasses.replace(
            getattr(config, section),
            **{
                key: value
                for key, value in overlay.get(section, {}).items()
                if f"{section}.{key}" not in config.chosen
            },
        )
        for section in SECTIONS
    }
    sections["train"] = dataclasses.replace(sections["train"], recipe=recipe)
    return dataclasses.replace(config, **sections)
