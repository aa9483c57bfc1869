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

Speed: a model whose `item_scores` takes `out` writes every chunk into one reused buffer (a
fresh 256 MB result costs as much in page faults as the product itself), and the passes after
the product are kept short: the count against the target is one comparison written over the
scores and one float sum, and the top-k of a chunk is taken only for the rows whose chunk
maximum could enter their running top-k.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# item_chunk=None scores the whole catalog at once while a batch's scores stay within this
# many (16 MiB of float32), and in chunks of AUTO_ITEM_CHUNK items beyond.
WHOLE_CATALOG_SCORES = 1 << 22
# Measured with `lite-rec bench ranking --item-chunks auto,1024,4096` (bench/results/ranking/)
# and 512: at 1M items, d=64, batches of 1,024 on 2 shared CPU cores, 2,048-item chunks
# (8 MiB of scores) ranked fastest or tied with 1,024; 512 and 4,096 were slower.
AUTO_ITEM_CHUNK = 2048
# Counts are float32 sums of 0/1 values: exact up to 2^24 items per chunk.
MAX_ITEM_CHUNK = 1 << 24


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

    def item_scores(
        self,
        users: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        out: torch.Tensor | None = None,
        items: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if items is not None:
            return users[:, items]  # (B, N), a copy
        # A copy, never a view: the ranking loop overwrites the scores it is given.
        scores = users[:, start:stop]  # (B, stop - start)
        return scores.clone() if out is None else out.copy_(scores)


class _Scorer:
    """A model as the ranking loop calls it, and what its `item_scores` accepts: `out` (a
    buffer to write into) and `items` (scores of given items, which lets every target's
    score be known before the chunk that holds it)."""

    def __init__(self, model: nn.Module):
        self.model = model if hasattr(model, "user_vectors") else _WholeScores(model)
        parameters = inspect.signature(self.model.item_scores).parameters
        self.fills_buffer = "out" in parameters
        self.scores_items = "items" in parameters
        self.buffer: torch.Tensor | None = None

    def chunk_scores(self, users: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Scores of items start..stop-1 (B, stop - start), which the caller may overwrite."""
        if not self.fills_buffer:
            return self.model.item_scores(users, start, stop)
        size = len(users) * (stop - start)
        if self.buffer is None or len(self.buffer) < size or self.buffer.dtype != users.dtype:
            self.buffer = torch.empty(size, dtype=users.dtype, device=users.device)
        out = self.buffer[:size].view(len(users), stop - start)
        return self.model.item_scores(users, start, stop, out=out)

    def target_scores(self, users: torch.Tensor, targets: np.ndarray) -> torch.Tensor:
        """Each user's score of its own target, from one (B, B) product. -> (B, 1)"""
        items = torch.from_numpy(targets).to(users.device)
        return self.model.item_scores(users, items=items).diagonal().unsqueeze(1)


def item_chunk_size(n_items: int, batch_size: int, item_chunk: int | None) -> int:
    """The items scored at a time: `item_chunk`, or for None the whole catalog while
    `batch_size` x `n_items` scores fit WHOLE_CATALOG_SCORES and AUTO_ITEM_CHUNK beyond."""
    if item_chunk is None:
        whole = batch_size * n_items <= WHOLE_CATALOG_SCORES
        return min(n_items if whole else AUTO_ITEM_CHUNK, MAX_ITEM_CHUNK)
    if item_chunk < 1:
        raise ValueError(f"item_chunk: expected a positive item count or None, got {item_chunk}")
    return min(item_chunk, MAX_ITEM_CHUNK)


def _chunks(n_items: int, item_chunk: int) -> list[tuple[int, int]]:
    """(start, stop) item ranges of `item_chunk` items covering the catalog."""
    return [(start, min(start + item_chunk, n_items)) for start in range(0, n_items, item_chunk)]


def _batches(
    histories: Sequence[np.ndarray], users: np.ndarray, groups: np.ndarray, batch_size: int
) -> Iterator[np.ndarray]:
    """Batches of `users` (positions in `histories`), never mixing two `groups` (one per
    user), grouped by history length within a group so little time goes to padding. Scores
    do not depend on the grouping: each user's row is computed independently."""
    lengths = [len(histories[u]) for u in users]
    order = np.lexsort((lengths, groups))  # stable: group, then length
    bounds = [0, *(np.flatnonzero(np.diff(groups[order])) + 1).tolist(), len(order)]
    for group_start, group_stop in itertools.pairwise(bounds):
        for start in range(group_start, group_stop, batch_size):
            yield users[order[start : min(start + batch_size, group_stop)]]


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


def _entrants(
    scores: torch.Tensor, kth: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The scores of rows (R, width) at or above their top-k's k-th `kth` (R, 1), a number,
    as (R, m) values and column indices, padded with -inf at a column past every item; None
    when some row has more than k (its top-k is then taken instead)."""
    rows, columns = (scores >= kth).nonzero(as_tuple=True)  # row-major: rows ascending
    counts = torch.bincount(rows, minlength=len(scores))  # (R,)
    most = int(counts.max())
    if most > k:
        return None
    slot = torch.arange(len(rows), device=rows.device) - (counts.cumsum(0) - counts)[rows]
    values = scores.new_full((len(scores), most), float("-inf"))
    items = torch.full_like(values, torch.iinfo(torch.int64).max // 2, dtype=torch.int64)
    values[rows, slot], items[rows, slot] = scores[rows, columns], columns
    return values, items


def _merge_top_k(
    best: tuple[torch.Tensor, torch.Tensor] | None, scores: torch.Tensor, start: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The running top-k (B, k) after chunk `start` (B, width). Once a row holds k items, a
    chunk can only enter it with a score at or above the k-th, or a NaN: rows whose chunk
    maximum cannot skip the chunk, and of the others only those scores are merged (a
    handful, past the first chunks)."""
    rows = None
    if best is not None and best[0].shape[1] == k:
        kth, peak = best[0][:, -1], scores.amax(dim=1)  # (B,); amax is NaN with any NaN
        rows = ((peak >= kth) | peak.isnan()).nonzero().squeeze(1)
        if len(rows) == 0:
            return best
        scores, kth = scores[rows], kth[rows].unsqueeze(1)  # (R, width), (R, 1)
        numbers = not (peak[rows].isnan().any() or kth.isnan().any())
        entrants = _entrants(scores, kth, k) if numbers else None
    if rows is None or entrants is None:
        entrants = _top_k(scores, min(k, scores.shape[1]))
    values, items = entrants[0], entrants[1] + start
    if best is None:
        return values, items
    old_values, old_items = best if rows is None else (best[0][rows], best[1][rows])
    # Both lists are exact, so their merge is too.
    values, items = _best_first(
        torch.cat([old_values, values], 1), torch.cat([old_items, items], 1)
    )
    if rows is None:
        return values[:, :k], items[:, :k]
    best[0][rows], best[1][rows] = values[:, :k], items[:, :k]
    return best


def _rank_batch(
    scorer: _Scorer,
    vectors: torch.Tensor,
    chunks: list[tuple[int, int]],
    keep: np.ndarray | None,
    thresholds: torch.Tensor | None,
    cells: _HistoryCells | None,
    k: int,
) -> tuple[torch.Tensor | None, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
    """One batch over the chunks: the count of items scoring at least `thresholds` (B, 1)
    (the target included), each target's score `keep` as its chunk computed it (B, 1), and
    the top-k scores and items (B, k); None for what was not asked. Without `thresholds`,
    the first chunk holds every target and its scores are the thresholds."""
    at_least = observed = best = None
    if keep is not None:
        at_least = torch.zeros(len(vectors), dtype=torch.float64, device=vectors.device)
        by_target = np.argsort(keep, kind="stable")
        sorted_targets = keep[by_target]
    for start, stop in chunks:
        scores = scorer.chunk_scores(vectors, start, stop)  # (B, stop - start)
        if cells is not None:
            cells.exclude_(scores, start)
        if keep is not None:
            if observed is None:
                observed = torch.full_like(scores[:, :1], torch.nan)  # (B, 1)
            low, high = np.searchsorted(sorted_targets, [start, stop]).tolist()
            if high > low:
                rows = torch.from_numpy(by_target[low:high]).to(scores.device)
                columns = torch.from_numpy(sorted_targets[low:high] - start).to(scores.device)
                observed[rows, 0] = scores[rows, columns]
            thresholds = observed if thresholds is None else thresholds
        if k:
            best = _merge_top_k(best, scores, start, k)
        if keep is not None:
            # Written over the scores, which no later step reads: 1.0 where score >= threshold.
            torch.ge(scores, thresholds, out=scores)
            at_least += scores.sum(dim=1, dtype=torch.float32)
    return at_least, observed, best


def _rank_users(
    scorer: _Scorer,
    histories: Sequence[np.ndarray],
    users: np.ndarray,
    targets: np.ndarray | None,
    k: int,
    exclude_history: bool,
    batch_size: int,
    chunks: list[tuple[int, int]],
    predict: bool,
    ranking: Ranking,
) -> np.ndarray:
    """Fill `ranking`'s rows of `users`. With targets and `predict`, the targets' scores
    come first from one (B, B) product (`_Scorer.target_scores`) and every batch walks the
    chunks in item order; the users whose target then scored differently in its chunk are
    returned, to be counted again with their chunk's value (products of some shapes round
    differently). Without `predict`, a batch holds users whose targets lie in one chunk,
    scored first, so each target's score is the very value its competitors are compared
    with."""
    n_items = chunks[-1][1]
    groups = np.zeros(len(users), dtype=np.int64)  # the chunk of each target
    if targets is not None and not predict:
        starts = [start for start, _ in chunks]
        groups = np.searchsorted(starts, targets[users], side="right") - 1
    recount = []
    for batch_users in _batches(histories, users, groups, batch_size):
        batch = [histories[u] for u in batch_users]
        vectors = scorer.model.user_vectors(batch)  # (B, d)
        keep = None if targets is None else targets[batch_users]
        cells = None
        if exclude_history:
            cells = _HistoryCells(batch, keep, len(chunks) > 1, vectors.device)
        order, thresholds = chunks, None
        if predict:
            thresholds = scorer.target_scores(vectors, keep)  # (B, 1)
        elif targets is not None:
            first = int(np.searchsorted([s for s, _ in chunks], keep[0], side="right") - 1)
            order = [chunks[first], *chunks[:first], *chunks[first + 1 :]]
        at_least, observed, best = _rank_batch(scorer, vectors, order, keep, thresholds, cells, k)
        if targets is not None:
            rank = at_least.to(torch.int64).clamp(min=1)  # a NaN target compares false to all
            rank = torch.where(observed.squeeze(1).isnan(), n_items, rank)
            ranking.ranks[batch_users] = rank.cpu().numpy()
        if predict:
            differs = (observed != thresholds) & ~(observed.isnan() & thresholds.isnan())
            recount.append(batch_users[differs.squeeze(1).cpu().numpy()])
        if k:
            ranking.top_scores[batch_users] = best[0].float().cpu().numpy()
            ranking.top_items[batch_users] = best[1].cpu().numpy()
    return np.concatenate([np.zeros(0, np.int64), *recount])


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

    `item_chunk` items are scored at a time (None: `item_chunk_size` chooses; a value at or
    above the catalog size scores it whole), so memory stays at `batch_size` x `item_chunk`
    scores for a model with `item_scores`. Each user's results come from its own scores
    alone: they depend on neither the batch size, the chunk size nor the order of the users
    (beyond the rounding of the model's matrix products). Each target's rank compares its
    competitors with the very value its own chunk computed for it."""
    scorer = _Scorer(model)
    n_items, k = model.n_items, min(k, model.n_items)
    chunks = _chunks(n_items, item_chunk_size(n_items, batch_size, item_chunk))
    if targets is not None:
        targets = np.asarray(targets, dtype=np.int64)
        if len(targets) != len(histories) or ((targets < 0) | (targets >= n_items)).any():
            raise ValueError(
                f"targets: expected one item index in 0..{n_items - 1} per history "
                f"({len(histories)}), got {len(targets)} values from {targets.min(initial=0)} "
                f"to {targets.max(initial=0)}"
            )
    ranking = Ranking(
        None if targets is None else np.zeros(len(histories), dtype=np.int64),
        np.zeros((len(histories), k), dtype=np.int64),
        np.zeros((len(histories), k), dtype=np.float32),
    )
    users = np.arange(len(histories))
    predict = targets is not None and len(chunks) > 1 and scorer.scores_items
    settings = (exclude_history, batch_size, chunks)
    recount = _rank_users(scorer, histories, users, targets, k, *settings, predict, ranking)
    if len(recount):
        # Counted again in batches whose first chunk holds their targets (no top-k: it
        # does not depend on the targets).
        _rank_users(scorer, histories, recount, targets, 0, *settings, False, ranking)
    return ranking
