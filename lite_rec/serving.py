"""Recommendations in raw item ids: the `Recommender` behind `lite-rec recommend`,
`lite-rec serve` and the MLflow pyfunc, and `parse_requests`, the checks every request passes.

A model directory (what `lite-rec train` writes) holds `model.pt`, `model_config.json` and
`catalog.json` (the raw item ids in index order and their training popularity), and, once
`lite-rec index` has run, an approximate item index (`lite_rec.ann`) that finds the candidates
instead of ranking the whole catalog.

Heavy modules (torch, the model, pandas) are imported where they are used, so that
`lite-rec recommend` pays only for what one answer needs."""

from __future__ import annotations

import json
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lite_rec.config import ServingConfig
from lite_rec.errors import InputError

if TYPE_CHECKING:
    from lite_rec.ann import ItemIndex
    from lite_rec.model import RecommendationLLM
    from lite_rec.sequences import SequenceData

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.json"
REQUEST = "request"  # what InputError names as the file of a bad request


def write_catalog(data: SequenceData, out_dir: str | Path) -> None:
    """Raw item ids in index order and each item's count in the training sequences (the
    fallback ranking for an empty history)."""
    counts = np.bincount(np.concatenate(data.train_sequences()), minlength=data.n_items)
    catalog = {"item_ids": [str(i) for i in data.item_ids], "train_counts": counts.tolist()}
    (Path(out_dir) / CATALOG_FILE).write_text(json.dumps(catalog))


class Recommender:
    """Top-K raw item ids for histories of raw item ids, through the item index when it has
    one (`index`), else by ranking the whole catalog."""

    def __init__(
        self,
        model: RecommendationLLM,
        item_ids: Sequence[str],
        popularity: np.ndarray,
        index: ItemIndex | None = None,
    ):
        self.model = model
        self.index = index
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.index_of = {item: index for index, item in enumerate(self.item_ids)}
        self.popularity = np.asarray(popularity, dtype=np.float32)
        self.popular = np.argsort(-self.popularity, kind="stable")

    @classmethod
    def load(cls, model_dir: str | Path, exact: bool = False) -> Recommender:
        """The model in `model_dir` with its item index when the folder holds one built for
        it (a stale one is ignored with a warning); `exact`: never the index."""
        from lite_rec.ann import load_index
        from lite_rec.model_io import load_model

        catalog = json.loads((Path(model_dir) / CATALOG_FILE).read_text())
        model = load_model(model_dir)
        index = None if exact else load_index(model_dir, model)
        return cls(model, catalog["item_ids"], np.array(catalog["train_counts"]), index)

    @property
    def window(self) -> int:
        """The most recent items of a history the model reads (`model.max_len`)."""
        return self.model.config.max_len

    def to_indices(self, histories: Sequence[Sequence[Any]]) -> list[np.ndarray]:
        """Item indices of the known ids among each history's last `window` ids. Older ids and
        unknown ids are dropped, each said once for the whole call in the log."""
        indices, capped, unknown_rows, unknown, examples = [], 0, 0, 0, []
        for history in histories:
            if len(history) > self.window:
                capped += 1
                history = history[-self.window :]
            known = [self.index_of.get(str(item), -1) for item in history]
            if -1 in known:
                unknown_rows += 1
                unknown += known.count(-1)
                examples += [str(item) for item in history if str(item) not in self.index_of]
                del examples[10:]
                known = [index for index in known if index >= 0]
            indices.append(np.asarray(known, dtype=np.int64))
        if capped:
            log.info(
                "%d of %d histories are longer than the model's window of %d items: their "
                "older items are ignored",
                *(capped, len(histories), self.window),
            )
        if unknown:
            log.warning(
                "ignoring %d unknown item ids in %d of %d histories: %s",
                *(unknown, unknown_rows, len(histories), examples),
            )
        return indices

    def recommend(
        self, histories: Sequence[Sequence[Any]], k: int | Sequence[int] = 10, exact: bool = False
    ) -> list[list[tuple[str, float]]]:
        """Per history, the top-k `(raw item id, score)` pairs, best first, in one batched
        model call; `k` is one number for all or one per history. The items of a history's
        window are never recommended back to it. The candidates come from the item index when
        there is one and `exact` is false; the scores are the model's either way. A history
        with no known item falls back to the most popular training items (score = their
        count)."""
        from lite_rec.evaluate import recommend

        ks = [k] * len(histories) if isinstance(k, numbers.Integral) else list(k)
        if len(ks) != len(histories) or any(each < 1 for each in ks):
            raise ValueError(f"k: expected a positive integer per history, got {k}")
        indices = self.to_indices(histories)
        results: list[list[tuple[str, float]]] = [[] for _ in indices]
        personal = [row for row, history in enumerate(indices) if len(history)]
        if personal:
            widest = max(ks[row] for row in personal)
            known = [indices[row] for row in personal]
            if self.index is not None and not exact:
                from lite_rec.ann import recommend as recommend_through_index

                top, scores = recommend_through_index(self.model, self.index, known, widest)
            else:
                top, scores = recommend(self.model, known, widest)
            for row, items, values in zip(personal, top, scores, strict=True):
                items, values = items[: ks[row]], values[: ks[row]]
                kept = ~np.isneginf(values)  # drops the history itself when k exceeds the rest
                ranked = zip(self.item_ids[items[kept]], values[kept].tolist(), strict=True)
                results[row] = list(ranked)
        empty = [row for row, history in enumerate(indices) if not len(history)]
        for row in empty:
            popular = self.popular[: ks[row]]
            ranked = zip(self.item_ids[popular], self.popularity[popular].tolist(), strict=True)
            results[row] = list(ranked)
        if empty:
            log.warning(
                "%d of %d histories have no known item: recommending the most popular items",
                *(len(empty), len(histories)),
            )
        return results


