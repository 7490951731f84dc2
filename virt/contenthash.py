"""The content hash of stored images, computed while their bytes go by.

sha256 over the sha256 of each 1 MiB chunk of the file, in order (the last
chunk may be shorter). It depends on the content alone, as a plain sha256
does, but a chunk known to be a hole is never read or hashed: its digest is
a constant. A 1 GiB raw disk holding 256 MiB of data then costs 256 MiB of
hashing, not 1 GiB, and the hash can be taken while the file is copied.
"""

from __future__ import annotations

import collections
import errno
import functools
import os
from typing import TYPE_CHECKING

from virt.lazymodules import LazyModule

if TYPE_CHECKING:  # a read command imports this module and never hashes
    import hashlib
    from concurrent.futures import Future, ThreadPoolExecutor
else:
    hashlib = LazyModule("hashlib")  # OpenSSL's: 5% of `image list`, which hashes nothing

KIND = "sha256-1MiB-chunks"
CHUNK = 1 << 20
_ZEROS = bytes(CHUNK)
# sha256 of a chunk of zeros, written out: hashing 1 MiB at import cost every command 1 ms.
_ZERO_CHUNK_DIGEST = bytes.fromhex(
    "30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58")
_ZERO_BATCH = 4096
_ZERO_DIGESTS = _ZERO_CHUNK_DIGEST * _ZERO_BATCH
_MAX_PENDING = 16  # chunks in flight to the workers: bounds the memory they hold


class ContentHash:
    """Feed the file's bytes in order: update() for data, update_zeros() for holes.

    Whole chunks are hashed on worker threads (hashlib lets go of the GIL),
    so hashing keeps pace with the copy that feeds it on a second core; their
    digests still join in file order.
    """

    def __init__(self) -> None:
        self._digests = hashlib.sha256()
        self._pending: collections.deque[Future | bytes] = collections.deque()
        self._chunk = hashlib.sha256()
        self._filled = 0  # bytes of the current chunk fed so far

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._filled == 0 and len(view) >= CHUNK:
                self._add(_workers().submit(_sha256, bytes(view[:CHUNK])))
                view = view[CHUNK:]
                continue
            take = min(CHUNK - self._filled, len(view))
            self._chunk.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == CHUNK:
                self._add(self._chunk.digest())
                self._chunk = hashlib.sha256()
                self._filled = 0

    def update_zeros(self, count: int) -> None:
        while count:
            if self._filled == 0 and count >= CHUNK:
                # A run of holes: its digests in batches, so that a sparse 1 TiB
                # costs a million digests hashed, not a million Python steps.
                self._join(0)
                chunks = min(count // CHUNK, _ZERO_BATCH)
                self._digests.update(_ZERO_DIGESTS[:chunks * len(_ZERO_CHUNK_DIGEST)])
                count -= chunks * CHUNK
                continue
            take = min(CHUNK - self._filled, count)
            self.update(_ZEROS[:take])
            count -= take

    def hexdigest(self) -> str:
        self._join(0)
        digests = self._digests.copy()
        if self._filled:
            digests.update(self._chunk.digest())
        return digests.hexdigest()

    def _add(self, digest: Future | bytes) -> None:
        self._pending.append(digest)
        self._join(_MAX_PENDING)

    def _join(self, keep: int) -> None:
        """Fold digests into the total, in order, until at most `keep` are pending."""
        while len(self._pending) > keep:
            part = self._pending.popleft()
            self._digests.update(part if isinstance(part, bytes) else part.result())


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@functools.cache
def _workers() -> ThreadPoolExecutor:
    from concurrent.futures import ThreadPoolExecutor
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 2,
                              thread_name_prefix="virt-content-hash")


def data_extents(fd: int, size: int):
    """(start, end) of each data extent of an open file, holes skipped, in order."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return  # only a hole is left
            start, end = offset, size  # no hole support here: all of it is data
        yield start, end
        offset = end


def file_content_hash(path: str) -> str:
    """The content hash of the file at `path`, reading its data extents only."""
    digest = ContentHash()
    buf = bytearray(CHUNK)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        for start, end in data_extents(fd, size):
            digest.update_zeros(start - offset)
            while start < end:
                want = min(CHUNK - start % CHUNK, end - start)  # whole chunks after the first
                done = os.preadv(fd, [memoryview(buf)[:want]], start)
                if done == 0:
                    break  # shrank meanwhile; the size read first counts
                digest.update(memoryview(buf)[:done])
                start += done
            offset = start
        digest.update_zeros(size - offset)
    finally:
        os.close(fd)
    return digest.hexdigest()
