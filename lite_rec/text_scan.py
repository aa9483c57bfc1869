"""One streaming pass over a delimited text file that makes the checks `lite_rec.ingest`'s reader
makes on the whole file in memory (`_read_bytes`, `_read_source`, `_read_table`), with the same
messages, so that DuckDB can then read the file itself.

The pass holds one block of lines at a time. It finds the encoding (UTF-8, or latin-1 for a
latin-1 format whose bytes are not valid UTF-8), the line endings and the header, and refuses
what the reader refuses: an empty or UTF-16 file, a carriage return without a line feed among
lines ending in one, a NUL byte, bytes that are not the encoding's, a header without the
columns, a line with the wrong number of fields, a file with no rows. A file that breaks several
rules is refused for the one the reader names first.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lite_rec.errors import InputError
from lite_rec.ingest.readers import UTF8_BOM, UTF16_BOMS, _field_error, _header

BLOCK_BYTES = 32 << 20  # read this much at a time, then cut after the last line end
LONE_CR = re.compile(rb"\r(?!\n)")


@dataclass
class TextScan:
    """How the file is written, for DuckDB to read it line for line as the reader does."""

    names: list[str]  # the file's columns, in order
    encoding: str  # "utf-8" or "latin-1"
    newline: str  # "\n", "\r\n" or "\r"; "mixed" when lines end in both "\n" and "\r\n"
    lines: int  # physical lines, blank ones included
    rows: int  # data rows: lines that are neither blank nor the header
    longest_line: int  # bytes


@dataclass
class _Findings:
    """The first offence of each kind (by line) and the counts, accumulated block by block."""

    content: bool = False  # any byte that is not whitespace
    lone_cr: int | None = None
    nul: int | None = None
    decode: tuple[int, bytes] | None = None  # line, the bytes that are not UTF-8
    fields: tuple[int, int] | None = None  # line, fields found
    ascii: bool = True
    crlf: int = 0  # lines ending in "\r\n"
    lf: int = 0  # lines ending in "\n" (with or without "\r" before it)
    blank: int = 0
    lines: int = 0
    longest: int = 0


def _blocks(path: Path, newline: bytes):
    """The file in blocks of whole lines (the last one: up to the end of the file)."""
    carry = b""
    with open(path, "rb") as file:
        while block := file.read(BLOCK_BYTES):
            block = carry + block
            cut = block.rfind(newline) + 1
            carry = block[cut:]
            if cut:
                yield block[:cut]
    if carry:
        yield carry


def _has_line_feed(path: Path) -> bool:
    with open(path, "rb") as file:
        while block := file.read(BLOCK_BYTES):
            if b"\n" in block:
                return True
    return False


def _line_bounds(codes: np.ndarray, complete: bool) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the lines in `codes`; the last one ends at the end when not
    `complete` (no line end after it)."""
    ends = np.flatnonzero(codes == ord("\n"))
    if not complete:
        ends = np.append(ends, len(codes))
    return np.concatenate([[0], ends[:-1] + 1]).astype(ends.dtype), ends


