"""The item table for scoring, computed once and kept while the weights stay as they are."""

from __future__ import annotations

import torch
from torch import nn


class TableCache:
    """`module()` kept until one of the module's tensors changes or `clear()`: a tensor's
    version counter moves with every in-place update from Python (load_state_dict, a fine-tuned
    text table's refresh, an unfused optimizer step). A fused optimizer step updates in place
    without moving the counters, so training clears the cache. Recomputing the table costs
    ~7 ms on Toys, more than scoring one user."""

    def __init__(self) -> None:
        self.computed = 0  # how many tables were computed: each miss adds one
        self._key: tuple | None = None
        self._table: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self, module: nn.Module) -> torch.Tensor:
        """`module()`, from the cache while its tensors are the ones it was computed from."""
        tensors = [*module.parameters(), *module.buffers()]
        key = tuple((id(t), t.data_ptr(), t._version) for t in tensors)
        if self._table is None or key != self._key:
            self._key, self._table = key, module()
            self.computed += 1
        return self._table

    def clear(self) -> None:
        """Forget the table: the next call computes it."""
        self._key = self._table = None
