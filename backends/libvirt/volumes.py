"""Volumes attached to and detached from a guest, live and in its definition.

A volume comes from the image store (by name) or from an outside file
(raw or qcow2, by absolute path). Either way the guest gets its own copy,
`volume-<random>.qcow2` in the instance directory: an outside file is
copied privately and inspected like any untrusted image first, so the
guest never opens a path someone else controls. The copy belongs to the
instance (destroy removes it with the directory).

Detaching a running guest's disk needs the guest's consent (see
backends/libvirt/hotplug.py); a guest that does not let go keeps the disk,
in its definition too, and the caller hears so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import libvirt

from backends.libvirt import hotplug
from virt import disk as diskpolicy
from virt.domain import Disk, Domain
from virt.errors import InvalidParameter
from virt.instancefiles import InstanceFiles

T = TypeVar("T")
DomainCall = Callable[[str, Callable[[libvirt.virDomain], T]], T]



def free_target(domain: Domain, bus: str, wanted: str | None) -> str:
    """`wanted` if no disk of the guest uses it, else the first free target on `bus`."""
    used = {d.target_dev for d in domain.devices_of(Disk)}
    prefix = diskpolicy.bus_policy(bus).prefix
    if wanted is not None:
        diskpolicy.target_index(wanted, prefix)  # refuses a name off the bus's pattern
        if wanted in used:
            raise InvalidParameter(f"device {wanted!r} is in use by the guest: choose another "
                                   f"or leave it out to get the next free {prefix}* name")
        return wanted
    index = 0
    while diskpolicy.target_for(bus, index) in used:
        index += 1
    return diskpolicy.target_for(bus, index)


def disk_for(path: str, target: str, bus: str) -> Disk:
    return Disk(type="file", device="disk", source=path, target_dev=target, target_bus=bus,
                driver_name="qemu", driver_type="qcow2")


def attach(call: DomainCall, disk: Disk, live: bool) -> None:
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
    xml = disk.to_xml()
    call("attach a volume to", lambda dom: dom.attachDeviceFlags(xml, flags))


def detach(call: DomainCall, conn_call, name: str, disk: Disk, live: bool,
           timeout: float) -> None:
    """Detach `disk`: from the running guest first (waiting for it to let go), then for good."""
    xml = disk.to_xml()
    if live:
        _detach_live(call, conn_call, name, disk.target_dev, xml, timeout)
    call("detach a volume from",
         lambda dom: dom.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG))


def _detach_live(call: DomainCall, conn_call, name: str, target: str, xml: str,
                 timeout: float) -> None:
    hotplug.detach_live(call, conn_call, name, xml, lambda live: all(
        d.target_dev != target for d in live.devices_of(Disk)), target, timeout)


def attached_volume(domain: Domain, files: InstanceFiles, target: str) -> Disk:
    """The volume disk at `target`; refuses the root disk and disks that are no volume."""
    disk = next((d for d in domain.devices_of(Disk) if d.target_dev == target), None)
    if disk is None:
        raise InvalidParameter(f"device {target!r}: the guest has no such disk; "
                               "see its definition for attached volumes")
    # by its file, not its target: a hard reboot may give the disk another target
    if not files.is_volume(disk.source or ""):
        raise InvalidParameter(f"device {target!r} is not a volume attached by attach_volume "
                               "(the root disk or a disk from boot): it cannot be detached")
    return disk
