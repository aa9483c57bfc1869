"""The processed-data contract shared by training, evaluation and serving, and the training
windows and batches cut from it.

`lite-rec prepare` writes DATA_DIR with:
- `items.parquet`: one row per item that survived filtering; column `item_id` (raw id, str),
  `title` and the source's other text fields (str). Row i is item index i.
- `interactions.parquet`: `user_id`, `item_id` (raw ids, str), `timestamp` (int64),
  `rating` (float64, NaN when the source has none), `split` (`train`/`valid`/`test`, decided by
  `lite_rec.split.leave_one_out_split`), rows in each user's chronological order (ties keep
  source order).
- `stats.json`: dataset statistics after filtering.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from lite_rec.config import TrainConfig
from lite_rec.split import SPLITS

if TYPE_CHECKING:  # imported where the tables are read: serving needs no pandas
    import pandas as pd

ITEMS_FILE = "items.parquet"
INTERACTIONS_FILE = "interactions.parquet"
STATS_FILE = "stats.json"


@dataclass
class SequenceData:
    """Every user's chronological history as item indices into `item_ids`, and where the
    `split` column put its validation and test items."""

    item_ids: np.ndarray  # (n_items,) raw item ids, str; index i is item index i
    user_ids: np.ndarray  # (n_users,) raw user ids, str
    sequences: list[np.ndarray]  # per user, int64 item indices, oldest first
    items: pd.DataFrame  # the item table, aligned with item_ids
    # (n_users,) per user, how many of its first items are `train` rows; the `valid` item
    # follows them, then the `test` item.
    train_lengths: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def histories_and_targets(self, split: str) -> tuple[list[np.ndarray], np.ndarray]:
        """`valid`: each user's validation item, from the training items before it; `test`: the
        test item, from everything before it."""
        shift = {"valid": 0, "test": 1}[split]
        ends = self.train_lengths + shift
        histories = [seq[:end] for seq, end in zip(self.sequences, ends, strict=True)]
        targets = np.array(
            [seq[end] for seq, end in zip(self.sequences, ends, strict=True)], dtype=np.int64
        )
        return histories, targets

    def train_sequences(self) -> list[np.ndarray]:
        """Training sequences: each user's `train` items."""
        return [seq[:n] for seq, n in zip(self.sequences, self.train_lengths, strict=True)]

    def refit_sequences(self) -> list[np.ndarray]:
        """Training sequences plus the validation item: everything but the test item."""
        return [seq[: n + 1] for seq, n in zip(self.sequences, self.train_lengths, strict=True)]

    def user_shard(self, rank: int, world_size: int) -> SequenceData:
        """Every `world_size`-th user from the `rank`-th (data-parallel validation), with the
        whole item catalog."""
        users = slice(rank, None, world_size)
        return SequenceData(
            item_ids=self.item_ids,
            user_ids=self.user_ids[users],
            sequences=self.sequences[users],
            items=self.items,
            train_lengths=self.train_lengths[users],
        )


def _check_splits(
    order: np.ndarray,
    user_codes: np.ndarray,
    user_ids: np.ndarray,
    splits: np.ndarray,
    split_name: Callable[[int], str],
    source: str,
) -> None:
    """Refuse, naming the row and the user, a user whose rows are not train..., valid, test.
    `order` (n,): the rows grouped by user, each user's in row order; `user_codes` (n,) index
    `user_ids`; `splits` (n,) index SPLITS, -1 for another value (`split_name(row)`)."""
    train, valid, test = range(len(SPLITS))
    same_user = np.diff(user_codes[order]) == 0  # (n - 1,) row i + 1 continues row i's user
    before = np.full(len(order), train, dtype=np.int64)  # a first row: as after train
    before[order[1:][same_user]] = splits[order[:-1][same_user]]
    last = np.ones(len(order), dtype=bool)
    last[order[:-1][same_user]] = False
    follows = np.where(
        before == train,
        (splits == train) | (splits == valid),
        (before == valid) & (splits == test),
    )
    wrong = np.flatnonzero(~follows | (last & (splits != test)))
    if len(wrong):
        row = int(wrong[0])
        expected = {train: "'train' or 'valid'", valid: "'test'"}.get(
            int(before[row]), "no row after the user's test row"
        )
        if follows[row]:  # the user's last row, and not its test row
            expected = "'test' (the user's last row)"
        raise ValueError(
            f"{source}: row {row} (user {user_ids[user_codes[row]]!r}): split "
            f"{split_name(row)!r}, expected {expected}: each user's rows must be "
            "train..., valid, test, in that order"
        )


