"""The Glance images this Nova compute node keeps, and Nova's pass that removes them.

spawn keeps each Glance image it boots: a disk in the image store as
glance-<id>, a kernel or ramdisk as the file <id> in the boot-file
directory. Nova's image cache manager (a periodic task) calls
manage_image_cache with every instance of the hosts sharing this storage;
an image none of them names, that no spawn is using right now, and that
has not been used for the minimum age goes.

A spawn registers the images it uses (`using`) before it takes an image's
lock, and keeps them registered until its guest's disk exists (from then
on the disk's base in the per-host cache holds the bytes). The pass skips a
registered image and decides under the same lock, so a racing spawn either
finds the image gone and fetches it again, or is seen using it. Nothing
here imports Nova: the unit tests run without it.

Last use is the modification time of a mark file per image id (a spawn
and each pass that sees the image in use touch it); an image found without
a mark is marked when first seen unused, so it gets the whole minimum age.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator

from oslo_concurrency import lockutils

from virt.errors import ImageNotFound
from virt.fileutils import remove_quietly
from virt.imagestore import LocalImageStore

LOG = logging.getLogger(__name__)

GLANCE_PREFIX = "glance-"


class GlanceImages:
    """Glance images on this host: where each lives, who uses it, when it goes."""

    def __init__(self, store: LocalImageStore, boot_dir: str, marks_dir: str):
        self.store, self.boot_dir, self.marks_dir = store, boot_dir, marks_dir
        self._spawning: collections.Counter[str] = collections.Counter()
        self._guard = threading.Lock()

    @staticmethod
    def store_name(image_id: str) -> str:
        return GLANCE_PREFIX + image_id

    def boot_file(self, image_id: str) -> str:
        return os.path.join(self.boot_dir, image_id)

    def lock(self, image_id: str):
        """The lock under which an image is fetched, and removed."""
        return lockutils.lock(f"virtdriver-glance-{image_id}")

    @contextlib.contextmanager
    def using(self, image_ids: Iterable[str]) -> Iterator[None]:
        """Images a spawn is using: the pass leaves them alone until the block ends."""
        ids = [i for i in image_ids if i]
        with self._guard:
            self._spawning.update(ids)
        try:
            yield
        finally:
            with self._guard:
                self._spawning.subtract(ids)
                self._spawning += collections.Counter()  # drop the zeros
            for image_id in ids:
                self.mark_used(image_id)

    def mark_used(self, image_id: str) -> None:
        os.makedirs(self.marks_dir, 0o755, exist_ok=True)
        with open(os.path.join(self.marks_dir, image_id), "a"):
            pass
        os.utime(os.path.join(self.marks_dir, image_id))

    def present(self) -> set[str]:
        """Ids of the Glance images kept on this host (disks, kernels, ramdisks)."""
        ids = {image.name[len(GLANCE_PREFIX):] for image in self.store.list()
               if image.name.startswith(GLANCE_PREFIX)}
        if os.path.isdir(self.boot_dir):
            ids.update(name for name in os.listdir(self.boot_dir) if not name.startswith("."))
        return ids

    def remove_unused(self, used: Iterable[str], min_age: float) -> list[str]:
        """Remove the images not in `used`, not being spawned, idle for min_age seconds;
        their ids."""
        used = set(used)
        removed = []
        for image_id in sorted(self.present()):
            if image_id in used:
                self.mark_used(image_id)
            elif not self.spawning(image_id) and self._idle(image_id, min_age):
                with self.lock(image_id):
                    if self.spawning(image_id):  # a spawn came meanwhile
                        continue
                    self._remove(image_id)
                removed.append(image_id)
        return removed

    def spawning(self, image_id: str) -> bool:
        """Whether a spawn is using the image now."""
        with self._guard:
            return self._spawning[image_id] > 0

    def _idle(self, image_id: str, min_age: float) -> bool:
        mark = os.path.join(self.marks_dir, image_id)
        if not os.path.exists(mark):
            self.mark_used(image_id)  # first seen unused: its minimum age starts now
        return time.time() - os.stat(mark).st_mtime >= min_age

    def _remove(self, image_id: str) -> None:
        with contextlib.suppress(ImageNotFound):
            self.store.delete(self.store_name(image_id))
        remove_quietly(self.boot_file(image_id))
        remove_quietly(os.path.join(self.marks_dir, image_id))
        LOG.info("removed unused Glance image %s from this host", image_id)
