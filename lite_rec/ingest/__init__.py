"""Read public recommendation datasets into one schema, and fetch them from their sources.

The names are imported on first use, so that importing a submodule (the command line reads
`lite_rec.ingest.download.SOURCES` for its help) does not import pandas."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["FORMATS", "RawDataset", "fetch", "read_dataset"]
_MODULE_OF = {
    "FORMATS": "readers",
    "RawDataset": "readers",
    "read_dataset": "readers",
    "fetch": "download",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