def sequences_from_codes(
    items: pd.DataFrame,
    item_index: np.ndarray,
    user_codes: np.ndarray,
    user_ids: np.ndarray,
    split_codes: np.ndarray,
    split_names: np.ndarray,
    source: str,
) -> SequenceData:
    """`SequenceData` from the interaction rows as codes: `item_index` (n,) rows of `items`,
    `user_codes` (n,) indices into `user_ids` in first-appearance order, `split_codes` (n,)
    indices into `split_names` (str)."""
    # Users keep their first-appearance order; rows of one user keep their order.
    order = np.argsort(user_codes, kind="stable")
    known = [SPLITS.index(name) if name in SPLITS else -1 for name in split_names]
    splits = np.asarray(known, dtype=np.int64)[split_codes]  # (n,) indices into SPLITS, or -1
    split_name = lambda row: split_names[split_codes[row]]  # noqa: E731
    _check_splits(order, user_codes, user_ids, splits, split_name, source)
    boundaries = np.flatnonzero(np.diff(user_codes[order])) + 1
    sequences = np.split(item_index[order].astype(np.int64), boundaries) if len(order) else []
    train_lengths = np.bincount(user_codes[splits == 0], minlength=len(user_ids))
    return SequenceData(
        item_ids=items["item_id"].to_numpy(dtype=object),
        user_ids=np.asarray(user_ids, dtype=object),
        sequences=sequences,
        items=items.reset_index(drop=True),
        train_lengths=train_lengths.astype(np.int64),
    )


def _missing_item(item_index: np.ndarray, item_of_row, source: str) -> None:
    if (item_index < 0).any():
        row = int(np.flatnonzero(item_index < 0)[0])
        raise ValueError(f"{source}: row {row}: item {item_of_row(row)!r} is not in the item table")


def _check_split_column(columns, source: str) -> None:
    if "split" not in columns:
        raise ValueError(
            f"{source}: no `split` column: expected one of {SPLITS} per row "
            "(written by lite_rec.split.leave_one_out_split)"
        )


def sequences_from_frames(
    items: pd.DataFrame, interactions: pd.DataFrame, source: str = "interactions"
) -> SequenceData:
    """Build `SequenceData` from the processed tables (interactions in time order, with the
    `split` column); `source` names the table in errors."""
    import pandas as pd

    _check_split_column(interactions.columns, source)
    index_of = pd.Index(items["item_id"].to_numpy(dtype=object))
    item_index = index_of.get_indexer(interactions["item_id"])
    _missing_item(item_index, lambda row: interactions["item_id"].iloc[row], source)
    user_codes, user_ids = pd.factorize(interactions["user_id"].to_numpy(dtype=object))
    split_codes, split_names = pd.factorize(interactions["split"].astype(str).to_numpy())
    return sequences_from_codes(
        items, item_index, user_codes, user_ids, split_codes, split_names, source
    )


