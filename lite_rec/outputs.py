"""Output folders that lite-rec owns: written whole into a temporary sibling and renamed into
place only on success, never mixed with an older output, and never replacing a folder that
lite-rec did not write.

A folder is lite-rec's when it holds the marker file `.lite-rec` (written with every output),
or when every file in it is one that the same command writes (outputs written before the marker
existed, or what `dvc repro` leaves after removing a stage's outputs). Anything else is refused:
`--out` pointing at a user's folder, at a file, or inside the input it reads.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

MARKER_FILE = ".lite-rec"


class OutputError(ValueError):
    """An `--out` that lite-rec refuses to write, named with the reason."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def check_output_dir(
    out_dir: str | Path, kind: str, known_files: Iterable[str], sources: Iterable[str | Path] = ()
) -> None:
    """Raise `OutputError` unless `out_dir` may be (re)written by the `kind` command: it does
    not exist, is empty, or is lite-rec's own `kind` output; and it is not inside a source."""
    out = Path(out_dir).absolute()
    for source in sources:
        source = Path(source).absolute()
        if _is_within(out.resolve(), source.resolve()):
            raise OutputError(
                f"--out {out_dir}: inside the input {source}; expected a folder outside it "
                "(lite-rec never writes into what it reads)"
            )
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise OutputError(f"--out {out_dir}: exists and is not a folder; expected a folder path")
    marker = out / MARKER_FILE
    if marker.is_file():
        try:
            written = json.loads(marker.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            written = None
        if written != kind:
            raise OutputError(
                f"--out {out_dir}: holds lite-rec's {written!r} output, not a {kind!r} one; "
                "expected a new folder or one this command wrote"
            )
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in set(known_files))
    if foreign:
        raise OutputError(
            f"--out {out_dir}: exists and was not written by lite-rec (no {MARKER_FILE} marker; "
            f"holds {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); expected a "
            "new folder or one lite-rec wrote. Nothing was changed"
        )


def write_marker(directory: Path, kind: str) -> None:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    (directory / MARKER_FILE).write_text(json.dumps({"kind": kind, "written": stamp}) + "\n")


def replace_dir(staging: Path, out_dir: Path) -> None:
    """Put the finished `staging` folder at `out_dir`, retiring the older output (already
    checked to be lite-rec's) only once the new one is in place."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
    os.replace(out_dir, retired / out_dir.name)
    os.replace(staging, out_dir)
    shutil.rmtree(retired)


def _refuse_second_writer(out_dir: Path, lock_path: Path) -> None:
    try:
        holder = lock_path.read_text().strip() or "another process"
    except OSError:
        holder = "another process"
    raise OutputError(
        f"--out {out_dir}: another lite-rec command ({holder}) is writing it; expected one "
        "writer at a time: wait for it or choose another --out"
    )


@contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """Held while a command writes `out_dir`; a second writer is refused, not interleaved.
    The lock file `.NAME.lock` beside it exists only while it is held."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out_dir.with_name(f".{out_dir.name}.lock")
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _refuse_second_writer(out_dir, lock_path)
        try:
            same_file = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:  # its holder finished and removed it between our open and lock
            _refuse_second_writer(out_dir, lock_path)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def staged_output(
    out_dir: str | Path,
    kind: str,
    known_files: Iterable[str],
    sources: Iterable[str | Path] = (),
    keep_partial: bool = False,
) -> Iterator[Path]:
    """Yield a staging folder beside `out_dir` to write the whole output into; on success it
    replaces `out_dir`. On failure the staging folder is removed, or, with `keep_partial`, kept
    as `.NAME.partial` for the next run of the same command to resume from."""
    out = Path(out_dir)
    known_files = [*known_files, MARKER_FILE]
    check_output_dir(out, kind, known_files, sources)
    with output_lock(out):
        if keep_partial:
            staging = out.with_name(f".{out.name}.partial")
            staging.mkdir(exist_ok=True)
        else:
            staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
            os.chmod(staging, 0o777 & ~_umask())  # as mkdir would make it, not mkdtemp's 0700
        try:
            yield staging
            write_marker(staging, kind)
            replace_dir(staging, out)
        except BaseException:
            if not keep_partial:
                shutil.rmtree(staging, ignore_errors=True)
            raise


def write_file_atomically(path: str | Path, text: str) -> None:
    """Write `text` to a temporary sibling, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.fchmod(handle, 0o666 & ~_umask())  # as open would make it, not mkstemp's 0600
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
