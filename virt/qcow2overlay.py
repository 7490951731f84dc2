"""A new, empty qcow2 overlay on a backing file, written without starting qemu-img.

A boot's only qemu-img run was `qemu-img create -u -b BASE -F raw`: a process
start (20-30 ms) and, in the caller, the import of oslo.concurrency's
processutils (40-60 ms of regex compiling in oslo.utils' strutils). The file
it makes is a fixed layout of a few clusters, written here byte for byte as
qemu-img 7.2 writes it (tests compare the two): version 3, 64 KiB clusters,
16-bit refcounts; the header cluster holds the backing format extension,
qemu's feature name table and the backing file name; then the refcount
table, one refcount block, and an L1 table of zeros (nothing allocated: every
read falls through to the backing file). Nothing here reads the backing
file, as with `-u`: the caller answers for it.
"""

from __future__ import annotations

import os
import struct

from virt.errors import ImageError

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS
_MAGIC = b"QFI\xfb"
_VERSION = 3
_REFCOUNT_ORDER = 4  # 16-bit refcounts
_HEADER_LENGTH = 112  # version 3 with the compression type byte
_L2_ENTRIES = CLUSTER // 8
_BACKING_FORMAT_EXT = 0xE2792ACA
_FEATURE_NAME_EXT = 0x6803F857
# (type: 0 incompatible, 1 compatible, 2 autoclear; bit; name), as qemu-img lists them.
_FEATURES = ((0, 0, "dirty bit"), (0, 1, "corrupt bit"), (0, 2, "external data file"),
             (0, 3, "compression type"), (0, 4, "extended L2 entries"),
             (1, 0, "lazy refcounts"), (2, 0, "bitmaps"), (2, 1, "raw external data"))
_BACKING_NAME_MAX = 1023  # the qcow2 specification's limit
_REFCOUNT_TABLE_CLUSTER, _REFCOUNT_BLOCK_CLUSTER, _L1_CLUSTER = 1, 2, 3
BACKING_FORMATS = ("raw", "qcow2")  # what the image cache's bases and the store hold


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 8)


def _extension(kind: int, data: bytes) -> bytes:
    return struct.pack(">II", kind, len(data)) + _padded(data)


def overlay_bytes(backing_file: str, backing_format: str, size: int) -> bytes:
    """The whole overlay file for a guest disk of `size` bytes (rounded up to 512)."""
    if backing_format not in BACKING_FORMATS:
        raise ImageError(f"backing format {backing_format!r}: an overlay written here "
                         f"takes one of {', '.join(BACKING_FORMATS)}")
    if size <= 0:
        raise ImageError(f"overlay size {size}: give a positive number of bytes")
    size = -(-size // 512) * 512
    name = os.fsencode(backing_file)
    if not 0 < len(name) <= _BACKING_NAME_MAX:
        raise ImageError(f"backing file name of {len(name)} bytes: a qcow2 overlay takes "
                         f"1 to {_BACKING_NAME_MAX}; move the image cache to a shorter path")
    l1_entries = -(-size // (CLUSTER * _L2_ENTRIES))
    l1_clusters = -(-l1_entries * 8 // CLUSTER)
    clusters = _L1_CLUSTER + l1_clusters  # header, refcount table and block, L1
    features = b"".join(struct.pack(">BB46s", kind, bit, text.encode())
                        for kind, bit, text in _FEATURES)
    extensions = (_extension(_BACKING_FORMAT_EXT, backing_format.encode())
                  + _extension(_FEATURE_NAME_EXT, features) + struct.pack(">II", 0, 0))
    name_offset = _HEADER_LENGTH + len(extensions)
    header = struct.pack(
        ">4sIQIIQIIQQIIQQQQII", _MAGIC, _VERSION, name_offset, len(name), CLUSTER_BITS, size,
        0, l1_entries, _L1_CLUSTER * CLUSTER, _REFCOUNT_TABLE_CLUSTER * CLUSTER, 1, 0, 0,
        0, 0, 0, _REFCOUNT_ORDER, _HEADER_LENGTH)
    header += b"\0" * (_HEADER_LENGTH - len(header))  # compression type zlib, padding
    refcount_table = struct.pack(">Q", _REFCOUNT_BLOCK_CLUSTER * CLUSTER)
    refcount_block = struct.pack(f">{clusters}H", *([1] * clusters))
    return b"".join((
        (header + extensions + name).ljust(CLUSTER, b"\0"),
        refcount_table.ljust(CLUSTER, b"\0"),
        refcount_block.ljust(CLUSTER, b"\0"),
        b"\0" * (l1_entries * 8)))  # qemu-img does not pad the last cluster


def write_overlay(path: str, backing_file: str, backing_format: str, size: int) -> None:
    """Write the overlay into `path` (the same inode: a held temporary keeps its lock).

    No fsync here: the caller's atomic_target syncs it before the rename.
    """
    data = overlay_bytes(backing_file, backing_format, size)
    with open(path, "wb") as f:
        f.write(data)
