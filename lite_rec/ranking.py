"""The one full-ranking loop: every catalog item is a candidate, the user's history is not.

`rank_catalog` serves evaluation (the rank of each held-out target), recommendation (the
top-k items) and the registry's gate. It scores the catalog in item chunks: per batch of
users, `model.user_vectors(histories)` once, then `model.item_scores(users, start, stop)` per
chunk, so memory stays at batch x chunk scores. A model with only `score(histories)` is
scored whole once per batch and its rows are sliced into chunks.

Rank convention (pessimistic): rank = 1 + the number of *other* items whose score is greater
than or equal to the target's. A tie therefore never favours the target: a model that gives
every item the same score ranks each target last, not first. A NaN target score ranks last.
A target the user has seen before stays rankable; the rest of the history scores -inf.

Top-k order: score descending; among equal scores the lower item index first; NaN above
every number. The values are those of `torch.topk` on the whole row, and so are the items
except within a group of equal scores, whose order `torch.topk` leaves unspecified. The
order is total, so merging the chunks' top-k lists gives the unchunked result exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# Rows compared per step when counting scores against a threshold: their boolean matrix
# stays in cache (9x faster than comparing a 1024 x 12,000 batch at once on a CPU core).
RANK_ROWS = 64


@dataclass
class Ranking:
    """Per user, in the order the histories were given."""

    ranks: np.ndarray | None  # (U,) int64 1-based rank of each target; None without targets
    top_items: np.ndarray  # (U, k) int64 item indices, best first
    top_scores: np.ndarray  # (U, k) float32 their scores


class _WholeScores:
    """A model with only `score(histories)` seen through the chunked interface: its user
    vectors are the full score rows (B, n_items), and an item chunk is their slice."""

    def __init__(self, model: nn.Module):
        self.model = model

    def user_vectors(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return self.model.score(histories)  # (B, n_items)

    def item_scores(self, users: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return users[:, start:stop]


def _chunks(n_items: int, item_chunk: int | None) -> list[tuple[int, int]]:
    """(start, stop) item ranges covering the catalog; one range when `item_chunk` is None."""
    if item_chunk is None:
        return [(0, n_items)]
    if item_chunk < 1:
        raise ValueError(f"item_chunk: expected a positive item count or None, got {item_chunk}")
    return [(start, min(start + item_chunk, n_items)) for start in range(0, n_items, item_chunk)]


def _batches(
    histories: Sequence[np.ndarray], groups: np.ndarray, batch_size: int
) -> Iterator[np.ndarray]:
    """Batches of user positions, never mixing two `groups`, grouped by history length within
    a group so little time goes to padding. Scores do not depend on the grouping: each user's
    row is computed independently."""
    order = np.lexsort(([len(h) for h in histories], groups))  # stable: group, then length
    bounds = [0, *(np.flatnonzero(np.diff(groups[order])) + 1).tolist(), len(order)]
    for group_start, group_stop in itertools.pairwise(bounds):
        for start in range(group_start, group_stop, batch_size):
            yield order[start : min(start + batch_size, group_stop)]


class _HistoryCells:
    """The (row, item) cells of a batch's history items, which score -inf; `keep[row]` (the
    target) is left out of its row. Sorted by item when the catalog comes in several chunks,
    so that each chunk finds its cells by bisection."""

    def __init__(
        self,
        histories: Sequence[np.ndarray],
        keep: np.ndarray | None,
        chunked: bool,
        device: torch.device,
    ):
        rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        items = np.concatenate(
            [np.zeros(0, np.int64), *(np.asarray(h, np.int64) for h in histories)]
        )
        if keep is not None:
            rows, items = rows[items != keep[rows]], items[items != keep[rows]]
        self.chunked = chunked
        if chunked:
            order = np.argsort(items)
            rows, items = rows[order], items[order]
        self.items = items
        self.rows_t = torch.from_numpy(rows).to(device)
        self.items_t = torch.from_numpy(items).to(device)

    def exclude_(self, scores: torch.Tensor, start: int) -> None:
        """Set the cells of chunk `start`..start + width of `scores` (B, width) to -inf."""
        low, high = 0, len(self.items)
        if self.chunked:
            low, high = np.searchsorted(self.items, [start, start + scores.shape[1]]).tolist()
        if high > low:
            scores[self.rows_t[low:high], self.items_t[low:high] - start] = float("-inf")


def _count(scores: torch.Tensor, thresholds: torch.Tensor, compare: Callable) -> torch.Tensor:
    """Per row, the number of scores `compare(score, threshold)`. (B, n), (B, 1) -> (B,)"""
    if len(scores) <= RANK_ROWS:
        return compare(scores, thresholds).sum(dim=1)
    counts = torch.empty(len(scores), dtype=torch.int64, device=scores.device)
    for start in range(0, len(scores), RANK_ROWS):
        rows = slice(start, start + RANK_ROWS)
        counts[rows] = compare(scores[rows], thresholds[rows]).sum(dim=1, dtype=torch.int32)
    return counts


def _best_first(values: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, m) candidates sorted by score descending, then item index ascending."""
    by_item = items.argsort(dim=1)
    values, items = values.gather(1, by_item), items.gather(1, by_item)
    by_value = values.argsort(dim=1, descending=True, stable=True)
    return values.gather(1, by_value), items.gather(1, by_value)


