"""Sizes: flavors and reports count whole GiB (2**30 bytes), disks and images count bytes."""

from __future__ import annotations

MiB = 1 << 20
GiB = 1 << 30


def gib_to_bytes(gib: int) -> int:
    return gib * GiB


def whole_gib(size: int) -> int:
    """The fewest whole GiB that hold `size` bytes (a flavor's root_gb for an image)."""
    return -(-size // GiB)


def gib_rounded(size: int) -> float:
    """`size` bytes in GiB to two decimals, for reports."""
    return round(size / GiB, 2)
