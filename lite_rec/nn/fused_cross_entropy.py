"""Full-softmax cross-entropy over the whole catalog without materialising the logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Logits per chunk of the fused output loss (16 MB of float32). Fewer, taller matrix products:
# a Beauty text+id epoch on 2 cores took 15-19% less than with the 4 MB chunks that fit in
# cache, id only 3% (bench/results/step_profile/beauty_epoch_time_chunks.json).
DEFAULT_CHUNK_LOGITS = 1 << 22


class LinearCrossEntropy(torch.autograd.Function):
    """mean(cross_entropy(users @ weights.T + bias, targets, label_smoothing=smoothing)) without
    materialising the (N, n_items) logits: rows go through in chunks of `chunk_logits` logits. With
    `with_grad`, the forward pass also computes the gradients while each chunk's logits are at
    hand (one matrix product and one exp per logit, where a backward pass would recompute the
    logits), and the backward pass only scales them. Full softmax over the catalog dominates
    training; this is several times faster on CPU than `F.cross_entropy(F.linear(...))`, with
    the same result up to float rounding. Call it through `linear_cross_entropy`."""

    @staticmethod
    def forward(ctx, users, weights, bias, targets, smoothing, with_grad, chunk_logits):
        n_rows, n_items = users.shape[0], weights.shape[0]  # users (N, d), weights (n, d)
        chunk = max(1, chunk_logits // n_items)
        total = users.new_zeros(())
        d_users = torch.empty_like(users) if with_grad else None
        d_weights = torch.zeros_like(weights) if with_grad else None
        d_bias = torch.zeros_like(bias) if with_grad and bias is not None else None
        # Label smoothing gives the target 1 - s of the label mass and every item s / n: the
        # loss is (1 - s) (lse - z_target) + s (lse - mean z), and mean z = u . mean(w) +
        # mean(b) costs a dot product per row. Its gradient (-s / n on every logit) is added
        # in closed form after the loop instead of one more pass over the logits.
        mean_weight = weights.mean(0) if smoothing else None  # (d,)
        mean_bias = bias.mean() if smoothing and bias is not None else 0.0
        for start in range(0, n_rows, chunk):
            rows = slice(start, start + chunk)
            row_targets = targets[rows].unsqueeze(1)  # (C, 1)
            logits = F.linear(users[rows], weights, bias)  # (C, n)
            target_logits = logits.gather(1, row_targets)  # (C, 1)
            # One fused kernel that works row by row in cache, where max, subtract, exp, sum and
            # divide each went over the whole chunk.
            probs = torch.softmax(logits, dim=1)  # (C, n)
            total += (_log_sum_exp(logits, probs, target_logits, row_targets) - target_logits).sum()
            if smoothing:  # (1 - s) z_target + s mean(z) stands for the target's logit
                mean_logits = (users[rows] @ mean_weight).unsqueeze(1) + mean_bias  # (C, 1)
                total += smoothing * (target_logits - mean_logits).sum()
            if not with_grad:
                continue
            # d mean(loss) / d logits = (softmax - (1 - s) one_hot - s / n) / n_rows; the
            # 1 / n_rows goes into the products, the -s / n after the loop.
            one_hot = torch.full_like(target_logits, smoothing - 1.0)  # (C, 1)
            d_logits = probs.scatter_add_(1, row_targets, one_hot)  # (C, n)
            d_users[rows] = (d_logits @ weights).div_(n_rows)  # (C, d)
            d_weights.addmm_(d_logits.T, users[rows], alpha=1.0 / n_rows)  # (n, d)
            if d_bias is not None:
                d_bias += d_logits.sum(0).div_(n_rows)
        if with_grad and smoothing:  # the -s / (n * n_rows) on every logit
            d_users -= (smoothing / n_rows) * mean_weight
            d_weights -= (smoothing / (n_items * n_rows)) * users.sum(0)
            if d_bias is not None:
                d_bias -= smoothing / n_items
        ctx.save_for_backward(d_users, d_weights, d_bias)
        return total / n_rows

    @staticmethod
    def backward(ctx, grad):
        d_users, d_weights, d_bias = ctx.saved_tensors
        if d_users is None:
            raise RuntimeError("LinearCrossEntropy ran with with_grad=False: no gradients")
        d_bias = d_bias * grad if d_bias is not None else None
        return d_users * grad, d_weights * grad, d_bias, None, None, None, None


def _log_sum_exp(
    logits: torch.Tensor, probs: torch.Tensor, target_logits: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """log(sum(exp(logits))) per row, read off the softmax: z_t - log(p_t), exact but for
    rounding while the target's probability is a normal float; rows where it underflows are
    computed from their logits. (C, n), (C, n), (C, 1), (C, 1) -> (C, 1)"""
    target_probs = probs.gather(1, targets)  # (C, 1)
    lse = target_logits - target_probs.log()
    small = (target_probs < torch.finfo(probs.dtype).tiny).squeeze(1)  # (C,)
    if small.any():
        lse[small] = torch.logsumexp(logits[small], dim=1, keepdim=True)
    return lse


def linear_cross_entropy(
    users: torch.Tensor,
    weights: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    label_smoothing: float = 0.0,
    chunk_logits: int = DEFAULT_CHUNK_LOGITS,
) -> torch.Tensor:
    """mean(cross_entropy(users @ weights.T + bias, targets, label_smoothing=...)), computing
    its gradients in the same pass when autograd will want them; at most `chunk_logits` logits
    exist at a time. (N, d), (n, d), (n,) | None, (N,) -> ()"""
    inputs = [users, weights] + ([bias] if bias is not None else [])
    with_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    return LinearCrossEntropy.apply(
        users, weights, bias, targets, label_smoothing, with_grad, chunk_logits
    )
