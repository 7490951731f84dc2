"""Host block devices given to guests as volumes, the guest using the device itself.

Only devices the operator listed in [DEFAULT] volume_block_devices are
ever given, compared after resolving links (so /dev/disk/by-id/... names
work and a link planted elsewhere gains nothing). A device is given to one
guest at a time: one that any domain on this libvirtd names (running or
defined, whoever owns it), or that the host holds (mounted, in a RAID or
device-mapper stack: the kernel refuses an exclusive open), is in use and
refused. Detaching leaves the device as it is; nothing is copied or removed.
"""

from __future__ import annotations

import errno
import os
import stat

import libvirt

from virt.domain import Disk, Domain
from virt.errors import InvalidParameter, InvalidState


def is_device_path(volume: str) -> bool:
    """Whether attach_volume was given a host device rather than a file or an image name."""
    return volume.startswith("/dev/") or _is_block(volume)


def allowed_device(volume: str, allowed: list[str], fmt: str | None) -> str:
    """The real path of `volume` if the operator allows it and it is a block device."""
    if fmt not in (None, "raw"):
        raise InvalidParameter(f"format {fmt!r}: a host block device is used raw; give raw "
                               "or no format")
    real = os.path.realpath(volume)
    if real not in {os.path.realpath(path) for path in allowed}:
        raise InvalidParameter(f"volume {volume}: not a block device the operator allows "
                               "([DEFAULT] volume_block_devices); ask for it there, or attach "
                               "a file or a store image")
    if not _is_block(real):
        raise InvalidParameter(f"volume {volume}: {real} is not a block device (is it "
                               "plugged in?); give an existing block device")
    return real


def refuse_if_in_use(conn: libvirt.virConnect, device: str) -> None:
    """InvalidState when a domain names `device` or the host holds it."""
    for dom in conn.listAllDomains():
        try:
            xmls = [dom.XMLDesc(0)]
            if dom.isPersistent() and dom.isActive():
                xmls.append(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # undefined meanwhile
            raise
        if any(_names(Domain.from_xml(xml), device) for xml in xmls):
            raise InvalidState(f"volume {device} is in use by the guest {dom.name()}: detach "
                               "it there first (a device serves one guest at a time)")
    try:
        os.close(os.open(device, os.O_RDONLY | os.O_EXCL))
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise InvalidState(f"volume {device} is in use on the host (mounted, or part of "
                               "a RAID or device-mapper volume): release it there first") \
                from None
        raise InvalidParameter(f"volume {device}: cannot open it ({e.strerror}); give a "
                               "device this host can read") from None


def disk_for(device: str, target: str, bus: str) -> Disk:
    return Disk(type="block", device="disk", source=device, target_dev=target,
                target_bus=bus, driver_name="qemu", driver_type="raw")


def is_block_volume(disk: Disk, allowed: list[str]) -> bool:
    """Whether `disk` is an allowed host device attach_volume may have given."""
    return disk.type == "block" and disk.source is not None \
        and disk.source in {os.path.realpath(path) for path in allowed}


def _names(domain: Domain, device: str) -> bool:
    return any(d.type == "block" and d.source and os.path.realpath(d.source) == device
               for d in domain.devices_of(Disk))


def _is_block(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False
