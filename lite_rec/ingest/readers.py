"""Read a recommendation dataset in its published layout into one canonical schema.

`interactions`: `user_id`, `item_id` (raw ids, str), `timestamp` (int64), `rating` (float64,
NaN when the source has none), in source file order. `items`: `item_id`, `title` and the
source's other text fields (str). Both are indexed by `source_line`, the 1-based line of the
row in its file, so later checks can point a person at the line to fix. That index is not
unique in the sequence format, where one line holds a user's whole history: code that selects
rows does so by position, never by this label.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pandas as pd

from lite_rec.errors import InputError

# MovieLens 100K genre order, used when u.genre is not beside u.item.
ML100K_GENRES = (
    "unknown, Action, Adventure, Animation, Children's, Comedy, Crime, Documentary, Drama, "
    "Fantasy, Film-Noir, Horror, Musical, Mystery, Romance, Sci-Fi, Thriller, War, Western"
).split(", ")
ML100K_ITEM_COLUMNS = ["movie id", "movie title", "release date", "video release date", "IMDb URL"]


@dataclass
class RawDataset:
    """One dataset as read from its files, before any filtering."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    format: str
    interactions_file: Path
    items_file: Path


@dataclass(frozen=True)
class Format:
    """Where a layout keeps its files (glob patterns, preferred first) and how to read them."""

    interactions: tuple[str, ...]
    items: tuple[str, ...]
    read_interactions: Callable[[Path], pd.DataFrame]
    read_items: Callable[[Path], pd.DataFrame]


@dataclass
class DatasetFiles:
    """Where a dataset's two files are and in which format."""

    format: str
    interactions_file: Path
    items_file: Path


def locate_dataset(source: str | Path, format: str = "auto") -> DatasetFiles:
    """The files of a dataset directory (or one of its files) in `format`, detected when
    "auto"; both readers of the project (`read_dataset`, `lite_rec.prepare_duckdb`) read these."""
    source = Path(source)
    if not source.exists():
        raise InputError(source, "expected a dataset directory or file; nothing is there")
    directory = source if source.is_dir() else source.parent
    name = _detect_format(directory) if format == "auto" else format
    if name not in FORMATS:
        raise InputError(
            source, f"unknown format {format!r}; expected auto or one of {list(FORMATS)}"
        )
    spec = FORMATS[name]
    items_file = _find(directory, spec.items, source, name, exclude=())
    interactions_file = _find(directory, spec.interactions, source, name, exclude=spec.items)
    return DatasetFiles(name, interactions_file, items_file)


def read_dataset(source: str | Path, format: str = "auto") -> RawDataset:
    """Read a dataset directory (or one of its files) in `format`, detected when "auto"."""
    files = locate_dataset(source, format)
    spec = FORMATS[files.format]
    return RawDataset(
        interactions=spec.read_interactions(files.interactions_file),
        items=spec.read_items(files.items_file),
        format=files.format,
        interactions_file=files.interactions_file,
        items_file=files.items_file,
    )


def _matches(directory: Path, patterns: tuple[str, ...], exclude: tuple[str, ...]) -> list[Path]:
    excluded = {path for pattern in exclude for path in directory.glob(pattern)}
    return sorted({p for pattern in patterns for p in directory.glob(pattern)} - excluded)


def _find(
    directory: Path, patterns: tuple[str, ...], source: Path, name: str, exclude: tuple[str, ...]
) -> Path:
    """The file matching `patterns`: `source` itself when it matches, else the only match."""
    found = _matches(directory, patterns, exclude)
    if source in found:
        return source
    if not found:
        expected = " or ".join(patterns)
        raise InputError(directory, f"expected {expected} in {directory} ({name} format)")
    if len(found) > 1:
        names = ", ".join(path.name for path in found)
        raise InputError(directory, f"expected one {name} file, found {names}; pass its path")
    return found[0]