def parse_requests(
    columns: Mapping[str, Sequence[Any]] | Any,
    default_k: Any = 10,
    limits: ServingConfig | None = None,
) -> tuple[list[Sequence[Any]], list[int]]:
    """Histories and k per row of a request: a pandas table or a mapping of column name to
    values, with a `history` column (a list of raw item ids, oldest first, or one string
    `A,B,C`) and an optional `k` (an integer from 1 to `limits.max_k`; `default_k` where it
    is missing). At most `limits.max_rows` rows. A bad request raises `InputError` naming the
    row and the column."""
    limits = limits or ServingConfig()
    if "history" not in columns:
        names = list(getattr(columns, "columns", columns))
        raise InputError(
            REQUEST,
            f"expected a column 'history' (a list of raw item ids, oldest first); got {names}",
            column="history",
        )
    histories = list(columns["history"])
    if len(histories) > limits.max_rows:
        raise InputError(REQUEST, f"expected at most {limits.max_rows} rows, got {len(histories)}")
    default_k = checked_k(default_k, limits, column="params.k")
    ks = list(columns["k"]) if "k" in columns else [None] * len(histories)
    if len(ks) != len(histories):
        raise InputError(
            REQUEST, f"expected one k per history ({len(histories)}), got {len(ks)}", column="k"
        )
    parsed_histories, parsed_ks = [], []
    for row, (history, k) in enumerate(zip(histories, ks, strict=True)):
        if isinstance(history, str):
            history = [item for item in history.split(",") if item]
        if not isinstance(history, list | tuple | np.ndarray):
            raise InputError(
                REQUEST,
                f"expected a list of item ids, got {_plain(history)!r}",
                row=row,
                column="history",
            )
        missing = k is None or (isinstance(k, float) and math.isnan(k))
        parsed_histories.append(history)
        parsed_ks.append(default_k if missing else checked_k(k, limits, row=row))
    return parsed_histories, parsed_ks


def checked_k(k: Any, limits: ServingConfig, row: int | None = None, column: str = "k") -> int:
    """`k` as an int when it is an integer from 1 to `limits.max_k` (a whole float such as
    5.0 counts: pandas turns a column of ints with a gap into floats); never a bool."""
    k = _plain(k)
    whole = (
        isinstance(k, numbers.Real)
        and not isinstance(k, bool)
        and math.isfinite(k)
        and float(k).is_integer()
    )
    if not whole or not 1 <= k <= limits.max_k:
        raise InputError(
            REQUEST,
            f"expected an integer from 1 to {limits.max_k}, got {json.dumps(k, default=repr)}",
            row=row,
            column=column,
        )
    return int(k)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (pandas hands out numpy scalars)."""
    return value.item() if isinstance(value, np.generic) else value
