"""The `duckdb` engine of `lite-rec prepare`: the pandas path's steps and outputs (same files,
columns, dtypes, row order and statistics) with the interaction table held in DuckDB, so that
memory stays bounded whatever the file's size.

- Ingest: the MovieLens formats (`ratings.csv`, `ratings.dat`, `u.data`) are read by DuckDB
  itself, after one streaming pass (`lite_rec.text_scan`) that makes the reader's checks on
  the bytes; their values are typed in SQL, and the few that are not plain numbers go through
  the reader's own parsing. Amazon JSON, the sequence format and files mixing "\\n" and
  "\\r\\n" line ends are read by `lite_rec.ingest` and then loaded into DuckDB. Item tables
  (at most a catalog's size) are always read by `lite_rec.ingest`. Every row keeps its source
  position (`ord`) and line, for ties and for messages.
- Validation: `lite_rec.validation_duckdb` (the Great Expectations suites, on the whole table
  or, above a size, on a sample plus SQL checks of the whole table).
- k-core: SQL deletes of users and items below k, repeated until a round deletes nothing.
- Leave-one-out: window functions over each user's rows ordered by (timestamp, source order).
- Output: through `staged_output` (atomic, with the marker); interactions streamed from DuckDB
  into Parquet row group by row group.

DuckDB works in a temporary folder beside the output (its database and spill files), removed
at the end, with `memory_limit` and one thread per core.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lite_rec.ingest.readers import FORMATS, DatasetFiles, _numbers, locate_dataset
from lite_rec.outputs import MARKER_FILE, check_output_dir
from lite_rec.prepare import PREPARED_FILES, Processed, kcore_emptied, write_prepared
from lite_rec.sequences import INTERACTIONS_FILE
from lite_rec.split import MIN_INTERACTIONS, SPLITS
from lite_rec.text_scan import TextScan, scan_text
from lite_rec.validation_duckdb import (
    FULL_VALIDATION_ROWS,
    validate_interactions_duckdb,
    validate_items_duckdb,
)

log = logging.getLogger(__name__)

MEMORY_LIMIT = "4GB"
ROW_GROUP_ROWS = 1024 * 1024  # pyarrow's default, so row groups match the pandas path's
# Values DuckDB casts exactly as pandas parses them; any other goes through the reader.
PLAIN_INTEGER = r"-?[0-9]{1,18}"
PLAIN_DECIMAL = r"-?[0-9]{1,15}(\.[0-9]{1,15})?"


@dataclass(frozen=True)
class PlainFormat:
    """A delimited interactions file DuckDB reads itself: the reader's `columns` (in the
    reader's order), separator, encoding and header, and which column is which."""

    columns: tuple[str, ...]
    sep: str
    encoding: str
    header: bool
    user: str
    item: str
    timestamp: str
    rating: str


NATIVE_FORMATS = {
    "movielens-csv": PlainFormat(
        ("userId", "movieId", "rating", "timestamp"),
        ",",
        "utf-8",
        True,
        "userId",
        "movieId",
        "timestamp",
        "rating",
    ),
    "movielens-1m": PlainFormat(
        ("UserID", "MovieID", "Rating", "Timestamp"),
        "::",
        "latin-1",
        False,
        "UserID",
        "MovieID",
        "Timestamp",
        "Rating",
    ),
    "movielens-100k": PlainFormat(
        ("user id", "item id", "rating", "timestamp"),
        "\t",
        "latin-1",
        False,
        "user id",
        "item id",
        "timestamp",
        "rating",
    ),
}


def _existing_parent(path: Path) -> Path:
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    return parent