def _detect_format(directory: Path) -> str:
    """The one format with both files present, else the one with either (so that reading
    names the missing file); Amazon 2014 and 2018 differ in their meta syntax."""
    complete = [
        name
        for name, spec in FORMATS.items()
        if _matches(directory, spec.interactions, exclude=spec.items)
        and _matches(directory, spec.items, exclude=())
    ]
    found = complete or [
        name
        for name, spec in FORMATS.items()
        if _matches(directory, spec.interactions + spec.items, exclude=())
    ]
    if set(found) >= {"amazon-2014", "amazon-2018"}:
        found = [name for name in found if name != "amazon-2014"]
        found[found.index("amazon-2018")] = _amazon_release(directory)
    if len(found) == 1:
        return found[0]
    if found:
        raise InputError(directory, f"files of several formats {found}; pass format=")
    looked_for = "; ".join(
        f"{' or '.join(spec.interactions)} + {' or '.join(spec.items)} ({name})"
        for name, spec in FORMATS.items()
    )
    raise InputError(directory, f"unrecognised dataset: looked for {looked_for}")


def _amazon_release(directory: Path) -> str:
    """2018 meta files are strict JSON; 2014 ones are Python literals (single quotes)."""
    meta = _matches(directory, FORMATS["amazon-2018"].items, exclude=())
    if not meta:
        return "amazon-2018"  # either release: reading stops at the missing meta file
    opener = gzip.open if meta[0].suffix == ".gz" else open
    try:
        with opener(meta[0], "rt", encoding="utf-8", errors="replace") as file:
            first = file.readline().removeprefix("\ufeff")
    except (OSError, EOFError) as err:
        raise InputError(meta[0], f"expected a gzip-compressed file ({err})") from None
    try:
        json.loads(first)
    except ValueError:
        return "amazon-2014"
    return "amazon-2018"


# ----------------------------------------------------------------------------- raw text


UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped for .gz, with its line endings made "\\n": "\\r\\n" and
    old Mac "\\r"-only files are read alike. An empty or binary file, or one mixing
    "\\r"-only endings with others, is an error: which "\\r" ends a line would be a guess."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise InputError(path, f"expected a gzip-compressed file ({err})") from None
    if data.startswith(UTF16_BOMS):
        raise InputError(path, "expected UTF-8 or latin-1 text, found a UTF-16 byte-order mark")
    if not data.removeprefix(UTF8_BOM).strip():
        raise InputError(path, "file is empty")
    if b"\n" not in data:
        data = data.replace(b"\r", b"\n")
    lone = re.search(rb"\r(?!\n)", data)
    if lone:
        raise InputError(
            path,
            "expected one kind of line ending, found a carriage return without a line feed "
            "among lines ending in a line feed",
            line=data.count(b"\n", 0, lone.start()) + 1,
        )
    data = data.replace(b"\r\n", b"\n")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise InputError(path, "expected text, found a NUL byte (binary data)", line=line)
    return data


def _read_source(path: Path, encoding: str) -> tuple[bytes, str]:
    """The file's bytes (`_read_bytes`, less a UTF-8 byte-order mark) and its text: UTF-8
    after such a mark or, for a latin-1 format, when the bytes are valid UTF-8 (reading those
    as latin-1 would garble every accent); else `encoding`."""
    data = _read_bytes(path)
    if data.startswith(UTF8_BOM):
        data, encoding = data.removeprefix(UTF8_BOM), "utf-8"
    elif encoding == "latin-1" and not data.isascii():
        try:
            return data, data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    try:
        return data, data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        bad = data[err.start : err.end]
        raise InputError(
            path, f"expected {encoding} text, found byte(s) {bad!r}", line=line
        ) from None


def _read_text(path: Path, encoding: str) -> str:
    return _read_source(path, encoding)[1]


def _lines(text: str) -> list[str]:
    """Lines split on "\\n" only (str.splitlines also splits on form feeds and the like)."""
    lines = text.split("\n")
    return lines[:-1] if text.endswith("\n") else lines


