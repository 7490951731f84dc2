"""The hypervisor parameters of xm guests, one table row each.

A row says which guest kinds take the parameter, whether it is required,
its default, a syntax check (no host access) and a node check (run on the
host: files exist), each with the message a person sees. `check_syntax`
and `check_node` read the table; no parameter has its own if-statement.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from virt.errors import InvalidParameter
from virt.objects import GuestKind
from virt.validation import VNC_PASSWORD_RULE, is_vnc_password

PV = frozenset({GuestKind.PV})
HVM = frozenset({GuestKind.HVM})
BOTH = PV | HVM


@dataclass(frozen=True)
class Check:
    ok: Callable[[str], bool]
    message: str


@dataclass(frozen=True)
class Param:
    name: str
    kinds: frozenset[GuestKind]
    required: bool = False
    default: str | None = None
    syntax: Check | None = None
    node: Check | None = None


def _safe_text(value: str) -> bool:
    """Printable ASCII without quotes or backslash: it cannot end a quoted string."""
    return all(" " <= c <= "~" and c not in "'\"\\" for c in value)


SAFE_TEXT = Check(_safe_text, "use printable ASCII without quotes, backslashes or "
                              "control characters")


def in_set(*values: str) -> Check:
    return Check(lambda v: v in values, f"use one of {', '.join(values)}")


def _is_abs_path(value: str) -> bool:
    # ',' and '=' would split a disk or vif spec; ':' would read as a prefix.
    return os.path.isabs(value) and not any(c in value for c in ",=:") and " " not in value


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


_CPU_MASK = re.compile(r"(all|\^?\d{1,4}(-\d{1,4})?(,\^?\d{1,4}(-\d{1,4})?)*)")

BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
              "0": False, "false": False, "no": False, "off": False}

ABS_PATH = Check(_is_abs_path, "use an absolute path without spaces, ',', '=' or ':'")
FILE_EXISTS = Check(os.path.isfile, "the file does not exist on this host")
BOOL = Check(lambda v: v.lower() in BOOL_WORDS, "use true or false")
IP_ADDRESS = Check(_is_ip, "use an IPv4 or IPv6 address")
VNC_PASSWORD = Check(is_vnc_password, VNC_PASSWORD_RULE)
BOOT_ORDER = Check(lambda v: bool(v) and not v.strip("acdn") and len(v) <= 4,
                   "use one or more of a, c, d, n (floppy, disk, cdrom, network)")
CPU_MASK = Check(lambda v: bool(_CPU_MASK.fullmatch(v)),
                 "use 'all' or cpu numbers and ranges like 0-3,6 (^N excludes N)")
ACTIONS = ("destroy", "restart", "preserve", "rename-restart",
           "coredump-destroy", "coredump-restart")

# HVM NIC models qemu emulates; "paravirtual" means the Xen netfront NIC.
NIC_TYPES = ("rtl8139", "ne2k_pci", "ne2k_isa", "i82551", "i82557b", "i82559er",
             "pcnet", "e1000", "paravirtual")

PARAMETERS: tuple[Param, ...] = (
    # PV boot: a kernel (and initrd), or a bootloader such as pygrub.
    Param("kernel_path", PV, syntax=ABS_PATH, node=FILE_EXISTS),
    Param("initrd_path", PV, syntax=ABS_PATH, node=FILE_EXISTS),
    Param("root_path", PV, default="/dev/xvda1", syntax=ABS_PATH),
    Param("kernel_args", PV, default="ro"),
    # bootloader, hvmloader_path, device_model: virt.hostprograms admits listed files only.
    Param("bootloader", PV, syntax=ABS_PATH),
    Param("bootloader_args", PV),
    # HVM firmware, device model and emulated hardware.
    Param("hvmloader_path", HVM, default="/usr/lib/xen/boot/hvmloader", syntax=ABS_PATH),
    Param("device_model", HVM, syntax=ABS_PATH),
    Param("boot_order", HVM, required=True, default="cd", syntax=BOOT_ORDER),
    Param("pae", HVM, default="true", syntax=BOOL),
    Param("acpi", HVM, default="true", syntax=BOOL),
    Param("apic", HVM, default="true", syntax=BOOL),
    # Loopback unless a password is set (config.render checks the pair).
    Param("vnc_bind_address", HVM, default="127.0.0.1", syntax=IP_ADDRESS),
    Param("vnc_password", HVM, syntax=VNC_PASSWORD),
    Param("nic_type", HVM, default="rtl8139", syntax=in_set(*NIC_TYPES)),
    Param("cdrom_image_path", HVM, syntax=ABS_PATH, node=FILE_EXISTS),
    Param("serial", HVM, default="pty", syntax=in_set("pty", "none")),
    Param("usb_tablet", HVM, default="true", syntax=BOOL),
    Param("localtime", HVM, default="true", syntax=BOOL),
    # Both kinds.
    Param("disk_prefix", BOTH, syntax=in_set("xvd", "hd", "sd")),
    Param("cpu_mask", BOTH, syntax=CPU_MASK),
    Param("on_poweroff", BOTH, default="destroy", syntax=in_set(*ACTIONS)),
    Param("on_reboot", BOTH, default="restart", syntax=in_set(*ACTIONS)),
    Param("on_crash", BOTH, default="restart", syntax=in_set(*ACTIONS)),
)

BY_NAME = {param.name: param for param in PARAMETERS}

# Params no longer read, and what to pass instead.
RETIRED = {
    # It read a host file chosen by the tenant into the config: any host file's first line.
    "vnc_password_file": "pass the password itself as vnc_password (as the libvirt backend)",
}


def check_syntax(kind: GuestKind, params: Mapping[str, str]) -> dict[str, str]:
    """Every parameter checked without touching the host; returns them with defaults."""
    for name in params:
        if name in RETIRED:
            raise InvalidParameter(f"parameter {name} is no longer read: {RETIRED[name]}")
        param = BY_NAME.get(name)
        if param is None or kind not in param.kinds:
            known = ", ".join(p.name for p in PARAMETERS if kind in p.kinds)
            raise InvalidParameter(f"parameter {name!r} is not known for Xen "
                                   f"{kind.value.upper()} guests: use one of {known}")
    values: dict[str, str] = {}
    for param in PARAMETERS:
        if kind not in param.kinds:
            continue
        # An empty value means "not set": the default applies.
        value = params.get(param.name) or param.default
        if value is None:
            if param.required:
                raise InvalidParameter(f"parameter {param.name} is required")
            continue
        _apply(param.name, value, SAFE_TEXT)
        if param.syntax:
            _apply(param.name, value, param.syntax)
        values[param.name] = value
    if kind is GuestKind.PV and not (values.get("kernel_path") or values.get("bootloader")):
        raise InvalidParameter("parameter kernel_path is required for Xen PV guests "
                               "unless a bootloader (such as /usr/bin/pygrub) is given")
    return values


def check_node(values: Mapping[str, str]) -> None:
    """The host checks (files exist) of already syntax-checked values."""
    for name, value in values.items():
        param = BY_NAME[name]
        if param.node:
            _apply(name, value, param.node)


def as_bool(value: str) -> bool:
    return BOOL_WORDS[value.lower()]


def _apply(name: str, value: str, check: Check) -> None:
    if not isinstance(value, str) or not check.ok(value):
        raise InvalidParameter(f"parameter {name} {value!r}: {check.message}")
