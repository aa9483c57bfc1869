"""The Great Expectations suites of `lite_rec.validation` on a table held in DuckDB.

Up to `full_rows` rows (FULL_VALIDATION_ROWS) the table is fetched and the suite runs on all of
it, exactly as in the pandas path. Above that, which is where fetching would cost gigabytes:
1. every expectation of the suite is evaluated in SQL on the whole table, with Great
   Expectations' semantics (nulls ignored except by the not-null checks, every row of a
   duplicated value unexpected, `mostly`), giving the same verdicts, counts, first offending
   lines and message as the whole-table run would;
2. then the suite itself runs on a systematic sample (every n-th row, SAMPLE_ROWS in all),
   the membership check against the item ids that the sample uses, and blocks too. A `mostly`
   expectation is judged by step 1 alone: on a sample it is only an estimate.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import duckdb
import pandas as pd

from lite_rec.validation import (
    ExpectationResult,
    Failure,
    ValidationReport,
    _column,
    _interactions_suite,
    _items_suite,
    validate_interactions,
    validate_items,
)

log = logging.getLogger(__name__)

FULL_VALIDATION_ROWS = 1_000_000
SAMPLE_ROWS = 100_000
DUCKDB_TYPES = {"str": "VARCHAR", "int64": "BIGINT"}
CERTAINLY_NOT_SPACE = "'!' AND '~'"  # printable ASCII other than the space


def _frame(con: duckdb.DuckDBPyConnection, query: str) -> pd.DataFrame:
    """The rows of `query` (with `ord` and `line`) as the reader's frame: text columns as str,
    indexed by `source_line`."""
    frame = con.sql(query).fetchdf()
    frame = frame.drop(columns="ord").set_index("line").rename_axis("source_line")
    for name, kind in zip(frame.columns, frame.dtypes, strict=True):
        if pd.api.types.is_object_dtype(kind) or isinstance(kind, pd.StringDtype):
            frame[name] = frame[name].astype(str)
    return frame


def _severity(expectation) -> str:
    severity = getattr(expectation.severity, "value", expectation.severity)
    return "warning" if str(severity) == "warning" else "critical"


class _Checker:
    """Evaluates one suite's expectations in SQL on table `table` (columns `ord`, `line` and
    the data columns)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str, known_items: str | None):
        self.con, self.table, self.known_items = con, table, known_items
        described = con.execute(f"DESCRIBE {table}").fetchall()
        self.types = {name: kind for name, kind, *_ in described}
        self.data_columns = [name for name in self.types if name not in ("ord", "line")]

    def _regex_misses(self, column: str, regex: str) -> str:
        """The offending rows of a regex expectation: SQL finds the values that could fail
        (an end that is not printable ASCII, a line break), then pandas decides them as Great
        Expectations does (`str.contains` on the str column)."""
        candidates = self.con.execute(
            f"""SELECT DISTINCT {column} FROM {self.table} WHERE {column} IS NOT NULL AND NOT (
                left({column}, 1) BETWEEN {CERTAINLY_NOT_SPACE}
                AND right({column}, 1) BETWEEN {CERTAINLY_NOT_SPACE}
                AND NOT contains({column}, chr(10)))"""
        ).fetchall()
        values = pd.Series([value for (value,) in candidates], dtype=str)
        misses = pd.DataFrame({"value": values[~values.astype(str).str.contains(regex)]})
        name = f"misses_{column}"
        self.con.register(f"{name}_frame", misses)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}_frame")
        self.con.unregister(f"{name}_frame")
        return f"SELECT ord FROM {self.table} WHERE {column} IN (SELECT value FROM {name})"

    def offending(self, expectation) -> str | None:
        """SQL selecting the `ord` of each unexpected row; None for a table-level check."""
        kind, kwargs, t = expectation.expectation_type, expectation.configuration.kwargs, self.table
        column = kwargs.get("column")
        if kind == "expect_column_values_to_not_be_null":
            return f"SELECT ord FROM {t} WHERE {column} IS NULL"
        if kind == "expect_column_values_to_match_regex":
            return self._regex_misses(column, kwargs["regex"])
        if kind == "expect_column_values_to_be_unique":
            return f"""SELECT ord FROM {t} WHERE {column} IN
                (SELECT {column} FROM {t} GROUP BY {column} HAVING count(*) > 1)"""
        if kind in (
            "expect_column_values_to_be_between",
            "expect_column_value_lengths_to_be_between",
        ):
            value = column if kind.endswith("values_to_be_between") else f"length({column})"
            bounds = [
                f"{value} {operator} {kwargs[key]!r}"
                for key, operator in (("min_value", "<"), ("max_value", ">"))
                if kwargs.get(key) is not None
            ]
            not_nan = f" AND NOT isnan({column})" if self.types[column] == "DOUBLE" else ""
            return f"""SELECT ord FROM {t}
                WHERE {column} IS NOT NULL{not_nan} AND ({" OR ".join(bounds)})"""
        if kind == "expect_compound_columns_to_be_unique":
            columns = ", ".join(kwargs["column_list"])
            return f"""SELECT ord FROM {t} SEMI JOIN
                (SELECT {columns} FROM {t} GROUP BY ALL HAVING count(*) > 1) USING ({columns})"""
        if kind == "expect_column_values_to_be_in_set":
            return f"""SELECT ord FROM {t} WHERE {column} IS NOT NULL
                AND {column} NOT IN (SELECT {column} FROM {self.known_items})"""
        return None

    def table_level(self, expectation) -> bool:
        kind, kwargs = expectation.expectation_type, expectation.configuration.kwargs
        if kind == "expect_column_to_exist":
            return kwargs["column"] in self.types
        if kind == "expect_column_values_to_be_of_type":
            return self.types.get(kwargs["column"]) == DUCKDB_TYPES[kwargs["type_"]]
        raise ValueError(f"no SQL translation of {kind}")

    def evaluate(self, expectation) -> tuple[ExpectationResult, Failure | None]:
        """The verdict, and the failure with its first five offending rows when it failed."""
        kind, description = expectation.expectation_type, expectation.description or ""
        column = _column(expectation.configuration)
        query = self.offending(expectation)
        unexpected, examples = 0, []
        if query is None:
            success = self.table_level(expectation)
        else:
            unexpected = self.con.execute(f"SELECT count(*) FROM ({query})").fetchall()[0][0]
            success = self._success(expectation, unexpected)
            if not success:
                examples = self.con.execute(
                    f"""SELECT line, {", ".join(self.data_columns)} FROM {self.table}
                    WHERE ord IN ({query}) ORDER BY ord LIMIT 5"""
                ).fetchall()
        severity = _severity(expectation)
        verdict = ExpectationResult(kind, column, description, success, unexpected, severity)
        if success:
            return verdict, None
        lines = [int(line) for line, *_ in examples]
        records = [dict(zip(self.data_columns, values, strict=True)) for _, *values in examples]
        return verdict, Failure(kind, column, unexpected, description, lines, records)

    def _success(self, expectation, unexpected: int) -> bool:
        """Great Expectations' rule: the share of the considered rows that pass is at least
        `mostly` (vacuously true when none is considered). The not-null check considers every
        row; the others only the non-null ones (NaN is null)."""
        if unexpected == 0:
            return True
        column = expectation.configuration.kwargs.get("column")
        where = ""
        if column and expectation.expectation_type != "expect_column_values_to_not_be_null":
            where = f" WHERE {column} IS NOT NULL"
            if self.types[column] == "DOUBLE":
                where += f" AND NOT isnan({column})"
        considered = self.con.execute(f"SELECT count(*) FROM {self.table}{where}").fetchall()[0][0]
        if considered == 0:
            return True
        return (float(considered) - float(unexpected)) / float(considered) >= _mostly(expectation)


