"""SASRec with its original loss: binary cross-entropy of the target against one sampled
negative per position (Kang & McAuley, 2018), on the id-only configuration of our model, so
it differs from SASRec-CE (`model.item_repr=id`, full softmax) in the loss alone."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lite_rec.config import ModelConfig, TrainConfig
from lite_rec.evaluate import evaluate
from lite_rec.model import RecommendationLLM
from lite_rec.sequences import SequenceData, epoch_batches
from lite_rec.trainer import Batch, Trainer, TrainResult, seed_everything


def bce_loss(model: RecommendationLLM, batch: Batch) -> torch.Tensor:
    """Mean BCE over every position with a target: the target scored as positive, one uniformly
    drawn other item as negative. (The original draws negatives outside the user's whole
    sequence; excluding only the target keeps the sampler batch-independent.)"""
    table = model.items()  # (n_items + 1, d)
    hidden = model.hidden_states(batch["input_ids"], table)  # (B, T, d)
    has_target = batch["target_ids"] > 0  # (B, T)
    users = model.head(hidden[has_target])  # (N, d)
    targets = batch["target_ids"][has_target] - 1  # (N,) item indices
    negatives = torch.randint(0, model.n_items - 1, targets.shape)  # (N,)
    negatives = negatives + (negatives >= targets).long()  # skips the target
    weights, bias = model.output_weights(table)  # (n_items, d), (n_items,) | None
    positive = (users * weights[targets]).sum(-1)  # (N,)
    negative = (users * weights[negatives]).sum(-1)  # (N,)
    if bias is not None:
        positive, negative = positive + bias[targets], negative + bias[negatives]
    return F.binary_cross_entropy_with_logits(
        torch.cat([positive, negative]),
        torch.cat([torch.ones_like(positive), torch.zeros_like(negative)]),
    )


def train_sasrec_bce(
    data: SequenceData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """SASRec-BCE with the same windows (traversal or sampling) and batches as our model."""
    seed_everything(train_config.seed)
    config = dataclasses.replace(model_config, item_repr="id")
    model = RecommendationLLM(config, data.n_items)
    sequences = data.train_sequences()
    return Trainer(
        model,
        lambda epoch: epoch_batches(sequences, train_config, config.max_len, epoch),
        bce_loss,
        lambda m: evaluate(m, data, "valid", train_config.eval_batch_size),
        train_config,
        log=log,
    ).fit()
