"""`lite-rec prepare` end to end: the contract, and bad input that must write nothing."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lite_rec.cli import main
from lite_rec.ingest import FORMATS
from tests.conftest import shared_dataset, write_movielens
from tests.test_ingest import LAYOUTS, TIMESTAMP_COLUMN, write_format


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


def prepare(source: Path, out: Path, *options: str) -> int:
    """`lite-rec prepare`'s exit code."""
    return main(["prepare", "--source", str(source), "--out", str(out), *options])


def prepare_error(source: Path, out: Path, capsys) -> str:
    """`lite-rec prepare` on bad input: exit 2 and one stderr line, the last, naming it."""
    assert prepare(source, out) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("lite-rec prepare: error: ")]
    assert len(lines) == 1 and err.rstrip("\n").endswith(lines[0]), err
    return lines[0]


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
    "blank user id": (
        "ratings.csv",
        lambda p: _edit(p, 4, ",3,3.0,1000031"),
        ["ratings.csv, line 4, column 'user_id': expected a non-blank user id", "found ''"],
    ),
    "user id with surrounding spaces": (
        "ratings.csv",
        lambda p: _edit(p, 4, " 1,3,3.0,1000031"),
        ["ratings.csv, line 4, column 'user_id': expected a non-blank user id", "found ' 1'"],
    ),
    "blank item id in the item file": (
        "movies.csv",
        lambda p: _edit(p, 3, ',"Movie 2, The (1992)",Comedy'),
        ["movies.csv, line 3, column 'item_id': expected a non-blank item id", "found ''"],
    ),
    "int64 overflow timestamp": (
        "ratings.csv",
        lambda p: _edit(p, 4, "1,3,3.0,99999999999999999999"),
        ["ratings.csv, line 4, column 'timestamp'", "found '99999999999999999999'"],
    ),
    "CR line ending among LF ones": (
        "ratings.csv",
        lambda p: _edit(p, 4, "1,3,3.0,1000031\r1,3,3.0,1000032"),
        ["ratings.csv, line 4: expected one kind of line ending"],
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_names_the_problem_and_writes_nothing(
    case: str, tmp_path: Path, out_dir: Path, capsys
) -> None:
    file, corrupt, expected = BAD_INPUTS[case]
    source = write_movielens(tmp_path / "raw")
    corrupt(source / file)
    error = prepare_error(source, out_dir, capsys)
    for fragment in expected:
        assert fragment in error, f"{case}: {fragment!r} not in {error!r}"
    assert_untouched(out_dir)


def test_kcore_that_removes_everything_is_an_error(tmp_path: Path, out_dir: Path, capsys) -> None:
    source = write_movielens(tmp_path / "raw", users=4, items=4)
    assert main(["prepare", "--source", str(source), "--out", str(out_dir)]) == 2
    error = capsys.readouterr().err
    assert "ratings.csv" in error and "5-core filtering removed every interaction" in error
    assert_untouched(out_dir)


def test_cr_line_endings_prepare_like_lf(tmp_path: Path) -> None:
    source = write_movielens(tmp_path / "lf")
    (tmp_path / "cr").mkdir()
    for path in source.iterdir():
        (tmp_path / "cr" / path.name).write_bytes(path.read_bytes().replace(b"\n", b"\r"))
    for name in ("lf", "cr"):
        assert prepare(tmp_path / name, tmp_path / f"{name}-out") == 0
    for table in ("interactions.parquet", "items.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "cr-out" / table),
            pd.read_parquet(tmp_path / "lf-out" / table),
        )


# A 3-core needs more than one round: item 14 has one interaction, and without it user 4 has
# two; user 5 has two from the start. Users 1-3 and items 11-13 are the core.
KCORE_ROWS = [
    ("1", "11", 100, 4.0),
    ("1", "12", 110, 3.0),
    ("1", "13", 120, 5.0),
    ("4", "11", 130, 2.0),
    ("4", "12", 140, 2.0),
    ("4", "14", 150, 1.0),
    ("2", "13", 160, 4.0),
    ("2", "11", 170, 4.0),
    ("2", "12", 180, 3.0),
    ("5", "11", 190, 5.0),
    ("5", "15", 200, 5.0),
    ("3", "12", 210, 1.0),
    ("3", "13", 220, 2.0),
    ("3", "11", 230, 3.0),
]
KCORE_ITEMS = ["11", "12", "13", "14", "15", "16"]  # 16 has no interactions
CORE = [0, 1, 2, 6, 7, 8, 11, 12, 13]  # positions in KCORE_ROWS, already in time order per user
NOT_SEQUENCE = sorted(set(FORMATS) - {"sequence"})


@pytest.mark.parametrize("format", sorted(FORMATS))
def test_kcore_leaves_exactly_the_core_in_every_format(format: str, tmp_path: Path) -> None:
    write_format(tmp_path / "raw", format, KCORE_ROWS, KCORE_ITEMS)
    out = tmp_path / "out"
    assert prepare(tmp_path / "raw", out, "--k-core", "3") == 0
    interactions = pd.read_parquet(out / "interactions.parquet")
    actual = [
        (user, item, time, None if np.isnan(rating) else rating, split)
        for user, item, time, rating, split in interactions[
            ["user_id", "item_id", "timestamp", "rating", "split"]
        ].itertuples(index=False)
    ]
    splits = ["train", "valid", "test"] * 3
    if format == "sequence":  # the time is the position on the user's line; no ratings
        positions = [0, 1, 2] * 3
        ids = [KCORE_ROWS[row][:2] for row in CORE]
        expected = [(*pair, time, None) for pair, time in zip(ids, positions, strict=True)]
    else:
        expected = [KCORE_ROWS[row] for row in CORE]
    assert actual == [(*row, split) for row, split in zip(expected, splits, strict=True)]
    assert pd.read_parquet(out / "items.parquet")["item_id"].tolist() == ["11", "12", "13"]


@pytest.mark.parametrize("format", sorted(FORMATS))
def test_unknown_item_names_its_source_line_in_every_format(
    format: str, tmp_path: Path, capsys
) -> None:
    lines = write_format(
        tmp_path / "raw", format, [*KCORE_ROWS, ("5", "99", 300, 4.0)], KCORE_ITEMS
    )
    error = prepare_error(tmp_path / "raw", tmp_path / "out", capsys)
    file = "user_sequence.txt" if format == "sequence" else LAYOUTS[format][0]
    assert (
        f"{file}, line {lines[-1]}, column 'item_id': expected an item id listed in the item "
        "file, found '99'"
    ) in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("format", NOT_SEQUENCE)
def test_blank_user_id_is_refused_in_every_format(format: str, tmp_path: Path, capsys) -> None:
    # Three blank ids would make a phantom user '' who survives the 3-core.
    blank = [("", item, 300, 4.0) for item in ("11", "12", "13")]
    lines = write_format(tmp_path / "raw", format, KCORE_ROWS + blank, KCORE_ITEMS)
    error = prepare_error(tmp_path / "raw", tmp_path / "out", capsys)
    assert (
        f"{LAYOUTS[format][0]}, line {lines[-3]}, column 'user_id': expected a non-blank user id "
        "without surrounding spaces, found ''"
    ) in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("format", NOT_SEQUENCE)
def test_timestamp_beyond_int64_is_shown_as_written(format: str, tmp_path: Path, capsys) -> None:
    row = ("1", "14", 99_999_999_999_999_999_999, 4.0)
    lines = write_format(tmp_path / "raw", format, [*KCORE_ROWS, row], KCORE_ITEMS)
    error = prepare_error(tmp_path / "raw", tmp_path / "out", capsys)
    column = TIMESTAMP_COLUMN[format]
    assert (
        f"{LAYOUTS[format][0]}, line {lines[-1]}, column '{column}': expected an integer" in error
    )
    assert error.endswith("(int64), found '99999999999999999999'") or error.endswith(
        "(int64), found 99999999999999999999"  # a JSON number, not a string
    )
    assert not (tmp_path / "out").exists()


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
