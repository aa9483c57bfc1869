"""`lite-rec prepare` end to end: the contract, and bad input that must write nothing."""

import json
from pathlib import Path

import pandas as pd
import pytest

from lite_rec.cli import main
from tests.conftest import shared_dataset, write_movielens


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """An output directory that already holds an earlier result, which must survive errors."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "stats.json").write_text('{"users": 1}')
    return out


def assert_untouched(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["stats.json"]
    assert (out / "stats.json").read_text() == '{"users": 1}'
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


def test_prepare_writes_tables_and_stats(tmp_path: Path, out_dir: Path, capsys) -> None:
    source = write_movielens(tmp_path / "raw")
    assert main(["prepare", "--source", str(source), "--out", str(out_dir)]) == 0
    stats = json.loads((out_dir / "stats.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"]) == (6, 6, 36)
    assert stats["density"] == 1.0
    interactions = pd.read_parquet(out_dir / "interactions.parquet")
    assert interactions["user_id"].map(type).eq(str).all()
    per_user = interactions.groupby("user_id", sort=False)["split"].apply(list)
    assert all(s == ["train"] * 4 + ["valid", "test"] for s in per_user)
    items = pd.read_parquet(out_dir / "items.parquet")
    assert items.loc[0, "title"] == "Movie 1, The (1991)"


def _edit(path: Path, line: int, text: str | bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = text if isinstance(text, bytes) else text.encode()
    path.write_bytes(b"\n".join(lines))


BAD_INPUTS = {
    "truncated line": ("ratings.csv", lambda p: _edit(p, 5, "1,4,3.0"), ["ratings.csv", "line 5"]),
    "wrong delimiter": (
        "ratings.csv",
        lambda p: p.write_text(p.read_text().replace(",", ";")),
        ["ratings.csv", "line 1"],
    ),
    "missing column": (
        "ratings.csv",
        lambda p: p.write_text(
            "\n".join(",".join(r.split(",")[:3]) for r in p.read_text().splitlines())
        ),
        ["ratings.csv", "timestamp"],
    ),
    "non-utf8 title": (
        "movies.csv",
        lambda p: _edit(p, 3, b'2,"Am\xe9lie (2001)",Comedy'),
        ["movies.csv", "line 3"],
    ),
    "duplicate rows": (
        "ratings.csv",
        lambda p: p.write_text(p.read_text() + p.read_text().splitlines()[1] + "\n"),
        ["ratings.csv", "line 38", "user_id,item_id,timestamp", "unique"],
    ),
    "empty file": ("ratings.csv", lambda p: p.write_text(""), ["ratings.csv", "empty"]),
    "rating out of range": (
        "ratings.csv",
        lambda p: _edit(p, 4, "1,3,9.0,1000031"),
        ["ratings.csv", "line 4", "rating", "between"],
    ),
    "unknown item": (
        "ratings.csv",
        lambda p: _edit(p, 4, "1,99,3.0,1000031"),
        ["ratings.csv", "line 4", "item_id", "in_set"],
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_names_the_problem_and_writes_nothing(
    case: str, tmp_path: Path, out_dir: Path, capsys
) -> None:
    file, corrupt, expected = BAD_INPUTS[case]
    source = write_movielens(tmp_path / "raw")
    corrupt(source / file)
    assert main(["prepare", "--source", str(source), "--out", str(out_dir)]) == 2
    error = capsys.readouterr().err
    for fragment in expected:
        assert fragment in error, f"{case}: {fragment!r} not in {error!r}"
    assert_untouched(out_dir)


def test_kcore_that_removes_everything_is_an_error(tmp_path: Path, out_dir: Path, capsys) -> None:
    source = write_movielens(tmp_path / "raw", users=4, items=4)
    assert main(["prepare", "--source", str(source), "--out", str(out_dir)]) == 2
    error = capsys.readouterr().err
    assert "ratings.csv" in error and "5-core filtering removed every interaction" in error
    assert_untouched(out_dir)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("amazon-toys-2014-5core", (19_412, 11_924, 167_597)),
        ("amazon-beauty-2014-5core", (22_363, 12_101, 198_502)),
    ],
)
def test_published_amazon_statistics(name: str, expected: tuple, tmp_path: Path) -> None:
    source = shared_dataset(name)
    assert main(["prepare", "--source", str(source), "--out", str(tmp_path / "p")]) == 0
    stats = json.loads((tmp_path / "p" / "stats.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"]) == expected
