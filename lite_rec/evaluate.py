"""Full-ranking evaluation and top-k recommendation with a trained Recommendation LLM."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from lite_rec.metrics import exclude_history_, ranking_metrics, target_ranks
from lite_rec.model import RecommendationLLM
from lite_rec.sequences import SequenceData


def _length_batches(histories: Sequence[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Batches of user positions grouped by history length, so little time goes to padding.
    Scores do not depend on the grouping: each user's row is computed independently."""
    order = np.argsort([len(h) for h in histories], kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


# Evaluation and recommendation run under inference mode: no autograd bookkeeping at all, not
# even the version counters no_grad keeps. Their tensors never reach training.
@torch.inference_mode()
def evaluate(
    model: RecommendationLLM, data: SequenceData, split: str, batch_size: int = 1024
) -> dict[str, float]:
    """Recall@{5,10,20}, NDCG@{5,10,20} and MRR on `split` (valid | test), ranking the whole
    catalog minus each user's history."""
    histories, targets = data.histories_and_targets(split)
    ranks = np.zeros(len(histories), dtype=np.int64)
    for users in _length_batches(histories, batch_size):
        batch_histories = [histories[u] for u in users]
        batch_targets = torch.from_numpy(targets[users])
        scores = model.score(batch_histories)  # (B, n_items)
        exclude_history_(scores, batch_histories, keep=batch_targets)
        ranks[users] = target_ranks(scores, batch_targets).cpu().numpy()
    return ranking_metrics(ranks)


@torch.inference_mode()
def recommend(
    model: RecommendationLLM,
    history_item_indices: Sequence[int] | Sequence[np.ndarray],
    k: int = 10,
    exclude_history: bool = True,
    batch_size: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item indices and scores, best first.

    One history (a 1-D sequence of item indices) gives arrays of shape (k,); a list of
    histories gives (B, k). Map indices to raw ids with `data.item_ids[indices]`. Batches of
    512 were the fastest on 2 CPU cores (larger score matrices fall out of cache)."""
    single = len(history_item_indices) == 0 or np.isscalar(history_item_indices[0])
    histories = [np.asarray(history_item_indices)] if single else list(history_item_indices)
    k = min(k, model.n_items)
    indices = np.zeros((len(histories), k), dtype=np.int64)
    scores = np.zeros((len(histories), k), dtype=np.float32)
    for users in _length_batches(histories, batch_size):
        batch_histories = [histories[u] for u in users]
        batch_scores = model.score(batch_histories)  # (B, n_items)
        if exclude_history:
            exclude_history_(batch_scores, batch_histories)
        top = batch_scores.topk(k, dim=1)  # (B, k)
        indices[users], scores[users] = top.indices.cpu().numpy(), top.values.cpu().numpy()
    return (indices[0], scores[0]) if single else (indices, scores)
