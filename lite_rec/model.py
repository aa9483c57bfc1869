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

ITEM_REPRS = ("text", "id", "text+id")
POSITIONS = ("start", "end")


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


def whitening(
    vectors: torch.Tensor, eps: float = 1e-6, dim: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """ZCA whitening of the rows of `vectors` (n, d) -> mean (d,), transform (d, d), such that
    (vectors - mean) @ transform has identity covariance up to one scale, chosen so that the
    whitened rows keep the centred rows' mean norm. Directions with variance below `eps` times
    the largest (a catalog smaller than d) are scaled as if they had that variance.

    `dim` < d: PCA whitening onto the `dim` directions of largest variance instead, largest
    first -> transform (d, dim), same scale rule (BERT-whitening's dimension reduction)."""
    mean, centred, variances, directions = _principal_axes(vectors)
    scale = variances.clamp(min=eps * variances.max().clamp(min=1e-30)).rsqrt()  # (d,)
    if dim is None or dim >= len(variances):
        transform = directions @ torch.diag(scale) @ directions.T  # (d, d)
    else:
        transform = directions[:, :dim] * scale[:dim]  # (d, dim)
    whitened_norm = (centred @ transform).norm(dim=1).mean()
    transform = transform * (centred.norm(dim=1).mean() / whitened_norm.clamp(min=1e-30))
    return mean.to(vectors.dtype), transform.to(vectors.dtype)


def principal_components(vectors: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of `vectors` (n, d) centred and projected onto their `dim` directions of
    largest variance, largest first, unscaled -> mean (d,), transform (d, dim)."""
    mean, _, _, directions = _principal_axes(vectors)
    return mean.to(vectors.dtype), directions[:, :dim].to(vectors.dtype)


def _principal_axes(vectors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(n, d) -> mean (d,), centred rows (n, d), covariance eigenvalues (d,) and eigenvectors
    (d, d columns), largest variance first; float64."""
    data = vectors.double()
    mean = data.mean(0)  # (d,)
    centred = data - mean  # (n, d)
    covariance = centred.T @ centred / max(len(data) - 1, 1)  # (d, d)
    variances, directions = torch.linalg.eigh(covariance)  # ascending
    return mean, centred, variances.flip(0), directions.flip(1)


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
        if self.use_text:
            if text_embeddings is None:
                raise ValueError(f"model.item_repr={config.item_repr!r} needs text embeddings")
            if text_embeddings.shape[0] != n_items:
                raise ValueError(
                    f"text embeddings have {text_embeddings.shape[0]} rows, expected one per "
                    f"item ({n_items})"
                )
            text = torch.as_tensor(np.asarray(text_embeddings, dtype=np.float32))
            self.llm_dim = text.shape[1]  # the Item LLM's width
            if not 0 <= config.text_dim <= self.llm_dim:
                raise ValueError(
                    f"model.text_dim: expected 0 (every dimension) to {self.llm_dim} (the Item "
                    f"LLM's width), got {config.text_dim}"
                )
            reduce = 0 < config.text_dim < self.llm_dim
            self.transform_text = config.whiten_text or reduce
            if self.transform_text:
                mean, transform = (
                    whitening(text, dim=config.text_dim or None)
                    if config.whiten_text
                    else principal_components(text, config.text_dim)
                )
                self.register_buffer("text_mean", mean)  # (d_llm,)
                # (d_llm, d_text): the name from when this was only the whitening
                self.register_buffer("text_whitening", transform)
                text = self.prepare_text(text)
            padded = torch.cat([torch.zeros(1, text.shape[1]), text])  # (n_items + 1, d_text)
            # A buffer, not a parameter: the Item LLM is frozen or fine-tuned by its own layers
            # (`attach_tower`), and saving the table with the weights makes a trained model
            # self-contained.
            self.register_buffer("text", padded)
            self.text_projection = nn.Linear(text.shape[1], config.hidden_size)
        if self.use_id:
            self.id_embedding = nn.Embedding(n_items + 1, config.hidden_size, padding_idx=0)
            nn.init.normal_(self.id_embedding.weight, std=0.02)
            with torch.no_grad():
                self.id_embedding.weight[0].zero_()
        self.tower = None

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
        return (text - self.text_mean) @ self.text_whitening  # (n, d_text)

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the text table with the fine-tuned Item LLM (no-op when frozen)."""
        if self.tower is not None:
            self.text[1:] = self.prepare_text(self.tower.embed_all())

    def forward(self, batch: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The table of all item representations, padding row first. -> (n_items + 1, d)

        `batch`: a training batch (`input_ids`, `target_ids`). With a tower attached and in
        training mode, the tower re-encodes its items (at most `items_per_step` of them) with
        gradients into the Item LLM; the others read the table."""
        table = 0.0
        if self.use_text:
            text = self.text  # (n_items + 1, d_text)
            if batch is not None and self.tower is not None and self.training:
                batch_items = torch.cat(
                    [batch["input_ids"].flatten(), batch["target_ids"].flatten()]
                )
                fresh = self.tower.step_items(batch_items)  # (k,) item indices
                text = text.index_copy(0, fresh + 1, self.prepare_text(self.tower(fresh)))
            table = table + self.text_projection(text)  # (n_items + 1, d)
        if self.use_id:
            table = table + self.id_embedding.weight  # (n_items + 1, d)
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


def _gpt2_attention(block: nn.Module, normed: torch.Tensor, last: torch.Tensor | None):
    """A GPT-2 block's self-attention (eval mode) over normed states (B, T, d): causal for every
    position when `last` is None (-> (B, T, d)), else only for each row's position `last[b]`,
    which attends to positions 0..last[b] (-> (B, d))."""
    attention = block.attn
    batch, width, d = normed.shape
    heads = attention.num_heads
    weight, bias = attention.c_attn.weight, attention.c_attn.bias  # Conv1D: x @ W + b, (d, 3d)

    def split_heads(x: torch.Tensor) -> torch.Tensor:  # (B, T', d) -> (B, H, T', d / H)
        return x.view(batch, -1, heads, d // heads).transpose(1, 2)

    keys, values = (normed @ weight[:, d:] + bias[d:]).split(d, dim=-1)  # (B, T, d) each
    if last is None:
        queries, mask = normed @ weight[:, :d] + bias[:d], None  # (B, T, d)
    else:
        rows = torch.arange(batch, device=normed.device)
        queries = (normed[rows, last] @ weight[:, :d] + bias[:d]).unsqueeze(1)  # (B, 1, d)
        positions = torch.arange(width, device=normed.device)
        mask = (positions <= last.unsqueeze(1)).view(batch, 1, 1, width)  # (B, 1, 1, T)
    out = F.scaled_dot_product_attention(
        split_heads(queries),
        split_heads(keys),
        split_heads(values),
        attn_mask=mask,
        is_causal=last is None,
    )  # (B, H, T', d / H)
    out = attention.c_proj(out.transpose(1, 2).reshape(batch, -1, d))  # (B, T', d)
    return out if last is None else out.squeeze(1)


def gpt2_last_states(
    gpt2: nn.Module, inputs_embeds: torch.Tensor, last: torch.Tensor, position_ids: torch.Tensor
):
    """GPT-2's final hidden state at position `last[b]` of each row, in eval mode: the last
    block runs its query, output projection and MLP for that one position only (earlier
    positions feed it keys and values), about a third less work than the whole forward.
    inputs_embeds (B, T, d), last (B,), position_ids (B, T) -> (B, d)"""
    hidden = inputs_embeds + gpt2.wpe(position_ids)
    *blocks, final = gpt2.h
    for block in blocks:
        hidden = hidden + _gpt2_attention(block, block.ln_1(hidden), None)
        hidden = hidden + block.mlp(block.ln_2(hidden))
    state = hidden[torch.arange(len(last), device=hidden.device), last]  # (B, d)
    state = state + _gpt2_attention(final, final.ln_1(hidden), last)
    state = state + final.mlp(final.ln_2(state))
    return gpt2.ln_f(state)


def _splits_like_gpt2(backbone: nn.Module) -> bool:
    """Whether `gpt2_last_states` computes what this backbone computes."""
    from transformers import GPT2Model

    config = backbone.config
    return (
        isinstance(backbone, GPT2Model)
        and config.scale_attn_weights
        and not config.scale_attn_by_inverse_layer_idx
        and not config.reorder_and_upcast_attn
    )


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
        self._last_states_fast = _splits_like_gpt2(self.backbone)
        self._table_cache: tuple[tuple, torch.Tensor] | None = None

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

    @torch.no_grad()
    def item_table(self) -> torch.Tensor:
        """`self.items()` for scoring, cached until the next training pass (`forward`) or until
        one of its tensors changes: a tensor's version counter moves with every in-place update
        from Python (load_state_dict, a fine-tuned text table's refresh, an unfused optimizer
        step). Recomputing it costs ~7 ms on Toys, more than scoring one user.
        -> (n_items + 1, d)"""
        tensors = [*self.items.parameters(), *self.items.buffers()]
        key = tuple((id(t), t.data_ptr(), t._version) for t in tensors)
        if self._table_cache is None or self._table_cache[0] != key:
            self._table_cache = (key, self.items())
        return self._table_cache[1]

    def last_states(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The backbone's output at each history's last item (the user), eval mode.
        input_ids (B, T) right-padded, lengths (B,) -> (B, d)"""
        table = self.item_table()
        last = (lengths - 1).clamp(min=0)  # an empty history reads the padding position
        if self._last_states_fast:
            position_ids = self.position_ids(input_ids)
            return gpt2_last_states(self.backbone, table[input_ids], last, position_ids)
        hidden = self.hidden_states(input_ids, table)  # (B, T, d)
        return hidden[torch.arange(len(last), device=hidden.device), last]

    def output_weights(self, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-item output vectors (n_items, d) and bias (n_items,) or None."""
        if self.output is None:
            return table[1:], None
        return self.output.weight, self.output.bias

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        num_negatives: int = 0,
        label_smoothing: float = 0.0,
        chunk_logits: int = DEFAULT_CHUNK_LOGITS,
    ) -> torch.Tensor:
        """Mean next-item loss over every position with a target.

        batch["input_ids"], batch["target_ids"]: (B, T) internal indices, 0 = no item/target.
        num_negatives = 0: softmax over the whole catalog; otherwise sampled softmax against
        that many uniformly drawn items shared across the batch (uniform, so logQ is constant).
        label_smoothing: the share of each target's label spread evenly over the items scored
        (the catalog, or the target and its negatives)."""
        # The step after this pass may be a fused optimizer's, which updates the weights in
        # place without moving their version counters: drop the cached table here.
        self._table_cache = None
        batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
        table = self.items(batch)  # (n_items + 1, d)
        hidden = self.hidden_states(batch["input_ids"], table)  # (B, T, d)
        has_target = batch["target_ids"] > 0  # (B, T)
        users = self.head(hidden[has_target])  # (N, d)
        targets = batch["target_ids"][has_target] - 1  # (N,) item indices
        weights, bias = self.output_weights(table)  # (n_items, d), (n_items,)
        if num_negatives <= 0:
            return linear_cross_entropy(
                users, weights, bias, targets, label_smoothing, chunk_logits
            )
        negatives = torch.randint(0, self.n_items, (num_negatives,)).to(self.device)  # (K,)
        positive = (users * weights[targets]).sum(-1, keepdim=True)  # (N, 1)
        negative = users @ weights[negatives].T  # (N, K)
        if bias is not None:
            positive = positive + bias[targets].unsqueeze(1)
            negative = negative + bias[negatives]
        # A sampled "negative" that is the target would push the target down: mask it.
        negative = negative.masked_fill(
            negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf")
        )
        logits = torch.cat([positive, negative], dim=1)  # (N, 1 + K)
        log_probs = logits.log_softmax(dim=1)  # (N, 1 + K)
        loss = -log_probs[:, 0]  # (N,)
        if label_smoothing:  # spread over the target and its real (unmasked) negatives
            scored = torch.isfinite(logits)
            spread = -log_probs.masked_fill(~scored, 0.0).sum(1) / scored.sum(1)  # (N,)
            loss = (1.0 - label_smoothing) * loss + label_smoothing * spread
        return loss.mean()

    def loss(
        self,
        batch: dict[str, torch.Tensor],
        num_negatives: int = 0,
        label_smoothing: float = 0.0,
        chunk_logits: int = DEFAULT_CHUNK_LOGITS,
    ) -> torch.Tensor:
        """The training loss of `batch` (see `forward`)."""
        return self.forward(batch, num_negatives, label_smoothing, chunk_logits)

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
    def item_scores(self, users: torch.Tensor, start: int = 0, stop: int | None = None):
        """Scores of catalog items start..stop-1 for `user_vectors` (B, d) -> (B, stop - start)."""
        weights, bias = self.output_weights(self.item_table())
        stop = self.n_items if stop is None else stop
        return F.linear(users, weights[start:stop], None if bias is None else bias[start:stop])

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Scores of every catalog item for each history (item indices, oldest first).
        -> (B, n_items)."""
        return self.item_scores(self.user_vectors(histories))  # (B, n_items)
