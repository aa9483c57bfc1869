"""k-core filtering: keep only users and items with at least k interactions, iterated to the
fixed point (removing a sparse item can push a user below k, and back again)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def kcore_filter(interactions: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """Rows of `interactions` whose user and item both keep >= k interactions, source order
    and index preserved.

    Rows are selected by position, so any index works, including the sequence format's
    `source_line`, which repeats along a user's line."""
    if k < 1:
        raise ValueError(f"k-core: expected k >= 1, got {k}")
    users, user_ids = pd.factorize(interactions["user_id"], use_na_sentinel=False)
    items, item_ids = pd.factorize(interactions["item_id"], use_na_sentinel=False)
    keep = np.ones(len(interactions), dtype=bool)
    rounds = 0
    while True:
        rounds += 1
        user_counts = np.bincount(users[keep], minlength=len(user_ids))
        item_counts = np.bincount(items[keep], minlength=len(item_ids))
        sparse = keep & ((user_counts[users] < k) | (item_counts[items] < k))
        if not sparse.any():
            break
        keep &= ~sparse
    log.info(
        "%d-core: %d of %d interactions kept after %d rounds",
        k,
        int(keep.sum()),
        len(interactions),
        rounds,
    )
    return interactions[keep]
