"""The processed-data contract shared by training, evaluation and serving.

`lite-rec prepare` writes DATA_DIR with:
- `items.parquet`: one row per item that survived filtering; column `item_id` (raw id, str),
  `title` and the source's other text fields (str). Row i is item index i.
- `interactions.parquet`: `user_id`, `item_id` (raw ids, str), `timestamp` (int64),
  `rating` (float64, NaN when the source has none), `split` (`train`/`valid`/`test`), rows in
  each user's chronological order (ties keep source order).
- `stats.json`: dataset statistics after filtering.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ITEMS_FILE = "items.parquet"
INTERACTIONS_FILE = "interactions.parquet"
STATS_FILE = "stats.json"


@dataclass
class SequenceData:
    """Every user's chronological history as item indices into `item_ids`."""

    item_ids: np.ndarray  # (n_items,) raw item ids, str; index i is item index i
    user_ids: np.ndarray  # (n_users,) raw user ids, str
    sequences: list[np.ndarray]  # per user, int64 item indices, oldest first
    items: pd.DataFrame  # the item table, aligned with item_ids

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def histories_and_targets(self, split: str) -> tuple[list[np.ndarray], np.ndarray]:
        """Leave-one-out: `test` predicts the last item from all before it, `valid` the
        second-to-last from all before that."""
        cut = {"valid": 2, "test": 1}[split]
        histories = [seq[:-cut] for seq in self.sequences]
        targets = np.array([seq[-cut] for seq in self.sequences], dtype=np.int64)
        return histories, targets

    def train_sequences(self) -> list[np.ndarray]:
        """Training sequences: everything but the validation and test items."""
        return [seq[:-2] for seq in self.sequences]

    def refit_sequences(self) -> list[np.ndarray]:
        """Training sequences plus the validation item: everything but the test item."""
        return [seq[:-1] for seq in self.sequences]


def sequences_from_frames(items: pd.DataFrame, interactions: pd.DataFrame) -> SequenceData:
    """Build `SequenceData` from the processed tables (interactions already in time order)."""
    item_ids = items["item_id"].to_numpy(dtype=object)
    index_of = pd.Index(item_ids)
    item_index = index_of.get_indexer(interactions["item_id"])
    if (item_index < 0).any():
        missing = interactions["item_id"][item_index < 0].iloc[0]
        raise ValueError(f"interaction item {missing!r} is not in the item table")
    users = interactions["user_id"].to_numpy(dtype=object)
    # Users keep their first-appearance order; rows of one user are contiguous and ordered.
    user_codes, user_ids = pd.factorize(users)
    order = np.argsort(user_codes, kind="stable")
    boundaries = np.flatnonzero(np.diff(user_codes[order])) + 1
    sequences = np.split(item_index[order].astype(np.int64), boundaries)
    return SequenceData(
        item_ids=item_ids,
        user_ids=np.asarray(user_ids, dtype=object),
        sequences=sequences,
        items=items.reset_index(drop=True),
    )


def load_sequences(data_dir: str | Path) -> SequenceData:
    """Read the tables `lite-rec prepare` wrote into `data_dir`."""
    data_dir = Path(data_dir)
    items = pd.read_parquet(data_dir / ITEMS_FILE)
    interactions = pd.read_parquet(data_dir / INTERACTIONS_FILE, columns=["user_id", "item_id"])
    return sequences_from_frames(items, interactions)
