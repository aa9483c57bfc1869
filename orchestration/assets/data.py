"""Data assets: the raw tables, the 5-core filter, the split, its statistics, the catalog and
the users' sequences."""

import dagster as dg
import pandas as pd

from lite_rec import prepare, split, stats
from lite_rec.config import project_path
from lite_rec.ingest import read_dataset
from lite_rec.sequences import sequences_from_frames
from orchestration.assets.metadata import CATALOG, DIGITS, frame_metadata
from orchestration.resources import Settings


@dg.multi_asset(
    outs={
        "raw_interactions": dg.AssetOut(
            group_name="data",
            kinds={"pandas"},
            description="The dataset's interactions (user, item, time, rating), ids kept raw.",
            **CATALOG,
        ),
        "raw_items": dg.AssetOut(
            group_name="data",
            kinds={"pandas"},
            description="The dataset's item table (id, title and the text fields), ids kept raw.",
            **CATALOG,
        ),
    },
)
def raw_tables(settings: Settings):
    """The dataset's interactions and items in the canonical schema, ids kept raw."""
    data = settings.load_config().data
    raw = read_dataset(project_path(data.source), data.format)
    for name, frame, file in (
        ("raw_interactions", raw.interactions, raw.interactions_file),
        ("raw_items", raw.items, raw.items_file),
    ):
        metadata = {"format": raw.format, "file": dg.MetadataValue.path(str(file))}
        yield dg.Output(frame, output_name=name, metadata={**frame_metadata(frame), **metadata})


@dg.asset(group_name="data", kinds={"pandas"}, **CATALOG)
def interactions_5core(settings: Settings, raw_interactions: pd.DataFrame) -> dg.Output:
    """Interactions whose users and items all have at least k interactions (fixed point)."""
    k = settings.load_config().data.k_core
    filtered = prepare.interactions_5core(raw_interactions, k, settings.dataset_dir())
    removed = len(raw_interactions) - len(filtered)
    return dg.Output(filtered, metadata={**frame_metadata(filtered), "removed": removed, "k": k})


@dg.asset(group_name="data", kinds={"pandas"}, **CATALOG)
def loo_splits(interactions_5core: pd.DataFrame) -> dg.Output:
    """Each user's history in time order, split leave-one-out: last test, previous valid."""
    splits = split.leave_one_out_split(interactions_5core)
    counts = splits["split"].value_counts()
    metadata = {f"{name} rows": int(n) for name, n in counts.items()}
    return dg.Output(splits, metadata={**frame_metadata(splits), **metadata})


@dg.asset(group_name="data", kinds={"python"}, **CATALOG)
def dataset_stats(loo_splits: pd.DataFrame) -> dg.Output:
    """Users, items, interactions, sequence lengths and density after filtering."""
    values = stats.dataset_stats(loo_splits)
    shown = {k: round(v, DIGITS) if isinstance(v, float) else v for k, v in values.items()}
    return dg.Output(values, metadata=shown)


@dg.asset(group_name="data", kinds={"pandas"}, **CATALOG)
def items_5core(raw_items: pd.DataFrame, loo_splits: pd.DataFrame) -> dg.Output:
    """The catalog: items that still have interactions after filtering, in item-table order."""
    items = prepare.items_in(raw_items, loo_splits)
    return dg.Output(items, metadata=frame_metadata(items))


@dg.asset(group_name="data", kinds={"numpy"}, **CATALOG)
def sequences(items_5core: pd.DataFrame, loo_splits: pd.DataFrame) -> dg.Output:
    """Every user's split history as item indices into the catalog: what training, evaluation
    and the gate read."""
    data = sequences_from_frames(items_5core, loo_splits)
    metadata = {"dagster/row_count": len(data.user_ids), "users": len(data.user_ids)}
    return dg.Output(data, metadata={**metadata, "items": data.n_items})
