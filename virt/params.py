"""The instance-parameter contract: one row per param, read by every backend.

A row says which guest kinds the param applies to, its default, a syntax
check (no host access) and a node check (run on the host), each with the
message a person sees. A backend states which params it honours, for which
kinds (a `Support` map); `check_params` reads the table and that map, so no
param has its own if-statement and both backends refuse the same inputs:

- a key not in the table: InvalidParameter listing the known ones;
- a key the table gives for another kind: InvalidParameter;
- a key this backend cannot honour: NotSupported, never silently ignored;
- a value failing its syntax check: InvalidParameter naming the param.

Defaults are the table's, the same under every backend; a param without a
default is simply not set. Consoles listen on loopback unless a password is
set (VNC_LOOPBACK).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from virt import forwards
from virt.errors import InvalidParameter, NotSupported
from virt.objects import GuestKind
from virt.validation import VNC_PASSWORD_RULE, is_vnc_password

PV = frozenset({GuestKind.PV})
HVM = frozenset({GuestKind.HVM})
BOTH = PV | HVM
VNC_LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Check:
    """A test of a value and what to do when it fails (ok may raise a more exact one)."""

    ok: Callable[[str], bool]
    message: str


@dataclass(frozen=True)
class Param:
    """One instance param: where it applies, its default, its checks, what it means."""

    name: str
    kinds: frozenset[GuestKind]
    default: str | None = None
    syntax: Check | None = None
    node: Check | None = None
    help: str = ""


# What a backend honours: param name -> the guest kinds it honours it for.
Support = Mapping[str, frozenset[GuestKind]]


def in_set(*values: str) -> Check:
    return Check(lambda v: v in values, f"use one of {', '.join(values)}")


def _is_abs_path(value: str) -> bool:
    # ',' '=' ':' and spaces would split a disk spec or a config line.
    return os.path.isabs(value) and not re.search(r"[\x00-\x20\x7f,=:]", value)


def _is_ip(value: str) -> bool:
    import ipaddress  # here: `show` reads params back without checking an address
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_line(value: str) -> bool:
    return not re.search(r"[\x00-\x1f\x7f]", value)


def _is_boot_order(value: str) -> bool:
    return bool(value) and not value.strip("acdn") and len(set(value)) == len(value)


_CPU_MASK = re.compile(r"(all|\^?\d{1,4}(-\d{1,4})?(,\^?\d{1,4}(-\d{1,4})?)*)")
_IMAGE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")

BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
              "0": False, "false": False, "no": False, "off": False}
ABS_PATH = Check(_is_abs_path, "use an absolute path without spaces, ',', '=' or ':'")
FILE_EXISTS = Check(os.path.isfile, "the file does not exist on this host")
BOOL = Check(lambda v: v.lower() in BOOL_WORDS, "use true or false")
IP_ADDRESS = Check(_is_ip, "use an IPv4 or IPv6 address such as 127.0.0.1 or ::1")
LINE = Check(_is_line, "use printable characters on one line")
IMAGE = Check(lambda v: bool(_IMAGE.fullmatch(v)), "use the name of an image in the store")
VNC_PASSWORD = Check(is_vnc_password, VNC_PASSWORD_RULE)
BOOT_ORDER = Check(_is_boot_order, "use one or more of a, c, d, n (floppy, disk, cdrom, "
                                   "network), each at most once")
COUNT = Check(lambda v: v.isascii() and v.isdigit() and 1 <= int(v) <= 1 << 20,
              f"use a whole number from 1 to {1 << 20}")
CPU_MASK = Check(lambda v: bool(_CPU_MASK.fullmatch(v)),
                 "use 'all' or cpu numbers and ranges like 0-3,6 (^N excludes N)")
# read_param raises its own message, naming the part of the value at fault.
FORWARDS = Check(lambda v: forwards.read_param({forwards.PARAM: v}) is not None,
                 "use MAC=HOST:GUEST[+HOST:GUEST...]")
# What libvirt and Xen both do when the guest powers off, reboots or crashes.
STOP_ACTIONS = ("destroy", "restart", "preserve", "rename-restart")
CRASH_ACTIONS = (*STOP_ACTIONS, "coredump-destroy", "coredump-restart")
DISK_CACHE_MODES = ("default", "none", "writethrough", "writeback", "directsync", "unsafe")
DISK_IO_MODES = ("native", "threads")
# HVM NIC models Xen's qemu emulates; "paravirtual" means the Xen netfront NIC.
NIC_TYPES = ("rtl8139", "ne2k_pci", "ne2k_isa", "i82551", "i82557b", "i82559er",
             "pcnet", "e1000", "paravirtual")
XEN_HVMLOADER = "/usr/lib/xen/boot/hvmloader"

PARAMS: tuple[Param, ...] = (
    # Direct boot: a kernel (and initrd) from the store or an allowed directory.
    Param("kernel_image", BOTH, syntax=IMAGE, help="store image booted as the kernel"),
    Param("initrd_image", BOTH, syntax=IMAGE, help="store image loaded as the initrd"),
    Param("kernel_path", BOTH, syntax=ABS_PATH, node=FILE_EXISTS,
          help="kernel for direct boot, inside [DEFAULT] boot_file_dirs"),
    Param("initrd_path", BOTH, syntax=ABS_PATH, node=FILE_EXISTS,
          help="initrd for direct boot; needs a kernel"),
    Param("kernel_args", BOTH, syntax=LINE, help="kernel command line for direct boot"),
    Param("root_path", PV, default="/dev/xvda1", syntax=ABS_PATH,
          help="root device named on a Xen PV kernel's command line"),
    # Xen PV bootloader (virt.hostprograms admits listed programs only).
    Param("bootloader", PV, syntax=ABS_PATH, help="Xen PV bootloader such as pygrub"),
    Param("bootloader_args", PV, syntax=LINE, help="arguments of the Xen PV bootloader"),
    # HVM firmware and emulated hardware.
    Param("hvmloader_path", HVM, default=XEN_HVMLOADER, syntax=ABS_PATH,
          help="Xen HVM firmware"),
    Param("device_model", HVM, syntax=ABS_PATH, help="Xen HVM device model (qemu)"),
    Param("boot_order", HVM, default="c", syntax=BOOT_ORDER,
          help="boot devices in order: a floppy, c disk, d cdrom, n network"),
    Param("cdrom_image", HVM, syntax=IMAGE, help="store image attached as a cdrom"),
    Param("cdrom_image_path", HVM, syntax=ABS_PATH, node=FILE_EXISTS,
          help="ISO attached as a cdrom, inside [DEFAULT] boot_file_dirs"),
    Param("acpi", HVM, default="true", syntax=BOOL, help="ACPI"),
    Param("apic", HVM, default="true", syntax=BOOL, help="APIC"),
    Param("pae", HVM, default="true", syntax=BOOL, help="PAE (Xen HVM)"),
    Param("nic_type", HVM, syntax=in_set(*NIC_TYPES), help="Xen HVM NIC model"),
    Param("serial", HVM, default="pty", syntax=in_set("pty", "none"), help="Xen HVM serial"),
    Param("usb_tablet", HVM, default="true", syntax=BOOL, help="Xen HVM USB tablet"),
    # Console and clock.
    Param("vnc_bind_address", BOTH, syntax=IP_ADDRESS,
          help=f"VNC listen address; VNC listens on {VNC_LOOPBACK} when not given, "
               "beyond loopback only with a password"),
    Param("vnc_password", BOTH, syntax=VNC_PASSWORD, help="VNC password"),
    Param("use_localtime", BOTH, default="false", syntax=BOOL,
          help="guest clock in local time instead of UTC"),
    # Disks, CPUs, NICs.
    Param("disk_cache", BOTH, syntax=in_set(*DISK_CACHE_MODES), help="disk cache mode"),
    Param("disk_io", BOTH, syntax=in_set(*DISK_IO_MODES), help="disk I/O mode"),
    Param("disk_prefix", BOTH, syntax=in_set("xvd", "hd", "sd"), help="Xen disk names"),
    Param("cpu_mask", BOTH, syntax=CPU_MASK, help="host CPUs the guest may run on"),
    Param("max_vcpus", BOTH, syntax=COUNT,
          help="vCPUs a live resize may reach (default: the flavor's)"),
    Param("max_memory_mb", BOTH, syntax=COUNT,
          help="memory in MiB a live resize may reach, through the balloon "
               "(default: the flavor's)"),
    Param("user_forwards", BOTH, syntax=FORWARDS,
          help="user NIC with host ports forwarded on 127.0.0.1"),
    # What the hypervisor does on its own when the guest stops.
    Param("on_poweroff", BOTH, default="destroy", syntax=in_set(*STOP_ACTIONS),
          help="when the guest powers off"),
    Param("on_reboot", BOTH, default="restart", syntax=in_set(*STOP_ACTIONS),
          help="when the guest reboots"),
    Param("on_crash", BOTH, default="destroy", syntax=in_set(*CRASH_ACTIONS),
          help="when the guest crashes"),
)

BY_NAME = {param.name: param for param in PARAMS}

# Names no longer read, and what to pass instead.
RETIRED = {
    "localtime": "pass use_localtime instead (one name for every backend)",
    # It read a host file chosen by the tenant into the config: any host file's first line.
    "vnc_password_file": "pass the password itself as vnc_password",
}


def known(kind: GuestKind) -> list[str]:
    """The names of the params that apply to guests of this kind."""
    return [p.name for p in PARAMS if kind in p.kinds]


def check_params(kind: GuestKind, params: Mapping[str, str], support: Support,
                 backend: str) -> dict[str, str]:
    """Every given param checked without touching the host; returned with the defaults
    of the params this backend honours for this kind. An empty value means "not set"."""
    for name, value in params.items():
        _check_key(kind, name, support, backend)
        if value != "":
            check_value(name, value)
    values: dict[str, str] = {}
    for param in PARAMS:
        if kind in support.get(param.name, ()):
            given = params.get(param.name) or param.default
            if given is not None:
                values[param.name] = given
    return values


def _check_key(kind: GuestKind, name: str, support: Support, backend: str) -> None:
    if name in RETIRED:
        raise InvalidParameter(f"params[{name!r}] is no longer read: {RETIRED[name]}")
    param = BY_NAME.get(name)
    if param is None or kind not in param.kinds:
        where = "" if param is None else f" for {kind.value} guests"
        raise InvalidParameter(f"params[{name!r}] is not a known param{where}: use one of "
                               f"{', '.join(known(kind))}")
    if kind not in support.get(name, ()):
        raise NotSupported(f"params[{name!r}]: the {backend} backend cannot honour it for "
                           f"{kind.value} guests; leave it out or use another backend")


def check_value(name: str, value: str) -> str:
    """The value, if it passes the syntax check of its row."""
    check = BY_NAME[name].syntax
    if check is not None:
        apply(name, value, check)
    return value


def check_node(values: Mapping[str, str]) -> None:
    """The host checks (files exist) of already syntax-checked values."""
    for name, value in values.items():
        param = BY_NAME.get(name)
        if param is not None and param.node is not None:
            apply(name, value, param.node)


def honoured_only(kind: GuestKind, params: Mapping[str, str], support: Support) -> dict[str, str]:
    """The params a backend honours: a guest built before this contract may carry others,
    which were ignored then and must not stop it from being rebuilt now."""
    return {k: v for k, v in params.items() if kind in support.get(k, ())}


def as_bool(value: str) -> bool:
    return BOOL_WORDS[value.lower()]


def apply(name: str, value: str, check: Check) -> None:
    """InvalidParameter naming the param unless the value passes the check."""
    if not isinstance(value, str) or not check.ok(value):
        raise InvalidParameter(f"params[{name!r}] {value!r}: {check.message}")
