"""What the assets show in the Dagster UI: owners and the code version of the library, row
counts and column schemas, metric tables rounded for reading, images and links."""

import base64
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import dagster as dg
import pandas as pd

from lite_rec.config import PROJECT_ROOT

OWNERS = ["team:lite-rec"]
DIGITS = 4  # metric values as a person reads them
COLUMN_DESCRIPTIONS = {
    "user_id": "raw user id of the dataset",
    "item_id": "raw item id of the dataset",
    "timestamp": "Unix time in seconds",
    "rating": "explicit rating, when the dataset has one",
    "title": "item title, part of the Item LLM's text",
    "split": "train, valid (second to last of the user) or test (last)",
}


def library_version() -> str:
    """A digest of the `lite_rec` sources: every asset's code version, so that Dagster marks
    the assets stale when the library changes, as DVC reruns its stages."""
    digest = hashlib.sha256()
    for path in sorted((PROJECT_ROOT / "lite_rec").rglob("*.py")):
        digest.update(path.relative_to(PROJECT_ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


CODE_VERSION = library_version()


def frame_metadata(frame: pd.DataFrame) -> dict[str, object]:
    """`dagster/row_count` and `dagster/column_schema` of a table."""
    columns = [
        dg.TableColumn(name, str(dtype), description=COLUMN_DESCRIPTIONS.get(name))
        for name, dtype in frame.dtypes.items()
    ]
    return {
        "dagster/row_count": len(frame),
        "dagster/column_schema": dg.TableSchema(columns=columns),
    }


def table(records: Iterable[Mapping[str, object]], columns: Mapping[str, str]) -> dg.MetadataValue:
    """A table the UI shows in place: `columns` maps each column name to its type."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns.items()])
    rows = [dg.TableRecord({name: record[name] for name in columns}) for record in records]
    return dg.MetadataValue.table(rows, schema=schema)


def metrics_table(metrics: Mapping[str, float]) -> dg.MetadataValue:
    """One row per metric, its value rounded to 4 digits."""
    rows = [{"metric": name, "value": round(value, DIGITS)} for name, value in metrics.items()]
    return table(rows, {"metric": "string", "value": "float"})


def rounded(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    """Metrics as numeric entries, which the asset's Plots tab draws across materializations."""
    return {f"{prefix}{name}": round(value, DIGITS) for name, value in metrics.items()}


def image(path: Path) -> dg.MetadataValue:
    """A PNG file, inlined (the UI opens it from a "Show Markdown" button)."""
    encoded = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{path.stem}](data:image/png;base64,{encoded})")


def mlflow_image(mlflow_ui_url: str, run_id: str, artifact: str) -> dg.MetadataValue:
    """A run's PNG artifact as served by the MLflow UI: a short markdown entry, which the Dagster
    UI renders in place (the image shows while the MLflow UI runs)."""
    url = f"{mlflow_ui_url.rstrip('/')}/get-artifact?path={artifact}&run_uuid={run_id}"
    return dg.MetadataValue.md(f"![{Path(artifact).stem}]({url})")


# Owners and code version, the same on every asset.
CATALOG = {"owners": OWNERS, "code_version": CODE_VERSION}
