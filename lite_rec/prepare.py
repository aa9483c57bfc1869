"""The data half of the pipeline as one call: ingest, validate, k-core filter, leave-one-out
split, statistics, then write the processed tables atomically."""

from __future__ import annotations

import json
import logging
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
    interactions: pd.DataFrame  # chronological per user, with a `split` column
    stats: dict[str, float | int]


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
        raise InputError(
            source_file,
            f"{k}-core filtering removed every interaction ({len(interactions)} before): "
            f"expected users and items with at least {k} interactions; lower --k-core",
        )
    return filtered


def items_in(items: pd.DataFrame, interactions: pd.DataFrame) -> pd.DataFrame:
    """The item rows that still have interactions, in item-table order."""
    return items[items["item_id"].isin(interactions["item_id"])].reset_index(drop=True)


def process(raw: RawDataset, k: int) -> Processed:
    validate_raw(raw)
    splits = leave_one_out_split(interactions_5core(raw.interactions, k, raw.interactions_file))
    return Processed(items_in(raw.items, splits), splits, dataset_stats(splits))


PREPARED_FILES = (ITEMS_FILE, INTERACTIONS_FILE, STATS_FILE)


def write_processed(
    processed: Processed, out_dir: str | Path, sources: tuple[str | Path, ...] = ()
) -> Path:
    """Write into a temporary sibling folder, then swap it in: a failure never leaves a
    half-written `out_dir`, and a folder lite-rec did not write is refused, not replaced."""
    with staged_output(out_dir, "prepared", PREPARED_FILES, sources) as staging:
        processed.items.to_parquet(staging / ITEMS_FILE, index=False)
        processed.interactions.reset_index(drop=True).to_parquet(
            staging / INTERACTIONS_FILE, index=False
        )
        (staging / STATS_FILE).write_text(json.dumps(processed.stats, indent=2) + "\n")
    return Path(out_dir)


def prepare(source: str | Path, out_dir: str | Path, fmt: str = "auto", k: int = 5) -> Processed:
    """`lite-rec prepare`: read `source`, check it, filter, split and write `out_dir`."""
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