def _field_counts(block: bytes, sep: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Per line of `block`: fields (separators + 1) and whether it is blank, counting on the
    bytes as the reader does (a separator of several characters becomes one first)."""
    one_char = sep if len(sep) == 1 else b"\x1f"
    if one_char != sep:
        block = block.replace(sep, one_char)
    codes = np.frombuffer(block, dtype=np.uint8)
    starts, ends = _line_bounds(codes, block.endswith(b"\n"))
    separators = np.flatnonzero(codes == ord(one_char))
    fields = np.searchsorted(separators, ends) - np.searchsorted(separators, starts) + 1
    return fields, ends == starts


def _scan_block(block: bytes, found: _Findings, sep: bytes, n_fields: int | None) -> None:
    """Record what `block` (whole lines, numbered from `found.lines + 1`) offends."""
    first = found.lines + 1
    found.content = found.content or bool(block.strip())
    if found.lone_cr is None and (lone := LONE_CR.search(block)):
        found.lone_cr = first + block.count(b"\n", 0, lone.start())
    found.lf += block.count(b"\n")
    if b"\r" in block:
        found.crlf += block.count(b"\r\n")
        block = block.replace(b"\r\n", b"\n")
    if found.nul is None and (nul := block.find(b"\x00")) >= 0:
        found.nul = first + block.count(b"\n", 0, nul)
    if not block.isascii():
        found.ascii = False
        try:
            block.decode("utf-8")
        except UnicodeDecodeError as err:
            if found.decode is None:
                found.decode = (
                    first + block.count(b"\n", 0, err.start),
                    block[err.start : err.end],
                )
    fields, blank = _field_counts(block, sep)
    if n_fields is not None and found.fields is None:
        bad = np.flatnonzero(~blank & (fields != n_fields))
        if len(bad):
            found.fields = (first + int(bad[0]), int(fields[bad[0]]))
    starts, ends = _line_bounds(np.frombuffer(block, dtype=np.uint8), block.endswith(b"\n"))
    found.longest = max(found.longest, int((ends - starts).max(initial=0)))
    found.blank += int(blank.sum())
    found.lines += len(blank)


def _first_line(path: Path, newline: bytes) -> bytes:
    """The file's first line as the reader sees it (no byte-order mark, no line end)."""
    head = next(_blocks(path, newline), b"").removeprefix(UTF8_BOM)
    return head.split(newline, 1)[0].removesuffix(b"\r")


def _provisional_fields(first_line: bytes, sep: str) -> int | None:
    """How many columns the header names, before the encoding is known: separators and
    quotes are ASCII, so latin-1 (which decodes any byte) counts them as UTF-8 would."""
    text = first_line.decode("latin-1")
    try:
        names = next(csv.reader([text], delimiter=sep)) if len(sep) == 1 else text.split(sep)
    except (csv.Error, StopIteration):
        return None
    return len(names)


def scan_text(path: Path, columns: list[str], *, sep: str, encoding: str, header: bool) -> TextScan:
    """Check `path` as `ingest.readers._read_table` would read it (unquoted fields); raise the
    reader's `InputError` for what it refuses."""
    with open(path, "rb") as file:
        start = file.read(len(UTF8_BOM))
    if start.startswith(UTF16_BOMS):
        raise InputError(path, "expected UTF-8 or latin-1 text, found a UTF-16 byte-order mark")
    has_bom = start == UTF8_BOM
    newline = b"\n" if _has_line_feed(path) else b"\r"
    first_line = _first_line(path, newline)
    n_fields = _provisional_fields(first_line, sep) if header else len(columns)
    found = _Findings()
    for number, block in enumerate(_blocks(path, newline)):
        if number == 0 and has_bom:
            block = block.removeprefix(UTF8_BOM)
        if newline == b"\r":
            block = block.replace(b"\r", b"\n")
        _scan_block(block, found, sep.encode(), n_fields)
    if not found.content:
        raise InputError(path, "file is empty")
    if found.lone_cr is not None:
        raise InputError(
            path,
            "expected one kind of line ending, found a carriage return without a line feed "
            "among lines ending in a line feed",
            line=found.lone_cr,
        )
    if found.nul is not None:
        raise InputError(path, "expected text, found a NUL byte (binary data)", line=found.nul)
    if has_bom:
        encoding = "utf-8"
    elif encoding == "latin-1" and not found.ascii:
        encoding = "utf-8" if found.decode is None else "latin-1"
    if encoding == "utf-8" and found.decode is not None:
        line, bad = found.decode
        raise InputError(path, f"expected utf-8 text, found byte(s) {bad!r}", line=line)
    names = _header(path, first_line.decode(encoding), sep, columns) if header else columns
    if found.fields is not None:
        raise _field_error(path, found.fields[0], sep, len(names), found.fields[1])
    rows = found.lines - found.blank - int(header)
    if rows == 0:
        raise InputError(path, "file is empty apart from its header")
    if newline == b"\r":
        ending = "\r"
    elif found.crlf == 0:
        ending = "\n"
    else:
        ending = "\r\n" if found.crlf == found.lf else "mixed"
    return TextScan(names, encoding, ending, found.lines, rows, found.longest)
