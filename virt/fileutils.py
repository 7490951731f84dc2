"""Atomic file creation, quiet removal and filesystem facts, shared by every writer.

A result appears under its final name only when complete: work happens on a
temporary name in the same directory, then fsync and rename.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

GiB = 1 << 30


@contextlib.contextmanager
def atomic_target(path: str) -> Iterator[str]:
    """Yield a temporary path beside `path`; rename it to `path` on success.

    The temporary is removed if the block raises. The caller fills the file.
    """
    directory, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        fsync_path(tmp)
        os.rename(tmp, path)
        fsync_path(directory)
    except BaseException:
        remove_quietly(tmp)
        raise


def atomic_write(path: str, data: str | bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically with permission bits `mode`."""
    with atomic_target(path) as tmp:
        os.chmod(tmp, mode)
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)


def remove_quietly(path: str) -> None:
    """Remove a file or a directory tree; a missing one is not an error."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def fsync_path(path: str) -> None:
    """fsync a file or a directory (a directory: to make renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def filesystem_usage_gb(path: str) -> tuple[float | None, float | None, float | None]:
    """Size, free and used GiB of the filesystem holding `path` (or its nearest parent)."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path or "/")
    except OSError:
        return None, None, None
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    return round(total / GiB, 2), round(free / GiB, 2), round((total - free) / GiB, 2)