def _read_table(
    path: Path,
    columns: list[str],
    *,
    sep: str,
    encoding: str,
    header: bool,
    quoted: bool = False,
) -> pd.DataFrame:
    """`columns` of a delimited file as str, index `source_line`; blank lines are skipped.
    With `header` the file's first line names its columns and `columns` must be among them;
    without, `columns` are all of the file's fields in order."""
    data, text = _read_source(path, encoding)
    names = _header(path, text, sep, columns) if header else columns
    if quoted:
        frame = _parse_quoted(path, text, sep, names, header)
    else:
        frame = _parse_plain(path, data, text, sep, names, header)
    if frame.empty:
        raise InputError(path, "file is empty apart from its header")
    frame.index.name = "source_line"
    return frame[columns]


def _header(path: Path, text: str, sep: str, columns: list[str]) -> list[str]:
    first = text.split("\n", 1)[0]
    try:
        names = next(csv.reader([first], delimiter=sep)) if len(sep) == 1 else first.split(sep)
    except csv.Error as err:
        raise InputError(path, f"expected a CSV header ({err})", line=1) from None
    names = [name.strip() for name in names]
    if len(names) == 1 and len(columns) > 1:
        raise InputError(
            path, f"expected a header of {sep!r}-separated columns, found {first!r}", line=1
        )
    for column in columns:
        if column not in names:
            raise InputError(
                path,
                f"missing column {column!r}; the header must name {sep.join(columns)}",
                line=1,
                column=column,
            )
    return names


def _field_error(path: Path, line: int, sep: str, expected: int, found: int) -> InputError:
    return InputError(
        path, f"expected {expected} fields separated by {sep!r}, found {found}", line=line
    )


def _parse_plain(
    path: Path, data: bytes, text: str, sep: str, names: list[str], header: bool
) -> pd.DataFrame:
    """Unquoted fields: count separators per line with numpy (on the bytes: separators and
    newlines are ASCII, so they never occur inside a UTF-8 or latin-1 character), then let
    pandas split the lines."""
    one_char = sep if len(sep) == 1 else "\x1f"  # the C parser needs a one-character separator
    if one_char != sep:
        text = text.replace(sep, one_char)
        data = data.replace(sep.encode(), one_char.encode())
    codes = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(codes == ord("\n"))
    if not data.endswith(b"\n"):
        ends = np.append(ends, len(codes))
    starts = np.concatenate([[0], ends[:-1] + 1])
    separators = np.flatnonzero(codes == ord(one_char))
    fields = np.searchsorted(separators, ends) - np.searchsorted(separators, starts) + 1
    blank = ends == starts
    bad = np.flatnonzero(~blank & (fields != len(names)))
    if len(bad):
        raise _field_error(path, int(bad[0]) + 1, sep, len(names), int(fields[bad[0]]))
    frame = pd.read_csv(
        io.StringIO(text),
        sep=one_char,
        header=None,
        names=names,
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=False,
        quoting=csv.QUOTE_NONE,
        lineterminator="\n",
    )
    frame.index = pd.RangeIndex(1, len(frame) + 1)
    return frame[~blank].iloc[int(header) :]


