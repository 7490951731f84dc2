"""Atomic file creation, held temporaries, quiet removal and filesystem facts.

A result appears under its final name only when complete: work happens on a
temporary name in the same directory, then fsync and rename.

Every temporary file and staging directory is named TEMP_PREFIX + ... and
its owner holds an flock on it for its whole life, so a reclaim (see
virt.recovery) can tell the leftovers of a killed operation (unlocked) from
the work of a live one (locked). flock locks are separate from the OFD
byte-range locks QEMU takes on images, so both can hold the same file.
An entry is created and locked under a shared flock on its directory; a
reclaim scans under an exclusive one, so it never sees an entry between its
creation and its lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING

from virt.errors import ImageError, InvalidParameter
from virt.units import gib_rounded

if TYPE_CHECKING:  # tempfile and hashlib are for writers: read commands import neither
    from virt.contenthash import ContentHash

TEMP_PREFIX = ".vd-tmp-"
_FICLONE = 0x40049409  # ioctl: share all of a file's extents (a reflink)
_NO_COPY_FILE_RANGE = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)
_CHUNK = 1 << 20


@contextlib.contextmanager
def directory_lock(directory: str, exclusive: bool) -> Iterator[None]:
    """An flock on `directory` itself: shared to create entries, exclusive to reclaim."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def try_lock(path: str) -> int | None:
    """An fd holding an exclusive flock on `path`, or None if someone else holds one.

    Raises OSError for a path that cannot be opened (ELOOP for a symbolic link).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def held_temporary(directory: str, label: str) -> Iterator[str]:
    """A new empty file TEMP_PREFIX+label+random in `directory`, locked while the block runs.

    Removed when the block ends unless the block renamed it away.
    """
    import tempfile
    with directory_lock(directory, exclusive=False):
        fd, path = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{label[:100]}.", dir=directory)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield path
    finally:
        remove_quietly(path)  # before the unlock: a reclaim never sees it unlocked
        os.close(fd)


@contextlib.contextmanager
def held_staging_dir(directory: str, label: str) -> Iterator[str]:
    """A new private directory TEMP_PREFIX+label+random in `directory`, locked and
    removed with everything in it when the block ends."""
    import tempfile
    with directory_lock(directory, exclusive=False):
        path = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{label[:100]}.", dir=directory)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        # Shared: the owner creates temporaries in it under a shared lock too,
        # and a reclaim's exclusive try still fails while the owner lives.
        fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        yield path
    finally:
        remove_quietly(path)
        os.close(fd)


@contextlib.contextmanager
def atomic_target(path: str) -> Iterator[str]:
    """Yield a held temporary beside `path`; rename it to `path` on success.

    The temporary is removed if the block raises. The caller fills the file
    (in place: replacing the temporary would drop its lock).
    """
    directory, base = os.path.split(os.path.abspath(path))
    with held_temporary(directory, base) as tmp:
        yield tmp
        fsync_path(tmp)
        os.rename(tmp, path)
        fsync_path(directory)


def atomic_write(path: str, data: str | bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically with permission bits `mode`."""
    with atomic_target(path) as tmp:
        os.chmod(tmp, mode)
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)