def _top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best (scores, column indices) of each row in the module's top-k order."""
    # One more than asked: the (k+1)-th tells, without another pass over the scores, whether
    # a score equal to the k-th was left out (topk may have kept any of a tied group).
    extra = min(k + 1, scores.shape[1])
    values, items = scores.topk(extra, dim=1)  # (B, k + 1)
    kth = values[:, k - 1]  # (B,)
    redo = values[:, k] == kth if extra > k else torch.zeros_like(kth, dtype=torch.bool)
    values, items = values[:, :k], items[:, :k]
    # A NaN k-th equals nothing: those rows, and the tied ones, take the first k of a stable
    # sort instead.
    redo |= kth.isnan()
    if redo.any():
        rows = redo.nonzero().squeeze(1)
        ordered = scores[rows].sort(dim=1, descending=True, stable=True)
        values[rows], items[rows] = ordered.values[:, :k], ordered.indices[:, :k]
    # topk sorts by score alone: equal scores (or NaNs) next to each other need the item order.
    if ((values[:, 1:] == values[:, :-1]) | values[:, 1:].isnan()).any():
        return _best_first(values, items)
    return values, items


def _rank_batch(
    scorer: nn.Module | _WholeScores,
    vectors: torch.Tensor,
    chunks: list[tuple[int, int]],
    keep: np.ndarray | None,
    cells: _HistoryCells | None,
    k: int,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """One batch over the chunks, the first of which holds every target (`keep`): the count of
    items scoring at least the target (the target included) and its score, (B,) and (B, 1),
    and the top-k scores and items (B, k); None for what was not asked."""
    at_least = target_scores = best = None
    for start, stop in chunks:
        scores = scorer.item_scores(vectors, start, stop)  # (B, stop - start)
        if cells is not None:
            cells.exclude_(scores, start)
        if keep is not None:
            if target_scores is None:
                columns = torch.from_numpy(keep - start).to(scores.device).view(-1, 1)
                target_scores = scores.gather(1, columns)  # (B, 1)
                at_least = torch.zeros(len(scores), dtype=torch.int64, device=scores.device)
            at_least += _count(scores, target_scores, torch.ge)
        if k:
            values, items = _top_k(scores, min(k, stop - start))
            items = items + start
            if best is not None:  # both lists are exact, so their merge is too
                values, items = _best_first(
                    torch.cat([best[0], values], 1), torch.cat([best[1], items], 1)
                )
            best = values[:, :k], items[:, :k]  # (B, k)
    return at_least, target_scores, best


@torch.inference_mode()
def rank_catalog(
    model: nn.Module,
    histories: Sequence[np.ndarray],
    targets: np.ndarray | None = None,
    k: int = 0,
    exclude_history: bool = True,
    batch_size: int = 1024,
    item_chunk: int | None = None,
) -> Ranking:
    """Rank the whole catalog for each history (item indices, oldest first): the rank of each
    target (item indices, one per history) when `targets` is given, and the top-k items.

    `item_chunk` items are scored at a time (None: the whole catalog at once), so memory
    stays at `batch_size` x `item_chunk` scores for a model with `item_scores`. Each user's
    results come from its own scores alone: they depend on neither the batch size, the chunk
    size nor the order of the users (beyond the rounding of the model's matrix products).
    With targets and chunks, a batch holds users whose targets lie in one chunk, scored
    first, so each target's score is the very value its competitors are compared with."""
    scorer = model if hasattr(model, "user_vectors") else _WholeScores(model)
    n_items, k = model.n_items, min(k, model.n_items)
    chunks = _chunks(n_items, item_chunk)
    groups = np.zeros(len(histories), dtype=np.int64)  # the chunk of each target
    if targets is not None:
        targets = np.asarray(targets, dtype=np.int64)
        if len(targets) != len(histories) or ((targets < 0) | (targets >= n_items)).any():
            raise ValueError(
                f"targets: expected one item index in 0..{n_items - 1} per history "
                f"({len(histories)}), got {len(targets)} values from {targets.min(initial=0)} "
                f"to {targets.max(initial=0)}"
            )
        groups = np.searchsorted([start for start, _ in chunks], targets, side="right") - 1
    ranks = None if targets is None else np.zeros(len(histories), dtype=np.int64)
    top_items = np.zeros((len(histories), k), dtype=np.int64)
    top_scores = np.zeros((len(histories), k), dtype=np.float32)
    for users in _batches(histories, groups, batch_size):
        batch = [histories[u] for u in users]
        vectors = scorer.user_vectors(batch)  # (B, d)
        keep = None if targets is None else targets[users]
        cells = (
            _HistoryCells(batch, keep, len(chunks) > 1, vectors.device) if exclude_history else None
        )
        first = int(groups[users[0]])
        order = [chunks[first], *chunks[:first], *chunks[first + 1 :]]
        at_least, target_scores, best = _rank_batch(scorer, vectors, order, keep, cells, k)
        if ranks is not None:
            rank = at_least.clamp(min=1)  # a NaN target compares false to everything
            rank = torch.where(target_scores.squeeze(1).isnan(), n_items, rank)
            ranks[users] = rank.cpu().numpy()
        if k:
            top_scores[users] = best[0].float().cpu().numpy()
            top_items[users] = best[1].cpu().numpy()
    return Ranking(ranks, top_items, top_scores)
