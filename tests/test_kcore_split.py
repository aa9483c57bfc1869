"""Property tests for the 5-core filter and the leave-one-out split, and the split as
`SequenceData` reads it."""

import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lite_rec.kcore import kcore_filter
from lite_rec.sequences import (
    INTERACTIONS_FILE,
    ITEMS_FILE,
    load_sequences,
    sequences_from_frames,
)
from lite_rec.split import leave_one_out_split
from lite_rec.stats import dataset_stats

rows = st.lists(
    st.tuples(st.integers(0, 12), st.integers(0, 15), st.integers(0, 6)), min_size=0, max_size=300
)


def frame(triples: list[tuple[int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [f"u{u}" for u, _, _ in triples],
            "item_id": [f"i{i}" for _, i, _ in triples],
            "timestamp": pd.array([t for _, _, t in triples], dtype="int64"),
            "rating": 3.0,
        }
    )


@settings(max_examples=150, deadline=None)
@given(rows, st.integers(1, 6))
def test_kcore_reaches_a_fixed_point_with_at_least_k_everywhere(triples, k) -> None:
    data = frame(triples)
    kept = kcore_filter(data, k)
    assert (kept["user_id"].value_counts() >= k).all()
    assert (kept["item_id"].value_counts() >= k).all()
    assert kcore_filter(kept, k).index.equals(kept.index)  # fixed point
    assert kept.index.isin(data.index).all() and kept.index.is_monotonic_increasing


def reference_kcore(triples: list[tuple[int, int, int]], k: int) -> set[int]:
    """The k-core is unique, so removing one sparse row at a time must reach the same set."""
    alive = set(range(len(triples)))
    while True:
        users = Counter(triples[r][0] for r in alive)
        items = Counter(triples[r][1] for r in alive)
        sparse = next(
            (r for r in sorted(alive) if users[triples[r][0]] < k or items[triples[r][1]] < k),
            None,
        )
        if sparse is None:
            return alive
        alive.remove(sparse)


@settings(max_examples=100, deadline=None)
@given(rows, st.integers(1, 4))
def test_kcore_equals_one_at_a_time_reference(triples, k) -> None:
    kept = kcore_filter(frame(triples), k)
    assert set(kept.index) == reference_kcore(triples, k)


@settings(max_examples=100, deadline=None)
@given(rows, st.integers(1, 4), st.data())
def test_kcore_selects_rows_by_position_whatever_the_index(triples, k, draw) -> None:
    """The sequence format's index is the source line, shared by all of a user's rows."""
    labels = draw.draw(st.lists(st.integers(1, 4), min_size=len(triples), max_size=len(triples)))
    data = frame(triples).set_axis(pd.Index(labels, name="source_line"))
    kept = kcore_filter(data, k)
    positions = sorted(reference_kcore(triples, k))
    pd.testing.assert_frame_equal(kept, data.iloc[positions])


def test_kcore_removal_cascades_across_rounds() -> None:
    # 3-core: item 4 has one row, so user 4 drops to two and goes too; user 5 has two rows.
    core = [(u, i, 0) for u in (1, 2, 3) for i in (1, 2, 3)]
    data = frame(core[:3] + [(4, 1, 0), (4, 2, 0), (4, 4, 0), (5, 1, 0), (5, 5, 0)] + core[3:])
    data.index = pd.Index([1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 5], name="source_line")
    kept = kcore_filter(data, 3)
    pd.testing.assert_frame_equal(kept, data.iloc[[0, 1, 2, 8, 9, 10, 11, 12, 13]])


@settings(max_examples=150, deadline=None)
@given(rows)
def test_split_takes_latest_as_test_and_previous_as_valid(triples) -> None:
    data = frame(triples)
    data["source_order"] = range(len(data))
    split = leave_one_out_split(data)
    for _, group in split.groupby("user_id", sort=False):
        assert len(group) >= 3
        assert list(group["split"])[-2:] == ["valid", "test"]
        assert set(group["split"].iloc[:-2]) <= {"train"}
        times = group["timestamp"].to_numpy()
        assert (times[:-1] <= times[1:]).all()  # nothing later than a target is train
        # ties in time keep the source order, never the item id order
        tied = group.groupby("timestamp")["source_order"].apply(lambda s: s.is_monotonic_increasing)
        assert tied.all()
    short = data.groupby("user_id").size()
    assert set(split["user_id"]) == set(short[short >= 3].index)


def test_tie_in_time_keeps_source_order_not_item_order() -> None:
    data = frame([(1, 9, 0), (1, 5, 1), (1, 7, 2), (1, 3, 2)])
    split = leave_one_out_split(data)
    assert list(split["item_id"]) == ["i9", "i5", "i7", "i3"]
    assert list(split["split"]) == ["train", "train", "valid", "test"]


def test_stats_by_hand() -> None:
    data = frame([(1, 1, 0), (1, 2, 1), (2, 1, 0), (2, 2, 1), (2, 3, 2)])
    stats = dataset_stats(data)
    assert stats == {
        "users": 2,
        "items": 3,
        "interactions": 5,
        "mean_sequence_length": 2.5,
        "median_sequence_length": 2.5,
        "density": round(5 / 6, 6),
    }


@settings(max_examples=100, deadline=None)
@given(rows)
def test_sequence_data_reads_the_split_the_split_decided(triples) -> None:
    """Each user's training items, validation and test targets are its `train`, `valid` and
    `test` rows, in time order, whatever the rows' order in the source."""
    split = leave_one_out_split(frame(triples))
    items = pd.DataFrame({"item_id": sorted(set(split["item_id"]))})
    data = sequences_from_frames(items, split)
    assert list(data.user_ids) == list(dict.fromkeys(split["user_id"]))
    for user, (_, group) in enumerate(split.groupby("user_id", sort=False)):
        raw = {name: list(rows["item_id"]) for name, rows in group.groupby("split", observed=True)}
        assert list(data.item_ids[data.train_sequences()[user]]) == raw["train"]
        assert list(data.item_ids[data.refit_sequences()[user]]) == raw["train"] + raw["valid"]
    for name in ("valid", "test"):
        histories, targets = data.histories_and_targets(name)
        assert list(data.item_ids[targets]) == list(split.loc[split["split"] == name, "item_id"])
        assert [len(h) for h in histories] == [
            len(s) - (2 if name == "valid" else 1) for s in data.sequences
        ]


def two_users(splits: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Items and interactions: user u1 with train, valid, test, then u2 with `splits`."""
    labels = ["train", "valid", "test", *splits]
    interactions = pd.DataFrame(
        {
            "user_id": ["u1"] * 3 + ["u2"] * len(splits),
            "item_id": [f"i{row % 3}" for row in range(len(labels))],
            "split": labels,
        }
    )
    return pd.DataFrame({"item_id": ["i0", "i1", "i2"]}), interactions


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        (
            ["train", "valid", "train", "test"],
            r"row 5 \(user 'u2'\): split 'train', expected 'test'",
        ),
        (
            ["train", "test", "valid"],
            r"row 4 \(user 'u2'\): split 'test', expected 'train' or 'valid'",
        ),
        (
            ["train", "train", "valid"],
            r"row 5 \(user 'u2'\): split 'valid', expected 'test' \(the user's last row\)",
        ),
        (
            ["valid", "test", "test"],
            r"row 5 \(user 'u2'\): split 'test', expected no row after the user's test row",
        ),
        (["test"], r"row 3 \(user 'u2'\): split 'test', expected 'train' or 'valid'"),
        (
            ["train", "validation", "test"],
            r"row 4 \(user 'u2'\): split 'validation', expected 'train' or 'valid'",
        ),
    ],
)
def test_a_split_that_is_not_train_then_valid_then_test_is_refused(
    splits, message, tmp_path
) -> None:
    with pytest.raises(ValueError, match=rf"^interactions: {message}: each user's rows must be"):
        sequences_from_frames(*two_users(splits))
    items, interactions = two_users(splits)  # the same from the files, read as dictionaries
    items.to_parquet(tmp_path / ITEMS_FILE)
    interactions.to_parquet(tmp_path / INTERACTIONS_FILE)
    path = re.escape(str(tmp_path / INTERACTIONS_FILE))
    with pytest.raises(ValueError, match=rf"^{path}: {message}: each user's rows must be"):
        load_sequences(tmp_path)


@pytest.mark.parametrize("seed", range(5))
def test_the_files_read_back_as_the_tables_they_hold(seed, tmp_path) -> None:
    """load_sequences (Arrow dictionary codes) equals sequences_from_frames (pandas) on
    interleaved users with ids in no sorted order, a categorical split column and a catalog
    larger than what the interactions use."""
    rng = np.random.default_rng(seed)
    n_users, n_items = int(rng.integers(1, 60)), int(rng.integers(3, 40))
    items = pd.DataFrame({"item_id": [f"i{j * 7919 % 1000}" for j in range(n_items)]})
    lengths = rng.integers(3, 12, n_users)
    names = np.array([f"u{rng.integers(10**6)}-{u}" for u in range(n_users)], dtype=object)
    owner = rng.permutation(np.repeat(np.arange(n_users), lengths))  # users interleaved
    position = pd.Series(owner).groupby(owner).cumcount().to_numpy()  # k-th row of its user
    last = lengths[owner] - 1
    splits = np.where(position == last, "test", np.where(position == last - 1, "valid", "train"))
    interactions = pd.DataFrame(
        {
            "user_id": names[owner],
            "item_id": items["item_id"].to_numpy()[rng.integers(0, n_items, len(owner))],
            "split": pd.Categorical(splits, categories=["valid", "test", "train"]),
        }
    )
    items.to_parquet(tmp_path / ITEMS_FILE)
    interactions.to_parquet(tmp_path / INTERACTIONS_FILE)
    read, held = load_sequences(tmp_path), sequences_from_frames(items, interactions)
    assert list(read.user_ids) == list(held.user_ids) == list(dict.fromkeys(names[owner]))
    assert list(read.item_ids) == list(held.item_ids)
    assert len(read.sequences) == len(held.sequences) == n_users
    assert all(np.array_equal(a, b) for a, b in zip(read.sequences, held.sequences, strict=True))
    assert read.sequences[0].dtype == np.int64
    assert np.array_equal(read.train_lengths, held.train_lengths)


def test_interactions_without_a_split_column_are_refused(tmp_path) -> None:
    items, interactions = two_users(["train", "valid", "test"])
    with pytest.raises(ValueError, match="interactions: no `split` column"):
        sequences_from_frames(items, interactions.drop(columns="split"))
    items.to_parquet(tmp_path / ITEMS_FILE)
    interactions.assign(split=["train", "test", "valid"] * 2).to_parquet(
        tmp_path / INTERACTIONS_FILE
    )
    path = tmp_path / INTERACTIONS_FILE
    with pytest.raises(ValueError, match=rf"^{path}: row 1 \(user 'u1'\): split 'test'"):
        load_sequences(tmp_path)
