"""Dataset statistics, shown as Dagster metadata and DVC metrics."""

from __future__ import annotations

import pandas as pd


def dataset_stats(interactions: pd.DataFrame) -> dict[str, float | int]:
    """Users, items, interactions, sequence lengths and density of an interaction table."""
    lengths = interactions.groupby("user_id", sort=False).size()
    users = int(interactions["user_id"].nunique())
    items = int(interactions["item_id"].nunique())
    count = len(interactions)
    return {
        "users": users,
        "items": items,
        "interactions": count,
        "mean_sequence_length": round(float(lengths.mean()), 4) if users else 0.0,
        "median_sequence_length": float(lengths.median()) if users else 0.0,
        "density": round(count / (users * items), 6) if users and items else 0.0,
    }
