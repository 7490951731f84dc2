"""The first layer of untrusted-image inspection: what an image's bytes say it is.

oslo.utils' format inspector (the one Nova and Glance use since
CVE-2024-32498) reads the headers of every format it knows and runs its
named safety checks. This module decides, from its findings, whether the
content is the declared format and nothing else, and adds what qemu would
still act on that the inspector does not look at: a VHD footer at the end
of the file, a differencing VHD, a vmdk that is a descriptor file, and the
signatures of formats qemu probes but the inspector does not know.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from oslo_utils.imageutils import format_inspector as fi

from virt.errors import UnsafeImage

# Every finding reaches the caller in one UnsafeImage; the library's own
# warnings would repeat it on stderr.
logging.getLogger(fi.__name__).setLevel(logging.ERROR)

_CHUNK = 64 << 10
_SECTOR = 512
# qemu's driver names where the inspector names the format differently.
_INSPECTOR_NAME = {"vpc": "vhd"}
# What a raw disk may contain: layouts no qemu driver interprets (an ISO
# often carries a partition table too: a hybrid ISO).
_RAW_CONTENT = frozenset({"raw", "gpt", "iso"})
_VHD_COOKIE = b"conectix"
_VHD_DIFFERENCING = 4
_VHD_STANDALONE_TYPES = {2, 3}  # fixed, dynamic
_VMDK_SPARSE_MAGIC = b"KDMV"


@dataclass(frozen=True)
class Signature:
    format: str
    offset: int
    magic: bytes


# Formats qemu can read and would recognise by these bytes, which the
# inspector does not know (it knows qcow, qcow2, qed, vmdk, vhd, vhdx, vdi,
# luks, iso, gpt); from qemu's block/*.c probe functions.
_UNKNOWN_TO_INSPECTOR = (
    Signature("vmdk version 3", 0, b"COWD"),
    Signature("parallels", 0, b"WithoutFreeSpace"),
    Signature("parallels", 0, b"WithouFreSpacExt"),
    Signature("bochs", 0, b"Bochs Virtual HD Image"),
    Signature("cloop", 0, b"#!/bin/sh\n#V2.0 Format\n"),
)

# What a failed safety check of the inspector means, and what to do.
_CHECKS = {
    "backing_file": ("it has a backing file",
                     "import a standalone image (qemu-img convert flattens a chain)"),
    "data_file": ("it uses an external data file, which may name any host file",
                  "import a self-contained image (qemu-img convert makes one)"),
    "unknown_features": ("its qcow2 version or incompatible features are unknown",
                         "rewrite it with qemu-img convert -O qcow2"),
    "banned": ("its format is never accepted", "convert it to qcow2 first"),
    "descriptor": ("its vmdk descriptor may point at other files",
                   "use a monolithicSparse or streamOptimized vmdk"),
    "footer": ("its vmdk footer disagrees with its header", "rewrite it with qemu-img convert"),
    "mbr": ("its partition table is malformed", "repair the partition table first"),
}
_UNKNOWN_CHECK = ("a safety check failed", "rewrite it with qemu-img convert")


@dataclass(frozen=True)
class Findings:
    """What the first layer read: the inspector's matches and the file's ends."""

    matches: tuple[fi.FileInspector, ...]
    head: bytes
    tail: bytes

    @property
    def names(self) -> frozenset[str]:
        return frozenset(str(m) for m in self.matches)


def check_content(f: BinaryIO, name: str, declared: str, allow_backing: bool = False) -> None:
    """Raise UnsafeImage unless the open file `f` is `declared` and only that.

    allow_backing: a qcow2 may name a backing file (an imported chain's
    overlay, whose pointer is replaced and never opened); nothing else is
    relaxed.
    """
    findings = read_findings(f)
    reason = (_format_reason(findings, declared) or _vhd_reason(findings, declared)
              or _safety_reason(findings, declared, allow_backing))
    if reason:
        raise UnsafeImage(f"image {name} refused: {reason}")


def read_findings(f: BinaryIO) -> Findings:
    """Run every inspector over the headers: the first 256 KiB, the whole
    file only for a vmdk whose header defers to a footer at its end."""
    fd = f.fileno()
    size = os.fstat(fd).st_size
    head = os.pread(fd, _SECTOR, 0)
    tail = os.pread(fd, _SECTOR, size - _SECTOR) if size >= 2 * _SECTOR else b""
    os.lseek(fd, 0, os.SEEK_SET)
    # The wrapper closes its source at the end: give it one that leaves fd open.
    with open(fd, "rb", closefd=False) as source:
        wrapper = fi.InspectWrapper(source)
        while wrapper.formats is None:
            if not wrapper.read(_CHUNK):
                wrapper.close()  # at the end, inspectors still waiting did not match
    return Findings(tuple(wrapper.formats), head, tail)


def _format_reason(findings: Findings, declared: str) -> str | None:
    names = findings.names
    if len(names) > 1 and not names <= _RAW_CONTENT:
        return (f"it carries several formats at once ({', '.join(sorted(names))}), "
                "which can hide one image inside another; import a single-format image")
    expected = _INSPECTOR_NAME.get(declared, declared)
    raw_like = names <= _RAW_CONTENT
    fixed_vhd = declared == "vpc" and raw_like and findings.tail.startswith(_VHD_COOKIE)
    if declared == "raw" or fixed_vhd:
        if not raw_like:
            return _mismatch(names, declared)
        return _foreign_signature(findings, declared)
    if names != {expected}:
        return _mismatch(names, declared)
    if declared == "vmdk" and not findings.head.startswith(_VMDK_SPARSE_MAGIC):
        return ("it is a vmdk descriptor file, whose extents may name any file; "
                "use a monolithicSparse or streamOptimized vmdk")
    return None


def _mismatch(names: frozenset[str], declared: str) -> str:
    found = ", ".join(sorted(names))
    if declared == "raw":
        return f"it was declared raw but its content is {found}; declare its real format"
    return (f"it was declared {declared} but has no {declared} header (its content is "
            f"{found}); declare its real format or convert it first")


def _foreign_signature(findings: Findings, declared: str) -> str | None:
    """A raw payload must not carry what qemu would read as another format."""
    for sig in _UNKNOWN_TO_INSPECTOR:
        if findings.head[sig.offset:sig.offset + len(sig.magic)] == sig.magic:
            return _mismatch(frozenset({sig.format}), declared)
    if declared == "raw" and findings.tail.startswith(_VHD_COOKIE):
        return _mismatch(frozenset({"vhd (a footer at its end)"}), declared)
    return None


def _vhd_reason(findings: Findings, declared: str) -> str | None:
    """qemu reads the footer at the start, else at the end; check both copies."""
    if declared != "vpc":
        return None
    footers = [f for f in (findings.head, findings.tail) if f.startswith(_VHD_COOKIE)]
    if not footers:
        return "it has no VHD footer; declare its real format"
    for footer in footers:
        (disk_type,) = struct.unpack(">I", footer[60:64])
        if disk_type == _VHD_DIFFERENCING:
            return ("it is a differencing VHD: its data depends on a parent disk qemu "
                    "would not read, so the import would lose data; merge it first")
        if disk_type not in _VHD_STANDALONE_TYPES:
            return f"its VHD disk type {disk_type} is unknown; use a fixed or dynamic VHD"
    return None


def _safety_reason(findings: Findings, declared: str, allow_backing: bool) -> str | None:
    """The inspector's named safety checks on every format found."""
    failed: dict[str, str] = {}
    for match in findings.matches:
        try:
            match.safety_check()
        except fi.SafetyCheckFailed as exc:
            failed.update({f"{match}:{check}": str(err) for check, err in exc.failures.items()})
        except fi.ImageFormatError as exc:
            failed[f"{match}:parse"] = str(exc)
    if allow_backing and declared == "qcow2":
        failed.pop("qcow2:backing_file", None)
    if not failed:
        return None
    what, todo = _CHECKS.get(next(iter(failed)).split(":")[1], _UNKNOWN_CHECK)
    details = "; ".join(f"{check}: {why}" for check, why in failed.items())
    return f"{what} [{details}]; {todo}"