def _parse_quoted(path: Path, text: str, sep: str, names: list[str], header: bool) -> pd.DataFrame:
    """CSV with quoted fields (titles holding commas): the csv module, tracking lines."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    rows, lines, line = [], [], 1
    try:
        for row in reader:
            if row and not (header and line == 1):
                if len(row) != len(names):
                    raise _field_error(path, line, sep, len(names), len(row))
                rows.append(row)
                lines.append(line)
            line = reader.line_num + 1
    except csv.Error as err:
        raise InputError(path, f"expected CSV fields ({err})", line=line) from None
    return pd.DataFrame(rows, columns=names, index=lines, dtype=str)


def _exact_integer(value: object) -> int | Decimal | None:
    """`value` as a number when it is written as a whole number, else None: an int, or a
    Decimal for magnitudes of 10**19 and more (beyond int64 either way, and cheap to keep
    when the exponent is huge)."""
    if isinstance(value, bool):  # JSON true/false are not numbers
        return None
    if isinstance(value, int):
        return value
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not number.is_finite() or number != number.to_integral_value():
        return None
    return int(number) if number.adjusted() < 19 else number


def _bad_value(
    frame: pd.DataFrame, column: str, path: Path, bad: np.ndarray, expected: str
) -> InputError:
    """The error for the first row flagged in `bad`, showing the value as the file has it."""
    position = int(np.argmax(bad))
    found = frame[column].iloc[position]
    found = found.item() if isinstance(found, np.generic) else found
    line = int(frame.index[position])
    return InputError(path, f"expected {expected}, found {found!r}", line=line, column=column)


def _numbers(frame: pd.DataFrame, column: str, path: Path, *, integer: bool) -> pd.Series:
    """`column` as int64 or float64; a value that is not one (a word, a fraction for an
    integer, an integer beyond int64, a non-finite number, a JSON boolean) is an error that
    shows the value as written."""
    raw = frame[column]
    if raw.dtype == object or pd.api.types.is_bool_dtype(raw):  # parsed JSON
        is_bool = raw.map(lambda value: isinstance(value, bool | np.bool_)).to_numpy(bool)
        if is_bool.any():
            raise _bad_value(frame, column, path, is_bool, "a number")
    values = pd.to_numeric(raw, errors="coerce")
    if integer and values.dtype != np.int64:
        # Some value is not a plain int64 literal: parse each exactly, since float64 would
        # round large integers and the cast to int64 would wrap those beyond its range.
        exact = raw.map(_exact_integer)
        not_integer = exact.isna().to_numpy()
        if not_integer.any():
            raise _bad_value(frame, column, path, not_integer, "an integer")
        low, high = np.iinfo(np.int64).min, np.iinfo(np.int64).max
        overflow = exact.map(lambda value: not low <= value <= high).to_numpy(bool)
        if overflow.any():
            expected = f"an integer from {low} to {high} (int64)"
            raise _bad_value(frame, column, path, overflow, expected)
        values = exact
    if not integer:
        not_finite = ~np.isfinite(values.to_numpy(dtype="float64", na_value=np.nan))
        if not_finite.any():
            raise _bad_value(frame, column, path, not_finite, "a finite number")
    return pd.Series(values.to_numpy("int64" if integer else "float64"), index=frame.index)


def _is_id(value: object) -> bool:
    return isinstance(value, str | int | np.integer) and not isinstance(value, bool | np.bool_)


def _ids(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """`column` as str ids; parsed JSON values other than strings and integers are an
    error."""
    raw = frame[column]
    if not isinstance(raw.dtype, pd.StringDtype):
        bad = ~raw.map(_is_id).to_numpy(bool)
        if bad.any():
            raise _bad_value(frame, column, path, bad, "a string or integer id")
    return raw.astype(str)


def _interactions(
    frame: pd.DataFrame, path: Path, user: str, item: str, timestamp: str, rating: str
) -> pd.DataFrame:
    """The canonical interactions frame from the source's column names."""
    return pd.DataFrame(
        {
            "user_id": _ids(frame, user, path),
            "item_id": _ids(frame, item, path),
            "timestamp": _numbers(frame, timestamp, path, integer=True),
            "rating": _numbers(frame, rating, path, integer=False),
        },
        index=frame.index.rename("source_line"),
    )


def _items(item_id: pd.Series, title: pd.Series, **text: pd.Series) -> pd.DataFrame:
    columns = {"item_id": item_id, "title": title, **text}
    items = pd.DataFrame({name: values.astype(str) for name, values in columns.items()})
    items.index.name = "source_line"
    return items


def _movie_items(item_id: pd.Series, title: pd.Series, genres: pd.Series) -> pd.DataFrame:
    year = title.str.extract(r"\((\d{4})\)\s*$")[0].fillna("")
    return _items(item_id, title.str.strip(), genres=genres, year=year)


# ----------------------------------------------------------------------------- MovieLens


def _movielens_csv_interactions(path: Path) -> pd.DataFrame:
    columns = ["userId", "movieId", "rating", "timestamp"]
    frame = _read_table(path, columns, sep=",", encoding="utf-8", header=True)
    return _interactions(frame, path, *columns[:2], "timestamp", "rating")


