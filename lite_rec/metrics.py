"""Ranking metrics from 1-based target ranks (`lite_rec.ranking` computes the ranks)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS = (5, 10, 20)


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall@k, NDCG@k and MRR averaged over users, from 1-based ranks.

    The ranks are sorted first, so the result depends only on their multiset: not on batch
    size nor on the order users were evaluated in (float sums are order-sensitive)."""
    ranks = np.sort(np.asarray(ranks, dtype=np.int64))
    if len(ranks) == 0:
        raise ValueError("ranking_metrics: no ranks (no users to evaluate)")
    metrics: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        metrics[f"recall@{k}"] = float(hit.mean())
        metrics[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
    metrics["mrr"] = float((1.0 / ranks).mean())
    return metrics
