"""Finding and reclaiming what a killed operation left behind.

Leftovers are recognised, never guessed: every temporary file and staging
directory is named fileutils.TEMP_PREFIX + ..., and a live operation holds
an flock on it. What nobody holds is reclaimed at once, whatever its age.
An operation marker is such a temporary that also says what the operation
was doing (e.g. a spawn: instance name and uuid), so that the reclaim can
undo the rest of its work through a handler the backend gives. The image
store adds its own leftovers (virt.imagestore.LocalImageStore.reclaim).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from virt.fileutils import (
    TEMP_PREFIX,
    directory_lock,
    held_temporary,
    remove_quietly,
    try_lock,
)

LOG = logging.getLogger(__name__)

_MARKER = "op-"
# kind of operation -> undo(data from its marker); raises to keep the marker for later
Handlers = Mapping[str, Callable[[dict], None]]


@dataclass(frozen=True)
class Reclaimed:
    path: str
    bytes: int  # space actually freed (files with no other link)
    what: str


def freed_bytes(path: str) -> int:
    """Allocated bytes under `path` that removing it frees (hard links to kept files excluded)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_blocks * 512 if st.st_nlink == 1 else 0
    total = st.st_blocks * 512
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                entry = os.lstat(os.path.join(root, name))
                if stat.S_ISDIR(entry.st_mode) or entry.st_nlink == 1:
                    total += entry.st_blocks * 512
    return total


class OperationMarker:
    """A held temporary in `directory` recording a running operation of `kind`.

    release() when the operation has finished or undone its work; if the
    process dies first, a reclaim hands `data` to the handler for `kind`.
    """

    def __init__(self, directory: str, kind: str, **data: str):
        self._held: contextlib.AbstractContextManager[str] | None = held_temporary(
            directory, _MARKER + kind)
        self.path = self._held.__enter__()
        with open(self.path, "w") as f:
            json.dump(data, f)

    def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.__exit__(None, None, None)


def reclaim_temporaries(directory: str, handlers: Handlers | None = None) -> list[Reclaimed]:
    """Remove the temporaries in `directory` that no live operation holds."""
    if not os.path.isdir(directory):
        return []
    with directory_lock(directory, exclusive=True):
        return reclaim_entries(directory, handlers)


def reclaim_entries(directory: str, handlers: Handlers | None = None) -> list[Reclaimed]:
    """reclaim_temporaries for a caller that holds the exclusive directory lock."""
    reclaimed = []
    for entry in sorted(os.listdir(directory)):
        if entry.startswith(TEMP_PREFIX):
            found = _reclaim_one(os.path.join(directory, entry), handlers or {})
            if found:
                reclaimed.append(found)
    return reclaimed


def _reclaim_one(path: str, handlers: Handlers) -> Reclaimed | None:
    try:
        fd = try_lock(path)
    except FileNotFoundError:
        return None
    except OSError:
        fd = None  # a symbolic link or a special file: nothing of ours, only its name is
        if os.path.isdir(path) and not os.path.islink(path):
            return None
    else:
        if fd is None:
            return None  # a live operation holds it
    try:
        kind = os.path.basename(path)[len(TEMP_PREFIX):].split(".")[0]
        if kind.startswith(_MARKER) and not _undo(path, kind[len(_MARKER):], handlers):
            return None
        what = ("operation marker" if kind.startswith(_MARKER) else
                "staging directory" if os.path.isdir(path) and not os.path.islink(path)
                else "temporary")
        size = freed_bytes(path)
        remove_quietly(path)
        return Reclaimed(path, size, what)
    finally:
        if fd is not None:
            os.close(fd)


def _undo(marker: str, kind: str, handlers: Handlers) -> bool:
    """Let the handler undo a dead operation's work; False keeps the marker for later."""
    try:
        with open(marker) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return True  # killed before it wrote what it does: it did nothing yet
    handler = handlers.get(kind)
    if handler is None:
        LOG.warning("%s: no handler for a dead %s operation here; kept", marker, kind)
        return False
    try:
        handler(data)
    except Exception as exc:  # keep the marker: the next reclaim tries again
        LOG.warning("cannot undo the dead %s operation of %s: %s; kept for the next cleanup",
                    kind, marker, exc)
        return False
    return True


def reclaim_instances(instances_path: str, handlers: Handlers | None = None) -> list[Reclaimed]:
    """Dead operations' markers and temporaries in `instances_path` and each instance dir."""
    reclaimed = reclaim_temporaries(instances_path, handlers)
    if os.path.isdir(instances_path):
        for entry in sorted(os.listdir(instances_path)):
            path = os.path.join(instances_path, entry)
            if not entry.startswith(TEMP_PREFIX) and os.path.isdir(path) \
                    and not os.path.islink(path):
                reclaimed += reclaim_temporaries(path)
    return reclaimed


def reclaim_host(store, instances_path: str, directories: Iterable[str] = (),
                 handlers: Handlers | None = None) -> list[Reclaimed]:
    """Everything the driver's directories hold that no live operation does.

    store: a LocalImageStore (its own leftovers: see its reclaim());
    directories: further directories whose temporaries are reclaimed.
    """
    reclaimed = reclaim_instances(instances_path, handlers)
    reclaimed += store.reclaim()
    for directory in directories:
        reclaimed += reclaim_temporaries(directory)
    return reclaimed
