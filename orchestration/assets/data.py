"""Data assets: raw tables, their Great Expectations checks, 5-core filter, split, stats, the
catalog and the users' sequences."""

import dagster as dg
import pandas as pd

from lite_rec import prepare, split, stats
from lite_rec.config import project_path
from lite_rec.ingest import read_dataset
from lite_rec.sequences import sequences_from_frames
from lite_rec.validation import ValidationReport, validate_interactions, validate_items
from orchestration.resources import Settings


@dg.multi_asset(
    outs={
        "raw_interactions": dg.AssetOut(group_name="data"),
        "raw_items": dg.AssetOut(group_name="data"),
    },
)
def raw_tables(settings: Settings):
    """The dataset's interactions and items in the canonical schema, ids kept raw."""
    data = settings.load_config().data
    raw = read_dataset(project_path(data.source), data.format)
    meta = {"format": raw.format, "source": str(settings.dataset_dir())}
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


def check_result(report: ValidationReport, settings: Settings) -> dg.AssetCheckResult:
    """A suite's verdict, with its failures and the dataset they were found in."""
    metadata = {**report.metadata(), "source": str(settings.dataset_dir())}
    return dg.AssetCheckResult(passed=report.success, metadata=metadata)


@dg.asset_check(asset="raw_items", blocking=True)
def raw_items_expectations(settings: Settings, raw_items: pd.DataFrame) -> dg.AssetCheckResult:
    """Great Expectations items suite: ids present and unique, titles non-empty."""
    return check_result(validate_items(raw_items), settings)


@dg.asset_check(asset="raw_interactions", blocking=True, additional_ins={"raw_items": dg.AssetIn()})
def raw_interactions_expectations(
    settings: Settings, raw_interactions: pd.DataFrame, raw_items: pd.DataFrame
) -> dg.AssetCheckResult:
    """Great Expectations interactions suite: keys, types, ranges, uniqueness, known items."""
    return check_result(validate_interactions(raw_interactions, raw_items), settings)


@dg.asset(group_name="data")
def interactions_5core(settings: Settings, raw_interactions: pd.DataFrame) -> dg.Output:
    """Interactions whose users and items all have at least k interactions (fixed point)."""
    k = settings.load_config().data.k_core
    filtered = prepare.interactions_5core(raw_interactions, k, settings.dataset_dir())
    removed = len(raw_interactions) - len(filtered)
    return dg.Output(filtered, metadata={"rows": len(filtered), "removed": removed, "k": k})


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


@dg.asset(group_name="data")
def items_5core(raw_items: pd.DataFrame, loo_splits: pd.DataFrame) -> dg.Output:
    """The catalog: items that still have interactions after filtering, in item-table order."""
    items = prepare.items_in(raw_items, loo_splits)
    return dg.Output(items, metadata={"items": len(items)})


@dg.asset(group_name="data")
def sequences(items_5core: pd.DataFrame, loo_splits: pd.DataFrame) -> dg.Output:
    """Every user's split history as item indices into the catalog: what training, evaluation
    and the gate read."""
    data = sequences_from_frames(items_5core, loo_splits)
    return dg.Output(data, metadata={"users": len(data.user_ids), "items": data.n_items})
