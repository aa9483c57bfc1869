"""GPT-2's final hidden state at one position per row, for scoring: the last block runs only
that position's query, output projection and MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _gpt2_attention(
    block: nn.Module, normed: torch.Tensor, last: torch.Tensor | None
) -> torch.Tensor:
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
) -> torch.Tensor:
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


def splits_like_gpt2(backbone: nn.Module) -> bool:
    """Whether `gpt2_last_states` computes what `backbone` computes: a GPT-2 with the
    attention scaling it reimplements."""
    from transformers import GPT2Model

    config = backbone.config
    return (
        isinstance(backbone, GPT2Model)
        and config.scale_attn_weights
        and not config.scale_attn_by_inverse_layer_idx
        and not config.reorder_and_upcast_attn
    )