def load_sequences(data_dir: str | Path) -> SequenceData:
    """Read the tables `lite-rec prepare` wrote into `data_dir`. The id and split columns are
    read as Arrow dictionaries (codes in first-appearance order), so no Python object exists
    per interaction: 20M rows need a fraction of the memory that string columns took."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    data_dir = Path(data_dir)
    items = pd.read_parquet(data_dir / ITEMS_FILE)
    path = data_dir / INTERACTIONS_FILE
    table = pq.read_table(path)
    _check_split_column(table.column_names, str(path))

    def codes(name: str) -> tuple[np.ndarray, np.ndarray]:
        """(n,) int64 codes in first-appearance order, (distinct,) the values as str"""
        column = table.column(name).combine_chunks()
        if pa.types.is_dictionary(column.type):  # a categorical: its codes follow categories
            column = column.dictionary_decode()
        encoded = pc.dictionary_encode(column.cast(pa.string()))
        names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
        return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), names

    item_codes, item_values = codes("item_id")
    item_index = pd.Index(items["item_id"].to_numpy(dtype=object)).get_indexer(item_values)
    item_index = item_index[item_codes] if len(item_codes) else item_codes
    _missing_item(item_index, lambda row: item_values[item_codes[row]], str(path))
    user_codes, user_ids = codes("user_id")
    split_codes, split_names = codes("split")
    return sequences_from_codes(
        items, item_index, user_codes, user_ids, split_codes, split_names, str(path)
    )


def window_dtype(sequences: list[np.ndarray]) -> type:
    """int32 when every internal index (item index + 1) fits, else int64: windows of 20M
    interactions take half the memory, and `make_batch` hands torch int64 either way."""
    largest = max((int(s.max()) for s in sequences if len(s)), default=0)
    return np.int32 if largest + 1 <= np.iinfo(np.int32).max else np.int64


def _flat(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sequences end to end, with each one's start and length. -> flat (N,), starts (S,),
    lengths (S,)"""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    flat = np.concatenate(sequences) if len(sequences) else np.zeros(0, dtype=np.int64)
    return flat, starts, lengths


def _cut(flat: np.ndarray, lo: np.ndarray, hi: np.ndarray, width: int, dtype: type) -> np.ndarray:
    """Rows flat[lo:hi] + 1 (internal indices), right-padded to `width`, a block of rows at a
    time so that the gather's temporaries stay small. (W,), (W,) -> (W, width)"""
    padded = np.zeros((len(lo), width), dtype=dtype)
    offsets = np.arange(width)
    for first in range(0, len(lo), WINDOW_BLOCK):
        rows = slice(first, first + WINDOW_BLOCK)
        positions = lo[rows, None] + offsets  # (b, width)
        real = offsets < (hi[rows] - lo[rows])[:, None]  # (b, width)
        values = flat[np.minimum(positions, max(len(flat) - 1, 0))] + 1
        padded[rows] = np.where(real, values, 0)
    return padded


# Windows cut per block of `_cut`: 65,536 x 51 positions keep each temporary at ~27 MB.
WINDOW_BLOCK = 1 << 16


