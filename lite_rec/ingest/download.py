"""Fetch public datasets from their official sources: resumable, checksummed, and with a
plain instruction of what to download by hand when the machine is offline."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm import tqdm

GROUPLENS = "https://files.grouplens.org/datasets/movielens"
AMAZON_2014 = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
CHUNK_BYTES = 1 << 20


class DownloadError(OSError):
    """A download that failed; the message says what to fetch by hand and where to put it."""


@dataclass(frozen=True)
class RemoteFile:
    url: str
    sha256: str | None  # None where no trusted hash is published (see SOURCES)

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Source:
    """Remote files (zips are extracted, their top folder dropped) and the files that show the
    dataset is already in place."""

    files: tuple[RemoteFile, ...]
    present: tuple[str, ...]


def _amazon_2014(category: str) -> Source:
    # snap.stanford.edu publishes no checksums for these files.
    reviews = f"reviews_{category}_5.json.gz"
    meta = f"meta_{category}.json.gz"
    return Source(
        files=(
            RemoteFile(f"{AMAZON_2014}/{reviews}", None),
            RemoteFile(f"{AMAZON_2014}/{meta}", None),
        ),
        present=(reviews, meta),
    )


SOURCES: dict[str, Source] = {
    # The archive's hash is not pinned in shared/datasets/ml-1m/SOURCE.md (only that of
    # ratings.dat inside it), so the zip goes unchecked.
    "ml-1m": Source((RemoteFile(f"{GROUPLENS}/ml-1m.zip", None),), ("ratings.dat", "movies.dat")),
    # Likewise for ml-100k: SOURCE.md pins u.data and u.item, not the zip.
    "ml-100k": Source((RemoteFile(f"{GROUPLENS}/ml-100k.zip", None),), ("u.data", "u.item")),
    "ml-latest-small": Source(
        (
            RemoteFile(
                f"{GROUPLENS}/ml-latest-small.zip",
                "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
            ),
        ),
        ("ratings.csv", "movies.csv"),
    ),
    "amazon-toys-2014": _amazon_2014("Toys_and_Games"),
    "amazon-beauty-2014": _amazon_2014("Beauty"),
}


def fetch(name: str, dest_dir: str | Path) -> Path:
    """Make dataset `name` present in `dest_dir/name` and return that directory; no network
    when its files are already there."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(SOURCES)}")
    source = SOURCES[name]
    directory = Path(dest_dir) / name
    if all((directory / file).exists() for file in source.present):
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    for remote in source.files:
        target = directory / remote.name
        if not target.exists():  # it may have been put there by hand
            _download(remote, target, directory)
        _verify(remote, target)
        if target.suffix == ".zip":
            _extract(target, directory)
            target.unlink()
    return directory


def _download(remote: RemoteFile, target: Path, directory: Path) -> None:
    """Stream `remote` into `target`.part, resuming it with an HTTP Range request, then rename
    it to `target`. A broken transfer leaves the .part file for the next run to resume."""
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with requests.get(remote.url, headers=headers, stream=True, timeout=30) as response:
            if response.status_code == 416:  # the part file already holds every byte
                offset = part.stat().st_size
            else:
                response.raise_for_status()
                if response.status_code != 206:  # the server ignored Range: start over
                    offset = 0
                _write(response, part, offset, target.name)
    except requests.HTTPError as err:
        raise DownloadError(
            f"{remote.url} answered {err}; download it by hand to {target}"
        ) from None
    except requests.RequestException as err:
        extracted = f" (or its extracted files in {directory})" if target.suffix == ".zip" else ""
        raise DownloadError(
            f"could not download {remote.url} ({type(err).__name__}); this machine appears to "
            f"be offline. Download {remote.url} by hand, put it at {target}{extracted}, and "
            "run again."
        ) from None
    part.rename(target)


def _write(response: requests.Response, part: Path, offset: int, label: str) -> None:
    size = int(response.headers.get("Content-Length", 0))
    with (
        part.open("ab" if offset else "wb") as out,
        tqdm(
            total=offset + size or None, initial=offset, unit="B", unit_scale=True, desc=label
        ) as bar,
    ):
        for chunk in response.iter_content(CHUNK_BYTES):
            out.write(chunk)
            bar.update(len(chunk))


def _verify(remote: RemoteFile, file: Path) -> None:
    """Delete `file` and fail when its sha256 is not the published one."""
    if remote.sha256 is None:
        return
    digest = hashlib.sha256()
    with file.open("rb") as data:
        for chunk in iter(lambda: data.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    if digest.hexdigest() != remote.sha256:
        file.unlink()
        raise DownloadError(
            f"{file} (from {remote.url}): sha256 {digest.hexdigest()} does not match the "
            f"expected {remote.sha256}; the file was deleted, run again to download it afresh"
        )


def _extract(archive: Path, directory: Path) -> None:
    """Extract the zip's files into `directory`, dropping its top folder (ml-1m/...)."""
    try:
        zipped = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DownloadError(f"{archive} is not a zip archive; delete it and run again") from None
    with zipped:
        for member in zipped.infolist():
            parts = Path(member.filename).parts[1:]
            if member.is_dir() or not parts or ".." in parts:
                continue
            destination = directory.joinpath(*parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(member) as source, destination.open("wb") as out:
                shutil.copyfileobj(source, out)
