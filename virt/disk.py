"""Disk policy: the libvirt disk driver name, buses and target device names.

Everything here is a decision that depends on the hypervisor (its type and
version, and for Xen which helper daemons run); the XML layer in
virt/domain.py only writes down what these functions decide. Versions are
integers major*1_000_000 + minor*1_000 + micro, the way libvirt reports them.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from virt.errors import InvalidParameter


def is_block_device(path: str) -> bool:
    """True for an existing block device; files and missing paths are not."""
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def version_to_int(version: str) -> int:
    """"4.2.0" -> 4002000; missing parts count as 0 ("4.2" -> 4002000)."""
    parts = version.strip().split(".") if isinstance(version, str) else []
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() and len(p) <= 3 for p in parts):
        raise InvalidParameter(
            f"version {version!r}: use MAJOR[.MINOR[.MICRO]] with each part 0 to 999")
    major, minor, micro = (list(map(int, parts)) + [0, 0])[:3]
    return major * 1_000_000 + minor * 1_000 + micro


def version_from_int(number: int) -> str:
    """4002000 -> "4.2.0"."""
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise InvalidParameter(f"version {number!r}: use a non-negative integer")
    return f"{number // 1_000_000}.{number // 1_000 % 1_000}.{number % 1_000}"


# From this Xen version on, libxl serves file-backed disks through qemu (qdisk).
XEN_QDISK_MIN_VERSION = version_to_int("4.2.0")
# Blktap2 ("tap2") replaced blktap ("tap") in the releases after this one.
XEN_TAP2_AFTER_VERSION = version_to_int("4.0.0")


class DiskProbe(Protocol):
    """What pick_disk_driver_name needs to know about the host's Xen helpers."""

    def xend_running(self) -> bool: ...

    def tap_ctl_ok(self) -> bool: ...


Execute = Callable[..., tuple[str, str]]


class HostProbe:
    """Asks the host, through processutils, and remembers the answers.

    Whether xend runs and whether blktap works do not change while the
    driver runs, and each probe forks a process, so each is asked once.
    """

    def __init__(self, execute: Execute | None = None):
        from oslo_concurrency import processutils  # imported by the probes' users only
        self._execute = execute or processutils.execute
        self._failure = (processutils.ProcessExecutionError, OSError)
        self._lock = threading.Lock()
        self._cache: dict[str, bool] = {}

    def xend_running(self) -> bool:
        """True when `xend status` succeeds; a failure or no xend means False."""
        return self._cached("xend", self._probe_xend)

    def tap_ctl_ok(self) -> bool:
        """True when `tap-ctl check` prints "ok"; missing tap-ctl means False."""
        return self._cached("tap-ctl", self._probe_tap_ctl)

    def _cached(self, key: str, probe: Callable[[], bool]) -> bool:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = probe()
            return self._cache[key]

    def _probe_xend(self) -> bool:
        try:
            self._execute("xend", "status")
        except self._failure:
            return False
        return True

    def _probe_tap_ctl(self) -> bool:
        try:
            out, _err = self._execute("tap-ctl", "check", check_exit_code=False)
        except self._failure:
            return False
        return out.strip() == "ok"


_host_probe: HostProbe | None = None
_host_probe_lock = threading.Lock()


def host_probe() -> HostProbe:
    """The probe of this host, shared so that its answers are cached per host."""
    global _host_probe
    with _host_probe_lock:
        if _host_probe is None:
            _host_probe = HostProbe()
        return _host_probe


def pick_disk_driver_name(virt_type: str, hypervisor_version: int, is_block_dev: bool = False,
                          probe: DiskProbe | None = None) -> str | None:
    """The libvirt `<driver name=...>` of a disk, or None when none is written.

    kvm/qemu: "qemu". xen: "phy" for block devices; for files "qemu" (libxl
    qdisk) from 4.2.0 on when xend does not run, else "tap2" (after 4.0.0) or
    "tap" when `tap-ctl check` says ok, else "file". Other types: None.
    The probe is only asked on the Xen file path.
    """
    if virt_type in ("kvm", "qemu"):
        return "qemu"
    if virt_type != "xen":
        return None
    if is_block_dev:
        return "phy"
    probe = probe if probe is not None else host_probe()
    if hypervisor_version >= XEN_QDISK_MIN_VERSION and not probe.xend_running():
        return "qemu"
    if probe.tap_ctl_ok():
        return "tap2" if hypervisor_version > XEN_TAP2_AFTER_VERSION else "tap"
    return "file"


