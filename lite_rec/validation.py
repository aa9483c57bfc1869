"""Great Expectations suites for the canonical tables. A failed expectation stops the pipeline
before anything downstream is written, naming the expectation, the column and offending rows."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lite_rec.errors import InputError

log = logging.getLogger(__name__)

RATING_RANGE = (0.0, 5.0)
MAX_TIMESTAMP_SLACK = 86_400  # a timestamp up to a day in the future is clock skew, not data
ID_PATTERN = r"^\S(?:.*\S)?$"  # not blank, no surrounding spaces: " 1" and "1" would be two users


@dataclass
class Failure:
    expectation: str
    column: str
    unexpected_count: int
    expected: str = ""  # the expectation in words
    lines: list[int] = field(default_factory=list)  # source lines of a few offending rows
    rows: list[dict] = field(default_factory=list)

    def found(self) -> str:
        """The first offending value of the column, or "" when no row is named."""
        if not self.rows or self.column not in self.rows[0]:
            return ""
        return f", found {self.rows[0][self.column]!r}"

    def describe(self) -> str:
        where = f"lines {', '.join(map(str, self.lines))}" if self.lines else "table"
        count = self.unexpected_count
        return (
            f"column {self.column!r}: expected {self.expected}{self.found()} "
            f"({self.expectation} failed for {count} rows, {where})"
        )


@dataclass
class ExpectationResult:
    """One expectation of a suite as it ran: what it asked of which column, and the verdict."""

    expectation: str
    column: str
    expected: str  # the expectation in words
    success: bool
    unexpected_count: int
    severity: str  # "critical" stops the pipeline, "warning" is reported


@dataclass
class ValidationReport:
    table: str
    results: list[ExpectationResult]  # every expectation that ran, in suite order
    failures: list[Failure]
    warnings: list[Failure] = field(default_factory=list)
    rows: int = 0

    @property
    def success(self) -> bool:
        return not self.failures

    def raise_for_failures(self, file: str | Path | None) -> None:
        """One line naming the file, the first offending line, the column, what was expected
        and what was found; further failed expectations follow on the same line."""
        if self.failures:
            first = self.failures[0]
            others = "".join(f"; also {f.describe()}" for f in self.failures[1:])
            raise InputError(
                file,
                f"expected {first.expected}{first.found()} ({first.expectation} failed for "
                f"{first.unexpected_count} of {self.rows} rows of table {self.table}){others}",
                line=first.lines[0] if first.lines else None,
                column=first.column,
                rows=[
                    f"line {line}: {row}"
                    for line, row in zip(first.lines, first.rows, strict=False)
                ],
            )


def _items_suite():
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnToExist(column="item_id", description="a column item_id"),
        gxe.ExpectColumnToExist(column="title", description="a column title"),
        gxe.ExpectColumnValuesToNotBeNull(column="item_id", description="an item id"),
        gxe.ExpectColumnValuesToBeOfType(
            column="item_id", type_="str", description="item ids as strings"
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="item_id",
            regex=ID_PATTERN,
            description="a non-blank item id without surrounding spaces",
        ),
        gxe.ExpectColumnValuesToBeUnique(column="item_id", description="each item id once"),
        gxe.ExpectColumnValuesToNotBeNull(column="title", description="a title"),
        # A few blank titles are real (Amazon Beauty has one): each is a warning, but a
        # mostly-blank column means a broken reader or file and stops the pipeline.
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="title",
            min_value=1,
            mostly=0.99,
            description="a non-blank title for at least 99% of items",
        ),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="title", min_value=1, severity="warning", description="a non-blank title"
        ),
    ]


def _interactions_suite(known_items: pd.Series | None):
    import great_expectations.expectations as gxe

    latest = int(time.time()) + MAX_TIMESTAMP_SLACK
    low, high = RATING_RANGE
    expectations = [
        *(
            gxe.ExpectColumnToExist(column=c, description=f"a column {c}")
            for c in ("user_id", "item_id", "timestamp", "rating")
        ),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id", description="a user id"),
        gxe.ExpectColumnValuesToNotBeNull(column="item_id", description="an item id"),
        gxe.ExpectColumnValuesToNotBeNull(column="timestamp", description="a timestamp"),
        gxe.ExpectColumnValuesToBeOfType(
            column="user_id", type_="str", description="user ids as strings"
        ),
        gxe.ExpectColumnValuesToBeOfType(
            column="item_id", type_="str", description="item ids as strings"
        ),
        gxe.ExpectColumnValuesToBeOfType(
            column="timestamp", type_="int64", description="int64 timestamps"
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="user_id",
            regex=ID_PATTERN,
            description="a non-blank user id without surrounding spaces",
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="item_id",
            regex=ID_PATTERN,
            description="a non-blank item id without surrounding spaces",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="timestamp",
            min_value=0,
            max_value=latest,
            description=f"a Unix time in seconds from 0 to {latest} (a day from now)",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="rating",
            min_value=low,
            max_value=high,
            description=f"a rating from {low} to {high}",
        ),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["user_id", "item_id", "timestamp"],
            description="one interaction per user, item and timestamp",
        ),
    ]
    if known_items is not None:
        expectations.append(
            gxe.ExpectColumnValuesToBeInSet(
                column="item_id",
                value_set=list(known_items),
                description="an item id listed in the item file",
            )
        )
    return expectations


def _validate(table: str, frame: pd.DataFrame, known_items: pd.Series | None) -> ValidationReport:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if len(frame) == 0:
        empty = Failure("expect_table_row_count_to_be_positive", "*", 0, "some rows")
        verdict = ExpectationResult(empty.expectation, "*", "some rows", False, 0, "critical")
        return ValidationReport(table, [verdict], [empty])
    # The source line travels as a column so messages can name it; GE names offending rows
    # by their position, since a source line can hold several rows (the sequence format).
    data = frame.rename_axis("source_line").reset_index()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("pandas")
        .add_dataframe_asset(table)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": data})
    )
    suite = _items_suite() if table == "items" else _interactions_suite(known_items)
    result = batch.validate(
        gx.ExpectationSuite(name=table, expectations=suite),
        result_format={"result_format": "COMPLETE", "partial_unexpected_count": 5},
    )
    failed = [r for r in result.results if not r.success]
    critical = [_failure(r, data) for r in failed if r.expectation_config.severity != "warning"]
    warnings = [_failure(r, data) for r in failed if r.expectation_config.severity == "warning"]
    for warning in warnings:
        log.warning("%s: %s", table, warning.describe())
    verdicts = [_verdict(r) for r in result.results]
    return ValidationReport(table, verdicts, critical, warnings, len(data))


def _column(config) -> str:
    """The column (or columns, comma-separated) an expectation is about; "*" for the table."""
    kwargs = config.kwargs
    return kwargs.get("column") or ",".join(kwargs.get("column_list", [])) or "*"


def _verdict(result) -> ExpectationResult:
    """What an expectation asked and found, passed or not."""
    config = result.expectation_config
    return ExpectationResult(
        config.type,
        _column(config),
        config.description or config.type,
        bool(result.success),
        int((result.result or {}).get("unexpected_count") or 0),
        "warning" if config.severity == "warning" else "critical",
    )


def _failure(result, data: pd.DataFrame) -> Failure:
    config = result.expectation_config
    column = _column(config)
    details = result.result or {}
    positions = [int(position) for position in (details.get("unexpected_index_list") or [])[:5]]
    offending = data.iloc[positions]
    lines = [int(line) for line in offending["source_line"]]
    rows = offending.drop(columns=["source_line", "split"], errors="ignore").to_dict("records")
    count = int(details.get("unexpected_count") or 0)
    return Failure(config.type, column, count, config.description or config.type, lines, rows)


def validate_items(items: pd.DataFrame) -> ValidationReport:
    """The items suite: ids present, unique, strings; titles present and non-empty."""
    return _validate("items", items, None)


def validate_interactions(
    interactions: pd.DataFrame, items: pd.DataFrame | None = None
) -> ValidationReport:
    """The interactions suite; with `items`, also every interacted item is in the item table."""
    known = items["item_id"] if items is not None else None
    return _validate("interactions", interactions, known)
