"""The Item LLM inside training: fine-tuning its last layers jointly with the Recommendation LLM.

Re-encoding every item at every step is out of reach on a CPU (a MiniLM layer costs ~3.5 MFLOP
per token, and a catalog holds 10^5 to 10^6 tokens), so fine-tuning works in two parts:

- the frozen lower layers run **once**: their output for every item (`prefix`) is kept, and
  only the last `layers` layers run during training, from that output;
- a training step re-encodes (with gradients) only the items of its batch, at most
  `items_per_step` of them chosen at random; every other item reads the text table that
  `ItemRepresentation.refresh()` recomputes with the current weights after each epoch.

Splitting the encoder needs a model whose forward calls `embeddings(inputs_embeds=...)` and runs
a plain list of layers (BERT, RoBERTa, MiniLM, ...). The split is checked against the whole
encoder on real items; a model that fails the check (T5's relative positions live in its first
layer) is fine-tuned by running the whole encoder on the batch's items instead, which is exact
but slower.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch
from torch import nn

from lite_rec.item_embeddings import ItemEncoder, item_vectors

log = logging.getLogger(__name__)

# Tolerance of the split check: float32 reordering differs by ~1e-6 on normalised vectors.
SPLIT_TOLERANCE = 1e-4
SPLIT_CHECK_ITEMS = 16


class _InputsEmbeds(nn.Module):
    """Stands in for a model's embedding layer: hands the given hidden states through."""

    def forward(self, inputs_embeds: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        return inputs_embeds


def _top_model(model: nn.Module, layer_list: nn.ModuleList, n_layers: int) -> nn.Module | None:
    """A copy of `model` that runs only its last `n_layers` layers on given hidden states, or
    None when the model has no `embeddings` module to bypass."""
    if not isinstance(getattr(model, "embeddings", None), nn.Module):
        return None
    path = next(name for name, module in model.named_modules() if module is layer_list)
    top = copy.deepcopy(model)
    parent_path, _, attribute = path.rpartition(".")
    parent = top.get_submodule(parent_path) if parent_path else top
    setattr(parent, attribute, nn.ModuleList(list(getattr(parent, attribute))[-n_layers:]))
    top.embeddings = _InputsEmbeds()
    top.config.num_hidden_layers = n_layers
    if getattr(top, "pooler", None) is not None:
        top.pooler = None  # mean/cls/max pooling reads the token states, never the pooler
    return top


class ItemTower(nn.Module):
    """Item index -> Item LLM vector, with the encoder's last `layers` layers trainable.

    Token ids, masks and the frozen prefix are non-persistent buffers: checkpoints hold only
    the trainable layers, and a resumed run rebuilds the rest from the same texts and weights."""

    def __init__(
        self,
        encoder: ItemEncoder,
        texts: Sequence[str],
        layers: int,
        items_per_step: int = 0,
        batch_size: int = 64,
    ):
        super().__init__()
        if layers < 1:
            raise ValueError(f"model.finetune_layers must be >= 1, got {layers}")
        self.pooling, self.normalize = encoder.pooling, encoder.normalize
        self.items_per_step = items_per_step
        self.batch_size = batch_size
        tokens = encoder.tokenize(texts)
        self.register_buffer("input_ids", tokens["input_ids"], persistent=False)  # (n, T)
        self.register_buffer("attention_mask", tokens["attention_mask"], persistent=False)
        layer_list = encoder._layers()
        if layers > len(layer_list):
            raise ValueError(
                f"model.finetune_layers={layers}, but {encoder.name} has {len(layer_list)} layers"
            )
        self.split_at = len(layer_list) - layers  # hidden_states[split_at] feeds the top
        encoder.eval()  # as loaded; the split is computed and checked without dropout
        self.top, self.encoder = _top_model(encoder.model, layer_list, layers), None
        if self.top is not None:
            self.register_buffer("prefix", self._prefix(encoder), persistent=False)  # (n, T, d)
            if not self._split_matches(encoder):
                log.warning(
                    "%s: running its last %d layers alone does not reproduce the encoder; "
                    "fine-tuning runs the whole encoder on each batch's items (slower)",
                    encoder.name,
                    layers,
                )
                self.top = None
                del self.prefix
        if self.top is None:
            self.encoder = encoder
            encoder.unfreeze_last(layers)
        else:  # the encoder is dropped: the lower layers' work is all in `prefix`
            self.top.requires_grad_(True)

    @property
    def n_items(self) -> int:
        return self.input_ids.shape[0]

    @torch.no_grad()
    def _prefix(self, encoder: ItemEncoder) -> torch.Tensor:
        """Every item's hidden states entering the first trainable layer. -> (n, T, d)"""
        out = torch.zeros(*self.input_ids.shape, encoder.dim, device=self.input_ids.device)
        for start in range(0, self.n_items, self.batch_size):
            rows = slice(start, start + self.batch_size)
            mask = self.attention_mask[rows]
            width = int(mask.sum(1).max())
            states = encoder.model(
                input_ids=self.input_ids[rows, :width],
                attention_mask=mask[:, :width],
                output_hidden_states=True,
            ).hidden_states
            out[rows, :width] = states[self.split_at]
        return out

    @torch.no_grad()
    def _split_matches(self, encoder: ItemEncoder) -> bool:
        """Both in eval mode: `top` is a copy of the evaluating encoder."""
        items = torch.arange(min(SPLIT_CHECK_ITEMS, self.n_items))
        whole = encoder(self.input_ids[items], self.attention_mask[items])
        return bool((whole - self(items)).abs().max() <= SPLIT_TOLERANCE)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """(k,) item indices -> (k, d) vectors, with gradients into the trainable layers.
        Items go through in chunks of similar token length, so little work goes to padding."""
        if len(items) <= self.batch_size:
            return self._encode(items)
        order = torch.argsort(self.attention_mask[items].sum(1))
        chunks = [
            self._encode(items[order[start : start + self.batch_size]])
            for start in range(0, len(items), self.batch_size)
        ]
        return torch.cat(chunks)[torch.argsort(order)]

    def _encode(self, items: torch.Tensor) -> torch.Tensor:
        mask = self.attention_mask[items]
        width = int(mask.sum(1).max())
        mask = mask[:, :width]  # (k, T')
        if self.top is None:
            return self.encoder(self.input_ids[items, :width], mask)
        hidden = self.top(inputs_embeds=self.prefix[items, :width], attention_mask=mask)
        return item_vectors(hidden.last_hidden_state, mask, self.pooling, self.normalize)

    @torch.no_grad()
    def embed_all(self) -> torch.Tensor:
        """Every item with the current weights, in eval mode. -> (n, d)"""
        was_training = self.training
        self.eval()
        out = self(torch.arange(self.n_items, device=self.input_ids.device))
        self.train(was_training)
        return out

    @property
    def dim(self) -> int:
        model = self.top if self.top is not None else self.encoder.model
        return model.config.hidden_size

    def step_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """The items a training step re-encodes: the distinct items of its batch (internal
        indices, 0 = padding), at most `items_per_step` of them at random. -> (k,) indices"""
        items = torch.unique(item_ids[item_ids > 0]) - 1
        if 0 < self.items_per_step < len(items):
            keep = torch.randperm(len(items))[: self.items_per_step].to(items.device)
            items = items[keep]
        return items