def _movielens_csv_items(path: Path) -> pd.DataFrame:
    columns = ["movieId", "title", "genres"]
    frame = _read_table(path, columns, sep=",", encoding="utf-8", header=True, quoted=True)
    return _movie_items(frame.movieId, frame.title, frame.genres.str.replace("|", ", "))


def _movielens_1m_interactions(path: Path) -> pd.DataFrame:
    columns = ["UserID", "MovieID", "Rating", "Timestamp"]
    frame = _read_table(path, columns, sep="::", encoding="latin-1", header=False)
    return _interactions(frame, path, "UserID", "MovieID", "Timestamp", "Rating")


def _movielens_1m_items(path: Path) -> pd.DataFrame:
    columns = ["MovieID", "Title", "Genres"]
    frame = _read_table(path, columns, sep="::", encoding="latin-1", header=False)
    return _movie_items(frame.MovieID, frame.Title, frame.Genres.str.replace("|", ", "))


def _movielens_100k_interactions(path: Path) -> pd.DataFrame:
    columns = ["user id", "item id", "rating", "timestamp"]
    frame = _read_table(path, columns, sep="\t", encoding="latin-1", header=False)
    return _interactions(frame, path, "user id", "item id", "timestamp", "rating")


def _movielens_100k_genres(directory: Path) -> list[str]:
    path = directory / "u.genre"
    if not path.exists():
        return ML100K_GENRES
    frame = _read_table(path, ["genre", "index"], sep="|", encoding="latin-1", header=False)
    order = _numbers(frame, "index", path, integer=True)
    return frame.genre.iloc[np.argsort(order.to_numpy(), kind="stable")].tolist()


def _movielens_100k_items(path: Path) -> pd.DataFrame:
    genres = _movielens_100k_genres(path.parent)
    columns = ML100K_ITEM_COLUMNS + genres
    frame = _read_table(path, columns, sep="|", encoding="latin-1", header=False)
    flags = frame[genres]
    not_flag = ~flags.isin(["0", "1"])
    if not_flag.any(axis=None):
        line = not_flag.any(axis=1).idxmax()
        column = not_flag.loc[line].idxmax()
        found = flags.at[line, column]
        raise InputError(
            path, f"expected a genre flag 0 or 1, found {found!r}", line=line, column=column
        )
    names = [
        ", ".join(genre for genre, flag in zip(genres, row, strict=True) if flag == "1")
        for row in flags.itertuples(index=False)
    ]
    genre_text = pd.Series(names, index=frame.index)
    return _movie_items(frame["movie id"], frame["movie title"], genre_text)


# ----------------------------------------------------------------------------- Amazon


def _records(
    path: Path, parse: Callable[[str], object], syntax: str, fields: list[str]
) -> pd.DataFrame:
    """`fields` of one object per line, parsed by `parse` (absent ones NaN); index
    `source_line`."""
    records, lines = [], []
    for line, content in enumerate(_lines(_read_text(path, "utf-8")), start=1):
        if not content.strip():
            continue
        try:
            record = parse(content)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
            raise InputError(
                path, f"expected one {syntax} object per line ({err})", line=line
            ) from None
        if not isinstance(record, dict):
            raise InputError(path, f"expected one {syntax} object per line", line=line)
        records.append(record)
        lines.append(line)
    index = pd.Index(lines, name="source_line")
    return pd.DataFrame.from_records(records, index=index, columns=fields)


def _require(frame: pd.DataFrame, path: Path, fields: list[str]) -> None:
    for field in fields:
        missing = frame[field].isna()
        if missing.any():
            raise InputError(path, "missing field", line=int(missing.idxmax()), column=field)


def _amazon_interactions(path: Path) -> pd.DataFrame:
    fields = ["reviewerID", "asin", "unixReviewTime", "overall"]
    frame = _records(path, json.loads, "JSON", fields)
    _require(frame, path, fields)
    return _interactions(frame, path, *fields)


def _flatten(value: object, separators: tuple[str, ...]) -> str:
    """None -> "", nested lists joined level by level (outermost separator first)."""
    if value is None or value != value:  # absent fields arrive as None or NaN
        return ""
    if isinstance(value, list):
        inner = separators[1:] or separators
        return separators[0].join(_flatten(part, inner) for part in value)
    return str(value)


