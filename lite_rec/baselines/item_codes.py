"""Item ids as short token sequences for generative recommenders, and the prefix trie that
keeps beam search on valid items.

An item's code is one integer per level; level l has its own token range, so the token says
which level it belongs to (TIGER's `<a_3><b_7><c_1>`). Two schemes:
- `sequential_codes` (P5 sequential indexing): items are numbered in the order they first appear
  in the training sequences, so items consumed together get nearby numbers, and the number is
  written in base-`base` digits, most significant first.
- `semantic_codes` (TIGER-style semantic ids): hierarchical k-means over the Item LLM vectors,
  plus a last code that tells apart items sharing the whole k-means prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PAD_TOKEN = 0  # also T5's decoder start token
EOS_TOKEN = 1
FIRST_CODE_TOKEN = 2


@dataclass
class ItemCodes:
    """codes[i] is item i's code, one entry per level; level l's codes lie in [0, sizes[l])."""

    codes: np.ndarray  # (n_items, levels) int64
    sizes: tuple[int, ...]  # codebook size per level

    def __post_init__(self) -> None:
        if len({tuple(row) for row in self.codes.tolist()}) != len(self.codes):
            raise ValueError("item codes are not unique: two items would share one id")

    @property
    def levels(self) -> int:
        return len(self.sizes)

    @property
    def vocab_size(self) -> int:
        return FIRST_CODE_TOKEN + sum(self.sizes)

    def tokens(self) -> np.ndarray:
        """(n_items, levels) token ids: level l's code c is token FIRST + sum(sizes[:l]) + c."""
        offsets = FIRST_CODE_TOKEN + np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        return self.codes + offsets.astype(np.int64)


def _digits(numbers: np.ndarray, base: int, width: int) -> np.ndarray:
    """(n,) non-negative ints -> (n, width) base-`base` digits, most significant first."""
    powers = base ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (numbers[:, None] // powers) % base


def sequential_codes(
    train_sequences: Sequence[np.ndarray], n_items: int, base: int = 10
) -> ItemCodes:
    """P5 sequential indexing: number items by first appearance in the training sequences
    (users in order, each oldest first); items never trained on are numbered last."""
    if base < 2:
        raise ValueError(f"base must be at least 2, got {base}")
    order = list(dict.fromkeys(int(i) for s in train_sequences for i in s))
    seen = set(order)
    order += [i for i in range(n_items) if i not in seen]
    number = np.empty(n_items, dtype=np.int64)
    number[order] = np.arange(n_items)
    width = 1
    while base**width < n_items:
        width += 1
    return ItemCodes(_digits(number, base, width), (base,) * width)


def semantic_codes(
    embeddings: np.ndarray, codebook_size: int = 16, levels: int = 2, seed: int = 0
) -> ItemCodes:
    """Hierarchical k-means: `levels` rounds of at most `codebook_size` clusters, each
    splitting its parent's cluster, then a disambiguation code (0, 1, ... among items whose
    k-means codes are equal, in item order)."""
    from sklearn.cluster import KMeans

    vectors = np.asarray(embeddings, dtype=np.float64)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    n_items = len(vectors)
    codes = np.zeros((n_items, levels + 1), dtype=np.int64)

    def split(members: np.ndarray, level: int) -> None:
        if level == levels or len(members) <= 1:
            return
        k = min(codebook_size, len(np.unique(vectors[members], axis=0)))
        labels = (
            KMeans(k, n_init=3, random_state=seed).fit_predict(vectors[members])
            if k > 1
            else np.zeros(len(members), dtype=np.int64)
        )
        codes[members, level] = labels
        for cluster in range(k):
            split(members[labels == cluster], level + 1)

    split(np.arange(n_items), 0)
    _, group = np.unique(codes[:, :levels], axis=0, return_inverse=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(group[order])) + 1]
    counts = np.diff(np.r_[starts, n_items])
    codes[order, levels] = np.arange(n_items) - np.repeat(starts, counts)
    sizes = (codebook_size,) * levels + (int(codes[:, levels].max()) + 1,)
    return ItemCodes(codes, sizes)


class PrefixTrie:
    """Every valid item token sequence; `allowed(prefix)` lists the tokens that keep a prefix
    on some item's path, and `item_of` maps a complete sequence back to its item index."""

    def __init__(self, item_tokens: np.ndarray):
        self.length = item_tokens.shape[1]
        self._next: dict[tuple[int, ...], list[int]] = {}
        self._item: dict[tuple[int, ...], int] = {}
        children: dict[tuple[int, ...], set[int]] = {}
        for item, row in enumerate(item_tokens.tolist()):
            for depth in range(self.length):
                children.setdefault(tuple(row[:depth]), set()).add(row[depth])
            self._item[tuple(row)] = item
        self._next = {prefix: sorted(tokens) for prefix, tokens in children.items()}

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Valid next tokens; a complete item (or a dead prefix) allows only EOS."""
        return self._next.get(tuple(prefix), [EOS_TOKEN])

    def item_of(self, tokens: Sequence[int]) -> int:
        """Item index of a complete token sequence, -1 when it is no item."""
        return self._item.get(tuple(tokens), -1)

    def __contains__(self, tokens: Sequence[int]) -> bool:
        return tuple(tokens) in self._item
