"""The xm-format guest config file: rendering (pure) and the disk prefix policy.

xm executes the file as Python and xl parses it with libxlutil; both read
single-quoted strings, so every value is checked to be unable to end its
string (params.SAFE_TEXT) before it is written. Which toolstack reads the
file changes a few keys (HVM firmware and device model, bootloader args,
the paravirtual NIC type); everything else is shared.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from backends.xm import params
from backends.xm.params import as_bool
from virt import disk as diskpolicy
from virt.errors import InvalidParameter
from virt.objects import NIC, GuestKind
from virt.validation import (
    check_image_name,
    check_instance_name,
    check_int_range,
    check_mac,
    check_uuid,
    check_vnc_listen,
)

VNC_BASE_PORT = 5900
HEADER = "# Written by virt-driver (xm backend); edits are lost on the next spawn.\n"
# A comment both toolstacks skip, carrying what the hypervisor does not keep.
META_PREFIX = "# virt-driver:"

# For each disk driver name of virt/disk.py: the spec prefix per image format.
# phy, file and blktap's aio pass raw bytes through; only qemu (qdisk) reads
# qcow2. xend (xm) has no bare "qcow2:" prefix: it reaches qemu through tap.
_FILE_PREFIXES: dict[tuple[str, str], dict[str, str]] = {
    ("qemu", "xl"): {"raw": "raw", "qcow2": "qcow2"},
    ("qemu", "xm"): {"raw": "tap:aio", "qcow2": "tap:qcow2"},
    ("tap2", "xl"): {"raw": "tap2:tapdisk:aio"},
    ("tap2", "xm"): {"raw": "tap2:tapdisk:aio"},
    ("tap", "xl"): {"raw": "tap:aio"},
    ("tap", "xm"): {"raw": "tap:aio"},
    ("file", "xl"): {"raw": "file"},
    ("file", "xm"): {"raw": "file"},
}


def disk_prefix(driver_name: str | None, toolstack: str, fmt: str) -> str:
    """The `prefix:` of a disk spec for a disk driver name and image format."""
    if driver_name == "phy":
        if fmt != "raw":
            raise InvalidParameter(f"disk format {fmt!r}: block devices (phy) are raw")
        return "phy"
    formats = _FILE_PREFIXES[(driver_name or "file", toolstack)]
    if fmt not in formats:
        raise InvalidParameter(
            f"disk format {fmt!r}: the Xen {driver_name or 'file'!r} driver reads "
            f"{', '.join(sorted(formats))} only; convert the image or use a host with qdisk")
    return formats[fmt]


def instance_disk_format(driver_name: str | None, toolstack: str) -> str:
    """qcow2 (an overlay on the cached base) where the driver reads it, else raw."""
    formats = _FILE_PREFIXES.get((driver_name or "file", toolstack), {})
    return "qcow2" if "qcow2" in formats else "raw"


@dataclass(frozen=True)
class DiskLine:
    """One disk spec: prefix ("phy", "file", "tap:aio", "qcow2", ...) and path."""

    path: str
    prefix: str
    readonly: bool = False
    cdrom: bool = False


@dataclass(frozen=True)
class GuestConfig:
    """Everything the file says; `values` are params.check_syntax output."""

    toolstack: str
    name: str
    uuid: str
    kind: GuestKind
    memory_mb: int
    vcpus: int
    values: Mapping[str, str]
    disks: Sequence[DiskLine] = ()
    nics: Sequence[NIC] = ()
    network_port: int | None = None
    vnc_password: str | None = None
    image: str | None = None
    root_gb: int | None = None


_BRIDGE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_PREFIXES = {"phy", "file", "tap:aio", "tap:qcow2", "tap2:tapdisk:aio", "raw", "qcow2"}
_BUS_OF_PREFIX = {"xvd": "xen", "hd": "ide", "sd": "scsi"}


def quote(field_name: str, value: str) -> str:
    """'value', after checking that the value cannot end its string."""
    params.check_field(field_name, value, params.SAFE_TEXT)
    return f"'{value}'"


def _bool(value: str) -> str:
    return "1" if as_bool(value) else "0"


def disk_specs(cfg: GuestConfig) -> list[str]:
    """`prefix:path,vdev,mode` for each disk; targets xvdX (PV), hdX (HVM) or as asked."""
    default = "hd" if cfg.kind is GuestKind.HVM else "xvd"
    bus = _BUS_OF_PREFIX[cfg.values.get("disk_prefix", default)]
    cdrom_bus = "ide" if cfg.kind is GuestKind.HVM else bus
    disks = list(cfg.disks)
    if cfg.kind is GuestKind.HVM and cfg.values.get("cdrom_image_path"):
        disks.append(DiskLine(cfg.values["cdrom_image_path"], "file", readonly=True, cdrom=True))
    slots = [(cdrom_bus if d.cdrom else bus, "cdrom" if d.cdrom else "disk") for d in disks]
    targets = diskpolicy.assign_targets(slots)
    specs = []
    for number, (disk, target) in enumerate(zip(disks, targets, strict=True)):
        field_name = f"disk {number} path"
        params.check_field(field_name, disk.path, params.SAFE_TEXT)
        params.check_field(field_name, disk.path, params.ABS_PATH)
        if disk.prefix not in _PREFIXES:
            raise InvalidParameter(f"disk {number} prefix {disk.prefix!r}: use one of "
                                   f"{', '.join(sorted(_PREFIXES))}")
        vdev = f"{target}:cdrom" if disk.cdrom else target
        mode = "r" if disk.readonly or disk.cdrom else "w"
        specs.append(f"{disk.prefix}:{disk.path},{vdev},{mode}")
    return specs


def vif_specs(cfg: GuestConfig) -> list[str]:
    """`mac=..,bridge=..,ip=..` plus the HVM NIC model/type, per NIC."""
    suffix = ""
    if cfg.kind is GuestKind.HVM:
        nic_type = cfg.values.get("nic_type", "rtl8139")
        if nic_type == "paravirtual":
            # xend took any type but ioemu as paravirtual; xl knows only "vif".
            suffix = ",type=vif" if cfg.toolstack == "xl" else ",type=paravirtualized"
        else:
            suffix = f",model={nic_type},type=ioemu"
    specs = []
    for number, nic in enumerate(cfg.nics):
        parts = [f"mac={check_mac(nic.mac, f'nic {number} mac')}"]
        if nic.bridge is not None:
            if not _BRIDGE.fullmatch(nic.bridge):
                raise InvalidParameter(f"nic {number} bridge {nic.bridge!r}: use 1 to 15 "
                                       "letters, digits, '.', '_' or '-'")
            parts.append(f"bridge={nic.bridge}")
        if nic.ip is not None:
            params.check_field(f"nic {number} ip", nic.ip, params.IP_ADDRESS)
            parts.append(f"ip={nic.ip}")
        specs.append(",".join(parts) + suffix)
    return specs


def _list(field_name: str, items: Sequence[str]) -> str:
    return "[" + ", ".join(quote(field_name, item) for item in items) + "]"


def render(cfg: GuestConfig) -> str:
    """The config file text. Raises InvalidParameter naming the bad field."""
    check_instance_name(cfg.name)
    uuid = check_uuid(cfg.uuid, "uuid")
    check_int_range(cfg.memory_mb, 16, 16 * 1024 * 1024, "memory_mb")
    check_int_range(cfg.vcpus, 1, 512, "vcpus")
    lines: list[tuple[str, str]] = []
    add = lines.append
    v = cfg.values
    if cfg.kind is GuestKind.PV:
        lines.extend(_pv_boot(cfg))
    else:
        lines.extend(_hvm_firmware(cfg))
    add(("name", quote("name", cfg.name)))
    add(("uuid", quote("uuid", uuid)))
    add(("memory", str(cfg.memory_mb)))
    add(("vcpus", str(cfg.vcpus)))
    if "cpu_mask" in v:
        add(("cpus", quote("cpu_mask", v["cpu_mask"])))
    if cfg.kind is GuestKind.HVM:
        lines.extend(_hvm_devices(cfg))
    add(("vif", _list("vif", vif_specs(cfg))))
    add(("disk", _list("disk", disk_specs(cfg))))
    if cfg.kind is GuestKind.PV:
        add(("root", quote("root_path", v["root_path"])))
        if v.get("kernel_args"):
            add(("extra", quote("kernel_args", v["kernel_args"])))
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        add((event, quote(event, v[event])))
    meta = ""
    if cfg.image is not None or cfg.root_gb is not None:
        check_image_name(cfg.image or "-")
        meta = f"{META_PREFIX} image={cfg.image or '-'} root_gb={cfg.root_gb or 0}\n"
    return HEADER + meta + "".join(f"{key} = {value}\n" for key, value in lines)


_LINE = re.compile(r"(?P<key>[a-z_]+) = (?P<value>'[^'\n]*'|-?\d+|\[.*\])")
_ITEM = re.compile(r"'([^'\n]*)'")


def parse(text: str) -> dict[str, str | int | list[str]]:
    """Read back a file `render` wrote (strings, integers, lists of strings).

    Only this module's own output is expected; anything else raises
    InvalidParameter rather than being guessed at.
    """
    values: dict[str, str | int | list[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(META_PREFIX):
            for word in line[len(META_PREFIX):].split():
                key, _, value = word.partition("=")
                values[f"meta:{key}"] = value
            continue
        if not line.strip() or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if not match:
            raise InvalidParameter(f"config line {number} {line!r}: not written by virt-driver")
        raw = match["value"]
        if raw.startswith("'"):
            values[match["key"]] = raw[1:-1]
        elif raw.startswith("["):
            values[match["key"]] = _ITEM.findall(raw)
        else:
            values[match["key"]] = int(raw)
    return values


def _pv_boot(cfg: GuestConfig) -> list[tuple[str, str]]:
    v = cfg.values
    if v.get("bootloader"):
        lines = [("bootloader", quote("bootloader", v["bootloader"]))]
        args = v.get("bootloader_args")
        if args:
            if cfg.toolstack == "xl":
                lines.append(("bootloader_args", _list("bootloader_args", args.split())))
            else:
                lines.append(("bootargs", quote("bootloader_args", args)))
        return lines
    lines = [("kernel", quote("kernel_path", v["kernel_path"]))]
    if v.get("initrd_path"):
        lines.append(("ramdisk", quote("initrd_path", v["initrd_path"])))
    return lines


def _hvm_firmware(cfg: GuestConfig) -> list[tuple[str, str]]:
    v = cfg.values
    # xm loads hvmloader as the "kernel"; xl would boot such a kernel directly.
    if cfg.toolstack == "xm":
        lines = [("kernel", quote("hvmloader_path", v["hvmloader_path"])),
                 ("builder", "'hvm'")]
        if v.get("device_model"):
            lines.append(("device_model", quote("device_model", v["device_model"])))
        return lines
    lines = [("type", "'hvm'")]
    if v["hvmloader_path"] != params.XEN_HVMLOADER:
        lines.append(("firmware_override", quote("hvmloader_path", v["hvmloader_path"])))
    if v.get("device_model"):
        lines.append(("device_model_override", quote("device_model", v["device_model"])))
    return lines


def _hvm_devices(cfg: GuestConfig) -> list[tuple[str, str]]:
    v = cfg.values
    lines = [
        ("pae", _bool(v["pae"])),
        ("acpi", _bool(v["acpi"])),
        ("apic", _bool(v["apic"])),
        ("boot", quote("boot_order", v["boot_order"])),
        ("sdl", "0"),
        ("vnc", "1"),
        ("vnclisten", quote("vnc_bind_address", check_vnc_listen(
            v.get("vnc_bind_address", params.VNC_LOOPBACK), cfg.vnc_password is not None,
            "params['vnc_bind_address']"))),
    ]
    if cfg.network_port is not None:
        check_int_range(cfg.network_port, VNC_BASE_PORT, 65535, "network_port")
        lines += [("vncdisplay", str(cfg.network_port - VNC_BASE_PORT)), ("vncunused", "0")]
    else:
        lines.append(("vncunused", "1"))
    if cfg.vnc_password is not None:
        lines.append(("vncpasswd", quote("vnc password", cfg.vnc_password)))
    lines.append(("serial", quote("serial", v["serial"])))
    if as_bool(v["usb_tablet"]):
        lines += [("usb", "1"), ("usbdevice", "'tablet'")]
    lines.append(("localtime", _bool(v["use_localtime"])))
    return lines
