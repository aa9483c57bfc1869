"""The duckdb engine of `prepare` against the pandas path: the same files (frames equal with
dtypes and row order, the same stats) and the same errors, on hand-made cases, on every bad
input the reader and `prepare` tests know, and on the shared real datasets."""

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from lite_rec import text_scan
from lite_rec.cli import main
from lite_rec.errors import InputError
from lite_rec.ingest import read_dataset
from lite_rec.ingest.readers import locate_dataset
from lite_rec.kcore import kcore_filter
from lite_rec.prepare import choose_engine, prepare
from lite_rec.prepare_duckdb import (
    _load_frame,
    kcore_sql,
    load_interactions,
    prepare_duckdb,
)
from lite_rec.validation import (
    _interactions_suite,
    _items_suite,
    validate_interactions,
    validate_items,
)
from lite_rec.validation_duckdb import _sql_report
from tests.conftest import shared_dataset, write_movielens
from tests.test_ingest import BAD_INPUTS as READER_BAD_INPUTS
from tests.test_ingest import VARIANTS, write, write_format
from tests.test_prepare import BAD_INPUTS as PREPARE_BAD_INPUTS
from tests.test_prepare import CORE, KCORE_ITEMS, KCORE_ROWS

TABLES = ("items.parquet", "interactions.parquet")


def run(engine: str, source: Path, out: Path, k: int = 5, **options) -> tuple:
    """("ok", items, interactions, stats) as written to `out`, or ("error", message), in
    which case nothing may have been written beside `out` either."""
    try:
        if engine == "duckdb":
            prepare_duckdb(source, out, "auto", k, **options)
        else:
            prepare(source, out, "auto", k, engine="pandas")
    except InputError as error:
        assert not out.exists()
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
        return ("error", str(error))
    frames = [pd.read_parquet(out / table) for table in TABLES]
    return ("ok", *frames, json.loads((out / "stats.json").read_text()))


def assert_same(expected: tuple, actual: tuple) -> None:
    assert actual[0] == expected[0], (expected, actual)
    if expected[0] == "error":
        assert actual[1] == expected[1]
        return
    for wanted, got in zip(expected[1:3], actual[1:3], strict=True):
        pd.testing.assert_frame_equal(got, wanted)  # values, dtypes, order, index
    assert actual[3] == expected[3]


def assert_engines_agree(source: Path, tmp_path: Path, k: int = 5, **options) -> tuple:
    tmp_path.mkdir(exist_ok=True)
    expected = run("pandas", source, tmp_path / "pandas-out", k)
    assert_same(expected, run("duckdb", source, tmp_path / "duckdb-out", k, **options))
    return expected


# ----------------------------------------------------------------------------- hand-made


def test_ties_in_time_keep_the_source_order(tmp_path: Path) -> None:
    # Two ties, one in ascending and one in descending id order in the file, so that no
    # tie-break by item id gives both: user 3's items 2 then 8 share a time (8 is the test
    # target), user 7's items 9 then 1 do (1 is). User 3 appears first, so comes first.
    rows = [
        ("3", "5", 10, 1.0),
        ("7", "9", 100, 2.0),
        ("3", "2", 30, 4.0),
        ("7", "1", 100, 3.0),
        ("3", "8", 30, 1.5),
        ("7", "5", 50, 5.0),
    ]
    write_format(tmp_path / "raw", "movielens-csv", rows, ["1", "2", "5", "8", "9"])
    result = assert_engines_agree(tmp_path / "raw", tmp_path, k=1)
    assert result[2][["user_id", "item_id", "split"]].values.tolist() == [
        ["3", "5", "train"],
        ["3", "2", "valid"],
        ["3", "8", "test"],
        ["7", "5", "train"],
        ["7", "9", "valid"],
        ["7", "1", "test"],
    ]


