"""BERT4Rec (Sun et al., 2019): a bidirectional transformer over item ids trained to recover
randomly masked items; to recommend, a mask token is appended to the history and the
transformer's output there is scored against every item (full ranking, tied embeddings)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lite_rec.config import ModelConfig, TrainConfig
from lite_rec.evaluate import evaluate
from lite_rec.sequences import SequenceData, length_batches, traversal_windows
from lite_rec.trainer import Batch, Trainer, TrainResult, seed_everything


@dataclass
class Bert4RecConfig:
    mask_prob: float = 0.2  # share of items masked in each training window


class Bert4Rec(nn.Module):
    """Token 0 is padding, items are 1..n_items, n_items + 1 is the mask. Sequences are
    right-padded with an attention mask, so positions count from the oldest item and a score
    does not depend on the batch it is computed in."""

    def __init__(self, config: ModelConfig, n_items: int):
        super().__init__()
        from transformers import BertConfig, BertModel

        self.config = config
        self.n_items = n_items
        self.mask_token = n_items + 1
        self.encoder = BertModel(
            BertConfig(
                vocab_size=n_items + 2,
                hidden_size=config.hidden_size,
                num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads,
                intermediate_size=4 * config.hidden_size,
                hidden_dropout_prob=config.dropout,
                attention_probs_dropout_prob=config.dropout,
                max_position_embeddings=config.max_len,
                type_vocab_size=1,
                pad_token_id=0,
            ),
            add_pooling_layer=False,
        )
        width = config.hidden_size
        self.transform = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
        self.output_bias = nn.Parameter(torch.zeros(n_items))

    @property
    def device(self) -> torch.device:
        return self.output_bias.device

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, d) outputs -> (N, n_items), tied to the item embeddings."""
        items = self.encoder.embeddings.word_embeddings.weight[1 : self.n_items + 1]
        return F.linear(self.transform(hidden), items, self.output_bias)

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens, right-padded -> (B, T, d)"""
        mask = (input_ids > 0).long()
        return self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state

    def forward(self, batch: Batch) -> torch.Tensor:
        """Cross-entropy over the catalog at every masked position (labels > 0)."""
        hidden = self.encode(batch["input_ids"].to(self.device))  # (B, T, d)
        labels = batch["labels"].to(self.device)  # (B, T) internal indices, 0 = not masked
        masked = labels > 0
        return F.cross_entropy(self.logits(hidden[masked]), labels[masked] - 1)

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Scores of every item for the position after each history. -> (B, n_items)"""
        was_training = self.training
        self.eval()
        kept = [np.asarray(h, dtype=np.int64)[-(self.config.max_len - 1) :] for h in histories]
        lengths = np.array([len(h) for h in kept])
        input_ids = np.zeros((len(kept), int(lengths.max(initial=0)) + 1), dtype=np.int64)
        for row, history in enumerate(kept):
            input_ids[row, : len(history)] = history + 1
            input_ids[row, len(history)] = self.mask_token
        hidden = self.encode(torch.from_numpy(input_ids).to(self.device))  # (B, T, d)
        rows = torch.arange(len(kept), device=self.device)
        scores = self.logits(hidden[rows, torch.from_numpy(lengths).to(self.device)])
        self.train(was_training)
        return scores  # (B, n_items)


def masked_windows(
    windows: np.ndarray, mask_token: int, mask_prob: float, rng: np.random.Generator
) -> Batch:
    """(B, T) right-padded internal indices -> input_ids with items masked, labels holding the
    masked items. Each window gets at least one mask: its last item when the draw chose none."""
    real = windows > 0
    masked = real & (rng.random(windows.shape) < mask_prob)
    lengths = real.sum(1)
    none = ~masked.any(1)
    masked[np.flatnonzero(none), lengths[none] - 1] = True
    width = int(lengths.max())
    input_ids = np.where(masked, mask_token, windows)[:, :width].astype(np.int64)
    labels = np.where(masked, windows, 0)[:, :width].astype(np.int64)
    return {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels)}


def train_bert4rec(
    data: SequenceData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    bert_config: Bert4RecConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Every training sequence cut into windows of `max_len` items, masked afresh each epoch."""
    bert_config = bert_config or Bert4RecConfig()
    seed_everything(train_config.seed)
    model = Bert4Rec(model_config, data.n_items)
    windows = traversal_windows(data.train_sequences(), model_config.max_len - 1)

    def batches(epoch: int) -> Iterator[Batch]:
        rng = np.random.default_rng([train_config.seed, epoch])
        for rows in length_batches((windows > 0).sum(1), train_config.batch_size, rng):
            yield masked_windows(windows[rows], model.mask_token, bert_config.mask_prob, rng)

    return Trainer(
        model,
        batches,
        lambda m, batch: m(batch),
        lambda m: evaluate(m, data, "valid", train_config.eval_batch_size),
        train_config,
        log=log,
    ).fit()
