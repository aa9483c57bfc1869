"""A synthetic dataset for scale benchmarks, with structure a sequential model can learn.

Items belong to latent clusters. Each user walks a Markov chain over the clusters (each cluster
has a few likely successors) and, at every step, picks an item of the current cluster by its
popularity, which follows a power law over the whole catalog. So the next item depends on the
last one (a sequential model beats popularity), popular items dominate (as in real logs), and
each item's title is made of its cluster's words (the Item LLM carries signal).

`write_synthetic` streams the dataset to disk in blocks of users, in MovieLens' CSV format
(`ratings.csv`, `movies.csv`), which `lite-rec prepare` reads. Memory holds one block of
interactions at a time, never Python objects per interaction. The same arguments give the same
files, byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lite_rec.outputs import staged_output

RATINGS_FILE = "ratings.csv"
MOVIES_FILE = "movies.csv"
PARAMETERS_FILE = "synthetic.json"
# Every timestamp lies before END_TIME (2023-11-14 22:13:20 UTC) and after
# END_TIME - YEAR_SECONDS - MAX_SPAN_SECONDS (2002).
END_TIME = 1_700_000_000
YEAR_SECONDS = 365 * 86_400
MAX_SPAN_SECONDS = 20 * YEAR_SECONDS  # the longest a history lasts
MIN_GAP_SECONDS, MAX_GAP_SECONDS = 60, 7 * 86_400  # between two interactions of a user
SYLLABLES = (
    "ka ro mi tu ve lo sa ni pe da zo ri fa lu te bo na si ko mu ga re vi to ha li ze po du ne"
).split()


@dataclass
class SynthConfig:
    users: int
    items: int
    interactions: int
    seed: int = 0
    items_per_cluster: int = 100  # the catalog splits into items / this many clusters
    successors: int = 3  # likely next clusters of each cluster
    stay: float = 0.3  # probability that the next item is from the same cluster
    jump: float = 0.1  # probability that the next cluster is any cluster at all
    popularity_exponent: float = 0.5  # item popularity ~ 1 / rank ** this
    min_length: int = 5  # every user has at least this many interactions
    block_users: int = 50_000  # users generated and written at a time

    def check(self) -> None:
        """Reject, by name, settings that cannot make a dataset."""
        if self.users < 1 or self.items < 2:
            raise ValueError(
                f"synth: expected >= 1 user and >= 2 items, got {self.users}, {self.items}"
            )
        if self.interactions < self.users * self.min_length:
            raise ValueError(
                f"synth: --interactions {self.interactions:,} is fewer than users x "
                f"{self.min_length} ({self.users * self.min_length:,}); every user needs "
                f"{self.min_length} to survive the 5-core filter"
            )
        if not (0 <= self.stay <= 1 and 0 <= self.jump <= 1 and self.stay + self.jump <= 1):
            raise ValueError("synth: stay and jump must be in [0, 1] with a sum <= 1")


@dataclass
class Catalog:
    """The latent structure every user block shares."""

    cluster_of: np.ndarray  # (items,) cluster of each item
    by_cluster: np.ndarray  # (items,) item indices sorted by cluster
    cluster_start: np.ndarray  # (clusters + 1,) offsets into by_cluster
    within_cdf: np.ndarray  # (items,) popularity CDF within each cluster, aligned with by_cluster
    successors: np.ndarray  # (clusters, successors) likely next clusters
    cluster_weight: np.ndarray  # (clusters,) share of the popularity each cluster holds
    words: np.ndarray  # (clusters, 4) each cluster's title words

    @property
    def search_keys(self) -> np.ndarray:
        """(items,) cluster + within-cluster CDF along `by_cluster` (see `_pick_items`)."""
        return self.cluster_of[self.by_cluster] + self.within_cdf

    @property
    def clusters(self) -> int:
        return len(self.successors)


def pseudo_words(rng: np.random.Generator, count: int) -> list[str]:
    """`count` distinct pronounceable words: numbers written in base len(SYLLABLES), one
    syllable per digit (two digits at least), drawn without repeats."""
    base = len(SYLLABLES)
    numbers = base + rng.permutation(2 * count)[:count]  # >= base: two syllables at least
    words = []
    for number in numbers.tolist():
        digits = []
        while number:
            number, digit = divmod(number, base)
            digits.append(SYLLABLES[digit])
        words.append("".join(reversed(digits)))
    return words


def build_catalog(config: SynthConfig, rng: np.random.Generator) -> Catalog:
    """Clusters, popularity and cluster transitions, from `rng` alone."""
    clusters = max(2, config.items // config.items_per_cluster)
    cluster_of = rng.integers(0, clusters, size=config.items)
    cluster_of[:clusters] = np.arange(clusters)  # no empty cluster
    popularity = 1.0 / (rng.permutation(config.items) + 1.0) ** config.popularity_exponent
    by_cluster = np.argsort(cluster_of, kind="stable")
    cluster_start = np.searchsorted(cluster_of[by_cluster], np.arange(clusters + 1))
    weights = popularity[by_cluster]
    within_cdf = np.empty(config.items)
    cluster_weight = np.empty(clusters)
    for cluster in range(clusters):
        part = slice(cluster_start[cluster], cluster_start[cluster + 1])
        total = weights[part].sum()
        within_cdf[part] = np.cumsum(weights[part]) / total
        cluster_weight[cluster] = total
    successors = np.stack(
        [
            rng.choice(clusters, size=config.successors, replace=clusters < config.successors + 1)
            for _ in range(clusters)
        ]
    )
    vocabulary = pseudo_words(rng, clusters * 4 + 50)
    words = np.array(vocabulary[: clusters * 4], dtype=object).reshape(clusters, 4)
    return Catalog(
        cluster_of,
        by_cluster,
        cluster_start,
        within_cdf,
        successors,
        cluster_weight / cluster_weight.sum(),
        words,
    )


def sequence_lengths(config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Per user, a length >= min_length, heavy-tailed (lognormal), summing to interactions."""
    extra = rng.lognormal(mean=0.0, sigma=1.0, size=config.users)
    budget = config.interactions - config.users * config.min_length
    extra = np.floor(extra / extra.sum() * budget).astype(np.int64)
    extra[: budget - extra.sum()] += 1  # the rounding remainder, one each to the first users
    return config.min_length + extra