def private_copy(source: str, target: str, digest: ContentHash | None = None) -> None:
    """Copy the regular file `source` into a new file `target` (mode 0600), opening it once.

    What is copied is what the caller inspects and uses afterwards: the path
    `source` is never opened again. A symbolic link, FIFO, device or
    directory is refused before any read. A reflink where the filesystem
    can, else a sparse copy (holes stay holes). Given `digest`, the bytes
    are hashed into it as they are copied (no reflink then: they must pass
    by), so that nobody reads the copy again to hash it.
    """
    try:
        _refuse_special(source, os.lstat(source).st_mode)
        fd = open_without_links(source, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP and exc.filename == os.path.abspath(source):
            _refuse_special(source, stat.S_IFLNK)  # swapped for a link after the lstat
        if exc.errno == errno.ELOOP:
            raise InvalidParameter(
                f"{source}: {exc.filename} is a symbolic link, and no link on the way to a "
                f"source is followed: give the real path ({os.path.realpath(source)})"
            ) from None
        raise ImageError(f"cannot read {source}: {exc.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        _refuse_special(source, os.fstat(fd).st_mode)  # what was opened, not what was seen
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            # No fsync: the copy is a held temporary, read back at once and
            # reclaimed if a crash comes first; durability would only cost time.
            if digest is not None:
                _sparse_copy(fd, out, size, digest)
            else:
                try:
                    fcntl.ioctl(out, _FICLONE, fd)
                except OSError:
                    _sparse_copy(fd, out, size)
        except OSError as exc:  # no space, a file too large for this filesystem, ...
            remove_quietly(target)
            raise ImageError(f"cannot copy {source} ({size} bytes) to {target}: "
                             f"{exc.strerror}") from None
        finally:
            os.close(out)
    finally:
        os.close(fd)


def open_without_links(path: str, flags: int) -> int:
    """os.open(path, flags) following no symbolic link in any component of `path`.

    O_NOFOLLOW alone checks the last component only: a directory on the way
    that is (or is swapped for) a link to /etc would still lead there.
    Raises OSError ELOOP whose filename is the first link met.
    """
    path = os.path.abspath(path)
    parts = path.split("/")[1:]
    walked = ""
    dir_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            walked += "/" + part
            try:
                next_fd = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
                                  | os.O_CLOEXEC, dir_fd=dir_fd)
            except NotADirectoryError:
                if stat.S_ISLNK(os.stat(part, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), walked) from None
                raise
            os.close(dir_fd)
            dir_fd = next_fd
        try:
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, path) from None
    finally:
        os.close(dir_fd)


def _refuse_special(path: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode)
                else "a FIFO" if stat.S_ISFIFO(mode) else "a device"
                if stat.S_ISBLK(mode) or stat.S_ISCHR(mode) else "a socket")
        raise InvalidParameter(f"{path} is {kind}, not a regular file: give the path of "
                               "the image file itself")


def _sparse_copy(src: int, dst: int, size: int, digest: ContentHash | None = None) -> None:
    """Copy the data extents of `src` (SEEK_DATA/SEEK_HOLE) to the same offsets in `dst`."""
    from virt.contenthash import data_extents
    offset = 0
    for start, end in data_extents(src, size):
        if digest is None:
            end = _copy_range(src, dst, start, end - start)
        else:
            digest.update_zeros(start - offset)
            end = _hashed_copy_range(src, dst, start, end - start, digest)
        offset = end
    os.ftruncate(dst, size)  # first: a size the filesystem refuses fails before hashing
    if digest is not None:
        digest.update_zeros(size - offset)


def _copy_range(src: int, dst: int, offset: int, count: int) -> int:
    """Copy in the kernel where it can; the offset where the copy ended."""
    end = offset + count
    while offset < end:
        try:
            done = os.copy_file_range(src, dst, end - offset, offset, offset)
        except OSError as exc:
            if exc.errno not in _NO_COPY_FILE_RANGE:
                raise
            data = os.pread(src, min(_CHUNK, end - offset), offset)
            done = os.pwrite(dst, data, offset) if data else 0
        if done == 0:
            break  # the file shrank meanwhile: the copy ends where it did
        offset += done
    return offset


def _hashed_copy_range(src: int, dst: int, offset: int, count: int,
                       digest: ContentHash) -> int:
    """_copy_range through one buffer, each block hashed between its read and its write."""
    buf = bytearray(_CHUNK)
    end = offset + count
    while offset < end:
        # Up to the next chunk boundary: whole chunks can be hashed in parallel.
        want = min(_CHUNK - offset % _CHUNK, end - offset)
        view = memoryview(buf)[:os.preadv(src, [memoryview(buf)[:want]], offset)]
        if not view:
            break
        digest.update(view)
        written = 0
        while written < len(view):
            written += os.pwrite(dst, view[written:], offset + written)
        offset += len(view)
    return offset


def remove_quietly(path: str) -> None:
    """Remove a file or a directory tree; a missing one is not an error."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path) and not os.path.islink(path):
            import shutil  # here: with bz2 and lzma, it is no read command's
            shutil.rmtree(path)
        else:
            os.unlink(path)


def fsync_path(path: str) -> None:
    """fsync a file or a directory (a directory: to make renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def filesystem_usage_gb(path: str) -> tuple[float | None, float | None, float | None]:
    """Size, free and used GiB of the filesystem holding `path` (or its nearest parent)."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path or "/")
    except OSError:
        return None, None, None
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    return gib_rounded(total), gib_rounded(free), gib_rounded(total - free)
