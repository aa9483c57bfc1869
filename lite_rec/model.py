"""The Recommendation LLM and its item projection head.

An item is represented by a projection of its Item-LLM text embedding and/or a learned ID
embedding. The text embeddings are a fixed table, unless training attaches an `ItemTower` that
fine-tunes the Item LLM's last layers (`model.finetune_item_llm`). A causal transformer (GPT-2
blocks, which add learned positions) reads a user's history of item representations; the hidden
state at the last real position is the user representation, and the item projection head turns
it into one score per catalog item in a single step (no generation, no beam search).

Internal item index = item index + 1: index 0 is padding. Histories are right-padded, so with
causal attention real positions never attend to padding and no attention mask is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lite_rec.config import ModelConfig
from lite_rec.nn.fused_cross_entropy import DEFAULT_CHUNK_LOGITS, linear_cross_entropy
from lite_rec.nn.gpt2_fast import gpt2_last_states, splits_like_gpt2
from lite_rec.nn.sampled_softmax import (
    NegativeSampler,
    in_batch_candidates,
    sampled_cross_entropy,
)
from lite_rec.nn.table_cache import TableCache
from lite_rec.nn.whitening import principal_components, whitening

ITEM_REPRS = ("text", "id", "text+id")
POSITIONS = ("start", "end")


def _item_llm_vectors(
    config: ModelConfig, n_items: int, text_embeddings: np.ndarray | None
) -> torch.Tensor:
    """The Item LLM's vectors, one row per item, checked. -> (n_items, d_llm)"""
    if text_embeddings is None:
        raise ValueError(f"model.item_repr={config.item_repr!r} needs text embeddings")
    if text_embeddings.shape[0] != n_items:
        raise ValueError(
            f"text embeddings have {text_embeddings.shape[0]} rows, expected one per "
            f"item ({n_items})"
        )
    return torch.as_tensor(np.asarray(text_embeddings, dtype=np.float32))


class ItemRepresentation(nn.Module):
    """One vector per item: projected text embedding, learned ID embedding, or their sum."""

    def __init__(self, config: ModelConfig, n_items: int, text_embeddings: np.ndarray | None):
        super().__init__()
        if config.item_repr not in ITEM_REPRS:
            raise ValueError(
                f"model.item_repr: expected one of {ITEM_REPRS}, got {config.item_repr!r}"
            )
        self.use_text = "text" in config.item_repr
        self.use_id = "id" in config.item_repr.split("+")
        self.tower = None
        if self.use_text:
            self._build_text_table(config, _item_llm_vectors(config, n_items, text_embeddings))
        if self.use_id:
            self.id_embedding = nn.Embedding(n_items + 1, config.hidden_size, padding_idx=0)
            nn.init.normal_(self.id_embedding.weight, std=0.02)
            with torch.no_grad():
                self.id_embedding.weight[0].zero_()

    def _build_text_table(self, config: ModelConfig, text: torch.Tensor) -> None:
        """The text table from the Item LLM's vectors (n_items, d_llm), whitened and/or
        reduced to `model.text_dim` principal directions, and its projection."""
        self.llm_dim = text.shape[1]  # the Item LLM's width
        if not 0 <= config.text_dim <= self.llm_dim:
            raise ValueError(
                f"model.text_dim: expected 0 (every dimension) to {self.llm_dim} (the Item "
                f"LLM's width), got {config.text_dim}"
            )
        self.transform_text = config.whiten_text or 0 < config.text_dim < self.llm_dim
        if self.transform_text:
            mean, transform = (
                whitening(text, dim=config.text_dim or None)
                if config.whiten_text
                else principal_components(text, config.text_dim)
            )
            self.register_buffer("text_mean", mean)  # (d_llm,)
            self.register_buffer("text_transform", transform)  # (d_llm, d_text)
            text = self.prepare_text(text)
        # A buffer, not a parameter: the Item LLM is frozen or fine-tuned by its own layers
        # (`attach_tower`), and saving the table with the weights makes a trained model
        # self-contained.
        self.register_buffer("text", torch.cat([torch.zeros(1, text.shape[1]), text]))
        self.text_projection = nn.Linear(text.shape[1], config.hidden_size)

    def attach_tower(self, tower: nn.Module) -> None:
        """Fine-tune the Item LLM through `tower` (item indices -> vectors); `refresh` then
        keeps the text table in step with its weights."""
        if not self.use_text:
            raise ValueError("model.finetune_item_llm needs item_repr text or text+id")
        if tower.n_items != self.text.shape[0] - 1 or tower.dim != self.llm_dim:
            raise ValueError(
                f"the Item LLM tower gives {tower.n_items} x {tower.dim} vectors, the text table "
                f"was built from {self.text.shape[0] - 1} x {self.llm_dim}"
            )
        self.tower = tower

    def prepare_text(self, text: torch.Tensor) -> torch.Tensor:
        """Item LLM vectors (n, d_llm) -> the rows the text table holds (n, d_text): whitened
        and/or reduced to `model.text_dim` principal components, or as they are."""
        if not self.transform_text:
            return text
        return (text - self.text_mean) @ self.text_transform  # (n, d_text)

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the text table with the fine-tuned Item LLM (no-op when frozen)."""
        if self.tower is not None:
            self.text[1:] = self.prepare_text(self.tower.embed_all())

    def forward(
        self, batch: dict[str, torch.Tensor] | None = None, items: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The representations of `items` (U,) (internal indices, sorted, distinct), or the
        table of all items, padding row first, when None. -> (U, d) or (n_items + 1, d)

        `batch`: a training batch (`input_ids`, `target_ids`), whose items `items` must hold.
        With a tower attached and in training mode, the tower re-encodes its items (at most
        `items_per_step` of them) with gradients into the Item LLM; the others read the table.
        The ID embedding is read by index, so its gradient has rows for `items` alone."""
        table = 0.0
        if self.use_text:
            # (U, d_text), or (n_items + 1, d_text)
            text = self.text if items is None else self.text[items]
            if batch is not None and self.tower is not None and self.training:
                batch_items = torch.cat(
                    [batch["input_ids"].flatten(), batch["target_ids"].flatten()]
                )
                fresh = self.tower.step_items(batch_items)  # (k,) item indices
                rows = fresh + 1 if items is None else torch.searchsorted(items, fresh + 1)
                text = text.index_copy(0, rows, self.prepare_text(self.tower(fresh)))
            table = table + self.text_projection(text)  # (U, d)
        if self.use_id:
            ids = self.id_embedding.weight if items is None else self.id_embedding(items)
            table = table + ids  # (U, d)
        return table


