import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """A benchmark dataset from ../shared/datasets, or skip when this machine lacks it."""
    path = SHARED_DATASETS / name
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    return path


def write_movielens(directory: Path, users: int = 6, items: int = 6) -> Path:
    """A tiny, valid MovieLens-csv dataset in which every user rated every item."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = ["userId,movieId,rating,timestamp"]
    for user in range(1, users + 1):
        for item in range(1, items + 1):
            rows.append(f"{user},{item},{1 + (user + item) % 5}.0,{1_000_000 + 10 * item + user}")
    (directory / "ratings.csv").write_text("\n".join(rows) + "\n")
    titles = ["movieId,title,genres"] + [
        f'{item},"Movie {item}, The (199{item})",Comedy|Drama' for item in range(1, items + 1)
    ]
    (directory / "movies.csv").write_text("\n".join(titles) + "\n")
    return directory
