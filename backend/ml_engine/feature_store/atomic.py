"""Atomic file writes: temp file in the same folder, fsync, then link/rename into place.

Temp files start with ``.`` and end with ``.tmp`` so that pyarrow, DuckDB, polars
and Spark globs never pick up a half-written file.
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

TEMP_SUFFIX = ".tmp"


def temp_path_for(path: Path) -> Path:
    """A hidden, unique temp name beside ``path``: ``.<name>.<8 hex>.tmp``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    """fsync a folder so a rename in it survives a crash; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _temp_file(path: Path, fsync: bool) -> Iterator[tuple[BinaryIO, Path]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        with open(tmp, "wb") as fh:
            yield fh, tmp
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _temp_path(path: Path, fsync: bool) -> Iterator[Path]:
    """A temp path for writers that want a file name (pyarrow writes faster to a path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_new(
    path: Path,
    writer: Callable[[BinaryIO], None] | None = None,
    *,
    path_writer: Callable[[Path], None] | None = None,
    fsync: bool = True,
) -> bool:
    """Create ``path`` atomically with ``writer(fh)`` or ``path_writer(tmp_path)``.

    Never replaces an existing file: returns False (and writes nothing) when
    ``path`` already exists, which makes a retried write with the same name idempotent.
    """
    if path.exists():
        return False
    if path_writer is not None:
        with _temp_path(path, fsync) as tmp:
            path_writer(tmp)
    else:
        with _temp_file(path, fsync) as (fh, tmp):
            writer(fh)
    try:
        os.link(tmp, path)  # fails if path exists: no silent overwrite
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        return False
    except OSError:
        # Filesystems without hard links: rename is still atomic.
        if path.exists():
            tmp.unlink(missing_ok=True)
            return False
        os.replace(tmp, path)
    else:
        tmp.unlink(missing_ok=True)
    if fsync:
        fsync_dir(path.parent)
    return True


def replace_existing(
    path: Path, writer: Callable[[BinaryIO], None], *, expected_stat: tuple[int, int] | None = None, fsync: bool = True
) -> None:
    """Atomically replace ``path`` with new content.

    ``expected_stat`` is ``(st_size, st_mtime_ns)`` of the file as it was read;
    if the file changed since, nothing is replaced and ``FileChangedError`` is
    raised, so a file is never overwritten with data derived from a stale read.
    """
    with _temp_file(path, fsync) as (fh, tmp):
        writer(fh)
    if expected_stat is not None:
        try:
            st = path.stat()
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            raise FileChangedError(f"{path}: file disappeared since it was read") from None
        if (st.st_size, st.st_mtime_ns) != expected_stat:
            tmp.unlink(missing_ok=True)
            raise FileChangedError(f"{path}: file changed since it was read; not overwritten")
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


def file_stat(path: Path) -> tuple[int, int]:
    """``(st_size, st_mtime_ns)`` of ``path``, the ``expected_stat`` of ``replace_existing``."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns


class FileChangedError(RuntimeError):
    """A file changed (or vanished) between being read and being replaced; nothing was written."""

    pass


def remove_stale_temp_files(root: Path, max_age_s: float = 3600.0) -> int:
    """Delete temp files left behind by a process killed mid-write."""
    if not root.exists():
        return 0
    now = time.time()
    removed = 0
    for tmp in root.rglob(f".*{TEMP_SUFFIX}"):
        try:
            if now - tmp.stat().st_mtime > max_age_s:
                tmp.unlink()
                removed += 1
        except OSError:
            continue
    return removed
