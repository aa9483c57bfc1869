"""Read public recommendation datasets into one schema, and fetch them from their sources."""

from lite_rec.ingest.download import fetch
from lite_rec.ingest.readers import FORMATS, RawDataset, read_dataset

__all__ = ["FORMATS", "RawDataset", "fetch", "read_dataset"]
