"""Image chains: a qcow2 leaf and its parents moved between hosts as one tarball.

Export hard-links the chain into a held staging directory beside the leaf as
`0.qcow2` (the leaf) ... `N-1.qcow2` (the base) and streams a gzip tarball of
it; the store's files are never written. Import unpacks into a staging
directory inside the store, refuses anything but sequence-named regular
files, inspects every file as untrusted, gives the files fresh UUID names,
replaces every recorded parent pointer (never following one), validates the
chain, and only then publishes it: the record first, then the files (see
virt.imagestore). Both staging directories are held temporaries
(virt.fileutils), so a reclaim removes them once their operation is dead.
"""

from __future__ import annotations

import errno
import gzip
import itertools
import json
import os
import re
import tarfile
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from virt import images
from virt.errors import ImageError, UnsafeImage, VirtError
from virt.fileutils import held_staging_dir, remove_quietly
from virt.images import Progress
from virt.imagestore import LocalImageStore
from virt.validation import check_image_name

DEFAULT_MAX_IMPORT_SIZE = images.parse_size("64G")  # conf images.max_chain_import_size
# gzip -1: on disk images gzip -6 (tar -z's default) takes 1.5x to 2x the
# time for about 4% less output (benchmarks/bench_chain.py).
DEFAULT_COMPRESSLEVEL = 1
MAX_CHAIN_LENGTH = 64
# pax and GNU long-name headers: a member name and a few attributes need far less.
MAX_HEADER_SIZE = 64 << 10
_HEADER_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                 tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)

_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)
_EXT_FORMAT = {"qcow2": "qcow2", "raw": "raw", "vhd": "vpc"}
_FORMAT_EXT = {"qcow2": "qcow2", "raw": "raw"}
_OLD_NAMES = ("snap", "image", "base")  # leaf first, as XenServer named them
_MEMBER = re.compile(r"(?:\./)?(?P<stem>[0-9]+|snap|image|base)\.(?P<ext>qcow2|raw|vhd)")
_CHECK_LEAKS_ONLY = 3  # qemu-img check: leaked clusters waste space but lose no data


@dataclass(frozen=True)
class ChainFile:
    path: str
    format: str

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


# -- export -------------------------------------------------------------------

def export_image(store: LocalImageStore, name: str, fileobj: BinaryIO,
                 progress: Progress | None = None,
                 compresslevel: int = DEFAULT_COMPRESSLEVEL) -> list[str]:
    """Export the store image `name` and its backing chain; see export_chain."""
    image = store.get(name)
    return export_chain(image.path, fileobj, progress, image.format, compresslevel)


def export_chain(leaf_path: str, fileobj: BinaryIO, progress: Progress | None = None,
                 fmt: str = "qcow2", compresslevel: int = DEFAULT_COMPRESSLEVEL) -> list[str]:
    """Stream a gzip tarball of `leaf_path` and its parents into `fileobj`.

    Returns the member names, leaf first. The files are hard-linked into a
    staging directory beside the leaf so that they outlive a concurrent
    delete; the links are only ever read, and removed whatever happens.
    """
    chain = chain_of(leaf_path, fmt)
    with held_staging_dir(os.path.dirname(os.path.abspath(leaf_path)), "export") as staging:
        staged = _link_into(staging, chain)
        _write_tarball(staged, fileobj, progress, compresslevel)
        return [f.name for f in staged]


def chain_of(leaf_path: str, fmt: str) -> list[ChainFile]:
    """The files of a trusted image's chain with their formats, leaf first."""
    chain = []
    for filename, image in images.backing_chain(leaf_path, fmt):
        if image.format not in _FORMAT_EXT:
            raise ImageError(f"{filename} is {image.format}: only qcow2 and raw "
                             "chains can be exported")
        if image.data_file:
            raise ImageError(f"{filename} keeps its data in {image.data_file}, "
                             "which an export cannot carry: convert it first")
        chain.append(ChainFile(filename, image.format))
    return chain