def test_kcore_leaves_exactly_the_core(tmp_path: Path) -> None:
    write_format(tmp_path / "raw", "movielens-csv", KCORE_ROWS, KCORE_ITEMS)
    result = assert_engines_agree(tmp_path / "raw", tmp_path, k=3)
    actual = result[2][["user_id", "item_id", "timestamp", "rating"]].itertuples(index=False)
    assert [tuple(row) for row in actual] == [KCORE_ROWS[row] for row in CORE]
    assert result[1]["item_id"].tolist() == ["11", "12", "13"]


def chain_and_core(links: int) -> pd.DataFrame:
    """A 2-core (users c1, c2 x items y1, y2) and a chain x0 - u1 - x1 - u2 - ... - u(links+1)
    of 2 * links + 1 rows whose two ends have one interaction each: every round of 2-core
    filtering deletes the row at each end, so the chain takes links + 1 deleting rounds."""
    rows = [(user, item) for user in ("c1", "c2") for item in ("y1", "y2")]
    for n in range(1, links + 1):
        rows += [(f"u{n}", f"x{n - 1}"), (f"u{n}", f"x{n}")]
    rows.append((f"u{links + 1}", f"x{links}"))
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


def test_kcore_sql_reaches_the_fixed_point_over_several_rounds() -> None:
    rows = chain_and_core(links=4)
    con = duckdb.connect()
    con.register("frame", rows.assign(ord=np.arange(len(rows))))
    con.execute("CREATE TABLE interactions AS SELECT * FROM frame")
    rounds = kcore_sql(con, 2)
    kept = [ord_ for (ord_,) in con.sql("SELECT ord FROM kept ORDER BY ord").fetchall()]
    assert kept == [0, 1, 2, 3]  # the core, nothing of the chain
    assert rounds == 5 + 1  # 9 chain rows, two a round; then a round that deletes nothing
    assert kept == kcore_filter(rows, 2).index.tolist()


def test_unusual_numbers_parse_as_the_reader_parses_them(tmp_path: Path) -> None:
    # Plain values are cast in SQL; these are not plain and go through the reader's parsing.
    odd = ["1e3", "+1001", "1002.0", "0001003", "1_004", "0000000000000000000001005"]
    lines = ["userId,movieId,rating,timestamp"]
    for user in range(1, 7):
        for item in range(1, 7):
            stamp = odd[item - 1] if user == 1 else str(2000 + 10 * item + user)
            rating = [" 4", "3.50", "2.5e0", "4", "+1", "0.1"][item - 1] if user == 2 else "3"
            lines.append(f"{user},{item},{rating},{stamp}")
    write_movielens(tmp_path / "raw")
    (tmp_path / "raw" / "ratings.csv").write_text("\n".join(lines) + "\n")
    result = assert_engines_agree(tmp_path / "raw", tmp_path)
    user_1 = result[2].query("user_id == '1'")
    assert sorted(user_1["timestamp"]) == [1000, 1001, 1002, 1003, 1004, 1005]


@pytest.mark.parametrize("variant", [*VARIANTS, "mixed LF and CRLF"])
def test_line_endings_and_byte_order_mark_prepare_alike(tmp_path: Path, variant: str) -> None:
    source = write_movielens(tmp_path / "raw")
    for path in source.iterdir():
        data = path.read_bytes()
        if variant == "mixed LF and CRLF":  # read by lite_rec.ingest, then DuckDB
            data = data.replace(b"\n", b"\r\n", 3)
        else:
            data = VARIANTS[variant](data)
        path.write_bytes(data)
    assert assert_engines_agree(source, tmp_path)[0] == "ok"


def test_users_below_three_leave_empty_tables_alike(tmp_path: Path) -> None:
    write_format(tmp_path / "raw", "movielens-csv", [("1", "11", 100, 4.0), ("1", "12", 90, 3.0)])
    result = assert_engines_agree(tmp_path / "raw", tmp_path, k=1)
    assert result[0] == "ok" and len(result[2]) == 0 and result[3]["users"] == 0


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("case", PREPARE_BAD_INPUTS)
@pytest.mark.parametrize("validation", ["whole table", "sql and sample"])
def test_bad_input_is_refused_alike(case: str, validation: str, tmp_path: Path) -> None:
    """Every bad input of tests/test_prepare.py: the same one-line error, nothing written;
    validation either by Great Expectations on the whole table or by SQL plus a sample."""
    file, corrupt, fragments = PREPARE_BAD_INPUTS[case]
    source = write_movielens(tmp_path / "raw")
    corrupt(source / file)
    options = {"full_rows": 0} if validation == "sql and sample" else {}
    result = assert_engines_agree(source, tmp_path, **options)
    assert result[0] == "error"
    assert all(fragment in result[1] for fragment in fragments), result[1]