def _in_validation_order(suite: list) -> list:
    """`suite` in the order Great Expectations runs and reports it: grouped by column, the
    columns (and the group of expectations without one) in order of first appearance."""
    groups: dict[str | None, list] = {}
    for expectation in suite:
        column = expectation.configuration.kwargs.get("column")
        groups.setdefault(column if isinstance(column, str) else None, []).append(expectation)
    return [expectation for group in groups.values() for expectation in group]


def _sql_report(
    con: duckdb.DuckDBPyConnection, name: str, table: str, suite, known_items: str | None
) -> ValidationReport:
    checker = _Checker(con, table, known_items)
    rows = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    verdicts, failures, warnings = [], [], []
    for expectation in _in_validation_order(suite):
        verdict, failure = checker.evaluate(expectation)
        verdicts.append(verdict)
        if failure is not None:
            (warnings if verdict.severity == "warning" else failures).append(failure)
    for warning in warnings:
        log.warning("%s: %s", name, warning.describe())
    return ValidationReport(name, verdicts, failures, warnings, rows)


def _mostly(expectation) -> float:
    mostly = getattr(expectation, "mostly", None)
    return 1.0 if mostly is None else float(mostly)


def _sample_report(
    con: duckdb.DuckDBPyConnection, table: str, rows: int, known_items: str | None
) -> ValidationReport:
    """The suite on every n-th row of `table`; `mostly` expectations do not fail it."""
    step = max(1, math.ceil(rows / SAMPLE_ROWS))
    query = f"SELECT * FROM {table} WHERE ord % {step} = 0 ORDER BY ord"
    sample = _frame(con, query)
    if known_items is None:
        report, suite = validate_items(sample), _items_suite()
    else:
        used = con.sql(
            f"SELECT DISTINCT item_id FROM ({query}) SEMI JOIN {known_items} USING (item_id)"
        ).fetchdf()
        report = validate_interactions(sample, used.astype(str))
        suite = _interactions_suite(None)
    estimates = {(e.expectation_type, _column(e.configuration)) for e in suite if _mostly(e) < 1}
    report.failures = [f for f in report.failures if (f.expectation, f.column) not in estimates]
    return report


