"""Data assets: raw tables, their Great Expectations checks, 5-core filter, split, stats."""

import dagster as dg
import pandas as pd

from lite_rec import prepare, split, stats
from lite_rec.config import load_config, project_path
from lite_rec.ingest import read_dataset
from lite_rec.validation import ValidationReport, validate_interactions, validate_items

DEFAULTS = load_config().data


class DatasetConfig(dg.Config):
    """Which dataset to read: the embedded MovieLens latest-small, or any supported directory."""

    source: str = DEFAULTS.source
    format: str = DEFAULTS.format


class KCoreConfig(dg.Config):
    k: int = DEFAULTS.k_core


@dg.multi_asset(
    outs={
        "raw_interactions": dg.AssetOut(group_name="data"),
        "raw_items": dg.AssetOut(group_name="data"),
    },
)
def raw_tables(config: DatasetConfig):
    """The dataset's interactions and items in the canonical schema, ids kept raw."""
    raw = read_dataset(project_path(config.source), config.format)
    for frame, path in ((raw.interactions, raw.interactions_file), (raw.items, raw.items_file)):
        frame.attrs["source_file"] = str(path)
    meta = {"format": raw.format, "source": str(project_path(config.source))}
    yield dg.Output(
        raw.interactions,
        output_name="raw_interactions",
        metadata={**meta, "rows": len(raw.interactions), "file": str(raw.interactions_file)},
    )
    yield dg.Output(
        raw.items,
        output_name="raw_items",
        metadata={**meta, "rows": len(raw.items), "file": str(raw.items_file)},
    )


def _check_result(report: ValidationReport, frame: pd.DataFrame) -> dg.AssetCheckResult:
    metadata = {**report.metadata(), "file": frame.attrs.get("source_file", "")}
    return dg.AssetCheckResult(passed=report.success, metadata=metadata)


@dg.asset_check(asset="raw_items", blocking=True)
def raw_items_expectations(raw_items: pd.DataFrame) -> dg.AssetCheckResult:
    """Great Expectations items suite: ids present and unique, titles non-empty."""
    return _check_result(validate_items(raw_items), raw_items)


@dg.asset_check(asset="raw_interactions", blocking=True, additional_ins={"raw_items": dg.AssetIn()})
def raw_interactions_expectations(
    raw_interactions: pd.DataFrame, raw_items: pd.DataFrame
) -> dg.AssetCheckResult:
    """Great Expectations interactions suite: keys, types, ranges, uniqueness, known items."""
    return _check_result(validate_interactions(raw_interactions, raw_items), raw_interactions)


@dg.asset(group_name="data")
def interactions_5core(config: KCoreConfig, raw_interactions: pd.DataFrame) -> dg.Output:
    """Interactions whose users and items all have at least k interactions (fixed point)."""
    source_file = raw_interactions.attrs.get("source_file")
    filtered = prepare.interactions_5core(raw_interactions, config.k, source_file)
    removed = len(raw_interactions) - len(filtered)
    return dg.Output(filtered, metadata={"rows": len(filtered), "removed": removed, "k": config.k})


@dg.asset(group_name="data")
def loo_splits(interactions_5core: pd.DataFrame) -> dg.Output:
    """Each user's history in time order, split leave-one-out: last test, previous valid."""
    splits = split.leave_one_out_split(interactions_5core)
    counts = splits["split"].value_counts()
    return dg.Output(splits, metadata={f"{name} rows": int(n) for name, n in counts.items()})


@dg.asset(group_name="data")
def dataset_stats(loo_splits: pd.DataFrame) -> dg.Output:
    """Users, items, interactions, sequence lengths and density after filtering."""
    values = stats.dataset_stats(loo_splits)
    return dg.Output(values, metadata=values)
