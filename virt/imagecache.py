"""The per-host cache of base images that instance overlays are built on.

A base is a raw file named by the sha256 of the stored image it came from,
so a re-imported name never reuses a stale base. It is fetched, verified and
converted once per host under an external lock per image; concurrent spawns
wait for the first one and then share the result.
"""

from __future__ import annotations

import os
import time

from oslo_concurrency import lockutils

from virt import images
from virt.errors import UnsafeImage
from virt.fileutils import remove_quietly
from virt.imagestore import LocalImageStore, StoredImage, file_sha256


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
        return os.path.join(self.base_dir, image.sha256)

    def fetch_base(self, image_name: str, progress: images.Progress | None = None) -> str:
        """Path of the raw base for `image_name`, made once and checked on every use."""
        image = self.store.get(image_name)
        base = self.base_path(image)
        with self._lock(image.sha256):
            if not os.path.exists(base):
                self._fetch(image, base, progress)
            # Re-inspected on every use: a base is only ever opened as raw.
            images.inspect_untrusted(base, "raw", image.virtual_size, self.store.limits)
            os.utime(base)
        return base

    def cleanup(self, in_use: set[str], min_age: float) -> list[str]:
        """Remove bases not in `in_use` (paths) whose last use is older than min_age seconds."""
        removed = []
        for name in sorted(os.listdir(self.base_dir) if os.path.isdir(self.base_dir) else []):
            path = os.path.join(self.base_dir, name)
            if name.startswith(".") or path in in_use or not self._idle(path, min_age):
                continue
            with self._lock(name):
                # A spawn may have used it while we waited for the lock.
                if self._idle(path, min_age):
                    remove_quietly(path)
                    removed.append(path)
        return removed

    def _fetch(self, image: StoredImage, base: str, progress) -> None:
        if file_sha256(image.path) != image.sha256:
            raise UnsafeImage(f"image {image.name!r} in the store does not match its recorded "
                              "sha256: it was modified or corrupted; delete and re-import it")
        if image.backing_chain:
            self._check_chain(image)
        else:
            images.inspect_untrusted(image.path, image.format, None, self.store.limits)
        os.makedirs(self.base_dir, exist_ok=True)
        images.convert(image.path, image.format, base, "raw", progress=progress)

    def _check_chain(self, image: StoredImage) -> None:
        """An imported chain may only read the store files recorded for it."""
        expected = [image.path, *image.backing_chain]
        chain = [name for name, _ in images.backing_chain(image.path, image.format)]
        if [os.path.realpath(p) for p in chain] != [os.path.realpath(p) for p in expected]:
            raise UnsafeImage(f"image {image.name!r} reads {chain}, not its recorded chain "
                              f"{expected}; delete and re-import it")

    def _lock(self, key: str):
        return lockutils.lock(f"virt-driver-image-{key}", external=True,
                              lock_path=self.lock_path)

    @staticmethod
    def _idle(path: str, min_age: float) -> bool:
        try:
            return time.time() - os.stat(path).st_mtime >= min_age
        except FileNotFoundError:
            return False
