"""Recommendations in raw item ids: the `Recommender` used by the CLI, and the MLflow pyfunc
that `mlflow models serve` runs.

A model directory (what `lite-rec train` writes) holds `model.pt`, `model_config.json` and
`catalog.json` (the raw item ids in index order and their training popularity)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lite_rec.errors import InputError
from lite_rec.evaluate import recommend
from lite_rec.model import RecommendationLLM
from lite_rec.sequences import SequenceData

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.json"


def write_catalog(data: SequenceData, out_dir: str | Path) -> None:
    """Raw item ids in index order and each item's count in the training sequences (the
    fallback ranking for an empty history)."""
    counts = np.bincount(np.concatenate(data.train_sequences()), minlength=data.n_items)
    catalog = {"item_ids": [str(i) for i in data.item_ids], "train_counts": counts.tolist()}
    (Path(out_dir) / CATALOG_FILE).write_text(json.dumps(catalog))


class Recommender:
    """Top-K raw item ids for histories of raw item ids."""

    def __init__(self, model: RecommendationLLM, item_ids: Sequence[str], popularity: np.ndarray):
        self.model = model
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.index_of = {item: index for index, item in enumerate(self.item_ids)}
        self.popularity = np.asarray(popularity, dtype=np.float32)

    @classmethod
    def load(cls, model_dir: str | Path) -> Recommender:
        from lite_rec.train import load_model

        catalog = json.loads((Path(model_dir) / CATALOG_FILE).read_text())
        return cls(load_model(model_dir), catalog["item_ids"], np.array(catalog["train_counts"]))

    def to_indices(self, history: Sequence[str]) -> np.ndarray:
        """Item indices of the known ids; unknown ids are dropped with a warning."""
        known = [self.index_of[str(item)] for item in history if str(item) in self.index_of]
        if len(known) < len(history):
            unknown = [str(item) for item in history if str(item) not in self.index_of]
            log.warning("ignoring %d unknown item ids: %s", len(unknown), unknown[:10])
        return np.asarray(known, dtype=np.int64)

    def recommend(self, histories: Sequence[Sequence[str]], k: int = 10) -> list[list[tuple]]:
        """Per history, the top-k `(raw item id, score)` pairs, best first. A history with no
        known item falls back to the most popular training items (score = their count)."""
        if k < 1:
            raise ValueError(f"k: expected a positive integer, got {k}")
        indices = [self.to_indices(history) for history in histories]
        results: list[list[tuple]] = [[] for _ in indices]
        personal = [row for row, history in enumerate(indices) if len(history)]
        if personal:
            top, scores = recommend(self.model, [indices[row] for row in personal], k)
            for row, items, values in zip(personal, top, scores, strict=True):
                kept = ~np.isneginf(values)  # drops the history itself when k exceeds the rest
                ranked = zip(self.item_ids[items[kept]], values[kept].tolist(), strict=True)
                results[row] = list(ranked)
        popular = np.argsort(-self.popularity, kind="stable")[:k]
        for row, history in enumerate(indices):
            if not len(history):
                log.warning("empty history (no known items): recommending the most popular items")
                results[row] = [(self.item_ids[i], float(self.popularity[i])) for i in popular]
        return results


def parse_requests(frame: pd.DataFrame, default_k: int = 10) -> tuple[list[list[str]], list[int]]:
    """Histories and k per row of a pyfunc input table; malformed input names the row."""
    if "history" not in frame.columns:
        raise InputError(
            "request",
            f"expected a column 'history' (a list of raw item ids, oldest first); got columns "
            f"{list(frame.columns)}",
            column="history",
        )
    histories, ks = [], []
    for row, (history, k) in enumerate(
        zip(frame["history"], frame.get("k", [default_k] * len(frame)), strict=True)
    ):
        if isinstance(history, str):
            history = [item for item in history.split(",") if item]
        if not isinstance(history, list | tuple | np.ndarray):
            raise InputError("request", "expected a list of item ids", row=row, column="history")
        if k is None or (isinstance(k, float) and np.isnan(k)):
            k = default_k
        if not float(k).is_integer() or int(k) < 1:
            raise InputError(
                "request", f"expected a positive integer, got {k!r}", row=row, column="k"
            )
        histories.append([str(item) for item in history])
        ks.append(int(k))
    return histories, ks