VALIDATION_FAILURES = [
    "duplicate rows",
    "rating out of range",
    "unknown item",
    "blank user id",
    "user id with surrounding spaces",
    "blank item id in the item file",
]


def _blank_titles(count: int):
    def corrupt(movies: Path) -> None:
        lines = movies.read_text().splitlines()
        for line in range(2, 2 + count):
            lines[line] = f"{line},,Comedy"
        movies.write_text("\n".join(lines) + "\n")

    return corrupt


MORE_FAILURES = {
    "blank user id and rating out of range": (  # two failures, named in the suite's order
        "ratings.csv",
        lambda path: path.write_text(
            path.read_text().replace("\n1,3,", "\n,3,", 1) + "9,1,7.0,5\n"
        ),
    ),
    "one blank title in 120: a warning": ("movies.csv", _blank_titles(1)),
    "two blank titles in 120: below 99%": ("movies.csv", _blank_titles(2)),
}


@pytest.mark.parametrize("case", ["none", *VALIDATION_FAILURES, *MORE_FAILURES])
def test_sql_checks_report_what_great_expectations_reports(
    case: str, tmp_path: Path, monkeypatch
) -> None:
    """Each expectation evaluated in SQL on the whole table (as for a large table) gives the
    verdicts, counts, lines and rows, in the order, that the suite run by Great Expectations
    gives."""
    monkeypatch.setattr("lite_rec.validation.time.time", lambda: 1_700_000_000.0)
    source = write_movielens(tmp_path / "raw", items=120 if "title" in case else 6)
    if case != "none":
        file, corrupt = (PREPARE_BAD_INPUTS.get(case) or MORE_FAILURES[case])[:2]
        corrupt(source / file)
    raw = read_dataset(source)
    con = duckdb.connect()
    load_interactions(con, locate_dataset(source))
    _load_frame(con, "items", raw.items)
    expected = {
        "items": validate_items(raw.items),
        "interactions": validate_interactions(raw.interactions, raw.items),
    }
    suites = {
        "items": _items_suite(),
        "interactions": _interactions_suite(pd.Series([], dtype=str)),
    }
    for table, known in (("items", None), ("interactions", "items")):
        actual = _sql_report(con, table, table, suites[table], known)
        assert actual == expected[table]
    failed = [failure for report in expected.values() for failure in report.failures]
    assert bool(failed) == (case not in ("none", "one blank title in 120: a warning"))
    if case == "blank user id and rating out of range":
        assert [f.column for f in expected["interactions"].failures] == ["user_id", "rating"]
    assert bool(expected["items"].warnings) == ("title" in case)


@pytest.mark.parametrize("case", READER_BAD_INPUTS)
def test_reader_bad_input_is_refused_alike(case: str, tmp_path: Path, monkeypatch) -> None:
    """Every bad file of tests/test_ingest.py, scanned in blocks of a few bytes so that lines
    and offences fall across block edges: the same error as the pandas path's."""
    monkeypatch.setattr(text_scan, "BLOCK_BYTES", 7)
    files, file, line, column, words = READER_BAD_INPUTS[case]
    (tmp_path / "raw").mkdir()
    write(tmp_path / "raw", files)
    result = assert_engines_agree(tmp_path / "raw", tmp_path, k=1)
    assert result[0] == "error" and words in result[1]


