"""Sampled-softmax cross-entropy: each target against a few items instead of the catalog.

The candidates a batch shares are `num_negatives` items drawn uniformly or by popularity
(`NegativeSampler`) and, optionally, the batch's own targets (in-batch negatives). Each
candidate's logit, the target's included, is corrected by the log of its sampling probability
(logQ: uniform 1/n, popularity count^alpha / sum, an in-batch item its share of the batch's
targets), so that popular items, drawn more often, are not pushed down more than the full
softmax would push them. A candidate equal to the row's target (an accidental hit) is masked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist

NEGATIVES = ("uniform", "popularity")


def item_counts(sequences: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """How often each item occurs in `sequences` (item indices). -> (n_items,) int64"""
    flat = np.concatenate(sequences) if len(sequences) else np.zeros(0, dtype=np.int64)
    return np.bincount(flat.astype(np.int64), minlength=n_items)


class NegativeSampler:
    """Draws the negatives a batch shares and gives each item's log sampling probability.

    `counts` (n_items,) None: uniform; otherwise q_j proportional to (count_j + 1)^alpha (the
    + 1 keeps an item unseen in the counts, such as a validation item in the refit epochs,
    drawable and its log q finite). `in_batch`: the batch's targets are candidates too (in a
    data-parallel group, those of the rank's part of the batch). Draws use torch's global
    generator, so a seeded run (and its checkpoint) repeats them."""

    def __init__(
        self,
        n_items: int,
        num_negatives: int,
        counts: np.ndarray | None = None,
        alpha: float = 1.0,
        in_batch: bool = False,
    ) -> None:
        if num_negatives < 0 or (num_negatives == 0 and not in_batch):
            raise ValueError(
                "train.num_negatives must be > 0, or >= 0 with train.in_batch_negatives, got "
                f"{num_negatives}"
            )
        self.n_items, self.num_negatives, self.in_batch = n_items, num_negatives, in_batch
        self.log_probs = self.cumulative = None  # uniform
        if counts is not None:
            if len(counts) != n_items:
                raise ValueError(f"item counts: {len(counts)} rows, expected {n_items}")
            weights = (torch.as_tensor(counts, dtype=torch.float64) + 1.0) ** alpha  # (n,)
            probs = weights / weights.sum()
            self.log_probs = probs.log().float()  # (n,)
            self.cumulative = probs.cumsum(0)  # (n,) float64: exact enough for 1M items
            self.cumulative[-1] = 1.0

    def draw(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """`num_negatives` items, with replacement. -> item indices (K,), their log q (K,)

        In a data-parallel process group each rank draws its share (K / world size, rounded
        up) from its own stream and the shares are gathered, in rank order, so that every rank
        scores its part of the batch against the same K negatives, as one process scores the
        whole batch (an all-gather of K indices per step)."""
        ranks = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        share = -(-self.num_negatives // ranks)  # ceil
        items = self._draw_items(share).to(device)  # (share,)
        if ranks > 1:
            gathered = items.new_empty(ranks * share)  # (ranks * share,)
            dist.all_gather_into_tensor(gathered, items)
            items = gathered[: self.num_negatives]
        return items, self.log_q(items)

    def _draw_items(self, count: int) -> torch.Tensor:
        """`count` item indices from torch's global generator. -> (count,) int64 on the CPU"""
        if self.cumulative is None:
            return torch.randint(0, self.n_items, (count,))
        uniform = torch.rand(count, dtype=torch.float64)
        items = torch.searchsorted(self.cumulative, uniform, right=True)
        return items.clamp_(max=self.n_items - 1)

    def log_q(self, items: torch.Tensor) -> torch.Tensor:
        """log of each item's sampling probability. (k,) item indices -> (k,)"""
        if self.log_probs is None:
            return torch.full(items.shape, -math.log(self.n_items), device=items.device)
        return self.log_probs.to(items.device)[items]


def sampled_cross_entropy(
    users: torch.Tensor,
    weights: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    candidates: torch.Tensor,
    candidate_log_q: torch.Tensor,
    target_log_q: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean cross-entropy of each target against the shared `candidates`, every logit minus
    its log q; a candidate equal to the row's target is masked. `label_smoothing` spreads that
    share of the label over the target and its real (unmasked) candidates.

    `weights` and `bias` hold the rows of the items the step touched; `targets` and
    `candidates` index them, so equal indices are equal items.
    (N, d), (U, d), (U,) | None, (N,), (C,), (C,), (N,) -> ()"""
    positive = (users * weights[targets]).sum(-1, keepdim=True)  # (N, 1)
    negative = users @ weights[candidates].T  # (N, C)
    if bias is not None:
        positive = positive + bias[targets].unsqueeze(1)
        negative = negative + bias[candidates]
    positive = positive - target_log_q.unsqueeze(1)
    negative = negative - candidate_log_q
    # A "negative" that is the target would push the target down: mask it.
    hits = candidates.unsqueeze(0) == targets.unsqueeze(1)  # (N, C)
    logits = torch.cat([positive, negative.masked_fill(hits, float("-inf"))], dim=1)  # (N, 1 + C)
    log_probs = logits.log_softmax(dim=1)  # (N, 1 + C)
    loss = -log_probs[:, 0]  # (N,)
    if label_smoothing:  # spread over the target and its real (unmasked) candidates
        scored = torch.isfinite(logits)
        spread = -log_probs.masked_fill(~scored, 0.0).sum(1) / scored.sum(1)  # (N,)
        loss = (1.0 - label_smoothing) * loss + label_smoothing * spread
    return loss.mean()


def in_batch_candidates(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's distinct targets as candidates and log q: each one's share of the targets.
    (N,) -> candidates (M,), their log q (M,), each row's target's log q (N,)"""
    items, inverse, counts = torch.unique(targets, return_inverse=True, return_counts=True)
    log_q = (counts.float() / len(targets)).log()  # (M,)
    return items, log_q, log_q[inverse]
