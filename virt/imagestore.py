"""The local image store: the embedded default source of base images.

Layout of the store directory: `NAME.img` holds the image, `NAME.json` its
record (format, virtual size, sha256, properties). Only raw and qcow2 are
stored: every other accepted format is converted to qcow2 on import, and
every import is rewritten by qemu-img, never copied byte for byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field

from virt import images
from virt.errors import ImageNotFound, InvalidParameter, VirtError
from virt.fileutils import atomic_write, remove_quietly
from virt.validation import check_image_name

_IMAGE_SUFFIX = ".img"
_RECORD_SUFFIX = ".json"
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredImage:
    name: str
    path: str
    format: str
    virtual_size: int
    sha256: str
    properties: dict[str, str] = field(default_factory=dict)
    # Store files this image's backing chain reads, leaf excluded (image chains).
    backing_chain: tuple[str, ...] = ()


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class LocalImageStore:
    def __init__(self, directory: str, max_virtual_size: int = images.DEFAULT_MAX_VIRTUAL_SIZE,
                 allowed_formats: tuple[str, ...] = ("qcow2", "raw", "vmdk", "vpc"),
                 limits: images.Limits | None = None):
        self.directory = directory
        self.max_virtual_size = max_virtual_size
        self.allowed_formats = tuple(allowed_formats)
        self.limits = limits or images.Limits()

    @classmethod
    def from_conf(cls, conf) -> LocalImageStore:
        return cls(conf.images.store_path,
                   max_virtual_size=images.parse_size(conf.images.max_virtual_size),
                   allowed_formats=tuple(conf.images.allowed_formats),
                   limits=images.Limits(conf.images.qemu_img_address_space_mb << 20,
                                        conf.images.qemu_img_cpu_seconds))

    def import_image(self, name: str, path: str, fmt: str,
                     properties: dict[str, str] | None = None,
                     progress: images.Progress | None = None) -> StoredImage:
        """Inspect an outside image, then rewrite it into the store."""
        check_image_name(name)
        if fmt not in self.allowed_formats:
            raise InvalidParameter(f"format {fmt!r}: use one of {', '.join(self.allowed_formats)}")
        if self._exists(name):
            raise InvalidParameter(f"image {name!r} already exists: delete it first "
                                   "or choose another name")
        inspected = images.inspect_untrusted(path, fmt, self.max_virtual_size, self.limits)
        os.makedirs(self.directory, exist_ok=True)
        stored_fmt = "raw" if fmt == "raw" else "qcow2"
        target = self._image_path(name)
        images.convert(path, fmt, target, stored_fmt, progress=progress)
        try:
            return self.register(name, stored_fmt, inspected.virtual_size, properties)
        except BaseException:
            remove_quietly(target)
            raise

    def register(self, name: str, fmt: str, virtual_size: int,
                 properties: dict[str, str] | None = None, filename: str | None = None,
                 backing_chain: tuple[str, ...] = ()) -> StoredImage:
        """Record an image whose file (and chain files) are already in the store.

        filename and backing_chain are names of files in the store directory;
        filename defaults to NAME.img.
        """
        check_image_name(name)
        filename = filename or name + _IMAGE_SUFFIX
        record = {"file": filename, "format": fmt, "virtual_size": virtual_size,
                  "sha256": file_sha256(os.path.join(self.directory, filename)),
                  "properties": dict(properties or {}),
                  "backing_chain": list(backing_chain)}
        atomic_write(self._record_path(name), json.dumps(record, indent=1, sort_keys=True))
        return self._from_record(name, record)

    def get(self, name: str) -> StoredImage:
        check_image_name(name)
        try:
            with open(self._record_path(name)) as f:
                record = json.load(f)
        except FileNotFoundError:
            raise ImageNotFound(f"image {name!r} is not in the store {self.directory}: "
                                "see 'virt-driver image list'") from None
        except (OSError, ValueError) as exc:
            raise VirtError(f"record of image {name!r} is unreadable ({exc}): "
                            "delete and re-import it") from None
        return self._from_record(name, record)

    def _from_record(self, name: str, record: dict) -> StoredImage:
        files = [record["file"], *record.get("backing_chain", ())]
        if any(os.path.basename(f) != f or f.startswith(".") for f in files):
            raise VirtError(f"record of image {name!r} names a file outside the store: "
                            "delete and re-import it")
        return StoredImage(
            name=name, path=os.path.join(self.directory, record["file"]),
            format=record["format"], virtual_size=record["virtual_size"],
            sha256=record["sha256"], properties=record.get("properties", {}),
            backing_chain=tuple(os.path.join(self.directory, f) for f in files[1:]))

    def list(self) -> list[StoredImage]:
        with contextlib.suppress(FileNotFoundError):
            names = sorted(entry[:-len(_RECORD_SUFFIX)] for entry in os.listdir(self.directory)
                           if entry.endswith(_RECORD_SUFFIX) and not entry.startswith("."))
            return [self.get(name) for name in names]
        return []

    def delete(self, name: str) -> None:
        image = self.get(name)
        # The record goes first: a half-deleted image is then simply absent.
        remove_quietly(self._record_path(name))
        remove_quietly(image.path)
        for path in image.backing_chain:
            remove_quietly(path)

    def _exists(self, name: str) -> bool:
        return os.path.exists(self._record_path(name)) or os.path.exists(self._image_path(name))

    def _image_path(self, name: str) -> str:
        return os.path.join(self.directory, name + _IMAGE_SUFFIX)

    def _record_path(self, name: str) -> str:
        return os.path.join(self.directory, name + _RECORD_SUFFIX)
