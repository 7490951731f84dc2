"""Resizing a guest: its root disk grown, its vCPUs and memory changed.

Live (running or paused guest): QEMU grows the root overlay it holds open
(libvirt's block resize), vCPUs are plugged in or out (and brought online
by the guest agent when it answers) and memory moves with the balloon,
each up to the maximum the guest booted with (params max_vcpus and
max_memory_mb, see virt/guest.py). Cold (shut off): the
overlay is grown by qemu-img under process limits on a held copy that
replaces it atomically, and vCPUs and memory take any value the host has
(a maximum below the new value rises with it). Either way the persistent
definition and the metadata's flavor say the new size, so a hard reboot,
which rebuilds the domain from the metadata, keeps it. Shrinking the disk
is refused: it would cut the guest's file systems.

Every check runs before anything changes; a live change that fails takes
back the live changes made before it (a grown disk cannot be taken back,
so the disk goes last).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import libvirt
from lxml import etree

from virt import images
from virt.domain import Disk, Domain
from virt.errors import ImageError, InvalidParameter, VirtError
from virt.fileutils import fsync_path, held_staging_dir, private_copy
from virt.objects import Flavor, HostInfo

LOG = logging.getLogger(__name__)

ONLINE_TIMEOUT = 60.0  # seconds a live resize waits for the guest to online new vCPUs
ONLINE_POLL = 1.0

T = TypeVar("T")
DomainCall = Callable[[str, Callable[[libvirt.virDomain], T]], T]

GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True)
class Request:
    """The new sizes; None leaves a size as it is."""

    root_gb: int | None = None
    vcpus: int | None = None
    memory_mb: int | None = None


@dataclass(frozen=True)
class Bounds:
    """What the guest may have: the host's CPUs and memory, the disk size the project accepts,
    and the maximums it booted with (a live resize stays within them)."""

    host_cpus: int
    host_memory_mb: int
    max_disk_bytes: int
    max_vcpus: int
    max_memory_mb: int


@dataclass(frozen=True)
class _Amount:
    """One of vCPUs and memory: its Flavor field, its param, the bounds that hold it."""

    field: str
    param: str
    unit: str
    host: Callable[[Bounds], int]
    booted: Callable[[Bounds], int]
    boot_option: str


AMOUNTS = (
    _Amount("vcpus", "max_vcpus", "vCPUs", lambda b: b.host_cpus, lambda b: b.max_vcpus,
            "--max-vcpus"),
    _Amount("memory_mb", "max_memory_mb", "MiB", lambda b: b.host_memory_mb,
            lambda b: b.max_memory_mb, "--max-memory"),
)


def bounds(domain: Domain, host: HostInfo, max_disk_bytes: int) -> Bounds:
    """The Bounds of a guest from its persistent definition and the host's facts."""
    flavor = domain.metadata.flavor
    return Bounds(host_cpus=host.cpu_total, host_memory_mb=host.memory_total,
                  max_disk_bytes=max_disk_bytes,
                  max_vcpus=max(domain.vcpus or 1, flavor.vcpus),
                  max_memory_mb=max((domain.memory_kib or 0) // 1024, flavor.memory_mb))


def check(request: Request, flavor: Flavor, disk_bytes: int, limits: Bounds,
          live: bool) -> Flavor:
    """The flavor after the resize, once every asked size passed its checks."""
    for amount in AMOUNTS:
        value = getattr(request, amount.field)
        if value is None:
            continue
        if value > amount.host(limits):
            raise InvalidParameter(
                f"{amount.field} {value}: this host has {amount.host(limits)} {amount.unit}; "
                f"give at most {amount.host(limits)}")
        if live and value > amount.booted(limits):
            raise InvalidParameter(
                f"{amount.field} {value}: above the {amount.booted(limits)} {amount.unit} this "
                f"guest booted with, the most a live resize reaches; power it off and resize "
                f"it cold, or boot it with {amount.boot_option} {value}")
    if request.root_gb is not None:
        new_bytes = request.root_gb * GIB
        if new_bytes < disk_bytes:
            raise InvalidParameter(
                f"root_gb {request.root_gb}: the root disk has {_gib(disk_bytes)} GiB and "
                "shrinking it would cut the guest's file systems; give at least "
                f"{-(-disk_bytes // GIB)}")
        if new_bytes > limits.max_disk_bytes:
            raise InvalidParameter(
                f"root_gb {request.root_gb}: above the largest disk this host accepts "
                f"({_gib(limits.max_disk_bytes)} GiB, [images] max_virtual_size); give less")
    changes = {name: value for name, value in dataclasses.asdict(request).items()
               if value is not None}
    return dataclasses.replace(flavor, **changes)


def grow_to(request: Request, disk_bytes: int) -> int | None:
    """The root disk's new size in bytes, or None when it stays (asked size reached already)."""
    if request.root_gb is None or request.root_gb * GIB <= disk_bytes:
        return None
    return request.root_gb * GIB


def root_disk(domain: Domain) -> Disk:
    """The guest's root disk: its first disk with a source (a cdrom is none)."""
    root = next((d for d in domain.devices_of(Disk) if d.device == "disk" and d.source), None)
    if root is None:
        raise InvalidParameter(f"instance {domain.name!r} has no root disk to resize")
    return root


def persistent_definition(domain: Domain, flavor: Flavor) -> Domain:
    """`domain` (a persistent definition, changed in place) sized for `flavor`.

    What build_domain would make of the flavor and the params: a maximum
    below the new size is raised to it (only a cold resize goes beyond one).
    """
    meta = domain.metadata
    params = dict(meta.params)
    for amount in AMOUNTS:
        if amount.param in params:
            params[amount.param] = str(max(int(params[amount.param]),
                                           getattr(flavor, amount.field)))
    max_vcpus = int(params.get("max_vcpus", flavor.vcpus))
    max_memory_mb = int(params.get("max_memory_mb", flavor.memory_mb))
    domain.vcpus = max_vcpus
    domain.vcpu_current = flavor.vcpus if max_vcpus > flavor.vcpus else None
    domain.memory_kib = max_memory_mb * 1024
    domain.current_memory_kib = flavor.memory_mb * 1024
    meta.flavor = flavor
    meta.params = params
    return domain


def resize_live(call: DomainCall, old: Flavor, new: Flavor, root: Disk,
                grow_bytes: int | None, persist: Callable[[], None]) -> None:
    """Change the running guest (vCPUs, memory, then its root disk), then persist().

    A failing step takes back the vCPU and memory changes made before it;
    a grown disk stays grown.
    """
    def set_vcpus(count):
        return lambda dom: dom.setVcpusFlags(count, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def set_memory(mb):
        return lambda dom: dom.setMemoryFlags(mb * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    steps = []
    if new.vcpus != old.vcpus:
        steps.append(("set the vCPUs of", set_vcpus(new.vcpus), set_vcpus(old.vcpus)))
    if new.memory_mb != old.memory_mb:
        steps.append(("set the memory of", set_memory(new.memory_mb), set_memory(old.memory_mb)))
    if grow_bytes is not None:
        steps.append(("grow the root disk of", lambda dom: dom.blockResize(
            root.target_dev, grow_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES), None))
    done = []
    try:
        for action, change, undo in steps:
            call(action, change)
            if undo is not None:
                done.append((action, undo))
        persist()
        if new.vcpus > old.vcpus:
            _online_in_guest(call, new.vcpus)
    except BaseException:
        for action, undo in reversed(done):
            try:
                call(action, undo)
            except VirtError as e:  # keep undoing: the others still matter
                LOG.error("could not take back the live change (%s): %s", action, e)
        raise


def _online_in_guest(call: DomainCall, vcpus: int, timeout: float = ONLINE_TIMEOUT) -> None:
    """Ask the guest agent to bring hot-added vCPUs online (many guests have no udev rule
    for it); without an agent the guest's admin does it.

    The guest's kernel lists a hot-added vCPU a moment after QEMU adds it (seconds
    under TCG), and until then the agent cannot online it: so it is asked again
    while it answers with fewer online vCPUs than wanted, up to `timeout`.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            call("bring the vCPUs online in", lambda dom: dom.setVcpusFlags(
                vcpus, libvirt.VIR_DOMAIN_VCPU_GUEST))
            error = None
        except VirtError as e:
            error = e
        online = _guest_online_vcpus(call)
        if online is None or online >= vcpus or time.monotonic() > deadline:
            break
        time.sleep(ONLINE_POLL)
    if error is not None and (online is None or online < vcpus):
        LOG.info("the guest agent did not bring the new vCPUs online (%s): the guest "
                 "or its admin does", error)


def _guest_online_vcpus(call: DomainCall) -> int | None:
    """How many vCPUs the guest agent says are online; None when it does not answer."""
    try:
        info = call("read the guest vCPUs of", lambda dom: dom.guestVcpus())
    except VirtError:
        return None
    if not isinstance(info, dict):  # libvirt-python gives None for a guest with no agent
        return None
    return cpu_count(info.get("online", ""))


def cpu_count(cpu_list: str) -> int:
    """The number of CPUs in a list such as '0-1,3'."""
    count = 0
    for part in filter(None, cpu_list.split(",")):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def live_disk_bytes(call: DomainCall, root: Disk) -> int:
    """The root disk's size as the running QEMU sees it."""
    return call("read the root disk of", lambda dom: dom.blockInfo(root.target_dev)[0])


def grow_overlay(path: str, fmt: str, new_bytes: int, limits: images.Limits) -> None:
    """Grow the shut-off guest's disk file to `new_bytes`, atomically.

    qemu-img works on a held private copy (a reflink where the file system
    can) under process limits; the copy replaces the disk only once grown,
    so a failure or a kill at any point leaves the disk as it was.
    """
    directory = os.path.dirname(path)
    try:
        status = os.stat(path)
        with held_staging_dir(directory, "resize-disk") as staging:
            copy = os.path.join(staging, "disk")
            private_copy(path, copy)
            images.qemu_img("resize", "-q", "-f", fmt, copy, str(new_bytes), limits=limits)
            os.chown(copy, status.st_uid, status.st_gid)
            os.chmod(copy, status.st_mode & 0o7777)
            fsync_path(copy)
            os.rename(copy, path)
            fsync_path(directory)
    except OSError as e:
        raise ImageError(f"cannot grow {path}: {e.strerror}; the disk is as it was, "
                         "free space and try again") from None


def unqualified_metadata(domain: Domain) -> str:
    """The domain's metadata element without its namespace, as setMetadata takes it
    (libvirt puts it in the namespace it is given)."""
    element = etree.fromstring(domain.metadata.to_xml().encode())
    for node in element.iter(tag=etree.Element):
        node.tag = etree.QName(node).localname
    etree.cleanup_namespaces(element)
    return etree.tostring(element, encoding="unicode")


def _gib(size: int) -> str:
    return f"{size / GIB:g}"
