"""fetch against a local HTTP server on 127.0.0.1 (never the internet): download, resume,
checksum, extraction, and the offline message."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lite_rec.ingest import download, fetch
from lite_rec.ingest.download import DownloadError, RemoteFile, Source


def tiny_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny/ratings.csv", "userId,movieId,rating,timestamp\n1,1,5,9\n")
        archive.writestr("tiny/movies.csv", "movieId,title,genres\n1,A,Drama\n" * 500)
    return buffer.getvalue()


ZIP = tiny_zip()
ZIP_SHA256 = hashlib.sha256(ZIP).hexdigest()


class Server:
    """Serves `files` by path, honouring `Range: bytes=N-` unless `ranges` is off, and logs
    each request's Range header."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {"/tiny.zip": ZIP}
        self.ranges = True
        self.requests: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.headers.get("Range"))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if server.ranges and self.headers.get("Range"):
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def server() -> Iterator[Server]:
    served = Server()
    thread = threading.Thread(target=served.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()


def register(monkeypatch: pytest.MonkeyPatch, url: str, sha256: str | None = ZIP_SHA256) -> None:
    source = Source((RemoteFile(url, sha256),), ("ratings.csv", "movies.csv"))
    monkeypatch.setitem(download.SOURCES, "tiny", source)


def test_registry_names_official_sources() -> None:
    assert download.SOURCES["ml-1m"].files[0].url.endswith("/movielens/ml-1m.zip")
    toys = [remote.name for remote in download.SOURCES["amazon-toys-2014"].files]
    assert toys == ["reviews_Toys_and_Games_5.json.gz", "meta_Toys_and_Games.json.gz"]


def test_fetch_downloads_verifies_and_extracts(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    register(monkeypatch, f"{server.url}/tiny.zip")
    directory = fetch("tiny", tmp_path)
    assert directory == tmp_path / "tiny"
    assert sorted(path.name for path in directory.iterdir()) == ["movies.csv", "ratings.csv"]
    assert (directory / "ratings.csv").read_text().endswith("1,1,5,9\n")
    assert server.requests == [None]
    assert fetch("tiny", tmp_path) == directory
    assert server.requests == [None]  # present files: no network


def test_fetch_resumes_a_partial_download(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    register(monkeypatch, f"{server.url}/tiny.zip")
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "tiny.zip.part").write_bytes(ZIP[:100])
    fetch("tiny", tmp_path)
    assert server.requests == ["bytes=100-"]
    assert (tmp_path / "tiny" / "movies.csv").exists()


def test_fetch_starts_over_when_the_server_ignores_range(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.ranges = False
    register(monkeypatch, f"{server.url}/tiny.zip")
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "tiny.zip.part").write_bytes(b"stale bytes")
    fetch("tiny", tmp_path)
    assert (tmp_path / "tiny" / "ratings.csv").exists()


def test_fetch_rejects_a_checksum_mismatch(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    register(monkeypatch, f"{server.url}/tiny.zip", sha256="0" * 64)
    with pytest.raises(DownloadError, match="does not match the expected 0000"):
        fetch("tiny", tmp_path)
    assert list((tmp_path / "tiny").iterdir()) == []


def test_fetch_keeps_a_non_archive_as_is(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.files["/meta_T.json.gz"] = b"gzip bytes"
    source = Source((RemoteFile(f"{server.url}/meta_T.json.gz", None),), ("meta_T.json.gz",))
    monkeypatch.setitem(download.SOURCES, "meta", source)
    assert (fetch("meta", tmp_path) / "meta_T.json.gz").read_bytes() == b"gzip bytes"


def test_fetch_names_http_errors(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    register(monkeypatch, f"{server.url}/absent.zip")
    with pytest.raises(DownloadError, match="404"):
        fetch("tiny", tmp_path)


def test_fetch_offline_says_what_to_download_and_where(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/tiny.zip"
    register(monkeypatch, url)
    with pytest.raises(DownloadError) as caught:
        fetch("tiny", tmp_path)
    message = str(caught.value)
    assert "offline" in message and url in message
    assert str(tmp_path / "tiny" / "tiny.zip") in message


def test_fetch_uses_an_archive_put_there_by_hand(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    register(monkeypatch, "http://127.0.0.1:9/tiny.zip")  # never contacted
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "tiny.zip").write_bytes(ZIP)
    assert (fetch("tiny", tmp_path) / "ratings.csv").exists()
    assert not (tmp_path / "tiny" / "tiny.zip").exists()


def test_fetch_rejects_a_file_that_is_not_a_zip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    register(monkeypatch, "http://127.0.0.1:9/tiny.zip", sha256=None)
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "tiny.zip").write_bytes(b"an html error page")
    with pytest.raises(DownloadError, match="is not a zip archive"):
        fetch("tiny", tmp_path)


def test_fetch_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'ml-2m'"):
        fetch("ml-2m", tmp_path)
