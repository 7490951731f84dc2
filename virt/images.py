"""Everything qemu-img: creating, inspecting, converting and resizing images.

Every command runs with an argv list and LC_ALL=C; every failure raises
ImageError carrying qemu-img's stderr. Results appear atomically (see
virt.fileutils). Images that came from outside go through
`inspect_untrusted`, which never lets qemu-img guess a format or follow a
pointer to another file.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from virt.errors import ImageError, InvalidParameter, UnsafeImage
from virt.fileutils import atomic_target
from virt.qcow2overlay import write_overlay
from virt.validation import ACCEPTED_IMAGE_FORMATS

if TYPE_CHECKING:
    from oslo_concurrency import processutils

Progress = Callable[[float], None]

_SIZE = re.compile(r"(\d+)([KMGT]?)B?", re.IGNORECASE)
_UNITS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
_SAFE_VMDK_TYPES = {"monolithicSparse", "streamOptimized"}
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
# Formats whose qemu driver can open a backing file named inside the image.
_BACKING_FORMATS = {"qcow2", "qcow", "qed", "vmdk"}
_PR_SET_PDEATHSIG = 1
# The configuration default of images.max_virtual_size, and the store's.
DEFAULT_MAX_VIRTUAL_SIZE = 1 << 40


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int
    actual_size: int
    backing_file: str | None = None
    backing_format: str | None = None
    data_file: str | None = None
    cluster_size: int | None = None
    create_type: str | None = None  # vmdk only

    @classmethod
    def from_json(cls, data: dict) -> ImageInfo:
        specific = (data.get("format-specific") or {}).get("data") or {}
        return cls(
            format=data["format"],
            virtual_size=int(data["virtual-size"]),
            actual_size=int(data.get("actual-size", 0)),
            backing_file=data.get("backing-filename") or data.get("full-backing-filename"),
            backing_format=data.get("backing-filename-format"),
            data_file=specific.get("data-file"),
            cluster_size=data.get("cluster-size"),
            create_type=specific.get("create-type"),
        )


@dataclass(frozen=True)
class Limits:
    """Resource bounds for qemu-img reading an untrusted file."""

    address_space: int = 1 << 30
    cpu_seconds: int = 30

    def argv(self) -> list[str]:
        # util-linux prlimit: one small exec instead of a second Python.
        return ["prlimit", f"--as={self.address_space}", f"--cpu={self.cpu_seconds}", "--"]


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string like '10G' (binary units K, M, G, T)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        raise InvalidParameter(
            f"size {value!r}: use a whole number of bytes, optionally with K, M, G or T")
    return int(match.group(1)) << _UNITS[match.group(2).upper()]


def qemu_img(*args: str, limits: Limits | None = None,
             ok_exit_codes: tuple[int, ...] = (0,)) -> str:
    """Run qemu-img with `args`; return stdout or raise ImageError."""
    from oslo_concurrency import processutils  # its import costs 40-60 ms: only when used
    _load_child_setup()
    argv = [*(limits.argv() if limits else []), "qemu-img", *args]
    try:
        out, _err = processutils.execute(*argv, env_variables=_environment(),
                                         check_exit_code=list(ok_exit_codes),
                                         preexec_fn=die_with_parent)
    except processutils.ProcessExecutionError as exc:
        raise ImageError(f"qemu-img {args[0]} failed (exit {exc.exit_code})",
                         exc.stderr or "", _exit_code(exc), exc.stdout or "") from None
    except OSError as exc:
        raise ImageError(f"cannot run {argv[0]}: {exc.strerror}; install qemu-utils") from None
    return out


def create_image(fmt: str, path: str, size: int | str) -> None:
    """Create an empty image of `size` bytes."""
    size = parse_size(size)
    with atomic_target(path) as tmp:
        qemu_img("create", "-q", "-f", fmt, tmp, str(size))


def create_cow_image(backing_file: str, path: str, size: int | str | None = None,
                     backing_format: str = "raw", open_backing: bool = True) -> None:
    """Create a qcow2 overlay on `backing_file`; its format is given, never probed.

    open_backing=False (`size` required): the backing file is neither opened
    nor required to exist yet; the caller answers for it. The file is then
    written here as `qemu-img create -u` writes it (virt.qcow2overlay), with
    no process to start.
    """
    if not open_backing:
        if size is None:
            raise InvalidParameter("an overlay made without opening its backing file needs "
                                   "a size")
        with atomic_target(path) as tmp:
            write_overlay(tmp, os.path.abspath(backing_file), backing_format, parse_size(size))
        return
    with atomic_target(path) as tmp:
        qemu_img("create", "-q", "-f", "qcow2", "-b", os.path.abspath(backing_file),
                 "-F", backing_format, tmp, *([str(parse_size(size))] if size is not None else []))


def info(path: str, fmt: str) -> ImageInfo:
    """What qemu-img says about a trusted image opened as `fmt`."""
    return ImageInfo.from_json(json.loads(
        qemu_img("info", "-f", fmt, "--output=json", path)))


def backing_chain(path: str, fmt: str,
                  limits: Limits | None = None) -> list[tuple[str, ImageInfo]]:
    """(file name, info) of every file qemu-img opens for `path`, the image itself first.

    It opens the whole chain: only for images whose pointers are trusted.
    """
    chain = json.loads(qemu_img("info", "-f", fmt, "--backing-chain", "--output=json", path,
                                limits=limits))
    return [(entry["filename"], ImageInfo.from_json(entry)) for entry in chain]


def get_disk_size(path: str, fmt: str) -> int:
    """Virtual size in bytes."""
    return info(path, fmt).virtual_size


def get_disk_backing_file(path: str, fmt: str = "qcow2", basename: bool = True) -> str | None:
    backing = info(path, fmt).backing_file
    return os.path.basename(backing) if backing and basename else backing


def get_disk_type_from_path(path: str) -> str | None:
    """The format a path implies: 'lvm' or 'rbd' for such volumes, else None (ask the store)."""
    if path.startswith("/dev/"):
        return "lvm" if os.path.realpath(path).startswith("/dev/dm-") else "raw"
    if path.startswith("rbd:"):
        return "rbd"
    return None


def resize(path: str, fmt: str, new_size: int | str) -> None:
    """Grow an image; shrinking would destroy data and is refused."""
    new_size = parse_size(new_size)
    current = get_disk_size(path, fmt)
    if new_size < current:
        raise InvalidParameter(
            f"new size {new_size} of {path} is smaller than its current {current} bytes: "
            "shrinking is refused, use a size at least as large")
    if new_size > current:
        qemu_img("resize", "-q", "-f", fmt, path, str(new_size))


def untrusted_source(path: str, fmt: str) -> str:
    """A `json:` filename that opens `path` as `fmt` and never any other file.

    qemu would follow a backing pointer that appeared after inspection;
    `"backing": null` forbids it whatever the header says.
    """
    spec: dict = {"driver": fmt, "file": {"driver": "file", "filename": os.path.abspath(path)}}
    if fmt in _BACKING_FORMATS:
        spec["backing"] = None
    return "json:" + json.dumps(spec)


def convert(src: str, src_fmt: str, dst: str, dst_fmt: str, compress: bool = False,
            progress: Progress | None = None, untrusted: bool = False) -> None:
    """Convert `src` into a new file `dst`, atomically, reporting progress if asked.

    untrusted: open `src` so that it cannot pull in any other file (see
    untrusted_source); for images that came from outside.
    """
    opts = ["-f", src_fmt]
    if untrusted:
        opts, src = [], untrusted_source(src, src_fmt)  # json: names its own driver
    args = ["convert", *opts, "-O", dst_fmt, *(["-c"] if compress else [])]
    with atomic_target(dst) as tmp:
        if progress is None:
            qemu_img(*args, "-q", src, tmp)
        else:
            _qemu_img_with_progress([*args, "-p", src, tmp], progress)


def extract_snapshot(disk_path: str, source_fmt: str, out_path: str, dest_fmt: str,
                     compress: bool = False, progress: Progress | None = None) -> None:
    """A standalone copy of a disk and its whole backing chain (nobody may write to it)."""
    convert(disk_path, source_fmt, out_path, dest_fmt, compress=compress, progress=progress)


def inspect_untrusted(path: str, declared_format: str, max_virtual_size: int | None = None,
                      limits: Limits | None = None, allow_backing: bool = False) -> ImageInfo:
    """Check an image from outside before anything opens it for real.

    Two layers read the same open file: oslo.utils' format inspector (see
    virt.imageformat), then `qemu-img info -f DECLARED` under `limits`.
    Refuses (UnsafeImage) a format outside ACCEPTED_IMAGE_FORMATS, anything
    but a regular file, content that is not the declared format alone, a
    backing file, an external data file, an unsafe vmdk, an oversized image,
    and anything that makes qemu-img exceed its limits. allow_backing (a
    chain's qcow2 overlay whose pointer will be replaced) lets a qcow2 name a
    backing file: qemu-img info without --backing-chain never opens it.
    """
    name = os.path.basename(path)
    if declared_format not in ACCEPTED_IMAGE_FORMATS:
        raise UnsafeImage(f"image {name} refused: format {declared_format!r} is not an image "
                          f"format; use one of {', '.join(ACCEPTED_IMAGE_FORMATS)}")
    from virt import imageformat  # oslo.utils' inspector: only when an image is inspected
    with open_untrusted(path) as f:
        imageformat.check_content(f, name, declared_format, allow_backing)
        # qemu-img opens the very file inspected above, not the path again.
        same_file = f"/proc/{os.getpid()}/fd/{f.fileno()}"
        try:
            out = qemu_img("info", "-f", declared_format, "--output=json", same_file,
                           limits=limits or Limits())
        except ImageError as exc:
            raise UnsafeImage(_refusal(name, declared_format, exc)) from None
    image = ImageInfo.from_json(json.loads(out))
    reason = _unsafe_reason(image, declared_format, max_virtual_size, allow_backing)
    if reason:
        raise UnsafeImage(f"image {name} refused: {reason}")
    return image


def open_untrusted(path: str) -> BinaryIO:
    """`path` opened for reading if it is a regular file; never follows a final
    symlink and never blocks (a FIFO or a device is refused before any read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        # ELOOP (a symlink) or ENXIO (a socket): say what the path is.
        kind = _special_kind(_lstat_mode(path))
        if kind:
            raise _not_regular(path, kind) from None
        raise UnsafeImage(f"cannot read image {path}: {exc.strerror}") from None
    kind = _special_kind(os.fstat(fd).st_mode)
    if kind:
        os.close(fd)
        raise _not_regular(path, kind)
    return os.fdopen(fd, "rb")


def _not_regular(path: str, kind: str) -> UnsafeImage:
    return UnsafeImage(f"image {os.path.basename(path)} refused: it is {kind}, "
                       "not a regular file; import a regular file")


def _lstat_mode(path: str) -> int:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return 0


def _special_kind(mode: int) -> str | None:
    """What a file that is not a regular file is; None for a regular file (or mode 0)."""
    if not mode or stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((kind for test, kind in kinds if test(mode)), "a special file")


def _unsafe_reason(image: ImageInfo, declared: str, max_virtual_size: int | None,
                   allow_backing: bool) -> str | None:
    if image.format != declared:
        return f"qemu-img reads it as {image.format}, but it was declared {declared}"
    if image.backing_file and not (allow_backing and declared == "qcow2"):
        return (f"it has a backing file ({image.backing_file}); "
                "import a standalone image (qemu-img convert flattens a chain)")
    if image.data_file:
        return f"it uses an external data file ({image.data_file})"
    if declared == "vmdk" and image.create_type not in _SAFE_VMDK_TYPES:
        return (f"vmdk create type {image.create_type!r} may point at other files; "
                "use a monolithicSparse or streamOptimized vmdk")
    if max_virtual_size is not None and image.virtual_size > max_virtual_size:
        return (f"virtual size {image.virtual_size} bytes is above the limit of "
                f"{max_virtual_size} bytes")
    return None


def _refusal(name: str, declared: str, exc: ImageError) -> str:
    if _hit_limit(exc):
        return (f"image {name} refused: qemu-img hit its resource limit reading it "
                "(the image is malformed or hostile)")
    return f"image {name} refused: it cannot be read as {declared}: {exc.stderr or exc}"


def _hit_limit(exc: ImageError) -> bool:
    """A signal (SIGXCPU, or an abort when allocation fails) or an allocation error."""
    return ((exc.exit_code is not None and exc.exit_code < 0)
            or any(s in exc.stderr for s in ("allocate", "failed to map")))


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the process that started it dies.

    A killed operation must not leave a qemu-img writing on behind it. Its
    modules were imported by _load_child_setup() before the fork: an import
    in the child could wait for a lock another thread of the parent held.
    """
    import ctypes
    import signal
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _load_child_setup() -> None:
    """Import die_with_parent's modules in this process, before any fork; not at the
    module's import: `image list` starts no process (ctypes is 4% of it)."""
    import ctypes  # noqa: F401
    import signal  # noqa: F401


def _environment() -> dict[str, str]:
    # processutils passes env_variables as the whole environment.
    return {**os.environ, "LC_ALL": "C"}


def _exit_code(exc: processutils.ProcessExecutionError) -> int | None:
    """processutils types the code loosely (it may be given as a string)."""
    return None if exc.exit_code is None else int(exc.exit_code)


def _qemu_img_with_progress(args: list[str], progress: Progress) -> None:
    """qemu-img with -p, its "(12.34/100%)" updates passed on as fractions.

    The one command that cannot go through processutils.execute, which only
    returns output once the process has ended.
    """
    import subprocess
    _load_child_setup()
    proc = subprocess.Popen(["qemu-img", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_environment(),
                            preexec_fn=die_with_parent)
    assert proc.stdout is not None and proc.stderr is not None  # both PIPE
    buf, fraction = b"", 0.0
    while chunk := proc.stdout.read1(4096):  # type: ignore[attr-defined]  # a BufferedReader
        *done, buf = re.split(rb"[\r\n]", buf + chunk)
        for match in map(_PROGRESS.search, done):
            if match:
                fraction = float(match.group(1)) / 100.0
                progress(fraction)
    stderr = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        raise ImageError(f"qemu-img {args[0]} failed (exit {proc.returncode})", stderr,
                         proc.returncode)
    if fraction < 1.0:
        progress(1.0)