def _link_into(staging: str, chain: list[ChainFile]) -> list[ChainFile]:
    staged = []
    for number, source in enumerate(chain):
        link = os.path.join(staging, f"{number}.{_FORMAT_EXT[source.format]}")
        try:
            os.link(source.path, link)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise VirtError(f"{source.path} is on another filesystem than {staging}: "
                                "export an image of the store (virt-driver snapshot makes "
                                "one from an instance's disk)") from None
            raise VirtError(f"cannot link {source.path} into {staging}: {exc.strerror}") from None
        staged.append(ChainFile(link, source.format))
    return staged


def _write_tarball(staged: list[ChainFile], fileobj: BinaryIO, progress: Progress | None,
                   compresslevel: int) -> None:
    meter = _Meter(sum(os.path.getsize(f.path) for f in staged), progress)
    now = int(time.time())
    with gzip.GzipFile(fileobj=fileobj, mode="wb", compresslevel=compresslevel, mtime=now) as gz, \
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_CHUNK,
                         copybufsize=_CHUNK) as tar:  # type: ignore[call-overload]  # TarFile's
        for member in staged:
            with open(member.path, "rb") as f:
                info = tarfile.TarInfo(member.name)
                info.size = os.fstat(f.fileno()).st_size
                info.mode, info.mtime = 0o644, now
                tar.addfile(info, _MeteredReader(f, meter))
    meter.finish()


