"""Named locks that hold across threads and processes, without oslo.concurrency.

A boot takes the per-base lock, and importing oslo_concurrency.lockutils
brings oslo.config, debtcollector and importlib.metadata with it: a third
of a boot's start. The lock is the same as lockutils' external lock, so
processes of either kind exclude each other: a POSIX lock (lockf) on the
file `name` in the lock directory, taken after a lock per name among this
process's threads (POSIX locks belong to the process, not the thread).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator

_GUARD = threading.Lock()
_IN_PROCESS: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def external_lock(lock_path: str, name: str) -> Iterator[None]:
    """Hold the lock `name` in directory `lock_path` (made if missing) until the block ends."""
    path = os.path.join(lock_path, name)
    with _GUARD:
        in_process = _IN_PROCESS.setdefault(path, threading.Lock())
    with in_process:
        os.makedirs(lock_path, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)   # closing releases the lock
