"""Full-ranking evaluation and top-k recommendation with a trained model: the front doors of
`lite_rec.ranking.rank_catalog`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from lite_rec.metrics import ranking_metrics
from lite_rec.ranking import rank_catalog
from lite_rec.sequences import SequenceData


def evaluate(
    model: nn.Module,
    data: SequenceData,
    split: str,
    batch_size: int = 1024,
    item_chunk: int | None = None,
) -> dict[str, float]:
    """Recall@{5,10,20}, NDCG@{5,10,20} and MRR on `split` (valid | test), ranking the whole
    catalog minus each user's history, `item_chunk` items at a time (None: the whole catalog
    while a batch's scores fit `lite_rec.ranking.WHOLE_CATALOG_SCORES`, measured chunks
    beyond). The ranks are exact whatever the chunk."""
    histories, targets = data.histories_and_targets(split)
    ranking = rank_catalog(model, histories, targets, batch_size=batch_size, item_chunk=item_chunk)
    return ranking_metrics(ranking.ranks)


def recommend(
    model: nn.Module,
    history_item_indices: Sequence[int] | Sequence[np.ndarray],
    k: int = 10,
    exclude_history: bool = True,
    batch_size: int = 512,
    item_chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item indices and scores, best first (equal scores: lower index first).

    One history (a 1-D sequence of item indices) gives arrays of shape (k,); a list of
    histories gives (B, k). Map indices to raw ids with `data.item_ids[indices]`. Batches of
    512 were the fastest on 2 CPU cores (larger score matrices fall out of cache)."""
    single = len(history_item_indices) == 0 or np.isscalar(history_item_indices[0])
    histories = [np.asarray(history_item_indices)] if single else list(history_item_indices)
    ranking = rank_catalog(
        model,
        histories,
        k=k,
        exclude_history=exclude_history,
        batch_size=batch_size,
        item_chunk=item_chunk,
    )
    indices, scores = ranking.top_items, ranking.top_scores
    return (indices[0], scores[0]) if single else (indices, scores)
