"""Sampled-softmax cross-entropy: each target against a few uniformly drawn items."""

from __future__ import annotations

import torch


def sampled_cross_entropy(
    users: torch.Tensor,
    weights: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    num_negatives: int,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean cross-entropy of each target against `num_negatives` items drawn uniformly (so
    logQ is constant) and shared across the rows; `label_smoothing` spreads that share of the
    label over the target and its negatives. (N, d), (n, d), (n,) | None, (N,) -> ()"""
    negatives = torch.randint(0, len(weights), (num_negatives,)).to(users.device)  # (K,)
    positive = (users * weights[targets]).sum(-1, keepdim=True)  # (N, 1)
    negative = users @ weights[negatives].T  # (N, K)
    if bias is not None:
        positive = positive + bias[targets].unsqueeze(1)
        negative = negative + bias[negatives]
    # A sampled "negative" that is the target would push the target down: mask it.
    negative = negative.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
    logits = torch.cat([positive, negative], dim=1)  # (N, 1 + K)
    log_probs = logits.log_softmax(dim=1)  # (N, 1 + K)
    loss = -log_probs[:, 0]  # (N,)
    if label_smoothing:  # spread over the target and its real (unmasked) negatives
        scored = torch.isfinite(logits)
        spread = -log_probs.masked_fill(~scored, 0.0).sum(1) / scored.sum(1)  # (N,)
        loss = (1.0 - label_smoothing) * loss + label_smoothing * spread
    return loss.mean()
