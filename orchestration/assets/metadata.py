"""Metadata values the assets attach to their materializations."""

import base64
from pathlib import Path

import dagster as dg


def image(path: Path) -> dg.MetadataValue:
    """A PNG file, inlined so the Dagster UI shows it."""
    encoded = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{path.stem}](data:image/png;base64,{encoded})")
