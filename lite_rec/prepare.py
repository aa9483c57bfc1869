"""The data half of the pipeline as one call: ingest, validate, k-core filter, leave-one-out
split, statistics, then write the processed tables atomically."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lite_rec.errors import InputError
from lite_rec.ingest import RawDataset, read_dataset
from lite_rec.kcore import kcore_filter
from lite_rec.outputs import MARKER_FILE, check_output_dir, staged_output
from lite_rec.sequences import INTERACTIONS_FILE, ITEMS_FILE, STATS_FILE
from lite_rec.split import leave_one_out_split
from lite_rec.stats import dataset_stats
from lite_rec.validation import validate_interactions, validate_items

log = logging.getLogger(__name__)


@dataclass
class Processed:
    items: pd.DataFrame
    # chronological per user, with a `split` column; or the interactions.parquet holding it
    # (the duckdb engine never holds the whole table in memory)
    splits: pd.DataFrame | Path
    stats: dict[str, float | int]

    @property
    def interactions(self) -> pd.DataFrame:
        """The split interaction table, read from its file when it was not held."""
        if isinstance(self.splits, Path):
            return pd.read_parquet(self.splits)
        return self.splits


def validate_raw(raw: RawDataset) -> None:
    """Run both suites; raise `InputError` naming the file, line, column and expectation."""
    validate_items(raw.items).raise_for_failures(raw.items_file)
    validate_interactions(raw.interactions, raw.items).raise_for_failures(raw.interactions_file)


def interactions_5core(
    interactions: pd.DataFrame, k: int, source_file: str | Path | None = None
) -> pd.DataFrame:
    """k-core filtered interactions; an empty result is an error, not an empty dataset."""
    filtered = kcore_filter(interactions, k)
    if filtered.empty:
        raise kcore_emptied(k, len(interactions), source_file)
    return filtered


def kcore_emptied(k: int, before: int, source_file: str | Path | None) -> InputError:
    return InputError(
        source_file,
        f"{k}-core filtering removed every interaction ({before} before): "
        f"expected users and items with at least {k} interactions; lower --k-core",
    )


def items_in(items: pd.DataFrame, interactions: pd.DataFrame) -> pd.DataFrame:
    """The item rows that still have interactions, in item-table order."""
    return items[items["item_id"].isin(interactions["item_id"])].reset_index(drop=True)


def process(raw: RawDataset, k: int) -> Processed:
    validate_raw(raw)
    splits = leave_one_out_split(interactions_5core(raw.interactions, k, raw.interactions_file))
    return Processed(items_in(raw.items, splits), splits, dataset_stats(splits))


PREPARED_FILES = (ITEMS_FILE, INTERACTIONS_FILE, STATS_FILE)


def write_prepared(
    out_dir: str | Path,
    sources: tuple[str | Path, ...],
    items: pd.DataFrame,
    stats: dict[str, float | int],
    write_interactions: Callable[[Path], None],
) -> Path:
    """Write into a temporary sibling folder, then swap it in: a failure never leaves a
    half-written `out_dir`, and a folder lite-rec did not write is refused, not replaced.
    `write_interactions` writes interactions.parquet at the path it is given."""
    with staged_output(out_dir, "prepared", PREPARED_FILES, sources) as staging:
        items.to_parquet(staging / ITEMS_FILE, index=False)
        write_interactions(staging / INTERACTIONS_FILE)
        (staging / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    return Path(out_dir)


def write_processed(
    processed: Processed, out_dir: str | Path, sources: tuple[str | Path, ...] = ()
) -> Path:
    """`write_prepared` of tables held in memory."""
    interactions = processed.interactions.reset_index(drop=True)
    return write_prepared(
        out_dir,
        sources,
        processed.items,
        processed.stats,
        lambda path: interactions.to_parquet(path, index=False),
    )


ENGINES = ("auto", "pandas", "duckdb")


def choose_engine(source: str | Path, fmt: str = "auto", engine: str = "auto") -> str:
    """`engine`, or for "auto": duckdb for the formats DuckDB reads itself (the MovieLens
    ones), where it was as fast as pandas or faster at every size measured, from 2 MB up,
    with the same files (docs/operations.md); pandas for the others, which both engines read
    with `lite_rec.ingest`. A source that cannot be located goes to pandas, whose reader
    names why."""
    if engine not in ENGINES:
        raise InputError(None, f"unknown engine {engine!r}; expected one of {list(ENGINES)}")
    if engine != "auto":
        return engine
    from lite_rec.ingest.readers import locate_dataset
    from lite_rec.prepare_duckdb import NATIVE_FORMATS

    try:
        located = locate_dataset(source, fmt)
    except InputError:
        return "pandas"
    return "duckdb" if located.format in NATIVE_FORMATS else "pandas"


def prepare(
    source: str | Path,
    out_dir: str | Path,
    fmt: str = "auto",
    k: int = 5,
    engine: str = "auto",
) -> Processed:
    """`lite-rec prepare`: read `source`, check it, filter, split and write `out_dir`, in pandas
    or in DuckDB (`lite_rec.prepare_duckdb`: the same outputs, bounded memory)."""
    if choose_engine(source, fmt, engine) == "duckdb":
        from lite_rec.prepare_duckdb import prepare_duckdb

        return prepare_duckdb(source, out_dir, fmt, k)
    check_output_dir(out_dir, "prepared", (*PREPARED_FILES, MARKER_FILE), [source])
    raw = read_dataset(source, fmt)
    log.info(
        "read %s (%s): %d interactions, %d items",
        source,
        raw.format,
        len(raw.interactions),
        len(raw.items),
    )
    processed = process(raw, k)
    write_processed(processed, out_dir, (source,))
    log.info("wrote %s: %s", out_dir, processed.stats)
    return processed
