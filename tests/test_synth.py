"""`lite-rec synth`: deterministic, exactly the counts asked for, read by `prepare`, and with
structure: the next item follows from the last one better than from popularity alone."""

import hashlib
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from lite_rec.cli import main
from lite_rec.prepare import prepare
from lite_rec.sequences import load_sequences
from lite_rec.synth import (
    END_TIME,
    MAX_SPAN_SECONDS,
    MIN_GAP_SECONDS,
    MOVIES_FILE,
    RATINGS_FILE,
    YEAR_SECONDS,
    SynthConfig,
    pseudo_words,
    write_synthetic,
)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_seed_writes_the_same_bytes_and_another_seed_other_ones(tmp_path):
    config = SynthConfig(users=300, items=120, interactions=4_000, seed=7, block_users=64)
    write_synthetic(config, tmp_path / "a", progress=False)
    write_synthetic(config, tmp_path / "b", progress=False)
    for name in (RATINGS_FILE, MOVIES_FILE):
        assert digest(tmp_path / "a" / name) == digest(tmp_path / "b" / name)
    other = SynthConfig(users=300, items=120, interactions=4_000, seed=8, block_users=64)
    write_synthetic(other, tmp_path / "c", progress=False)
    assert digest(tmp_path / "a" / RATINGS_FILE) != digest(tmp_path / "c" / RATINGS_FILE)


def test_counts_are_as_asked_and_each_history_increases_in_time(tmp_path):
    counts = write_synthetic(
        SynthConfig(users=500, items=200, interactions=7_777, seed=1, block_users=100),
        tmp_path / "d",
        progress=False,
    )
    ratings = pd.read_csv(tmp_path / "d" / RATINGS_FILE)
    movies = pd.read_csv(tmp_path / "d" / MOVIES_FILE)
    assert counts["interactions"] == len(ratings) == 7_777
    assert ratings.userId.nunique() == 500 and len(movies) == 200
    assert ratings.groupby("userId").size().min() >= 5
    assert ratings.movieId.between(1, 200).all()
    assert (ratings.groupby("userId").timestamp.diff().dropna() > 0).all()
    # Power-law popularity: the top 10% of items take twice their share of the interactions.
    top = ratings.movieId.value_counts().iloc[:20].sum()
    assert top > 0.2 * len(ratings)


def test_prepare_reads_it_and_the_last_item_predicts_the_next_better_than_popularity(tmp_path):
    """A first-order model over the items' genres (what the titles say), fitted on the training
    part, finds the validation item in its top 10 far more often than popularity does."""
    write_synthetic(
        SynthConfig(users=1_500, items=1_000, interactions=30_000, seed=3, items_per_cluster=25),
        tmp_path / "raw",
        progress=False,
    )
    prepare(tmp_path / "raw", tmp_path / "processed", "auto", 5)
    data = load_sequences(tmp_path / "processed")
    genre = pd.factorize(data.items["genres"])[0]  # (n_items,) one genre per item
    popularity = np.bincount(np.concatenate(data.train_sequences()), minlength=data.n_items)
    transitions = np.zeros((genre.max() + 1, genre.max() + 1))
    for sequence in data.train_sequences():
        np.add.at(transitions, (genre[sequence[:-1]], genre[sequence[1:]]), 1)
    genre_share = np.bincount(genre, weights=popularity) + 1e-9
    histories, targets = data.histories_and_targets("valid")
    popular = np.argsort(-popularity)[:10]
    markov_hits = popularity_hits = 0
    for history, target in zip(histories, targets, strict=True):
        next_genre = transitions[genre[history[-1]]] / transitions[genre[history[-1]]].sum()
        scores = next_genre[genre] * popularity / genre_share[genre]  # P(genre) P(item | genre)
        markov_hits += target in np.argsort(-scores)[:10]
        popularity_hits += target in popular
    assert markov_hits > 2 * popularity_hits, (markov_hits, popularity_hits)


def test_titles_carry_the_cluster(tmp_path):
    write_synthetic(
        SynthConfig(users=200, items=1_000, interactions=2_000, seed=2), tmp_path / "t", False
    )
    movies = pd.read_csv(tmp_path / "t" / MOVIES_FILE)
    words = movies.title.str.lower().str.split()
    assert all(len(title) == 4 for title in words)
    cluster_words = []
    for _, titles in words.groupby(movies.genres):
        counts = Counter(word for title in titles for word in title)
        # Three of the cluster's four words in every title: each is in about 3/4 of them.
        cluster_words.append({word for word, n in counts.items() if n > 0.5 * len(titles)})
    assert len(cluster_words) == 10 and all(len(found) == 4 for found in cluster_words)
    assert len(set.union(*cluster_words)) == 40  # no word shared by two clusters


def test_the_cli_refuses_too_few_interactions_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "s"
    code = main(
        ["synth", "--users", "10", "--items", "50", "--interactions", "20", "--out", str(out)]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "--interactions 20 is fewer than users x 5 (50)" in error
    assert not out.exists()


@pytest.mark.parametrize("bad", [{"users": 0}, {"items": 1}, {"stay": 0.8, "jump": 0.5}])
def test_bad_settings_are_named(bad):
    settings = {"users": 10, "items": 50, "interactions": 100, **bad}
    with pytest.raises(ValueError, match="synth:"):
        SynthConfig(**settings).check()


def test_a_million_item_catalog_has_enough_distinct_words():
    """10,000 clusters need 40,000 words: more than two- and three-syllable words allow."""
    words = pseudo_words(np.random.default_rng(0), 40_050)
    assert len(set(words)) == 40_050 and min(map(len, words)) >= 4


def test_timestamps_lie_in_the_past_however_long_the_histories(tmp_path):
    """Long histories (10,000 interactions a user on average; gaps of up to a week would span
    96 years) still end before END_TIME, start after 2002 and increase per user."""
    write_synthetic(
        SynthConfig(users=20, items=100, interactions=200_000, seed=4), tmp_path / "l", False
    )
    ratings = pd.read_csv(tmp_path / "l" / RATINGS_FILE)
    assert ratings.timestamp.max() <= END_TIME < time.time()
    assert ratings.timestamp.min() > END_TIME - YEAR_SECONDS - MAX_SPAN_SECONDS
    assert (ratings.groupby("userId").timestamp.diff().dropna() >= MIN_GAP_SECONDS).all()
    last = ratings.groupby("userId").timestamp.max()
    assert (last > END_TIME - YEAR_SECONDS).all()  # each user's last row within the last year
