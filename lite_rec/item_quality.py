"""Does the Item LLM space know what a film is about? For MovieLens: the share of each item's
k nearest neighbours (cosine) that share at least one genre with it, against the same share for
random pairs of items."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

NO_GENRE = "(no genres listed)"


def item_genres(items: pd.DataFrame) -> list[frozenset[str]]:
    """MovieLens `genres` cells (`Comedy|Drama` raw, `Comedy, Drama` once prepared) as sets;
    a missing cell or the no-genre marker is an empty set."""
    if "genres" not in items.columns:
        raise ValueError(f"item table has no genres column; columns: {list(items.columns)}")
    return [
        frozenset(
            genre.strip()
            for genre in re.split(r"[|,]", cell if isinstance(cell, str) else "")
            if genre.strip() and genre.strip() != NO_GENRE
        )
        for cell in items["genres"]
    ]


def genre_neighbour_agreement(
    embeddings: np.ndarray, genres: Sequence[frozenset[str]], k: int = 10, seed: int = 0
) -> dict[str, float]:
    """`neighbour_share`: mean over items with a genre of the share of their k nearest other
    items (cosine) sharing a genre; `random_share`: the same for k random other items;
    `lift` = neighbour_share / random_share. Items without a genre take part in neither."""
    keep = np.flatnonzero([len(g) > 0 for g in genres])
    if len(keep) <= k:
        raise ValueError(f"need more than k={k} items with a genre, got {len(keep)}")
    vectors = np.asarray(embeddings, dtype=np.float64)[keep]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    kept_genres = [genres[i] for i in keep]
    rng = np.random.default_rng(seed)
    neighbour_hits, random_hits = [], []
    for start in range(0, len(keep), 1024):
        block = vectors[start : start + 1024] @ vectors.T  # (b, n)
        rows = np.arange(len(block))
        block[rows, start + rows] = -np.inf  # an item is not its own neighbour
        nearest = np.argpartition(-block, k, axis=1)[:, :k]  # (b, k)
        for row, neighbours in enumerate(nearest):
            own = kept_genres[start + row]
            others = rng.choice(len(keep) - 1, k, replace=False)
            others += others >= start + row  # never the item itself
            neighbour_hits.append(np.mean([bool(own & kept_genres[j]) for j in neighbours]))
            random_hits.append(np.mean([bool(own & kept_genres[j]) for j in others]))
    neighbour_share, random_share = float(np.mean(neighbour_hits)), float(np.mean(random_hits))
    return {
        "k": k,
        "items": len(keep),
        "neighbour_share": neighbour_share,
        "random_share": random_share,
        "lift": neighbour_share / random_share if random_share > 0 else float("inf"),
    }
