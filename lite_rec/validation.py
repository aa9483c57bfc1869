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


@dataclass
class Failure:
    expectation: str
    column: str
    unexpected_count: int
    lines: list[int] = field(default_factory=list)  # source lines of a few offending rows
    rows: list[dict] = field(default_factory=list)

    def describe(self) -> str:
        where = f"lines {', '.join(map(str, self.lines))}" if self.lines else "table"
        count = self.unexpected_count
        return f"{self.expectation} on column {self.column!r} failed for {count} rows ({where})"


@dataclass
class ValidationReport:
    table: str
    evaluated: int
    failures: list[Failure]
    warnings: list[Failure] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failures

    def metadata(self) -> dict[str, object]:
        return {
            "expectations": self.evaluated,
            "failed": len(self.failures),
            "failures": [f.describe() for f in self.failures],
            "warnings": [f.describe() for f in self.warnings],
        }

    def raise_for_failures(self, file: str | Path | None) -> None:
        if self.failures:
            first = self.failures[0]
            others = "".join(f"\n  also: {f.describe()}" for f in self.failures[1:])
            raise InputError(
                file,
                f"expectation {first.expectation} failed for {first.unexpected_count} rows "
                f"of table {self.table}{others}",
                line=first.lines[0] if first.lines else None,
                column=first.column,
                rows=[
                    f"line {line}: {row}"
                    for line, row in zip(first.lines, first.rows, strict=False)
                ],
            )


def _suite(table: str, interactions_items: pd.Series | None):
    import great_expectations.expectations as gxe

    if table == "items":
        return [
            gxe.ExpectColumnToExist(column="item_id"),
            gxe.ExpectColumnToExist(column="title"),
            gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
            gxe.ExpectColumnValuesToBeOfType(column="item_id", type_="str"),
            gxe.ExpectColumnValuesToBeUnique(column="item_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="title"),
            # A few blank titles are real (Amazon Beauty has one): each is a warning, but a
            # mostly-blank column means a broken reader or file and stops the pipeline.
            gxe.ExpectColumnValueLengthsToBeBetween(column="title", min_value=1, mostly=0.99),
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="title", min_value=1, severity="warning"
            ),
        ]
    latest = int(time.time()) + MAX_TIMESTAMP_SLACK
    expectations = [
        *(gxe.ExpectColumnToExist(column=c) for c in ("user_id", "item_id", "timestamp", "rating")),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="timestamp"),
        gxe.ExpectColumnValuesToBeOfType(column="user_id", type_="str"),
        gxe.ExpectColumnValuesToBeOfType(column="item_id", type_="str"),
        gxe.ExpectColumnValuesToBeOfType(column="timestamp", type_="int64"),
        gxe.ExpectColumnValuesToBeBetween(column="timestamp", min_value=0, max_value=latest),
        gxe.ExpectColumnValuesToBeBetween(
            column="rating", min_value=RATING_RANGE[0], max_value=RATING_RANGE[1]
        ),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id", "timestamp"]),
    ]
    if interactions_items is not None:
        expectations.append(
            gxe.ExpectColumnValuesToBeInSet(column="item_id", value_set=list(interactions_items))
        )
    return expectations


def _validate(table: str, frame: pd.DataFrame, known_items: pd.Series | None) -> ValidationReport:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if len(frame) == 0:
        return ValidationReport(
            table, 1, [Failure("expect_table_row_count_to_be_positive", "*", 0)]
        )
    # The source line travels as a column so GE can name the offending rows by it.
    data = frame.rename_axis("source_line").reset_index()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("pandas")
        .add_dataframe_asset(table)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": data})
    )
    suite = gx.ExpectationSuite(name=table, expectations=_suite(table, known_items))
    result = batch.validate(
        suite,
        result_format={
            "result_format": "COMPLETE",
            "unexpected_index_column_names": ["source_line"],
            "partial_unexpected_count": 5,
        },
    )
    failed = [r for r in result.results if not r.success]
    critical = [_failure(r, data) for r in failed if r.expectation_config.severity != "warning"]
    warnings = [_failure(r, data) for r in failed if r.expectation_config.severity == "warning"]
    for warning in warnings:
        log.warning("%s: %s", table, warning.describe())
    return ValidationReport(table, len(result.results), critical, warnings)


def _failure(result, data: pd.DataFrame) -> Failure:
    config = result.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column") or ",".join(kwargs.get("column_list", [])) or "*"
    details = result.result or {}
    lines = [
        int(entry["source_line"]) for entry in (details.get("unexpected_index_list") or [])[:5]
    ]
    by_line = data.set_index("source_line")
    rows = [by_line.loc[line].drop(labels="split", errors="ignore").to_dict() for line in lines]
    count = int(details.get("unexpected_count") or 0)
    return Failure(config.type, column, count, lines, rows)


def validate_items(items: pd.DataFrame) -> ValidationReport:
    """The items suite: ids present, unique, strings; titles present and non-empty."""
    return _validate("items", items, None)


def validate_interactions(
    interactions: pd.DataFrame, items: pd.DataFrame | None = None
) -> ValidationReport:
    """The interactions suite; with `items`, also every interacted item is in the item table."""
    known = items["item_id"] if items is not None else None
    return _validate("interactions", interactions, known)