def traversal_windows(sequences: list[np.ndarray], max_len: int) -> np.ndarray:
    """Every position of every sequence as a target: each sequence is cut, from its end, into
    windows of max_len + 1 items (inputs + shifted targets) that share one boundary item, so
    each target appears exactly once. Sequence by sequence, each one's windows from its end.
    -> (n_windows, max_len + 1) internal indices, right-padded (`window_dtype`)."""
    flat, starts, lengths = _flat(sequences)
    # Window ends len, len - max_len, ... while above 1 (a window needs two items).
    counts = np.where(lengths >= 2, (lengths - 2) // max_len + 1, 0)  # (S,)
    owner = np.repeat(np.arange(len(sequences)), counts)  # (W,)
    first_window = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    back = np.arange(len(owner)) - first_window[owner]  # (W,) 0 for the last window
    ends = lengths[owner] - back * max_len  # (W,) within the sequence
    lo = starts[owner] + np.maximum(0, ends - max_len - 1)
    return _cut(flat, lo, starts[owner] + ends, max_len + 1, window_dtype(sequences))


def sampled_prefixes(
    sequences: list[np.ndarray], max_len: int, rng: np.random.Generator
) -> np.ndarray:
    """One random prefix -> next item per sequence; only the last input position has a target
    (`target_ids` is built so). -> (n_users, max_len + 1) internal indices, right-padded."""
    usable = [s for s in sequences if len(s) >= 2]
    flat, starts, lengths = _flat(usable)
    # One draw per sequence, in order: the draws `rng.integers(1, len)` made one at a time.
    targets = np.array([int(rng.integers(1, n)) for n in lengths], dtype=np.int64)
    lo = starts + np.maximum(0, targets - max_len)
    return _cut(flat, lo, starts + targets + 1, max_len + 1, window_dtype(usable))


def length_batches(lengths, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Example indices in batches of `batch_size`, the batches in random order: examples are
    sorted by length (random order within a length) before the cut, so each batch is padded
    to about its own length, which makes a transformer ~7x cheaper on short-history data such
    as Amazon than random batches."""
    by_length = np.lexsort((rng.random(len(lengths)), lengths))
    starts = np.arange(0, len(by_length), batch_size)
    return [by_length[start : start + batch_size] for start in starts[rng.permutation(len(starts))]]


def epoch_windows(
    sequences: list[np.ndarray], config: TrainConfig, max_len: int, epoch: int
) -> np.ndarray:
    """The epoch's training windows (`train.strategy`) in batch order (`length_batches`),
    derived from (seed, epoch) alone."""
    rng = np.random.default_rng([config.seed, epoch])
    if config.strategy == "traversal":
        windows = traversal_windows(sequences, max_len)
    elif config.strategy == "sampling":
        windows = sampled_prefixes(sequences, max_len, rng)
    else:
        raise ValueError(f"train.strategy: expected traversal or sampling, got {config.strategy!r}")
    order = np.concatenate(length_batches((windows > 0).sum(1), config.batch_size, rng))
    return windows[order]


def make_batch(windows: np.ndarray, last_target_only: bool) -> dict[str, torch.Tensor]:
    """(B, max_len + 1) windows -> input_ids, target_ids (B, T), trimmed to the longest row."""
    lengths = (windows > 0).sum(1)  # (B,)
    width = int(lengths.max())
    input_ids = windows[:, : width - 1].astype(np.int64)  # (B, T)
    target_ids = windows[:, 1:width].astype(np.int64)  # (B, T)
    if last_target_only:
        keep = np.zeros_like(target_ids, dtype=bool)
        keep[np.arange(len(windows)), lengths - 2] = True
        target_ids[~keep] = 0
    return {"input_ids": torch.from_numpy(input_ids), "target_ids": torch.from_numpy(target_ids)}


# The batch key of a data-parallel rank's loss weight (`WindowBatches`): its share of the
# batch's targets times world_size.
LOSS_WEIGHT = "loss_weight"


@dataclass
class WindowBatches:
    """An epoch's windows as `make_batch` batches of `batch_size` rows, made as they are read.

    Data-parallel (`world_size` > 1), each batch is cut into world_size near-equal parts and
    this rank gets part `rank`, so every rank steps as often as one process would, on the same
    batches; a last batch of fewer windows than ranks is left out, on every rank alike, since
    ranks that step a different number of times hang DistributedDataParallel. Each part then
    carries LOSS_WEIGHT, its share of the batch's targets times world_size: the mean of the
    weighted part losses that DDP's gradient average makes is the whole batch's mean loss."""

    windows: np.ndarray  # (n_windows, max_len + 1), in batch order
    batch_size: int
    last_target_only: bool  # train.strategy=sampling
    rank: int = 0
    world_size: int = 1

    def __len__(self) -> int:
        batches = -(-len(self.windows) // self.batch_size)
        last = len(self.windows) - (batches - 1) * self.batch_size
        return batches - int(batches > 0 and last < self.world_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            windows = self.windows[start : start + self.batch_size]
            if self.world_size == 1:
                yield make_batch(windows, self.last_target_only)
                continue
            # (b,) each window's targets: every position after its first item, or the last
            targets = 1 if self.last_target_only else (windows > 0).sum(1) - 1
            targets = np.broadcast_to(targets, len(windows))
            part = np.array_split(np.arange(len(windows)), self.world_size)[self.rank]
            batch = make_batch(windows[part], self.last_target_only)
            share = targets[part].sum() / targets.sum()
            batch[LOSS_WEIGHT] = torch.tensor(share * self.world_size, dtype=torch.float32)
            yield batch


def epoch_batches(
    sequences: list[np.ndarray],
    config: TrainConfig,
    max_len: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
) -> WindowBatches:
    """The epoch's training batches of next-item windows (`epoch_windows`); data-parallel,
    rank `rank`'s part of each (`WindowBatches`)."""
    windows = epoch_windows(sequences, config, max_len, epoch)
    return WindowBatches(
        windows, config.batch_size, config.strategy == "sampling", rank, world_size
    )
