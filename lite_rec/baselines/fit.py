"""The training loop the baselines share: AdamW with warmup, gradient clipping, validation
after every epoch, learning-rate decay on a plateau and early stopping on validation NDCG@10
(as `lite_rec.train.train`), keeping the best epoch's weights.
Lite-LLM4Rec itself trains through `lite_rec.train.train` (checkpointing, resuming)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lite_rec.config import TrainConfig
from lite_rec.train import (
    SELECTION_METRIC,
    adamw_with_warmup,
    check_train_config,
    decay_on_plateau,
    is_better,
    optimizer_step,
)

Batch = dict[str, torch.Tensor]


@dataclass
class FitResult:
    model: nn.Module  # holding the best epoch's weights
    best_epoch: int  # 1-based; 0 when no epoch ran
    history: list[dict[str, Any]]  # per epoch: epoch, loss, valid metrics, seconds


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def fit(
    model: nn.Module,
    epoch_batches: Callable[[int], Iterable[Batch]],
    loss: Callable[[nn.Module, Batch], torch.Tensor],
    validate: Callable[[nn.Module], dict[str, float]],
    config: TrainConfig,
    log: Callable[[str], None] | None = None,
) -> FitResult:
    """Train `model` for at most `config.epochs` epochs of `epoch_batches(epoch)`, stopping
    after `config.patience` epochs without a better validation NDCG@10."""
    check_train_config(config)
    optimizer, scheduler = adamw_with_warmup([{"params": list(model.parameters())}], config)
    history: list[dict[str, Any]] = []
    best_epoch, best_score, best_weights, bad_epochs = 0, -1.0, None, 0
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        total, steps = 0.0, 0
        for batch in epoch_batches(epoch):
            value = optimizer_step(model, optimizer, scheduler, loss(model, batch), config)
            total, steps = total + value, steps + 1
        metrics = validate(model)
        row = {
            "epoch": epoch,
            "loss": total / max(steps, 1),
            **{f"valid_{k}": v for k, v in metrics.items()},
            "seconds": time.perf_counter() - started,
            "lr": scheduler.base_lrs[0],  # after warmup
        }
        history.append(row)
        if log is not None:
            log(f"epoch {epoch}: loss {row['loss']:.4f}, valid ndcg@10 {metrics['ndcg@10']:.4f}")
        if is_better(metrics[SELECTION_METRIC], best_score, config):
            best_epoch, best_score, bad_epochs = epoch, metrics[SELECTION_METRIC], 0
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                break
            decay_on_plateau(scheduler, bad_epochs, config)
    if best_weights is not None:
        model.load_state_dict(best_weights)
    return FitResult(model.eval(), best_epoch, history)
