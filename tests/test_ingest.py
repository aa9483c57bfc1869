"""read_dataset on tiny hand-written files of every format, on bad input, and on the real
datasets in ../shared/datasets when they are present."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lite_rec.errors import InputError
from lite_rec.ingest import FORMATS, RawDataset, read_dataset

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

FLAGS_TOY_STORY = "|".join("0001110000000000000")  # Animation, Children's, Comedy
FLAGS_NONE = "|".join("0" * 19)


def write(directory: Path, files: dict[str, str | bytes]) -> Path:
    """Bytes are written as they are; text as UTF-8, gzipped for names ending in .gz."""
    for name, content in files.items():
        if isinstance(content, str):
            content = content.encode("utf-8")
            content = gzip.compress(content) if name.endswith(".gz") else content
        (directory / name).write_bytes(content)
    return directory


def check_interactions(dataset: RawDataset, rows: list[tuple], lines: list[int]) -> None:
    frame = dataset.interactions
    assert list(frame.columns) == ["user_id", "item_id", "timestamp", "rating"]
    assert frame.index.name == "source_line"
    assert frame.index.tolist() == lines
    assert frame.timestamp.dtype == np.int64 and frame.rating.dtype == np.float64
    assert pd.api.types.is_string_dtype(frame.user_id) and pd.api.types.is_string_dtype(
        frame.item_id
    )
    actual = [(u, i, t, None if np.isnan(r) else r) for u, i, t, r in frame.itertuples(index=False)]
    assert actual == rows


def check_items(dataset: RawDataset, records: list[dict], lines: list[int]) -> None:
    items = dataset.items
    assert items.index.name == "source_line"
    assert items.index.tolist() == lines
    assert all(pd.api.types.is_string_dtype(items[column]) for column in items)
    assert items.to_dict("records") == records


# The column of each format's timestamp, as its files name it.
TIMESTAMP_COLUMN = {
    "movielens-csv": "timestamp",
    "movielens-1m": "Timestamp",
    "movielens-100k": "timestamp",
    "amazon-2014": "unixReviewTime",
    "amazon-2018": "unixReviewTime",
}


def _json_line(record: dict) -> str:
    return json.dumps(record) + "\n"


# Per format: interactions file, its header, one row; item file, its header, one item.
LAYOUTS = {
    "movielens-csv": (
        "ratings.csv",
        "userId,movieId,rating,timestamp\n",
        lambda u, i, t, r: f"{u},{i},{r},{t}\n",
        "movies.csv",
        "movieId,title,genres\n",
        lambda i: f'{i},"Movie {i}, The (1995)",Drama|Comedy\n',
    ),
    "movielens-1m": (
        "ratings.dat",
        "",
        lambda u, i, t, r: f"{u}::{i}::{r:g}::{t}\n",
        "movies.dat",
        "",
        lambda i: f"{i}::Movie {i} (1995)::Drama\n",
    ),
    "movielens-100k": (
        "u.data",
        "",
        lambda u, i, t, r: f"{u}\t{i}\t{r:g}\t{t}\n",
        "u.item",
        "",
        lambda i: f"{i}|Movie {i} (1995)|01-Jan-1995||http://x|{FLAGS_TOY_STORY}\n",
    ),
    "amazon-2014": (
        "reviews_Toys_5.json",
        "",
        lambda u, i, t, r: _json_line(
            {"reviewerID": u, "asin": i, "overall": r, "unixReviewTime": t}
        ),
        "meta_Toys.json",
        "",
        lambda i: repr({"asin": i, "title": f"Toy {i}", "categories": [["Toys"]]}) + "\n",
    ),
    "amazon-2018": (
        "Toys_5.json",
        "",
        lambda u, i, t, r: _json_line(
            {"reviewerID": u, "asin": i, "overall": r, "unixReviewTime": t}
        ),
        "meta_Toys.json",
        "",
        lambda i: _json_line({"asin": i, "title": f"Toy {i}", "category": ["Toys"]}),
    ),
}


def write_format(
    directory: Path, format: str, rows: list[tuple], items: list[str] | None = None
) -> list[int]:
    """`rows` of (user, item, timestamp, rating) in `format`'s files, with a title for each of
    `items` (by default every item in `rows`); returns the line each row is on. The sequence
    format has one line per user (users in first-appearance order, items oldest first) and
    keeps no timestamps or ratings."""
    directory.mkdir(parents=True, exist_ok=True)
    items = items if items is not None else list(dict.fromkeys(row[1] for row in rows))
    if format == "sequence":
        users = list(dict.fromkeys(row[0] for row in rows))
        history: dict[str, list[str]] = {user: [] for user in users}
        for user, item, _, _ in sorted(rows, key=lambda row: row[2]):
            history[user].append(item)
        write(
            directory,
            {
                "user_sequence.txt": "".join(f"{u} {' '.join(history[u])}\n" for u in users),
                "item_generative_indexing_phase_0.txt": "".join(f"{i} toy {i}\n" for i in items),
            },
        )
        return [users.index(row[0]) + 1 for row in rows]
    interactions, header, row_line, items_file, items_header, item_line = LAYOUTS[format]
    write(
        directory,
        {
            interactions: header + "".join(row_line(*row) for row in rows),
            items_file: items_header + "".join(item_line(item) for item in items),
        },
    )
    first = 2 if header else 1
    return list(range(first, first + len(rows)))


def test_formats_are_named() -> None:
    assert set(FORMATS) == {
        "movielens-csv",
        "movielens-1m",
        "movielens-100k",
        "amazon-2014",
        "amazon-2018",
        "sequence",
    }


def test_movielens_csv(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "ratings.csv": "userId,movieId,rating,timestamp\r\n2,11,4.5,300\r\n\r\n1,1,3.0,100\r\n",
            "movies.csv": "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n"
            '11,"American President, The (1995)",Comedy\n12,Amélie,(no genres listed)\n',
        },
    )
    dataset = read_dataset(tmp_path)
    assert dataset.format == "movielens-csv"
    assert dataset.interactions_file == tmp_path / "ratings.csv"
    assert dataset.items_file == tmp_path / "movies.csv"
    check_interactions(dataset, [("2", "11", 300, 4.5), ("1", "1", 100, 3.0)], [2, 4])
    check_items(
        dataset,
        [
            {
                "item_id": "1",
                "title": "Toy Story (1995)",
                "genres": "Adventure, Animation",
                "year": "1995",
            },
            {
                "item_id": "11",
                "title": "American President, The (1995)",
                "genres": "Comedy",
                "year": "1995",
            },
            {"item_id": "12", "title": "Amélie", "genres": "(no genres listed)", "year": ""},
        ],
        [2, 3, 4],
    )


def test_source_may_be_a_file_and_format_explicit(tmp_path: Path) -> None:
    write(tmp_path, {"ratings.csv": "userId,movieId,rating,timestamp\n1,1,5,9\n"})
    write(tmp_path, {"movies.csv": "movieId,title,genres\n1,A,Drama\n"})
    dataset = read_dataset(tmp_path / "ratings.csv", format="movielens-csv")
    check_interactions(dataset, [("1", "1", 9, 5.0)], [2])


def test_movielens_1m_latin1(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "ratings.dat": "6::73::5::978300760\n1::1::3::978300000\n",
            "movies.dat": "1::Toy Story (1995)::Animation|Children's|Comedy\n".encode("latin-1")
            + "73::Misérables, Les (1995)::Drama|Musical\n".encode("latin-1"),
        },
    )
    dataset = read_dataset(tmp_path)
    assert dataset.format == "movielens-1m"
    check_interactions(dataset, [("6", "73", 978300760, 5.0), ("1", "1", 978300000, 3.0)], [1, 2])
    check_items(
        dataset,
        [
            {
                "item_id": "1",
                "title": "Toy Story (1995)",
                "genres": "Animation, Children's, Comedy",
                "year": "1995",
            },
            {
                "item_id": "73",
                "title": "Misérables, Les (1995)",
                "genres": "Drama, Musical",
                "year": "1995",
            },
        ],
        [1, 2],
    )


def movielens_100k(directory: Path) -> Path:
    return write(
        directory,
        {
            "u.data": "196\t242\t3\t881250949\n22\t1\t1\t878887116\n",
            "u.item": f"1|Toy Story (1995)|01-Jan-1995||http://x|{FLAGS_TOY_STORY}\n"
            f"242|Kolya (1996)|24-Jan-1997|||{FLAGS_NONE}\n",
        },
    )


def test_movielens_100k_standard_genres(tmp_path: Path) -> None:
    dataset = read_dataset(movielens_100k(tmp_path))
    assert dataset.format == "movielens-100k"
    check_interactions(
        dataset, [("196", "242", 881250949, 3.0), ("22", "1", 878887116, 1.0)], [1, 2]
    )
    check_items(
        dataset,
        [
            {
                "item_id": "1",
                "title": "Toy Story (1995)",
                "genres": "Animation, Children's, Comedy",
                "year": "1995",
            },
            {"item_id": "242", "title": "Kolya (1996)", "genres": "", "year": "1996"},
        ],
        [1, 2],
    )


def test_movielens_100k_reads_u_genre(tmp_path: Path) -> None:
    names = [f"g{index}" for index in range(19)]
    genre_lines = "".join(f"{name}|{index}\n" for index, name in reversed(list(enumerate(names))))
    write(movielens_100k(tmp_path), {"u.genre": genre_lines + "\n"})
    assert read_dataset(tmp_path).items.genres.tolist() == ["g3, g4, g5", ""]


def test_amazon_2014(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "reviews_Toys_5.json.gz": '{"reviewerID": "U2", "asin": "B1", "overall": 4.0, '
            '"unixReviewTime": 1400000000, "reviewText": "fun"}\n'
            '{"reviewerID": "U1", "asin": "0439893577", "overall": 5.0, '
            '"unixReviewTime": 1300000000}\n',
            "meta_Toys.json": "{'asin': 'B1', 'title': 'Cat \"Plush\"', 'brand': 'Acme', "
            "'categories': [['Toys & Games', 'Stuffed Animals'], ['Baby']], "
            "'description': 'Soft.'}\n"
            "{'asin': '0439893577'}\n",
        },
    )
    dataset = read_dataset(tmp_path)
    assert dataset.format == "amazon-2014"
    check_interactions(
        dataset, [("U2", "B1", 1400000000, 4.0), ("U1", "0439893577", 1300000000, 5.0)], [1, 2]
    )
    check_items(
        dataset,
        [
            {
                "item_id": "B1",
                "title": 'Cat "Plush"',
                "brand": "Acme",
                "categories": "Toys & Games > Stuffed Animals; Baby",
                "description": "Soft.",
            },
            {
                "item_id": "0439893577",
                "title": "",
                "brand": "",
                "categories": "",
                "description": "",
            },
        ],
        [1, 2],
    )


def test_amazon_2018(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "Toys_and_Games_5.json": '{"overall": 5.0, "verified": true, "reviewerID": "U1", '
            '"asin": "B2", "unixReviewTime": 1500000000, "style": {"Color:": "Red"}}\n',
            "meta_Toys_and_Games.json.gz": '{"asin": "B2", "title": "Ball", "brand": "Acme", '
            '"category": ["Toys & Games", "Sports"], "description": ["Round.", "Red."]}\n'
            '{"asin": "B3", "title": "Kite", "description": "Flies."}\n',
        },
    )
    dataset = read_dataset(tmp_path)
    assert dataset.format == "amazon-2018"
    check_interactions(dataset, [("U1", "B2", 1500000000, 5.0)], [1])
    check_items(
        dataset,
        [
            {
                "item_id": "B2",
                "title": "Ball",
                "brand": "Acme",
                "categories": "Toys & Games > Sports",
                "description": "Round. Red.",
            },
            {
                "item_id": "B3",
                "title": "Kite",
                "brand": "",
                "categories": "",
                "description": "Flies.",
            },
        ],
        [1, 2],
    )


def test_sequence(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "user_sequence.txt": "A9 I2 I1 I3\n\nA1 I1 I2\n",
            "item_generative_indexing_phase_0.txt": "I1 plush dr seuss cat\nI2 \nI3 ball\n",
        },
    )
    dataset = read_dataset(tmp_path)
    assert dataset.format == "sequence"
    check_interactions(
        dataset,
        [("A9", "I2", 0, None), ("A9", "I1", 1, None), ("A9", "I3", 2, None)]
        + [("A1", "I1", 0, None), ("A1", "I2", 1, None)],
        [1, 1, 1, 3, 3],
    )
    check_items(
        dataset,
        [
            {"item_id": "I1", "title": "plush dr seuss cat"},
            {"item_id": "I2", "title": ""},
            {"item_id": "I3", "title": "ball"},
        ],
        [1, 2, 3],
    )


ROWS = [("1", "11", 100, 4.0), ("2", "12", 90, 3.0), ("1", "12", 110, 5.0)]


@pytest.mark.parametrize("format", sorted(FORMATS))
def test_every_format_reads_what_was_written(tmp_path: Path, format: str) -> None:
    lines = write_format(tmp_path, format, ROWS)
    dataset = read_dataset(tmp_path)
    assert dataset.format == format
    if format == "sequence":  # the position on the user's line is the time; no ratings
        expected = [("1", "11", 0, None), ("1", "12", 1, None), ("2", "12", 0, None)]
        check_interactions(dataset, expected, [1, 1, 2])
    else:
        check_interactions(dataset, ROWS, lines)
    assert dataset.items.item_id.tolist() == ["11", "12"]


VARIANTS = {
    "CR line endings": lambda data: data.replace(b"\n", b"\r"),
    "CRLF line endings": lambda data: data.replace(b"\n", b"\r\n"),
    "UTF-8 byte-order mark": lambda data: b"\xef\xbb\xbf" + data,
}


@pytest.mark.parametrize("format", sorted(FORMATS))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_line_endings_and_byte_order_mark_read_alike(
    tmp_path: Path, format: str, variant: str
) -> None:
    write_format(tmp_path / "plain", format, ROWS)
    (tmp_path / "variant").mkdir()
    for path in (tmp_path / "plain").iterdir():
        (tmp_path / "variant" / path.name).write_bytes(VARIANTS[variant](path.read_bytes()))
    expected, actual = read_dataset(tmp_path / "plain"), read_dataset(tmp_path / "variant")
    assert actual.format == expected.format
    pd.testing.assert_frame_equal(actual.interactions, expected.interactions)
    pd.testing.assert_frame_equal(actual.items, expected.items)


def test_latin1_format_saved_as_utf8_is_not_garbled(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "ratings.dat": "1::73::5::978300760\n",
            "movies.dat": "73::Misérables, Les (1995)::Drama\n",  # UTF-8, not latin-1
        },
    )
    assert read_dataset(tmp_path).items.title.tolist() == ["Misérables, Les (1995)"]


RATINGS_HEADER = "userId,movieId,rating,timestamp\n"
MOVIES = "movieId,title,genres\n1,A,Drama\n"
REVIEW = '{"reviewerID": "U", "asin": "B", "overall": 1, "unixReviewTime": 2}\n'

# (files, the file named in the error, line, column, words the message must contain)
BAD_INPUTS = {
    "truncated csv line": (
        {"ratings.csv": RATINGS_HEADER + "1,1,4,5\n1,2,4\n", "movies.csv": MOVIES},
        "ratings.csv",
        3,
        None,
        "expected 4 fields separated by ','",
    ),
    "too many fields": (
        {"ratings.csv": RATINGS_HEADER + "1,1,4,5,6\n", "movies.csv": MOVIES},
        "ratings.csv",
        2,
        None,
        "expected 4 fields",
    ),
    "truncated quoted csv line": (
        {"ratings.csv": RATINGS_HEADER + "1,1,4,5\n", "movies.csv": MOVIES + '2,"B, The"\n'},
        "movies.csv",
        3,
        None,
        "expected 3 fields separated by ','",
    ),
    "wrong delimiter in header": (
        {"ratings.csv": "userId;movieId;rating;timestamp\n1;1;4;5\n", "movies.csv": MOVIES},
        "ratings.csv",
        1,
        None,
        "','-separated columns",
    ),
    "wrong delimiter, no header": (
        {"u.data": "1,2,3,4\n", "u.item": f"1|A|||x|{FLAGS_NONE}\n"},
        "u.data",
        1,
        None,
        "expected 4 fields separated by '\\t', found 1",
    ),
    "missing column": (
        {"ratings.csv": "userId,movieId,timestamp\n1,1,5\n", "movies.csv": MOVIES},
        "ratings.csv",
        1,
        "rating",
        "missing column",
    ),
    "non-utf-8 bytes": (
        {
            "ratings.csv": RATINGS_HEADER + "1,1,4,5\n",
            "movies.csv": MOVIES.encode() + "2,Café,Drama\n".encode("latin-1"),
        },
        "movies.csv",
        3,
        None,
        "expected utf-8",
    ),
    "non-numeric rating": (
        {"ratings.csv": RATINGS_HEADER + "1,1,4,5\n1,2,good,5\n", "movies.csv": MOVIES},
        "ratings.csv",
        3,
        "rating",
        "expected a finite number, found 'good'",
    ),
    "infinite rating": (
        {"ratings.csv": RATINGS_HEADER + "1,1,inf,5\n", "movies.csv": MOVIES},
        "ratings.csv",
        2,
        "rating",
        "expected a finite number, found 'inf'",
    ),
    "int64 overflow timestamp": (
        {"ratings.csv": RATINGS_HEADER + "1,1,4,99999999999999999999\n", "movies.csv": MOVIES},
        "ratings.csv",
        2,
        "timestamp",
        "expected an integer from -9223372036854775808 to 9223372036854775807 (int64), "
        "found '99999999999999999999'",
    ),
    "int64 overflow in an exponent": (
        {"ratings.csv": RATINGS_HEADER + "1,1,4,5\n1,1,4,1e999999999\n", "movies.csv": MOVIES},
        "ratings.csv",
        3,
        "timestamp",
        "(int64), found '1e999999999'",
    ),
    "int64 overflow in JSON": (
        {
            "reviews_T_5.json": REVIEW.replace('"unixReviewTime": 2', '"unixReviewTime": 1e20'),
            "meta_T.json": "{'asin': 'B'}\n",
        },
        "reviews_T_5.json",
        1,
        "unixReviewTime",
        "(int64), found 1e+20",
    ),
    "JSON integer beyond int64": (
        {
            "reviews_T_5.json": REVIEW.replace("2}", "-99999999999999999999}"),
            "meta_T.json": "{'asin': 'B'}\n",
        },
        "reviews_T_5.json",
        1,
        "unixReviewTime",
        "(int64), found -99999999999999999999",
    ),
    "JSON boolean rating": (
        {
            "reviews_T_5.json": REVIEW.replace('"overall": 1', '"overall": true'),
            "meta_T.json": "{'asin': 'B'}\n",
        },
        "reviews_T_5.json",
        1,
        "overall",
        "expected a number, found True",
    ),
    "JSON list as user id": (
        {"reviews_T_5.json": REVIEW.replace('"U"', '["U"]'), "meta_T.json": "{'asin': 'B'}\n"},
        "reviews_T_5.json",
        1,
        "reviewerID",
        "expected a string or integer id, found ['U']",
    ),
    "JSON number as item id in meta": (
        {"reviews_T_5.json": REVIEW, "meta_T.json": "{'asin': 'B'}\n{'asin': 1.5}\n"},
        "meta_T.json",
        2,
        "asin",
        "expected a string or integer id, found 1.5",
    ),
    "non-integer timestamp": (
        {"ratings.dat": "1::1::4::5\n\n1::2::4::5.5\n", "movies.dat": "1::A::Drama\n"},
        "ratings.dat",
        3,
        "Timestamp",
        "expected an integer, found '5.5'",
    ),
    "header only": (
        {"ratings.csv": RATINGS_HEADER, "movies.csv": MOVIES},
        "ratings.csv",
        None,
        None,
        "file is empty apart from its header",
    ),
    "corrupt gzip": (
        {"reviews_T_5.json": REVIEW, "meta_T.json.gz": b"not gzip"},
        "meta_T.json.gz",
        None,
        None,
        "expected a gzip-compressed file",
    ),
    "empty file": (
        {"ratings.csv": "", "movies.csv": MOVIES},
        "ratings.csv",
        None,
        None,
        "file is empty",
    ),
    "blank lines only": (
        {"user_sequence.txt": "\r\n\r\n", "item_generative_indexing_phase_0.txt": "I1 a\n"},
        "user_sequence.txt",
        None,
        None,
        "file is empty",
    ),
    "byte-order mark only": (
        {"ratings.csv": b"\xef\xbb\xbf\n", "movies.csv": MOVIES},
        "ratings.csv",
        None,
        None,
        "file is empty",
    ),
    "truncated line, CR line endings": (
        {"ratings.csv": "userId,movieId,rating,timestamp\r1,1,4,5\r1,2,4\r", "movies.csv": MOVIES},
        "ratings.csv",
        3,
        None,
        "expected 4 fields separated by ','",
    ),
    "mixed line endings": (
        {"ratings.csv": RATINGS_HEADER + "1,1,4,5\r1,2,4,6\n", "movies.csv": MOVIES},
        "ratings.csv",
        2,
        None,
        "expected one kind of line ending, found a carriage return without a line feed",
    ),
    "NUL byte": (
        {"ratings.csv": RATINGS_HEADER + "1,1,4,5\n1\x00,2,4,6\n", "movies.csv": MOVIES},
        "ratings.csv",
        3,
        None,
        "expected text, found a NUL byte",
    ),
    "UTF-16 file": (
        {
            "ratings.csv": RATINGS_HEADER + "1,1,4,5\n",
            "movies.csv": b"\xff\xfe" + MOVIES.encode("utf-16-le"),
        },
        "movies.csv",
        None,
        None,
        "expected UTF-8 or latin-1 text, found a UTF-16 byte-order mark",
    ),
    "quoted field past the csv field limit": (
        {
            "ratings.csv": RATINGS_HEADER + "1,1,4,5\n",
            "movies.csv": MOVIES + '2,"' + "x" * 200_000 + '",A\n',
        },
        "movies.csv",
        3,
        None,
        "expected CSV fields (field larger than field limit",
    ),
    "missing required file": (
        {"movies.dat": "1::A::Drama\n"},
        "",
        None,
        None,
        "expected ratings.dat in",
    ),
    "unrecognised format": (
        {"notes.txt": "hello\n"},
        "",
        None,
        None,
        "looked for ratings.csv + movies.csv (movielens-csv)",
    ),
    "bad genre flag": (
        {"u.data": "1\t2\t3\t4\n", "u.item": "1|A|||x|" + FLAGS_NONE.replace("0", "2", 1) + "\n"},
        "u.item",
        1,
        "unknown",
        "expected a genre flag 0 or 1, found '2'",
    ),
    "bad json line": (
        {"reviews_T_5.json": '{"reviewerID": "U"\n', "meta_T.json": "{'asin': 'B'}\n"},
        "reviews_T_5.json",
        1,
        None,
        "expected one JSON object per line",
    ),
    "missing json field": (
        {
            "reviews_T_5.json": REVIEW + '{"reviewerID": "U", "overall": 1, "unixReviewTime": 2}\n',
            "meta_T.json": "{'asin': 'B'}\n",
        },
        "reviews_T_5.json",
        2,
        "asin",
        "missing field",
    ),
    "bad python literal meta": (
        {"reviews_T_5.json": REVIEW, "meta_T.json": "{'asin': 'B'}\n{'asin': \n"},
        "meta_T.json",
        2,
        None,
        "expected one Python-literal object per line",
    ),
    "user without items": (
        {"user_sequence.txt": "U1 I1\nU2\n", "item_generative_indexing_phase_0.txt": "I1 a\n"},
        "user_sequence.txt",
        2,
        None,
        "expected a user id and at least one item id",
    ),
    "user on two lines": (
        {
            "user_sequence.txt": "U1 I1\nU2 I1\nU1 I1\n",
            "item_generative_indexing_phase_0.txt": "I1 a\n",
        },
        "user_sequence.txt",
        3,
        None,
        "expected one line per user, found user 'U1' again (first on line 1)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_file_line_and_expectation(tmp_path: Path, case: str) -> None:
    files, file, line, column, words = BAD_INPUTS[case]
    write(tmp_path, files)
    with pytest.raises(InputError) as caught:
        read_dataset(tmp_path)
    error = caught.value
    assert error.file == str(tmp_path / file).rstrip("/")
    assert error.line == line and error.column == column
    assert words in str(error) and error.file in str(error)
    if line is not None:
        assert f"line {line}" in str(error)


def test_auto_ignores_stray_files_of_other_formats(tmp_path: Path) -> None:
    write(movielens_100k(tmp_path), {"stats.json": "{}\n"})
    assert read_dataset(tmp_path).format == "movielens-100k"


def test_unknown_format_and_missing_source(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown format 'csv'"):
        read_dataset(tmp_path, format="csv")
    with pytest.raises(InputError, match="nothing is there"):
        read_dataset(tmp_path / "absent")


needs_datasets = pytest.mark.skipif(not DATASETS.is_dir(), reason="no ../shared/datasets")


@pytest.mark.integration
@needs_datasets
@pytest.mark.parametrize(
    ("folder", "format", "interactions", "users", "items"),
    [
        ("ml-latest-small", "movielens-csv", 100_836, 610, 9_742),
        ("ml-100k", "movielens-100k", 100_000, 943, 1_682),
        ("amazon-toys-2014-5core", "sequence", 167_597, 19_412, 11_924),
    ],
)
def test_real_datasets(folder: str, format: str, interactions: int, users: int, items: int) -> None:
    dataset = read_dataset(DATASETS / folder)
    assert dataset.format == format
    assert len(dataset.interactions) == interactions
    assert dataset.interactions.user_id.nunique() == users
    assert len(dataset.items) == items
    assert dataset.items.item_id.is_unique


@pytest.mark.integration
@needs_datasets
def test_real_ml_1m_movies(tmp_path: Path) -> None:
    shutil.copy(DATASETS / "ml-1m" / "movies.dat", tmp_path)
    write(tmp_path, {"ratings.dat": "1::1193::5::978300760\n"})
    items = read_dataset(tmp_path).items
    assert len(items) == 3_883
    assert items.set_index("item_id").at["73", "title"] == "Misérables, Les (1995)"
