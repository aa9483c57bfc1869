"""k-core filtering: keep only users and items with at least k interactions, iterated to the
fixed point (removing a sparse item can push a user below k, and back again)."""

from __future__ import annotations

import logging

import pandas as pd

log = logging.getLogger(__name__)


def kcore_filter(interactions: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """Rows of `interactions` whose user and item both keep >= k interactions, source order
    and index preserved."""
    if k < 1:
        raise ValueError(f"k-core: expected k >= 1, got {k}")
    keep = pd.Series(True, index=interactions.index)
    rounds = 0
    while True:
        current = interactions[keep]
        user_counts = current["user_id"].map(current["user_id"].value_counts())
        item_counts = current["item_id"].map(current["item_id"].value_counts())
        sparse = (user_counts < k) | (item_counts < k)
        rounds += 1
        if not sparse.any():
            break
        keep[sparse[sparse].index] = False
    log.info(
        "%d-core: %d of %d interactions kept after %d rounds",
        k,
        int(keep.sum()),
        len(interactions),
        rounds,
    )
    return interactions[keep]
