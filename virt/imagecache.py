"""The per-host cache of base images that instance overlays are built on.

A base is a raw file named by the format and the sha256 of the stored image
it came from (`qcow2-<sha256>`): the same bytes stored once as raw and once
as qcow2 mean two different disks, so they get two bases, and a re-imported
name never reuses a stale base. It is fetched, verified and converted once
per host under an external lock per base; concurrent spawns wait for the
first one and then share the result. A raw stored image needs no conversion:
its base is a hard link to the store file (both are only ever replaced,
never written: a base is opened read-only, as the backing file of overlays),
so its first use copies nothing. Its time of last use is then kept on its
users record, as the base's own would be the store file's.

The stored image is checked before it becomes a base: unchanged since its
record (same inode, size and modification time), or else read and hashed
again; a mismatch is refused. Nothing slow runs under the lock once a base
exists: overlays are made before it is taken (written as qemu-img -u writes
them, the base is not opened), and only the users record is written while it
is held; a spawn takes it once (ensure_base does not when the base exists).

Who uses a base. Every overlay is made by `create_overlay`, which creates
the overlay and then, under the base's lock, makes sure the base is there
and appends the overlay's path to the base's users record (`.users/<base>`,
a JSON list). A recorded user counts while its overlay exists and its qcow2
header still points at the base (compared as files, so `..`, `//` and
symlinks in either path do not matter); the header is read here, never with
qemu-img, which could not open a running guest's write-locked disk.
`cleanup` decides under the same lock, so a spawn racing with it either
finds the base gone and fetches it again, or has recorded its overlay before
cleanup looks (a base removed before the lock is taken is fetched anew under
it). Any configuration sharing the cache therefore protects its overlays
without cleanup knowing its instances path; overlays made before the records
existed count when they are among the root disks cleanup is given (the
driver names them).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import struct
import time
from collections.abc import Iterable

from virt import images
from virt.errors import ImageError, UnsafeImage
from virt.fileutils import atomic_write, fsync_path, remove_quietly
from virt.imagestore import LocalImageStore, StoredImage
from virt.locks import external_lock

LOG = logging.getLogger(__name__)

USERS_DIR = ".users"

_QCOW2_MAGIC = b"QFI\xfb"
_QCOW2_BACKING_NAME_MAX = 1023  # the qcow2 specification's limit


class ImageCache:
    def __init__(self, base_dir: str, lock_path: str, store: LocalImageStore):
        self.base_dir = base_dir
        self.lock_path = lock_path
        self.store = store

    @classmethod
    def from_conf(cls, conf) -> ImageCache:
        return cls(conf.images.cache_path, conf.oslo_concurrency.lock_path or conf.lock_path,
                   LocalImageStore.from_conf(conf))

    def base_path(self, image: StoredImage) -> str:
        return os.path.join(self.base_dir, f"{image.format}-{image.sha256}")

    def fetch_base(self, image_name: str, progress: images.Progress | None = None) -> str:
        """Path of the raw base for `image_name`, made once and checked on every use."""
        image = self.store.get(image_name)
        base = self.base_path(image)
        with self._lock(os.path.basename(base)):
            self._ensure(image, base, progress)
        return base

    def ensure_base(self, image_name: str, progress: images.Progress | None = None) -> None:
        """fetch_base, without the lock when the base is there already.

        For a spawn, whose create_overlay follows and takes the lock anyway:
        there it checks the base again, fetches it if a cleanup removed it
        meanwhile, and records its user. A base appears only whole (a rename
        or a link), so one seen here is complete; one lock a spawn, not two.
        """
        image = self.store.get(image_name)
        base = self.base_path(image)
        try:
            _check_base(base, image.virtual_size)
        except FileNotFoundError:
            self.fetch_base(image_name, progress)

    def create_overlay(self, image_name: str, overlay: str, size: int | None = None,
                       progress: images.Progress | None = None) -> str:
        """Make `overlay`, a qcow2 overlay on the image's base, recorded as its user; the base.

        The overlay comes first, outside the lock (the base need not exist
        yet); a crash before it is recorded leaves an overlay the spawn's
        own undo removes, and a base removed meanwhile is fetched again.
        """
        image = self.store.get(image_name)
        base = self.base_path(image)
        images.create_cow_image(base, overlay, image.virtual_size if size is None else size,
                                backing_format="raw", open_backing=False)
        try:
            with self._lock(os.path.basename(base)):
                self._ensure(image, base, progress)
                self._write_users(base, [*self._read_users(base), os.path.abspath(overlay)])
        except BaseException:
            remove_quietly(overlay)
            raise
        return base

    def cleanup(self, root_disks: Iterable[str], min_age: float) -> list[str]:
        """Remove bases no overlay uses whose last use is older than min_age seconds.

        root_disks: the instances' disks, which count when they point at a
        base even if made before users were recorded (the driver's
        all_instance_files()).
        """
        legacy = [disk for disk in root_disks if os.path.isfile(disk)]
        removed = []
        for name in sorted(os.listdir(self.base_dir) if os.path.isdir(self.base_dir) else []):
            path = os.path.join(self.base_dir, name)
            if (name.startswith(".") or not os.path.isfile(path)
                    or not self._idle(path, min_age)):
                continue
            with self._lock(name):
                # A spawn may have used it while we waited for the lock.
                try:
                    if not self._idle(path, min_age) or self._in_use(path, legacy):
                        continue
                except UnsafeImage as exc:
                    LOG.warning("keeping %s: %s", path, exc)
                    continue
                remove_quietly(path)
                remove_quietly(self._users_path(path))
                removed.append(path)
        return removed

    def users(self, base: str) -> list[str]:
        """Overlays that use `base` now: recorded, present and pointing at it."""
        return [o for o in self._read_users(base) if _points_at(o, base)]

    def _in_use(self, base: str, legacy: list[str]) -> bool:
        users = self.users(base)
        if users != self._read_users(base):
            self._write_users(base, users)  # forget overlays that are gone
        return bool(users) or any(_points_at(o, base) for o in legacy)

    def _ensure(self, image: StoredImage, base: str, progress) -> None:
        if not os.path.exists(base):
            self._fetch(image, base, progress)
        _check_base(base, image.virtual_size)
        self._touch(base)

    def _touch(self, base: str) -> None:
        """Mark the base used now: on the base itself, or on its users record if the
        base is a store file's link (its time belongs to the store's record)."""
        if os.stat(base).st_nlink == 1:
            os.utime(base)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.utime(self._users_path(base))

    def _idle(self, base: str, min_age: float) -> bool:
        """Unused for min_age seconds, by the base's time and its users record's."""
        return _idle(base, min_age) and (not os.path.exists(self._users_path(base))
                                         or _idle(self._users_path(base), min_age))

    def _fetch(self, wanted: StoredImage, base: str, progress) -> None:
        """Convert the image into `base`, hashing, checking and reading the same files."""
        with self.store.pinned(wanted.name) as image:
            if (image.sha256, image.format) != (wanted.sha256, wanted.format):
                raise ImageError(f"image {image.name!r} was re-imported while an instance "
                                 "was being built from it: try again")
            if not (image.unchanged(image.path) or image.matches_hash(image.path)):
                raise UnsafeImage(f"image {image.name!r} in the store does not match its "
                                  "recorded sha256: it was modified or corrupted; delete and "
                                  "re-import it")
            if image.backing_chain:
                self._check_chain(image)
            else:
                images.inspect_untrusted(image.path, image.format, None, self.store.limits)
            os.makedirs(self.base_dir, exist_ok=True)
            if image.format == "raw" and not image.backing_chain and _linked(image.path, base):
                return
            images.convert(image.path, image.format, base, "raw", progress=progress)

    def _check_chain(self, image: StoredImage) -> None:
        """An imported chain may only read the store files recorded for it."""
        expected = [image.path, *image.backing_chain]
        chain = [name for name, _ in images.backing_chain(image.path, image.format)]
        if [os.path.realpath(p) for p in chain] != [os.path.realpath(p) for p in expected]:
            raise UnsafeImage(f"image {image.name!r} reads {chain}, not its recorded chain "
                              f"{expected}; delete and re-import it")

    def _users_path(self, base: str) -> str:
        return os.path.join(self.base_dir, USERS_DIR, os.path.basename(base))

    def _read_users(self, base: str) -> list[str]:
        try:
            with open(self._users_path(base)) as f:
                users = json.load(f)
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            users = None
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            # Unreadable: the base must then be kept, so fail rather than guess.
            raise UnsafeImage(f"users record {self._users_path(base)} of a cached base is "
                              "damaged: remove it only after checking no instance uses the base")
        return users

    def _write_users(self, base: str, users: list[str]) -> None:
        os.makedirs(os.path.dirname(self._users_path(base)), exist_ok=True)
        atomic_write(self._users_path(base), json.dumps(sorted(set(users)), indent=1))

    def _lock(self, key: str):
        return external_lock(self.lock_path, f"virt-driver-image-{key}")


def _check_base(base: str, virtual_size: int) -> None:
    """A base is our own raw conversion: a regular file of the image's virtual size.

    Its content is the guest's disk and may look like any format (a disk
    holding a qcow2 file, say); it is only ever opened as raw, so no
    content check applies here. A file swapped in or resized is refused.
    """
    st = os.lstat(base)
    if not stat.S_ISREG(st.st_mode) or st.st_size != virtual_size:
        raise UnsafeImage(f"cached base {base} is not the {virtual_size}-byte raw file it "
                          "was made as: remove it and try again (it is fetched anew)")


def qcow2_backing_file(path: str) -> str | None:
    """The backing file named in a qcow2 header, relative names resolved; None if none.

    Read from the header itself: qemu-img cannot open a running guest's disk
    without -U, and needs no process for a few bytes.
    """
    try:
        with open(path, "rb") as f:
            header = f.read(20)
            if len(header) < 20 or header[:4] != _QCOW2_MAGIC:
                return None
            offset, size = struct.unpack(">QI", header[8:20])
            if not offset or not 0 < size <= _QCOW2_BACKING_NAME_MAX:
                return None
            f.seek(offset)
            name = os.fsdecode(f.read(size))
    except OSError:
        return None
    return os.path.join(os.path.dirname(os.path.abspath(path)), name)


def _linked(stored: str, base: str) -> bool:
    """Hard-link a stored raw file as the base (one atomic step); False where links
    cannot join the two directories (another filesystem), and a copy is needed."""
    try:
        os.link(stored, base)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            return False
        raise
    fsync_path(os.path.dirname(base))
    return True


def _points_at(overlay: str, base: str) -> bool:
    """True when the overlay's header names the base file (by identity, not spelling)."""
    backing = qcow2_backing_file(overlay)
    try:
        return backing is not None and os.path.samefile(backing, base)
    except OSError:
        return False


def _idle(path: str, min_age: float) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime >= min_age
    except FileNotFoundError:
        return False
