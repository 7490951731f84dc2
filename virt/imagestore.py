"""The local image store: the embedded default source of base images.

Layout of the store directory: `NAME.img` holds the image, `NAME.json` its
record (format, virtual size, content hash, properties, the file's identity
when it was written); an imported chain keeps its files under UUID names
that its record lists. Only raw and qcow2 are stored: every other accepted
format is converted to qcow2 on import and rewritten by qemu-img from a
private copy of the source; a raw image is that private copy itself, hashed
while it is copied. The outside path is never read twice.

The content hash (virt.contenthash, `hash` in the record; records without it
hold a plain sha256) is taken once, as the file is written. The identity
(inode, size, modification time in ns) lets a user of the image see that the
file is the one hashed without hashing it again: any write changes them.

An image and its record appear and disappear together: work happens in a
held staging directory (virt.fileutils), then under the store's exclusive
directory lock the record is linked first (which claims the name: of two
imports of one name, exactly one wins) and the files renamed in last.
A crash between the two leaves a record without its files, which reclaim()
removes, as it removes files no record names.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from virt import images
from virt.contenthash import KIND as CONTENT_HASH
from virt.contenthash import ContentHash, file_content_hash
from virt.errors import ImageNotFound, InvalidParameter, VirtError
from virt.fileutils import (
    directory_lock,
    fsync_path,
    held_staging_dir,
    private_copy,
    remove_quietly,
)
from virt.recovery import Reclaimed, freed_bytes, reclaim_entries
from virt.validation import check_image_name

_IMAGE_SUFFIX = ".img"
_RECORD_SUFFIX = ".json"
_DATA_SUFFIXES = (_IMAGE_SUFFIX, ".qcow2", ".raw")  # file names an image's data may have
_HASH_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PLAIN_SHA256 = "sha256"  # the hash of records written before the content hash
_HASHES = (_PLAIN_SHA256, CONTENT_HASH)
_IDENTITY = ("inode", "size", "mtime_ns")  # what any write to a file changes


class DamagedRecord(VirtError):
    """A store record that cannot be read or lacks what an image needs."""


def _store_file(value) -> bool:
    return (isinstance(value, str) and value == os.path.basename(value)
            and value not in ("", ".", "..") and not value.startswith("."))


def _whole_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# key, required, check, what the value must be
_RECORD_FIELDS: tuple[tuple[str, bool, Callable[[object], bool], str], ...] = (
    ("file", True, _store_file, "a file name in the store"),
    ("format", True, lambda v: v in ("raw", "qcow2"), "raw or qcow2"),
    ("virtual_size", True, _whole_number, "a whole number of bytes"),
    ("sha256", True, lambda v: isinstance(v, str) and bool(_SHA256.fullmatch(v)),
     "64 lowercase hex digits"),
    ("properties", False,
     lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in (*v, *v.values())),
     "an object of strings"),
    ("backing_chain", False, lambda v: isinstance(v, list) and all(map(_store_file, v)),
     "a list of file names in the store"),
    ("hash", False, lambda v: v in _HASHES, "one of " + ", ".join(sorted(_HASHES))),
    ("written", False, lambda v: isinstance(v, dict) and sorted(v) == sorted(_IDENTITY)
     and all(map(_whole_number, v.values())), "an object of " + ", ".join(_IDENTITY)),
)


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
    hash: str = CONTENT_HASH  # how `sha256` was computed (see virt.contenthash)
    written: dict[str, int] | None = None  # the file's identity when it was hashed

    def unchanged(self, path: str) -> bool:
        """True when the file at `path` is still the very file hashed for the record."""
        return self.written is not None and file_identity(path) == self.written

    def matches_hash(self, path: str) -> bool:
        """True when the file at `path` holds the recorded content (read and hashed)."""
        return file_sha256(path, self.hash) == self.sha256

    @property
    def digest(self) -> str:
        """`KIND:HEX`: what another host compares to know it holds the same bytes."""
        return f"{self.hash}:{self.sha256}"

    def has_digest(self, digest: str) -> bool:
        """Whether this image's leaf holds the content `digest` names; a digest of the
        other hash kind is computed by reading the file (an older record's plain sha256)."""
        kind, _, value = digest.partition(":")
        if kind not in _HASHES or not _SHA256.fullmatch(value):
            raise InvalidParameter(f"image digest {digest!r}: use KIND:HEX as 'image list "
                                   f"--json' gives it, KIND one of {', '.join(_HASHES)}")
        return value == (self.sha256 if kind == self.hash else file_sha256(self.path, kind))


def file_sha256(path: str, kind: str = CONTENT_HASH) -> str:
    """The hash of the file's content, computed as `kind` says."""
    if kind == CONTENT_HASH:
        return file_content_hash(path)
    import hashlib  # here: listing the store hashes nothing
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_identity(path: str) -> dict[str, int]:
    st = os.stat(path)
    return {"inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


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
        """Copy an outside image privately, inspect the copy, rewrite it into the store."""
        check_image_name(name)
        if fmt not in self.allowed_formats:
            raise InvalidParameter(f"format {fmt!r}: use one of {', '.join(self.allowed_formats)}")
        self.refuse_existing(name)
        filename = name + _IMAGE_SUFFIX
        with self.staging("import-" + name) as staging:
            if fmt == "raw":
                return self._import_raw(name, path, staging, filename, properties, progress)
            os.mkdir(os.path.join(staging, "source"), 0o700)
            copy = os.path.join(staging, "source", os.path.basename(path) or "image")
            private_copy(path, copy)
            inspected = images.inspect_untrusted(copy, fmt, self.max_virtual_size, self.limits)
            images.convert(copy, fmt, os.path.join(staging, filename), "qcow2",
                           progress=progress, untrusted=True)
            remove_quietly(copy)
            return self.publish(name, staging, "qcow2", inspected.virtual_size, properties,
                                [filename])

    def _import_raw(self, name: str, path: str, staging: str, filename: str,
                    properties: dict[str, str] | None,
                    progress: images.Progress | None) -> StoredImage:
        """A raw image is stored as its private copy, hashed while copied, then inspected.

        Rewriting raw into raw would only copy the same bytes again: the copy
        already never names another file, and it is the file inspected.
        """
        copy = os.path.join(staging, filename)
        digest = ContentHash()
        private_copy(path, copy, digest)
        inspected = images.inspect_untrusted(copy, "raw", self.max_virtual_size, self.limits)
        # qemu sees a raw disk in whole sectors: the stored file is that disk, as
        # a conversion would have written it (zeros up to the next 512 bytes).
        padding = inspected.virtual_size - os.path.getsize(copy)
        if padding > 0:
            os.truncate(copy, inspected.virtual_size)
            digest.update_zeros(padding)
        os.chmod(copy, 0o644)
        fsync_path(copy)
        if progress is not None:
            progress(1.0)
        return self.publish(name, staging, "raw", inspected.virtual_size, properties,
                            [filename], sha256=digest.hexdigest())

    @contextlib.contextmanager
    def staging(self, label: str) -> Iterator[str]:
        """A held staging directory in the store, for files publish() moves in."""
        os.makedirs(self.directory, exist_ok=True)
        with held_staging_dir(self.directory, label) as path:
            yield path

    @contextlib.contextmanager
    def pinned(self, name: str) -> Iterator[StoredImage]:
        """Image `name` with its files hard-linked into a held staging directory.

        What the caller reads there stays the image it got, whatever a delete
        or a re-import of the name does meanwhile (both replace the names,
        never the files). A bare backing file name resolves beside its
        overlay, so a chain's files keep their names there.
        """
        with self.staging("pin-" + name) as staging:
            with directory_lock(self.directory, exclusive=False):  # no publish or delete now
                image = self.get(name)
                for path in (image.path, *image.backing_chain):
                    os.link(path, os.path.join(staging, os.path.basename(path)))
            yield dataclasses.replace(
                image, path=os.path.join(staging, os.path.basename(image.path)),
                backing_chain=tuple(os.path.join(staging, os.path.basename(p))
                                    for p in image.backing_chain))

    def publish(self, name: str, staging: str, fmt: str, virtual_size: int,
                properties: dict[str, str] | None, files: list[str],
                sha256: str | None = None) -> StoredImage:
        """Move `files` (names in `staging`, leaf first, its parents after) into the store
        as image `name`: the record first, which claims the name, then the files.

        sha256: the content hash of files[0] (virt.contenthash), when its
        writer took it on the way; else it is read and hashed here.
        """
        check_image_name(name)
        leaf = os.path.join(staging, files[0])
        record = {"file": files[0], "format": fmt, "virtual_size": virtual_size,
                  "sha256": sha256 or file_sha256(leaf), "hash": CONTENT_HASH,
                  "written": file_identity(leaf),
                  "properties": dict(properties or {}), "backing_chain": list(files[1:])}
        staged_record = os.path.join(staging, ".record")
        with open(staged_record, "x") as f:
            f.write(json.dumps(record, indent=1, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(staged_record, 0o644)
        with directory_lock(self.directory, exclusive=True):
            for filename in files[1:]:
                if os.path.lexists(os.path.join(self.directory, filename)):
                    raise VirtError(f"{filename} already exists in the store: "
                                    "UUID collision, try again")
            try:
                os.link(staged_record, self._record_path(name))
            except FileExistsError:
                raise InvalidParameter(f"image {name!r} was stored meanwhile by another "
                                       "operation: delete it first or choose another name"
                                       ) from None
            for filename in reversed(files):
                os.rename(os.path.join(staging, filename),
                          os.path.join(self.directory, filename))
            fsync_path(self.directory)
        return self._from_record(name, record)

    def get(self, name: str) -> StoredImage:
        check_image_name(name)
        image = self._from_record(name, self._read_record(name))
        if not all(map(os.path.exists, (image.path, *image.backing_chain))):
            raise ImageNotFound(f"image {name!r} is incomplete (an import was interrupted): "
                                "'virt-driver cleanup' removes it")
        return image

    def _read_record(self, name: str) -> dict:
        """The checked content of NAME.json; DamagedRecord names what is wrong with it."""
        path = self._record_path(name)
        try:
            with open(path) as f:
                record = json.load(f)
        except FileNotFoundError:
            raise ImageNotFound(f"image {name!r} is not in the store {self.directory}: "
                                "see 'virt-driver image list'") from None
        except (OSError, ValueError) as exc:
            raise self._damaged(name, f"it is not readable JSON ({exc})") from None
        if not isinstance(record, dict):
            raise self._damaged(name, f"it holds a JSON {type(record).__name__}, not an object")
        for key, required, check, expected in _RECORD_FIELDS:
            if key not in record:
                if required:
                    raise self._damaged(name, f"{key!r} is missing")
            elif not check(record[key]):
                raise self._damaged(name, f"{key!r} must be {expected}, not "
                                          f"{json.dumps(record[key])[:40]}")
        return record

    def _damaged(self, name: str, reason: str) -> DamagedRecord:
        return DamagedRecord(f"record {self._record_path(name)} of image {name!r} is damaged: "
                             f"{reason}; 'virt-driver image delete {name}' removes it")

    def _from_record(self, name: str, record: dict) -> StoredImage:
        return StoredImage(
            name=name, path=os.path.join(self.directory, record["file"]),
            format=record["format"], virtual_size=record["virtual_size"],
            sha256=record["sha256"], properties=record.get("properties", {}),
            backing_chain=tuple(os.path.join(self.directory, f)
                                for f in record.get("backing_chain", ())),
            hash=record.get("hash", _PLAIN_SHA256), written=record.get("written"))

    def scan(self) -> tuple[list[StoredImage], dict[str, VirtError]]:
        """The readable images, and what is wrong with each record that is not."""
        found, damaged = [], {}
        for name in self._names():
            try:
                found.append(self.get(name))
            except VirtError as exc:
                damaged[name] = exc
        return found, damaged

    def list(self) -> list[StoredImage]:
        return self.scan()[0]

    def _names(self) -> builtins.list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(entry[:-len(_RECORD_SUFFIX)] for entry in os.listdir(self.directory)
                          if entry.endswith(_RECORD_SUFFIX) and not entry.startswith("."))
        return []

    def delete(self, name: str) -> None:
        """Remove an image, or a damaged record and the NAME.img beside it."""
        check_image_name(name)
        if not os.path.isdir(self.directory):
            self._read_record(name)  # says the image is not in the store
        with directory_lock(self.directory, exclusive=True):
            try:
                record = self._read_record(name)
                files = [record["file"], *record.get("backing_chain", ())]
            except DamagedRecord:
                files = [name + _IMAGE_SUFFIX]
            # The record goes first: a half-deleted image is then simply absent,
            # and its remaining files are orphans that reclaim() removes.
            remove_quietly(self._record_path(name))
            fsync_path(self.directory)
            for filename in files:
                remove_quietly(os.path.join(self.directory, filename))

    def refuse_existing(self, name: str) -> None:
        """An early, friendly refusal; publish() is what decides a race."""
        if os.path.lexists(self._record_path(name)):
            raise InvalidParameter(f"image {name!r} already exists: delete it first "
                                   "or choose another name")

    def reclaim(self) -> builtins.list[Reclaimed]:
        """Remove what killed operations left in the store; see the module docstring."""
        if not os.path.isdir(self.directory):
            return []
        with directory_lock(self.directory, exclusive=True):
            reclaimed = reclaim_entries(self.directory)
            named: set[str] = set()
            for name in self._names():
                try:
                    record = self._read_record(name)
                except DamagedRecord:
                    named.add(name + _IMAGE_SUFFIX)  # kept until the record is deleted
                    continue
                files = [record["file"], *record.get("backing_chain", ())]
                paths = [os.path.join(self.directory, f) for f in files]
                if all(map(os.path.exists, paths)):
                    named.update(files)
                    continue
                record_path = self._record_path(name)
                size = sum(map(freed_bytes, [record_path, *paths]))
                for path in [record_path, *paths]:
                    remove_quietly(path)
                reclaimed.append(Reclaimed(record_path, size,
                                           f"image {name!r} whose files never arrived"))
            reclaimed += self._reclaim_orphans(named)
            fsync_path(self.directory)
        return reclaimed

    def _reclaim_orphans(self, named: set[str]) -> builtins.list[Reclaimed]:
        """Image files no record names (the caller holds the exclusive directory lock)."""
        orphans = []
        for entry in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, entry)
            if (entry.startswith(".") or entry in named or not entry.endswith(_DATA_SUFFIXES)
                    or not stat.S_ISREG(os.lstat(path).st_mode)):
                continue
            size = freed_bytes(path)
            remove_quietly(path)
            orphans.append(Reclaimed(path, size, "image file no record names"))
        return orphans

    def _record_path(self, name: str) -> str:
        return os.path.join(self.directory, name + _RECORD_SUFFIX)