def _amazon_items(
    path: Path, parse: Callable[[str], object], syntax: str, categories: tuple[str, ...]
) -> pd.DataFrame:
    """`categories` is the category field's name, then its separators, outermost first."""
    fields = ["asin", "title", "brand", categories[0], "description"]
    frame = _records(path, parse, syntax, fields)
    _require(frame, path, ["asin"])

    def text(field: str, *separators: str) -> pd.Series:
        return frame[field].map(lambda value: _flatten(value, separators))

    return _items(
        _ids(frame, "asin", path),
        text("title", " "),
        brand=text("brand", " "),
        categories=text(*categories),
        description=text("description", " "),
    )


def _amazon_2014_items(path: Path) -> pd.DataFrame:
    # A 2014 meta line is a Python dict literal, not JSON; `categories` is a list of paths.
    return _amazon_items(path, ast.literal_eval, "Python-literal", ("categories", "; ", " > "))


def _amazon_2018_items(path: Path) -> pd.DataFrame:
    # A 2018 meta line is strict JSON; `category` is one path.
    return _amazon_items(path, json.loads, "JSON", ("category", " > "))


# ----------------------------------------------------------------------------- sequences


def _sequence_interactions(path: Path) -> pd.DataFrame:
    """`user item item ...` per line, oldest first: the position is the timestamp. A user on
    two lines is an error: the two histories' order would be unknown."""
    users, items, positions, lines = [], [], [], []
    first_line: dict[str, int] = {}
    for line, content in enumerate(_lines(_read_text(path, "utf-8")), start=1):
        fields = content.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise InputError(
                path, "expected a user id and at least one item id separated by spaces", line=line
            )
        earlier = first_line.setdefault(fields[0], line)
        if earlier != line:
            raise InputError(
                path,
                f"expected one line per user, found user {fields[0]!r} again (first on line "
                f"{earlier})",
                line=line,
            )
        count = len(fields) - 1
        users += [fields[0]] * count
        items += fields[1:]
        positions += range(count)
        lines += [line] * count
    return pd.DataFrame(
        {
            "user_id": pd.Series(users, dtype=str),
            "item_id": pd.Series(items, dtype=str),
            "timestamp": np.array(positions, dtype=np.int64),
            "rating": np.full(len(users), np.nan),
        }
    ).set_index(pd.Index(lines, name="source_line"))


def _sequence_items(path: Path) -> pd.DataFrame:
    """`item text ...` per line; the text becomes the title (empty for some real items)."""
    ids, titles, lines = [], [], []
    for line, content in enumerate(_lines(_read_text(path, "utf-8")), start=1):
        fields = content.split(maxsplit=1)
        if fields:
            ids.append(fields[0])
            titles.append(fields[1].strip() if len(fields) > 1 else "")
            lines.append(line)
    return _items(pd.Series(ids, index=lines), pd.Series(titles, index=lines))


FORMATS: dict[str, Format] = {
    "movielens-csv": Format(
        ("ratings.csv",), ("movies.csv",), _movielens_csv_interactions, _movielens_csv_items
    ),
    "movielens-1m": Format(
        ("ratings.dat",), ("movies.dat",), _movielens_1m_interactions, _movielens_1m_items
    ),
    "movielens-100k": Format(
        ("u.data",), ("u.item",), _movielens_100k_interactions, _movielens_100k_items
    ),
    "amazon-2014": Format(
        ("reviews_*.json", "reviews_*.json.gz"),
        ("meta_*.json", "meta_*.json.gz"),
        _amazon_interactions,
        _amazon_2014_items,
    ),
    "amazon-2018": Format(
        ("*.json", "*.json.gz"),
        ("meta_*.json", "meta_*.json.gz"),
        _amazon_interactions,
        _amazon_2018_items,
    ),
    "sequence": Format(
        ("user_sequence.txt",),
        ("item_generative_indexing_phase_0.txt",),
        _sequence_interactions,
        _sequence_items,
    ),
}