def test_every_offence_of_a_large_file_is_named_as_the_reader_names_it(tmp_path: Path) -> None:
    """A file that breaks several rules at once, scanned in blocks of 7 bytes: the rule the
    reader checks first wins, at its first line."""
    source = write_movielens(tmp_path / "raw")
    ratings = source / "ratings.csv"
    lines = ratings.read_text().splitlines()
    lines[3] = "1,2,3"  # wrong field count, line 4
    lines[9] = "1,\x00,3,4"  # NUL, line 10: named before the field count
    ratings.write_text("\n".join(lines) + "\n")
    expected = run("pandas", source, tmp_path / "pandas-out")
    assert "line 10" in expected[1] and "NUL" in expected[1]
    text_scan.BLOCK_BYTES, block = 7, text_scan.BLOCK_BYTES
    try:
        assert_same(expected, run("duckdb", source, tmp_path / "duckdb-out"))
    finally:
        text_scan.BLOCK_BYTES = block


@pytest.mark.parametrize("validation", ["whole table", "sql and sample"])
def test_mostly_blank_titles_are_refused_and_a_few_only_warned(
    validation: str, tmp_path: Path
) -> None:
    options = {"full_rows": 0} if validation == "sql and sample" else {}
    source = write_movielens(tmp_path / "raw", users=6, items=120)
    movies = source / "movies.csv"
    lines = movies.read_text().splitlines()
    lines[5] = "5,,Comedy"  # one blank title in 120: 99.2% non-blank passes, with a warning
    movies.write_text("\n".join(lines) + "\n")
    assert assert_engines_agree(source, tmp_path / "one", **options)[0] == "ok"
    lines[6] = "6,,Comedy"  # two: 98.3% < 99%
    movies.write_text("\n".join(lines) + "\n")
    result = assert_engines_agree(source, tmp_path / "two", **options)
    assert result[0] == "error" and "at least 99% of items" in result[1]


def test_cli_engine_option(tmp_path: Path, capsys) -> None:
    source = write_movielens(tmp_path / "raw")
    out = tmp_path / "out"
    assert main(["prepare", "--source", str(source), "--out", str(out), "--engine", "duckdb"]) == 0
    assert json.loads(capsys.readouterr().out)["interactions"] == 36
    assert (out / ".lite-rec").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize(
    ("format", "engine"),
    [
        ("movielens-csv", "duckdb"),
        ("movielens-1m", "duckdb"),
        ("movielens-100k", "duckdb"),
        ("amazon-2014", "pandas"),
        ("amazon-2018", "pandas"),
        ("sequence", "pandas"),
    ],
)
def test_auto_picks_duckdb_for_the_formats_it_reads(format: str, engine: str, tmp_path) -> None:
    write_format(tmp_path, format, KCORE_ROWS, KCORE_ITEMS)
    assert choose_engine(tmp_path) == engine
    assert choose_engine(tmp_path, engine="pandas") == "pandas"


def test_engine_choice_of_a_bad_source(tmp_path: Path) -> None:
    assert choose_engine(tmp_path / "missing") == "pandas"  # whose reader names the problem
    with pytest.raises(InputError, match="unknown engine 'spark'"):
        choose_engine(tmp_path, engine="spark")


# ----------------------------------------------------------------------------- real data


@pytest.mark.integration
@pytest.mark.parametrize(
    "name",
    [
        "ml-latest-small",
        "ml-100k",
        "amazon-beauty-2014-5core",
        "amazon-toys-2014-5core",
        "ml-1m",  # no ratings.dat here: both refuse alike
        "recbole-ml-100k",  # a layout neither reads: both refuse alike
    ],
)
def test_shared_datasets_prepare_identically(name: str, tmp_path: Path) -> None:
    source = shared_dataset(name)
    expected = run("pandas", source, tmp_path / "pandas-out")
    assert_same(expected, run("duckdb", source, tmp_path / "duckdb-out"))
    if expected[0] == "ok":  # and with validation in SQL plus a sample, as for large tables
        assert_same(expected, run("duckdb", source, tmp_path / "sql-out", full_rows=0))
        for table in TABLES:  # the files themselves, not only their frames
            written = (tmp_path / "pandas-out" / table).read_bytes()
            assert (tmp_path / "duckdb-out" / table).read_bytes() == written