class _Meter:
    """Turns byte counts into progress fractions, at most one call per percent."""

    def __init__(self, total: int | None, progress: Progress | None, scale: float = 1.0):
        self.total, self.progress, self.scale = total, progress, scale
        self.done, self.reported = 0, -1

    def add(self, count: int) -> None:
        self.done += count
        if self.progress and self.total:
            percent = min(100, self.done * 100 // self.total)
            if percent > self.reported:
                self.reported = percent
                self.progress(self.scale * percent / 100)

    def finish(self) -> None:
        if self.progress and self.reported < 100:
            self.reported = 100
            self.progress(self.scale)


class _MeteredReader:
    def __init__(self, f: BinaryIO, meter: _Meter):
        self.f, self.meter = f, meter

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.meter.add(len(data))
        return data


# -- import -------------------------------------------------------------------

def import_chain(fileobj: BinaryIO, store: LocalImageStore, name: str,
                 progress: Progress | None = None, max_size: int = DEFAULT_MAX_IMPORT_SIZE,
                 properties: dict[str, str] | None = None,
                 total_bytes: int | None = None) -> dict:
    """Unpack, check and store a chain tarball as image `name`.

    Returns {"root": {"uuid": LEAF_UUID}}. Progress follows the compressed
    bytes read (total_bytes, or the size of `fileobj` when it is a file).
    On any failure nothing reaches the store and the staging directory is gone.
    """
    check_image_name(name)
    store.refuse_existing(name)
    with store.staging("chain-" + name) as staging:
        meter = _Meter(total_bytes or _file_size(fileobj), progress, scale=0.9)
        chain = _sequence(staging, _unpack(fileobj, staging, max_size, meter))
        chain = _inspect(chain, store)
        chain = _give_uuid_names(chain)
        _relink(chain)
        virtual_size = _validate(chain, store.limits)
        store.publish(name, staging, chain[0].format, virtual_size, properties,
                      [f.name for f in chain])
    if progress:
        progress(1.0)
    return {"root": {"uuid": chain[0].name.split(".")[0]}}


def _file_size(fileobj: BinaryIO) -> int | None:
    try:
        return os.fstat(fileobj.fileno()).st_size or None
    except (AttributeError, OSError, ValueError):
        return None


def _unpack(fileobj: BinaryIO, staging: str, max_size: int, meter: _Meter) -> list[str]:
    """Extract the allowed members into `staging`; their names there."""
    names: list[str] = []
    total = 0
    try:
        # A stream: GzipFile seeks only to rewind, which reading once never does.
        with gzip.GzipFile(fileobj=_MeteredReader(fileobj, meter),  # type: ignore[call-overload]
                           mode="rb") as gz, \
                tarfile.open(fileobj=gz, mode="r|", bufsize=_CHUNK,
                             tarinfo=_BoundedHeaderInfo) as tar:
            for member in tar:
                name = _member_name(member)
                if name is None:
                    continue
                if member.size < 0:  # GNU base-256 sizes can be negative
                    raise UnsafeImage(f"tarball member {member.name!r} has a negative size")
                if name in names:
                    raise UnsafeImage(f"tarball member {member.name!r} appears twice")
                if len(names) == MAX_CHAIN_LENGTH:
                    raise UnsafeImage(f"the chain is longer than {MAX_CHAIN_LENGTH} images")
                total += member.size
                if total > max_size:
                    raise UnsafeImage(
                        f"the tarball expands past the import limit of {max_size} bytes "
                        "(images.max_chain_import_size): raise the limit if it is genuine")
                _extract(tar, member, os.path.join(staging, name))
                names.append(name)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UnsafeImage(f"the tarball cannot be read ({exc}): "
                          "it must be a complete .tar.gz made by 'image export'") from None
    if not names:
        raise UnsafeImage("the tarball holds no image: expected 0.qcow2 ... N-1.qcow2")
    meter.finish()
    return names


class _BoundedHeaderInfo(tarfile.TarInfo):
    """A TarInfo that refuses an oversized pax or GNU long-name header before reading it.

    tarfile reads such a header's whole body into memory: a few MiB of gzip
    would otherwise make it allocate gigabytes, whatever max_size says.
    """

    def _proc_member(self, tarfile_):
        if self.type in _HEADER_TYPES and self.size > MAX_HEADER_SIZE:
            raise UnsafeImage(f"a tarball header of {self.size} bytes is above the limit of "
                              f"{MAX_HEADER_SIZE}: it must be a .tar.gz made by 'image export'")
        return super()._proc_member(tarfile_)


def _member_name(member: tarfile.TarInfo) -> str | None:
    """The staged name of an acceptable member, None for the top directory entry."""
    raw = member.name
    if raw.startswith("/"):
        raise UnsafeImage(f"tarball member {raw!r} refused: absolute paths are not allowed")
    if ".." in raw.split("/"):
        raise UnsafeImage(f"tarball member {raw!r} refused: '..' would leave the staging area")
    if member.isdir() and raw.rstrip("/") in (".", ""):
        return None  # `tar -C DIR .` records DIR itself
    kind = ("a symbolic link" if member.issym() else "a hard link" if member.islnk()
            else "a device or fifo" if member.isdev() else "a sparse file" if member.issparse()
            else None if member.isreg() else "not a regular file")
    if kind:
        raise UnsafeImage(f"tarball member {raw!r} refused: it is {kind}; "
                          "only regular image files are accepted")
    match = _MEMBER.fullmatch(raw)
    if not match:
        raise UnsafeImage(f"tarball member {raw!r} refused: expected names like 0.qcow2, "
                          "1.qcow2, ... (or snap, image, base with .qcow2, .raw or .vhd)")
    return f"{match['stem']}.{match['ext']}"


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> None:
    """Copy one member, leaving runs of zeros as holes (disk images are mostly zeros)."""
    source = tar.extractfile(member)
    assert source is not None  # _member_name let regular files through only
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            remaining = member.size
            while remaining:
                chunk = source.read(min(_CHUNK, remaining))
                if not chunk:
                    raise UnsafeImage(f"tarball member {member.name!r} is truncated")
                remaining -= len(chunk)
                if chunk == _ZEROS[:len(chunk)]:
                    out.seek(len(chunk), os.SEEK_CUR)
                else:
                    out.write(chunk)
            out.truncate()
            out.flush()
            os.fsync(out.fileno())
    except gzip.BadGzipFile:
        raise  # a read error, reported by _unpack
    except OSError as exc:
        raise VirtError(f"cannot write {path}: {exc.strerror}") from None


def _sequence(staging: str, names: list[str]) -> list[ChainFile]:
    """Rename old-style members to the sequence and check it runs 0..N-1; leaf first."""
    stems = {name.split(".")[0]: name for name in names}
    if len(stems) != len(names):
        raise UnsafeImage(f"two tarball members share a sequence number: {sorted(names)}")
    old = [stem for stem in _OLD_NAMES if stem in stems]
    if old and len(old) != len(stems):
        raise UnsafeImage(f"the tarball mixes old names (snap, image, base) with numbered "
                          f"ones: {sorted(names)}")
    if old:
        ordered = [stems[stem] for stem in old]
    else:
        numbers = {int(stem): name for stem, name in stems.items()}
        if len(numbers) != len(stems) or sorted(numbers) != list(range(len(numbers))):
            raise UnsafeImage(f"the tarball's images must be numbered 0 to N-1 without gaps; "
                              f"it holds {sorted(names)}")
        ordered = [numbers[n] for n in range(len(numbers))]
    chain = []
    for number, name in enumerate(ordered):
        ext = name.split(".")[1]
        path = os.path.join(staging, f"{number}.{ext}")
        if name != os.path.basename(path):
            os.rename(os.path.join(staging, name), path)
        chain.append(ChainFile(path, _EXT_FORMAT[ext]))
    return chain


def _inspect(chain: list[ChainFile], store: LocalImageStore) -> list[ChainFile]:
    """Check every staged file as untrusted; convert a lone VHD to qcow2."""
    if any(f.format == "vpc" for f in chain):
        if len(chain) != 1:
            raise UnsafeImage("a VHD is accepted only as a single image: flatten the chain "
                              "on the source host first")
        chain = [_convert_vhd(chain[0], store)]
    *overlays, base = chain
    for overlay in overlays:
        if overlay.format != "qcow2":
            raise UnsafeImage(f"{overlay.name} is raw but is not the last image: only the base "
                              "of a chain may be raw")
        # The recorded parent comes from another host: it is reported, never
        # opened, and replaced by _relink.
        images.inspect_untrusted(overlay.path, "qcow2", store.max_virtual_size, store.limits,
                                 allow_backing=True)
    images.inspect_untrusted(base.path, base.format, store.max_virtual_size, store.limits)
    return chain


def _convert_vhd(vhd: ChainFile, store: LocalImageStore) -> ChainFile:
    images.inspect_untrusted(vhd.path, "vpc", store.max_virtual_size, store.limits)
    converted = os.path.join(os.path.dirname(vhd.path), "0.qcow2")
    images.convert(vhd.path, "vpc", converted, "qcow2", untrusted=True)
    remove_quietly(vhd.path)
    return ChainFile(converted, "qcow2")


def _give_uuid_names(chain: list[ChainFile]) -> list[ChainFile]:
    renamed = []
    for member in chain:
        path = os.path.join(os.path.dirname(member.path),
                            f"{uuid.uuid4()}.{_FORMAT_EXT[member.format]}")
        os.rename(member.path, path)
        renamed.append(ChainFile(path, member.format))
    return renamed


def _relink(chain: list[ChainFile]) -> None:
    """Point each overlay at its parent's new name; the recorded pointer is never used.

    A bare file name resolves beside the overlay, in staging and in the store alike.
    """
    for overlay, parent in itertools.pairwise(chain):
        images.qemu_img("rebase", "-u", "-f", "qcow2", "-b", parent.name, "-F", parent.format,
                        overlay.path)


def _validate(chain: list[ChainFile], limits: images.Limits) -> int:
    """qemu-img check every file, then compare the chain qemu sees; the leaf's virtual size."""
    for member in reversed(chain):
        if member.format == "qcow2":
            _check(member, limits)
    entries = images.backing_chain(chain[0].path, chain[0].format, limits)
    seen = [os.path.realpath(filename) for filename, _ in entries]
    if seen != [os.path.realpath(f.path) for f in chain]:
        raise UnsafeImage(f"the relinked chain reads {seen}, not the staged files")
    if entries[-1][1].backing_file:
        raise UnsafeImage("the base of the chain still names a backing file")
    return entries[0][1].virtual_size


def _check(member: ChainFile, limits: images.Limits) -> None:
    try:
        images.qemu_img("check", "-f", member.format, "--output=json", member.path,
                        limits=limits, ok_exit_codes=(0, _CHECK_LEAKS_ONLY))
    except ImageError as exc:
        first_error = next(iter((exc.stderr or "").strip().splitlines()), "")
        detail = "; ".join(filter(None, [_check_summary(exc.stdout), first_error]))
        raise UnsafeImage(f"image {member.name} refused: qemu-img check found it damaged "
                          f"(exit {exc.exit_code}): {detail}") from None


def _check_summary(stdout: str | None) -> str:
    try:
        result = json.loads(stdout or "")
    except ValueError:
        return (stdout or "").strip()
    return ", ".join(f"{key}={result[key]}" for key in ("corruptions", "check-errors", "leaks")
                     if result.get(key))
