"""Errors a person can act on: each is one line naming the file, the line or row, the column
and what was expected."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input data. Raised before anything downstream is written."""

    def __init__(
        self,
        file: str | Path | None,
        expected: str,
        *,
        line: int | None = None,
        row: int | None = None,
        column: str | None = None,
        rows: list | None = None,
    ):
        self.file = str(file) if file is not None else None
        self.line = line
        self.row = row
        self.column = column
        self.expected = expected
        self.rows = rows or []
        where = self.file or "<input>"
        if line is not None:
            where += f", line {line}"
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        message = f"{where}: {expected}"
        if self.rows:
            message += "; offending rows: " + "; ".join(str(row) for row in self.rows[:5])
        super().__init__(message)
