"""Checks on what the pipeline derived: the k-core filter held, the split is leave-one-out, the
embeddings cover the catalog, the trained model clears a floor. Each rule reports how many
things it looked at, how many broke it, and names a few."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

EXAMPLES = 5  # offending ids named per rule


@dataclass
class RuleResult:
    rule: str  # the rule in words
    checked: int  # users, items or rows looked at
    failing: int
    examples: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.failing == 0


def _rule(rule: str, checked: int, offending: pd.Index | list) -> RuleResult:
    offending = list(offending)
    return RuleResult(rule, checked, len(offending), [str(x) for x in offending[:EXAMPLES]])


def kcore_rules(interactions: pd.DataFrame, k: int) -> list[RuleResult]:
    """Every user and every item of the filtered interactions has at least `k` of them."""
    results = []
    for column, what in (("user_id", "user"), ("item_id", "item")):
        counts = interactions[column].value_counts(sort=False)
        sparse = counts.index[counts < k]
        results.append(_rule(f"every {what} has >= {k} interactions", len(counts), sparse))
    return results


def split_rules(splits: pd.DataFrame) -> list[RuleResult]:
    """Leave-one-out: each user has one validation and one test row, both after all of the
    user's training rows in time, and the test item is not in the user's training part (it
    would be excluded from the ranking as already seen)."""
    by_user = splits.groupby("user_id", sort=False, observed=True)
    users = by_user.size().index
    results = []
    for split in ("valid", "test"):
        counts = splits[splits["split"] == split].groupby("user_id", sort=False).size()
        counts = counts.reindex(users, fill_value=0)
        wrong = counts.index[counts != 1]
        results.append(_rule(f"every user has one {split} item", len(users), wrong))
    train = splits[splits["split"] == "train"]
    held_out = splits[splits["split"] != "train"]
    last_train = train.groupby("user_id", sort=False)["timestamp"].max()
    first_held_out = held_out.groupby("user_id", sort=False)["timestamp"].min()
    later = last_train.reindex(first_held_out.index) > first_held_out
    results.append(
        _rule(
            "valid and test come after every training row of the user",
            len(users),
            first_held_out.index[later.to_numpy()],
        )
    )
    test = splits[splits["split"] == "test"][["user_id", "item_id"]]
    seen = test.merge(train[["user_id", "item_id"]].drop_duplicates(), on=["user_id", "item_id"])
    results.append(
        _rule("no test item in the user's training part", len(test), seen["user_id"].unique())
    )
    return results


def embedding_rules(embeddings: np.ndarray, item_ids: list[str]) -> list[RuleResult]:
    """One finite vector per catalog item."""
    rows = len(embeddings)
    missing = [] if rows == len(item_ids) else [f"{rows} rows for {len(item_ids)} items"]
    finite = np.isfinite(embeddings).all(axis=1)
    broken = [item_ids[i] for i in np.flatnonzero(~finite) if i < len(item_ids)]
    return [
        _rule("one row per catalog item", len(item_ids), missing),
        _rule("no NaN or infinite value", rows, broken),
    ]


def metric_floor_rule(metrics: dict[str, float], metric: str, floor: float) -> RuleResult:
    """`metric` of `metrics` is at least `floor`."""
    if metric not in metrics:
        raise ValueError(f"metric {metric!r}: expected one of {sorted(metrics)}")
    value = metrics[metric]
    below = [f"{metric} = {value:.4f}"] if value < floor else []
    return _rule(f"{metric} >= {floor}", 1, below)