def _pick_items(catalog: Catalog, clusters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One item per entry of `clusters`, by popularity within its cluster. (n,) -> (n,)

    `catalog.search_keys` is cluster + the within-cluster CDF, increasing along `by_cluster`,
    so one search over the whole catalog finds each draw inside its own cluster."""
    keys = clusters + rng.random(len(clusters))
    positions = np.searchsorted(catalog.search_keys, keys, side="right")
    positions = np.minimum(positions, catalog.cluster_start[clusters + 1] - 1)
    return catalog.by_cluster[positions]


def _next_clusters(catalog: Catalog, current: np.ndarray, rng: np.random.Generator, config):
    """The Markov step: stay, move to one of the successors, or jump anywhere."""
    draw = rng.random(len(current))
    successor = catalog.successors[current, rng.integers(0, config.successors, len(current))]
    anywhere = rng.choice(catalog.clusters, size=len(current), p=catalog.cluster_weight)
    moved = np.where(draw < config.stay, current, successor)
    return np.where(draw >= 1.0 - config.jump, anywhere, moved)


def user_block(
    catalog: Catalog, lengths: np.ndarray, first_user: int, config: SynthConfig, rng
) -> pd.DataFrame:
    """The interactions of users first_user.. (one per entry of `lengths`), in time order.
    Held flat (one row per interaction, users' rows contiguous): memory grows with the
    block's interactions, not with its longest history."""
    users, total = len(lengths), int(lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (users,) first row of each
    items = np.empty(total, dtype=np.int64)
    current = rng.choice(catalog.clusters, size=users, p=catalog.cluster_weight)
    active = np.arange(users)
    for step in range(int(lengths.max())):
        active = active[lengths[active] > step]
        if step > 0:
            current[active] = _next_clusters(catalog, current[active], rng, config)
        items[offsets[active] + step] = _pick_items(catalog, current[active], rng)
    # Timestamps: gaps of a minute to a week (shorter where a history is too long to fit in
    # MAX_SPAN_SECONDS so), each user's last one within a year before END_TIME. Counted back
    # from a fixed end, never from the clock: always in the past and the same for a seed.
    longest_gap = np.clip(MAX_SPAN_SECONDS // lengths, MIN_GAP_SECONDS + 1, MAX_GAP_SECONDS)
    gaps = rng.integers(MIN_GAP_SECONDS, np.repeat(longest_gap, lengths))  # (total,)
    elapsed = np.cumsum(gaps)  # over the whole block
    before = np.r_[0, elapsed][offsets]  # (users,) what elapsed before each user's first row
    span = elapsed[offsets + lengths - 1] - before  # (users,) first gap to last row
    ends = END_TIME - rng.integers(0, YEAR_SECONDS, size=users)  # (users,) each last row
    times = elapsed + np.repeat(ends - span - before, lengths)
    return pd.DataFrame(
        {
            "userId": np.repeat(np.arange(first_user, first_user + users) + 1, lengths),
            "movieId": items + 1,
            "rating": 4.0,
            "timestamp": times,
        }
    )


def item_table(catalog: Catalog, rng: np.random.Generator) -> pd.DataFrame:
    """Titles of three of the cluster's four words and one word shared across clusters;
    genres name the cluster by its first word."""
    shared = np.array(pseudo_words(rng, 40), dtype=object)
    words = catalog.words[catalog.cluster_of]  # (items, 4)
    rows = np.arange(len(words))
    left_out = rng.integers(0, 4, size=len(words))
    kept = [words[rows, (left_out + shift) % 4] for shift in (1, 2, 3)]
    titles = [
        " ".join(parts).capitalize()
        for parts in zip(*kept, shared[rows % len(shared)], strict=True)
    ]
    genres = [word.capitalize() for word in words[:, 0]]
    return pd.DataFrame({"movieId": rows + 1, "title": titles, "genres": genres})


def write_synthetic(config: SynthConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Write `ratings.csv`, `movies.csv` and `synthetic.json` (the settings) into `out_dir`,
    streamed in blocks of `config.block_users` users. -> the counts written"""
    from tqdm.auto import tqdm

    config.check()
    rng = np.random.default_rng(config.seed)
    catalog = build_catalog(config, rng)
    lengths = sequence_lengths(config, rng)
    with staged_output(out_dir, "synth", [RATINGS_FILE, MOVIES_FILE, PARAMETERS_FILE]) as staging:
        item_table(catalog, rng).to_csv(staging / MOVIES_FILE, index=False)
        with open(staging / RATINGS_FILE, "w", newline="") as ratings:
            ratings.write("userId,movieId,rating,timestamp\n")
            blocks = range(0, config.users, config.block_users)
            for first in tqdm(blocks, desc="synthetic users", unit="block", disable=not progress):
                block_rng = np.random.default_rng([config.seed, first])  # a block's draws alone
                block = lengths[first : first + config.block_users]
                frame = user_block(catalog, block, first, config, block_rng)
                frame.to_csv(ratings, header=False, index=False)
        counts = {"users": config.users, "items": config.items, "interactions": int(lengths.sum())}
        counts["clusters"] = catalog.clusters
        (staging / PARAMETERS_FILE).write_text(
            json.dumps({"config": asdict(config), "written": counts}, indent=2) + "\n"
        )
    return counts