@contextmanager
def duckdb_connection(
    out_dir: str | Path, memory_limit: str = MEMORY_LIMIT, threads: int | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB database in a temporary folder beside `out_dir` (created in the nearest
    folder that exists, so nothing else is made), spilling there past `memory_limit`."""
    work = Path(
        tempfile.mkdtemp(
            prefix=f".{Path(out_dir).name}.duckdb.", dir=_existing_parent(Path(out_dir))
        )
    )
    try:
        con = duckdb.connect(
            str(work / "prepare.duckdb"),
            config={
                "memory_limit": memory_limit,
                "temp_directory": str(work / "spill"),
                "threads": threads or len(os.sched_getaffinity(0)),
                "preserve_insertion_order": True,
            },
        )
        try:
            yield con
        finally:
            con.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- ingest


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _read_lines(con: duckdb.DuckDBPyConnection, path: Path, scan: TextScan) -> None:
    """Table `lines`: one row per physical line of `path` (NULL for a blank one), in file
    order, so that a row's rowid + 1 is its line number."""
    newline = {"\n": r"\n", "\r\n": r"\r\n", "\r": r"\r"}[scan.newline]
    # No separator, quote or comment: each line is one value, split below as the reader does.
    con.execute(
        f"""CREATE TABLE lines AS SELECT line FROM read_csv({_sql_string(str(path))},
            columns = {{'line': 'VARCHAR'}}, header = false, delim = '\\0', quote = '',
            escape = '', comment = '', skip = 0, auto_detect = false, strict_mode = false,
            new_line = '{newline}', encoding = '{scan.encoding}',
            max_line_size = {max(2 * scan.longest_line + 16, 2_097_152)})"""
    )
    read = con.execute("SELECT count(*) FROM lines").fetchall()[0][0]
    if read != scan.lines:
        raise RuntimeError(f"DuckDB read {read} lines of {path}, expected {scan.lines}")


def _fields(con: duckdb.DuckDBPyConnection, scan: TextScan, plain: PlainFormat) -> None:
    """Table `fields`: ord, line and the four columns as text, one row per data line."""

    def part(column: str) -> str:
        return f"parts[{scan.names.index(column) + 1}]"

    # string_split cuts at each separator from the left, as the reader's str.replace does.
    con.execute(
        f"""CREATE TABLE fields AS SELECT ord, ord + 1 AS line,
            {part(plain.user)} AS user_id, {part(plain.item)} AS item_id,
            {part(plain.timestamp)} AS timestamp, {part(plain.rating)} AS rating
        FROM (SELECT rowid AS ord, string_split(line, {_sql_string(plain.sep)}) AS parts
              FROM lines WHERE line IS NOT NULL AND rowid >= {int(plain.header)})"""
    )
    con.execute("DROP TABLE lines")


def _parse_unusual(
    con: duckdb.DuckDBPyConnection, path: Path, column: str, name: str, pattern: str
) -> str | None:
    """Parse the values of `fields.column` that are not `pattern` with the reader's `_numbers`
    (its errors, its lines), into table `parsed_{column}`; None when every value is plain."""
    query = f"""SELECT line, {column} AS value FROM fields
        WHERE NOT regexp_full_match({column}, '{pattern}') ORDER BY ord"""
    table = f"parsed_{column}"
    integer = column == "timestamp"
    kind = "BIGINT" if integer else "DOUBLE"
    created = False
    reading = con.cursor()  # its own result stream, while `con` writes what was parsed
    for batch in reading.sql(query).to_arrow_reader(ROW_GROUP_ROWS):
        lines = pd.Index(batch.column("line").to_numpy(), name="source_line")
        frame = pd.DataFrame({name: pd.Series(batch.column("value").to_pylist(), lines, str)})
        values = _numbers(frame, name, path, integer=integer)
        if not created:
            con.execute(f"CREATE TABLE {table} (line BIGINT, value {kind})")
            created = True
        parsed = pd.DataFrame({"line": frame.index.to_numpy(), "value": values.to_numpy()})
        con.register("parsed_frame", parsed)
        con.execute(f"INSERT INTO {table} SELECT * FROM parsed_frame")
        con.unregister("parsed_frame")
    return table if created else None


def _typed_interactions(con: duckdb.DuckDBPyConnection, path: Path, plain: PlainFormat) -> None:
    """Table `interactions` (ord, line, user_id, item_id, timestamp BIGINT, rating DOUBLE)
    from `fields`; a value that is not a number is the reader's error, in column order."""
    parsed = {
        column: _parse_unusual(con, path, column, name, pattern)
        for column, name, pattern in (
            ("timestamp", plain.timestamp, PLAIN_INTEGER),
            ("rating", plain.rating, PLAIN_DECIMAL),
        )
    }
    joins, values = [], {}
    for column, kind, pattern in (
        ("timestamp", "BIGINT", PLAIN_INTEGER),
        ("rating", "DOUBLE", PLAIN_DECIMAL),
    ):
        plain_value = (
            f"CASE WHEN regexp_full_match(f.{column}, '{pattern}') "
            f"THEN CAST(f.{column} AS {kind}) END"
        )
        if parsed[column]:
            joins.append(f"LEFT JOIN {parsed[column]} AS p_{column} ON p_{column}.line = f.line")
            values[column] = f"coalesce({plain_value}, p_{column}.value)"
        else:
            values[column] = plain_value
    con.execute(
        f"""CREATE TABLE interactions AS SELECT f.ord, f.line, f.user_id, f.item_id,
            {values["timestamp"]} AS timestamp, {values["rating"]} AS rating
        FROM fields AS f {" ".join(joins)} ORDER BY f.ord"""
    )
    con.execute("DROP TABLE fields")
    for table in filter(None, parsed.values()):
        con.execute(f"DROP TABLE {table}")


def _load_frame(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> None:
    """`frame` (indexed by source line) as DuckDB table `table`, with `ord` (its row position)
    and `line`."""
    data = frame.reset_index(drop=True)
    data.insert(0, "line", frame.index.to_numpy(dtype=np.int64))
    data.insert(0, "ord", np.arange(len(frame), dtype=np.int64))
    con.register("loaded_frame", data)
    con.execute(f"CREATE TABLE {table} AS SELECT * FROM loaded_frame")
    con.unregister("loaded_frame")


def load_interactions(con: duckdb.DuckDBPyConnection, source: DatasetFiles) -> str:
    """Table `interactions` from the source's interactions file; -> how it was read."""
    path, plain = source.interactions_file, NATIVE_FORMATS.get(source.format)
    if plain is not None:
        scan = scan_text(
            path, list(plain.columns), sep=plain.sep, encoding=plain.encoding, header=plain.header
        )
        if scan.newline != "mixed":
            _read_lines(con, path, scan)
            _fields(con, scan, plain)
            _typed_interactions(con, path, plain)
            return "duckdb"
    frame = FORMATS[source.format].read_interactions(path)
    _load_frame(con, "interactions", frame)
    return "lite_rec.ingest"


# ----------------------------------------------------------------------------- filter, split


def kcore_sql(con: duckdb.DuckDBPyConnection, k: int) -> int:
    """Table `kept` (ord, u: user code): the rows of `interactions` whose user and item both
    keep >= k rows, deleting the sparse ones round by round to the fixed point; -> rounds."""
    if k < 1:
        raise ValueError(f"k-core: expected k >= 1, got {k}")
    for column, code in (("user_id", "u"), ("item_id", "i")):
        con.execute(
            f"""CREATE TABLE codes_{code} AS SELECT {column}, row_number() OVER () AS {code}
            FROM (SELECT DISTINCT {column} FROM interactions)"""
        )
    con.execute(
        """CREATE TABLE kept AS SELECT r.ord, u, i
        FROM interactions AS r JOIN codes_u USING (user_id) JOIN codes_i USING (item_id)"""
    )
    con.execute("DROP TABLE codes_u; DROP TABLE codes_i")
    rounds = 0
    while True:
        rounds += 1
        deleted = con.execute(
            f"""DELETE FROM kept
            WHERE u IN (SELECT u FROM kept GROUP BY u HAVING count(*) < {k})
               OR i IN (SELECT i FROM kept GROUP BY i HAVING count(*) < {k})"""
        ).fetchall()[0][0]
        if not deleted:
            return rounds


def leave_one_out_sql(con: duckdb.DuckDBPyConnection) -> None:
    """Table `splits`: the kept rows of users with >= 3, with `first_ord` (where the user first
    appears), `ord` and `split` (0 train, 1 valid, 2 test: indices into SPLITS). Each user's
    last row by (timestamp, source order) is the test target, the one before it validation:
    ties in time keep the source order, never the item id."""
    con.execute(
        f"""CREATE TABLE splits AS
        SELECT r.ord, r.user_id, r.item_id, r.timestamp, r.rating,
            min(r.ord) OVER per_user AS first_ord,
            CAST(CASE row_number() OVER (PARTITION BY k.u ORDER BY r.timestamp DESC, r.ord DESC)
                WHEN 1 THEN 2 WHEN 2 THEN 1 ELSE 0 END AS TINYINT) AS split
        FROM kept AS k JOIN interactions AS r USING (ord)
        WINDOW per_user AS (PARTITION BY k.u)
        QUALIFY count(*) OVER per_user >= {MIN_INTERACTIONS}"""
    )


def stats_sql(con: duckdb.DuckDBPyConnection) -> dict[str, float | int]:
    """`lite_rec.stats.dataset_stats` of table `splits`, by the same arithmetic."""
    count, users, items = con.execute(
        "SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id) FROM splits"
    ).fetchall()[0]
    histogram = con.execute(
        "SELECT n, count(*) FROM (SELECT count(*) AS n FROM splits GROUP BY user_id) "
        "GROUP BY n ORDER BY n"
    ).fetchall()
    return {
        "users": users,
        "items": items,
        "interactions": count,
        "mean_sequence_length": round(count / users, 4) if users else 0.0,
        "median_sequence_length": _median(histogram) if users else 0.0,
        "density": round(count / (users * items), 6) if users and items else 0.0,
    }


def _median(histogram: list[tuple[int, int]]) -> float:
    """The median of values given as sorted (value, how many) pairs, as numpy computes it."""
    lengths = np.array([length for length, _ in histogram])
    ends = np.cumsum([users for _, users in histogram])
    total = int(ends[-1])

    def at(position: int) -> int:
        return int(lengths[np.searchsorted(ends, position, side="right")])

    middle = total // 2
    return float(at(middle)) if total % 2 else (at(middle - 1) + at(middle)) / 2


def items_in_sql(con: duckdb.DuckDBPyConnection, items: pd.DataFrame) -> pd.DataFrame:
    """`lite_rec.prepare.items_in`: the rows of `items` (DuckDB table `items`) that `splits`
    still uses, in item-table order."""
    used = con.sql(
        "SELECT ord FROM items WHERE item_id IN (SELECT item_id FROM splits) ORDER BY ord"
    ).fetchnumpy()["ord"]
    return items.iloc[used].reset_index(drop=True)


# ----------------------------------------------------------------------------- output


def interactions_schema() -> pa.Schema:
    """The Arrow schema (pandas metadata included) the pandas path writes interactions with."""
    frame = pd.DataFrame(
        {
            "user_id": pd.Series([], dtype=str),
            "item_id": pd.Series([], dtype=str),
            "timestamp": pd.Series([], dtype="int64"),
            "rating": pd.Series([], dtype="float64"),
            "split": pd.Categorical([], categories=SPLITS),
        }
    )
    return pa.Schema.from_pandas(frame, preserve_index=False)


def write_interactions(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Table `splits` in output order (users by first appearance, then time, then source
    order) to `path`, in row groups of ROW_GROUP_ROWS, one group in memory at a time."""
    schema = interactions_schema()
    dictionary = pa.array(SPLITS, type=pa.string())
    query = (
        "SELECT user_id, item_id, timestamp, rating, split FROM splits "
        "ORDER BY first_ord, timestamp, ord"
    )

    def typed(batch: pa.RecordBatch) -> pa.RecordBatch:
        split = pa.DictionaryArray.from_arrays(batch.column("split"), dictionary)
        columns = [batch.column(name) for name in ("user_id", "item_id", "timestamp", "rating")]
        return pa.RecordBatch.from_arrays([*columns, split], schema=schema.remove_metadata()).cast(
            schema
        )

    pending: list[pa.RecordBatch] = []
    held = written = 0
    with pq.ParquetWriter(path, schema) as writer:
        for batch in con.sql(query).to_arrow_reader(ROW_GROUP_ROWS):
            pending.append(typed(batch))
            held += batch.num_rows
            while held >= ROW_GROUP_ROWS:
                table = pa.Table.from_batches(pending, schema)
                writer.write_table(table.slice(0, ROW_GROUP_ROWS), row_group_size=ROW_GROUP_ROWS)
                rest = table.slice(ROW_GROUP_ROWS)
                pending, held, written = rest.to_batches(), rest.num_rows, written + 1
        if held or not written:  # an empty table is written as pandas writes one
            table = pa.Table.from_batches(pending, schema)
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)


# ----------------------------------------------------------------------------- the engine


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def prepare_duckdb(
    source: str | Path,
    out_dir: str | Path,
    fmt: str = "auto",
    k: int = 5,
    *,
    full_rows: int = FULL_VALIDATION_ROWS,
    memory_limit: str = MEMORY_LIMIT,
) -> Processed:
    """`lite_rec.prepare.prepare` in DuckDB: the same checks, messages and output files.
    Validation runs Great Expectations on tables of up to `full_rows` rows, SQL plus a sample
    above (`lite_rec.validation_duckdb`)."""
    check_output_dir(out_dir, "prepared", (*PREPARED_FILES, MARKER_FILE), [source])
    located = locate_dataset(source, fmt)
    with duckdb_connection(out_dir, memory_limit) as con:
        reader = load_interactions(con, located)
        items = FORMATS[located.format].read_items(located.items_file)
        _load_frame(con, "items", items)
        before = _count(con, "interactions")
        log.info(
            "read %s (%s, interactions by %s): %d interactions, %d items",
            source,
            located.format,
            reader,
            before,
            len(items),
        )
        validate_items_duckdb(con, items, located.items_file, full_rows)
        validate_interactions_duckdb(con, items, located.interactions_file, full_rows)
        rounds = kcore_sql(con, k)
        kept = _count(con, "kept")
        log.info("%d-core: %d of %d interactions kept after %d rounds", k, kept, before, rounds)
        if kept == 0:
            raise kcore_emptied(k, before, located.interactions_file)
        leave_one_out_sql(con)
        stats = stats_sql(con)
        catalog = items_in_sql(con, items)
        written = write_prepared(
            out_dir, (source,), catalog, stats, lambda path: write_interactions(con, path)
        )
    log.info("wrote %s: %s", out_dir, stats)
    return Processed(catalog, written / INTERACTIONS_FILE, stats)