def _validate_large(
    con: duckdb.DuckDBPyConnection, table: str, file: str | Path, known_items: str | None
) -> ValidationReport:
    """SQL on the whole table, then the suite on a sample; either raises on a failure."""
    name = "items" if known_items is None else "interactions"
    suite = _items_suite() if known_items is None else _interactions_suite(pd.Series([], dtype=str))
    report = _sql_report(con, name, table, suite, known_items)
    report.raise_for_failures(file)
    sample = _sample_report(con, table, report.rows, known_items)
    sample.raise_for_failures(file)
    log.info(
        "%s: %d expectations checked in SQL on all %d rows, then by Great Expectations on a "
        "sample of %d",
        name,
        len(suite),
        report.rows,
        sample.rows,
    )
    return report


def validate_items_duckdb(
    con: duckdb.DuckDBPyConnection,
    items: pd.DataFrame,
    file: str | Path,
    full_rows: int = FULL_VALIDATION_ROWS,
) -> ValidationReport:
    """The items suite on `items` (also DuckDB table `items`); `InputError` naming `file`."""
    if len(items) > full_rows:
        return _validate_large(con, "items", file, None)
    report = validate_items(items)
    report.raise_for_failures(file)
    return report


def validate_interactions_duckdb(
    con: duckdb.DuckDBPyConnection,
    items: pd.DataFrame,
    file: str | Path,
    full_rows: int = FULL_VALIDATION_ROWS,
) -> ValidationReport:
    """The interactions suite on DuckDB table `interactions`, its item ids checked against
    `items` (also DuckDB table `items`); `InputError` naming `file`."""
    rows = con.execute("SELECT count(*) FROM interactions").fetchall()[0][0]
    if rows > full_rows:
        return _validate_large(con, "interactions", file, "items")
    report = validate_interactions(_frame(con, "SELECT * FROM interactions ORDER BY ord"), items)
    report.raise_for_failures(file)
    return report
