"""The snapshot-pending marker: a guest a killed snapshot left saved is restored.

A snapshot of a running or paused guest managed-saves it for the copy. Before
it saves, it writes `{instance_dir}/snapshot-pending` holding the state to
return to, and keeps an flock on it until the guest is back. A marker whose
lock is free therefore belongs to a snapshot that died: the next call on the
instance restores the guest to that state and removes the marker. (No `.vd-`
prefix: that names temporaries reclaimed wholesale after a crash.)
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator

import libvirt

from virt.errors import InvalidState
from virt.fileutils import fsync_path

LOG = logging.getLogger(__name__)

MARKER = "snapshot-pending"
STATES = ("running", "paused")


def marker_path(instance_dir: str) -> str:
    return os.path.join(instance_dir, MARKER)


@contextlib.contextmanager
def pending_snapshot(instance_dir: str, previous_state: str) -> Iterator[None]:
    """Hold the marker (state to return to, under an flock) while the guest is saved."""
    if previous_state not in STATES:
        raise ValueError(f"previous state {previous_state!r}: use one of {STATES}")
    path = marker_path(instance_dir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidState(f"a snapshot of the instance in {instance_dir} is under way: "
                               "wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.write(fd, previous_state.encode())
        os.fsync(fd)
        fsync_path(instance_dir)
        yield
        os.unlink(path)  # only once the guest is back: a kill before leaves the marker
    finally:
        os.close(fd)


def finish_killed_snapshot(instance_dir: str, dom: libvirt.virDomain) -> bool:
    """Restore a guest whose snapshot died (marker present, lock free); True if one did."""
    path = marker_path(instance_dir)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live snapshot holds it
        if not _still_linked(fd, path):
            return False  # another caller restored the guest meanwhile
        previous = os.read(fd, 16).decode(errors="replace")
        LOG.warning("a snapshot of %s was killed while the guest was saved: restoring it %s",
                    dom.name(), previous if previous in STATES else "running")
        _restore(dom, previous)
        os.unlink(path)
        return True
    finally:
        os.close(fd)


def _restore(dom: libvirt.virDomain, previous: str) -> None:
    if dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF and dom.hasManagedSaveImage():
        dom.create()
    # QEMU restores a paused guest paused; not every driver does.
    if previous == "paused" and dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING:
        dom.suspend()


def _still_linked(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)
