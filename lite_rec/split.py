"""Leave-one-out split by time: each user's last interaction is the test target, the one
before it the validation target, the rest is training history. The one place the split is
decided: it is written as the `split` column, which `lite_rec.sequences` reads (and checks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported by the functions: `SPLITS` alone needs no pandas
    import pandas as pd

MIN_INTERACTIONS = 3  # one train item, one validation target, one test target
SPLITS = ("train", "valid", "test")  # the `split` column's values, in each user's row order


def chronological(interactions: pd.DataFrame) -> pd.DataFrame:
    """Group rows by user (first-appearance order) and order each user's rows by time.

    Ties in time keep the source order: sorting them by item id would leak the answer."""
    import pandas as pd

    source_order = np.arange(len(interactions))
    user_order = pd.factorize(interactions["user_id"])[0]
    order = np.lexsort((source_order, interactions["timestamp"].to_numpy(), user_order))
    return interactions.iloc[order]


def leave_one_out_split(interactions: pd.DataFrame) -> pd.DataFrame:
    """`interactions` in chronological order per user with a `split` column
    (`train`/`valid`/`test`); users with fewer than 3 interactions are dropped."""
    import pandas as pd

    ordered = chronological(interactions)
    counts = ordered.groupby("user_id", sort=False)["user_id"].transform("size")
    ordered = ordered[counts >= MIN_INTERACTIONS]
    from_end = ordered.groupby("user_id", sort=False).cumcount(ascending=False)
    split = np.select([from_end == 0, from_end == 1], ["test", "valid"], default="train")
    return ordered.assign(split=pd.Categorical(split, categories=SPLITS))
