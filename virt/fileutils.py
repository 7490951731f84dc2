"""Atomic file creation and quiet removal, shared by every writer.

A result appears under its final name only when complete: work happens on a
temporary name in the same directory, then fsync and rename.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator


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
        _fsync_path(tmp)
        os.rename(tmp, path)
        _fsync_path(directory)
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


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