def pick_disk_driver_type(driver_name: str | None, image_format: str) -> str | None:
    """The `<driver type=...>`: the image format, where the driver can read it.

    "phy" and "file" only pass raw bytes through, so any other format there
    is refused rather than shown to the guest as garbage.
    """
    if driver_name is None:
        return None
    if driver_name in ("phy", "file") and image_format != "raw":
        raise InvalidParameter(
            f"disk format {image_format!r}: the Xen {driver_name!r} driver reads raw "
            "disks only; convert the image to raw or use a host with qdisk or blktap")
    return image_format


@dataclass(frozen=True)
class BusPolicy:
    """How disks on one bus are named and how many it holds."""

    prefix: str
    max_disks: int


# Two-letter names (a..zz, 702 disks) are the most the kernel-style naming
# gives before three letters; IDE has two channels of two drives.
BUSES: dict[str, BusPolicy] = {
    "virtio": BusPolicy("vd", 702),
    "scsi": BusPolicy("sd", 702),
    "sata": BusPolicy("sd", 702),
    "usb": BusPolicy("sd", 702),
    "xen": BusPolicy("xvd", 702),
    "ide": BusPolicy("hd", 4),
    "fdc": BusPolicy("fd", 2),
}

# On IDE the cdrom sits on hdc (secondary master), where guests expect it.
IDE_CDROM_INDEX = 2


def disk_target(prefix: str, index: int) -> str:
    """Kernel-style disk name: ("vd", 0) -> "vda", 25 -> "vdz", 26 -> "vdaa"."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InvalidParameter(f"disk index {index!r}: use a whole number from 0")
    letters = ""
    number = index + 1
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return prefix + letters


def target_index(name: str, prefix: str) -> int:
    """The inverse of disk_target: ("vdaa", "vd") -> 26."""
    letters = name[len(prefix):]
    if not name.startswith(prefix) or not letters or not all("a" <= c <= "z" for c in letters):
        raise InvalidParameter(f"disk target {name!r}: use {prefix} followed by letters a-z")
    index = 0
    for char in letters:
        index = index * 26 + ord(char) - ord("a") + 1
    return index - 1


def bus_policy(bus: str) -> BusPolicy:
    try:
        return BUSES[bus]
    except KeyError:
        raise InvalidParameter(
            f"disk bus {bus!r}: use one of {', '.join(sorted(BUSES))}") from None


def target_for(bus: str, index: int) -> str:
    """The target name of the index-th disk on a bus; refuses past the bus's limit."""
    policy = bus_policy(bus)
    if index >= policy.max_disks:
        raise InvalidParameter(
            f"disk {index + 1} on bus {bus!r}: the {bus} bus holds at most "
            f"{policy.max_disks} disks ({disk_target(policy.prefix, 0)} to "
            f"{disk_target(policy.prefix, policy.max_disks - 1)})")
    return disk_target(policy.prefix, index)


def default_bus(virt_type: str, hvm: bool, device_type: str = "disk",
                machine: str | None = None) -> str:
    """The bus a disk or cdrom goes on when the caller did not choose one.

    kvm/qemu: virtio disks; cdroms on IDE, or SATA on q35 (which has no IDE).
    Xen PV: the xen bus (xvda...). Xen HVM: IDE, as the emulated BIOS boots it.
    """
    if virt_type in ("kvm", "qemu"):
        if device_type == "cdrom":
            return "sata" if machine and "q35" in machine else "ide"
        return "virtio"
    if virt_type == "xen":
        return "ide" if hvm else "xen"
    raise InvalidParameter(f"virt_type {virt_type!r}: disk buses are known for kvm, qemu, xen")


def assign_targets(disks: Sequence[tuple[str, str]]) -> list[str]:
    """Target names for (bus, device_type) pairs, in order.

    Buses sharing a prefix (scsi, sata, usb: sd*) share one name space. On
    IDE the first cdrom gets hdc and disks fill the other slots.
    """
    used: dict[str, set[int]] = {}
    targets: list[str | None] = [None] * len(disks)
    first_ide_cdrom = next((i for i, (bus, dev) in enumerate(disks)
                            if bus == "ide" and dev == "cdrom"), None)
    if first_ide_cdrom is not None:
        targets[first_ide_cdrom] = target_for("ide", IDE_CDROM_INDEX)
        used["hd"] = {IDE_CDROM_INDEX}
    for position, (bus, _device_type) in enumerate(disks):
        if targets[position] is not None:
            continue
        taken = used.setdefault(bus_policy(bus).prefix, set())
        index = 0
        while index in taken:
            index += 1
        targets[position] = target_for(bus, index)
        taken.add(index)
    return [t for t in targets if t is not None]