def build_backbone(config: ModelConfig) -> nn.Module:
    """A causal transformer that accepts `inputs_embeds` and adds its own learned positions.

    `backbone="gpt2"` builds a fresh GPT-2 of the configured size; anything else is loaded
    with `AutoModel.from_pretrained` (a model id or local path), keeping its own width."""
    from transformers import AutoModel, GPT2Config, GPT2Model

    if config.backbone != "gpt2":
        return AutoModel.from_pretrained(config.backbone)
    gpt2_config = GPT2Config(
        vocab_size=1,  # items enter as inputs_embeds; the token table is unused
        n_positions=config.max_len,
        n_embd=config.hidden_size,
        n_layer=config.num_layers,
        n_head=config.num_heads,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        activation_function="gelu",  # exact GELU is one fused op; the tanh form is five on CPU
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2Model(gpt2_config)


def pad_histories(
    histories: Sequence[np.ndarray], max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad the last `max_len` items of each history as internal indices.
    -> input_ids (B, T), lengths (B,) with T the longest kept history."""
    kept = [np.asarray(h, dtype=np.int64)[-max_len:] for h in histories]
    lengths = np.array([len(h) for h in kept], dtype=np.int64)
    input_ids = np.zeros((len(kept), max(int(lengths.max(initial=0)), 1)), dtype=np.int64)
    for row, history in enumerate(kept):
        input_ids[row, : len(history)] = history + 1
    return torch.from_numpy(input_ids), torch.from_numpy(lengths)


class RecommendationLLM(nn.Module):
    """Item representations -> causal transformer -> item projection head."""

    def __init__(
        self, config: ModelConfig, n_items: int, text_embeddings: np.ndarray | None = None
    ):
        super().__init__()
        self.config = config
        self.n_items = n_items
        self.backbone = build_backbone(config)
        width = self.backbone.config.hidden_size
        if width != config.hidden_size:
            raise ValueError(
                f"backbone {config.backbone!r} has width {width}, "
                f"model.hidden_size is {config.hidden_size}"
            )
        if config.positions not in POSITIONS:
            raise ValueError(
                f"model.positions: expected one of {POSITIONS}, got {config.positions!r}"
            )
        self.items = ItemRepresentation(config, n_items, text_embeddings)
        self.head = (
            nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
            if config.head_mlp
            else nn.Identity()
        )
        # Tied: score = user . item representation, so the head generalises to items through
        # their text. Untied: one free output row per item.
        self.output = None if config.tie_output else nn.Linear(width, n_items)
        self.fast_last_states = splits_like_gpt2(self.backbone)
        self.table_cache = TableCache()  # the item table for scoring (`item_table`)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def item_llm_dim(self) -> int:
        """The Item LLM's width (0 without text): what `load_model` rebuilds the table from,
        not `model.text_dim`, the width the table keeps."""
        return self.items.llm_dim if self.items.use_text else 0

    def position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Position of every slot of right-padded input_ids (B, T) -> (B, T): 0, 1, ... from
        each row's first item ("start"), or shifted so that each row's last item is at
        max_len - 1 ("end"; padding slots after it are clamped there, and causal attention
        keeps them out of real positions)."""
        width = input_ids.shape[1]
        positions = torch.arange(width, device=input_ids.device).expand_as(input_ids)
        if self.config.positions == "start":
            return positions
        lengths = (input_ids > 0).sum(1, keepdim=True)  # (B, 1)
        # lengths <= T <= max_len, so only the padding after the last item needs the clamp.
        return (positions + self.config.max_len - lengths).clamp(max=self.config.max_len - 1)

    def hidden_states(self, input_ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T) internal indices, right-padded -> (B, T, d)"""
        inputs_embeds = table[input_ids]  # (B, T, d)
        # "start" is every backbone's own default (and T5-style encoders take no position ids).
        extra = (
            {"position_ids": self.position_ids(input_ids)} if self.config.positions == "end" else {}
        )
        return self.backbone(inputs_embeds=inputs_embeds, **extra).last_hidden_state  # (B, T, d)

    def item_table(self) -> torch.Tensor:
        """`self.items()` for scoring, kept until the next training pass (`forward`) or until
        one of its tensors changes. -> (n_items + 1, d)"""
        return self.table_cache(self.items)

    def last_states(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The backbone's output at each history's last item (the user), eval mode.
        input_ids (B, T) right-padded, lengths (B,) -> (B, d)"""
        table = self.item_table()
        last = (lengths - 1).clamp(min=0)  # an empty history reads the padding position
        if self.fast_last_states:
            position_ids = self.position_ids(input_ids)
            return gpt2_last_states(self.backbone, table[input_ids], last, position_ids)
        hidden = self.hidden_states(input_ids, table)  # (B, T, d)
        return hidden[torch.arange(len(last), device=hidden.device), last]

    def output_weights(self, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-item output vectors (n_items, d) and bias (n_items,) or None."""
        if self.output is None:
            return table[1:], None
        return self.output.weight, self.output.bias

    def loss(
        self,
        batch: dict[str, torch.Tensor],
        num_negatives: int = 0,
        label_smoothing: float = 0.0,
        chunk_logits: int = DEFAULT_CHUNK_LOGITS,
        sampler: NegativeSampler | None = None,
    ) -> torch.Tensor:
        """Mean next-item loss over every position with a target.

        batch["input_ids"], batch["target_ids"]: (B, T) internal indices, 0 = no item/target.
        Without `sampler` and with num_negatives = 0: softmax over the whole catalog. Otherwise
        sampled softmax (`sampled_loss`) against the candidates `sampler` draws, or, without
        one, `num_negatives` uniformly drawn items shared across the batch.
        label_smoothing: the share of each target's label spread evenly over the items scored
        (the catalog, or the target and its candidates)."""
        # The step after this pass may be a fused optimizer's, which updates the weights in
        # place without moving their version counters: drop the cached table here.
        self.table_cache.clear()
        batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
        if sampler is None and num_negatives > 0:
            sampler = NegativeSampler(self.n_items, num_negatives)
        if sampler is not None:
            return self.sampled_loss(batch, sampler, label_smoothing)
        table = self.items(batch)  # (n_items + 1, d)
        hidden = self.hidden_states(batch["input_ids"], table)  # (B, T, d)
        has_target = batch["target_ids"] > 0  # (B, T)
        users = self.head(hidden[has_target])  # (N, d)
        targets = batch["target_ids"][has_target] - 1  # (N,) item indices
        weights, bias = self.output_weights(table)  # (n_items, d), (n_items,)
        return linear_cross_entropy(users, weights, bias, targets, label_smoothing, chunk_logits)

    def sampled_loss(
        self, batch: dict[str, torch.Tensor], sampler: NegativeSampler, label_smoothing: float
    ) -> torch.Tensor:
        """Sampled softmax (`lite_rec.nn.sampled_softmax`) computed on the items the step
        touches alone (history items, targets, negatives): their representations are built
        and the indices remapped to them, so no (n_items, d) table exists and the step's cost
        does not grow with the catalog. The same loss as on the whole table."""
        input_ids, target_ids = batch["input_ids"], batch["target_ids"]  # (B, T)
        has_target = target_ids > 0  # (B, T)
        negatives, negative_log_q = sampler.draw(self.device)  # (K,) item indices, (K,)
        # The padding index always comes first, so that local index 0 is padding too
        # (`position_ids` counts a row's items as its nonzero indices).
        padding = input_ids.new_zeros(1)
        touched, local = torch.unique(
            torch.cat([padding, input_ids.flatten(), target_ids[has_target], negatives + 1]),
            return_inverse=True,
        )  # (U,) internal indices, sorted; each one's row among them
        n_inputs, n_targets = input_ids.numel(), int(has_target.sum())
        rows = self.items(batch, touched)  # (U, d)
        hidden = self.hidden_states(local[1 : 1 + n_inputs].view_as(input_ids), rows)  # (B, T, d)
        users = self.head(hidden[has_target])  # (N, d)
        targets = local[1 + n_inputs : 1 + n_inputs + n_targets]  # (N,) rows of `rows`
        candidates, candidate_log_q = local[1 + n_inputs + n_targets :], negative_log_q  # (K,)
        if sampler.in_batch:
            in_batch, in_batch_log_q, target_log_q = in_batch_candidates(targets)  # (M,)
            candidates = torch.cat([candidates, in_batch])  # (K + M,)
            candidate_log_q = torch.cat([candidate_log_q, in_batch_log_q])
        else:
            target_log_q = sampler.log_q(touched[targets] - 1)  # (N,)
        weights, bias = self.output_rows(rows, touched)  # (U, d), (U,) | None
        return sampled_cross_entropy(
            users,
            weights,
            bias,
            targets,
            candidates,
            candidate_log_q,
            target_log_q,
            label_smoothing,
        )

    def output_rows(
        self, rows: torch.Tensor, touched: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The output vectors (U, d) and bias (U,) or None of the `touched` items (U,)
        (internal indices) whose representations are `rows` (U, d)."""
        if self.output is None:
            return rows, None
        # The padding row (index 0) reads item 0's output row: no target or candidate is it.
        items = (touched - 1).clamp(min=0)  # (U,) item indices
        return self.output.weight[items], self.output.bias[items]

    forward = loss  # model(batch) is the training loss

    @torch.no_grad()
    def user_vectors(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """The user representation after the head for each history (item indices, oldest
        first). -> (B, d). Runs in eval mode (no dropout) and restores the previous mode."""
        was_training = self.training
        self.eval()
        input_ids, lengths = pad_histories(histories, self.config.max_len)  # (B, T), (B,)
        users = self.head(self.last_states(input_ids.to(self.device), lengths.to(self.device)))
        self.train(was_training)
        return users

    @torch.no_grad()
    def item_scores(
        self,
        users: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        out: torch.Tensor | None = None,
        items: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of catalog items start..stop-1, or of `items` (N,) item indices, for
        `user_vectors` (B, d) -> (B, stop - start) or (B, N), written into `out` when given:
        a buffer reused across calls saves a fresh result's page faults, which cost as much
        as the product. The values do not depend on `out`."""
        weights, bias = self.output_weights(self.item_table())  # (n_items, d), (n_items,)
        rows = slice(start, self.n_items if stop is None else stop) if items is None else items
        weights, bias = weights[rows], None if bias is None else bias[rows]
        if out is None:
            return F.linear(users, weights, bias)
        if bias is None:
            return torch.mm(users, weights.T, out=out)
        return torch.addmm(bias, users, weights.T, out=out)  # F.linear's own product

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Scores of every catalog item for each history (item indices, oldest first).
        -> (B, n_items)."""
        return self.item_scores(self.user_vectors(histories))  # (B, n_items)
