"""The xm backend's side of the parameter contract (virt/params.py).

SUPPORT says which params of the shared table the xm config can express,
for which guest kinds; check_syntax adds the one rule of the config format
(a value must not be able to end its quoted string) and the one rule of
Xen PV boot (a kernel or a bootloader).
"""

from __future__ import annotations

from collections.abc import Mapping

from virt import params as contract
from virt.errors import InvalidParameter
from virt.objects import GuestKind
from virt.params import (  # noqa: F401  (the names config.py reads from here)
    ABS_PATH,
    BOTH,
    HVM,
    IP_ADDRESS,
    PV,
    VNC_LOOPBACK,
    XEN_HVMLOADER,
    Check,
    apply,
    as_bool,
    check_node,
)

SUPPORT: contract.Support = {
    **dict.fromkeys(("kernel_image", "initrd_image", "kernel_path", "initrd_path",
                     "kernel_args", "root_path", "bootloader", "bootloader_args"), PV),
    **dict.fromkeys(("hvmloader_path", "device_model", "boot_order", "cdrom_image",
                     "cdrom_image_path", "acpi", "apic", "pae", "nic_type", "serial",
                     "usb_tablet", "vnc_bind_address", "vnc_password", "use_localtime"), HVM),
    **dict.fromkeys(("disk_prefix", "cpu_mask", "on_poweroff", "on_reboot", "on_crash"), BOTH),
}


def _safe_text(value: str) -> bool:
    """Printable ASCII without quotes or backslash: it cannot end a quoted string."""
    return all(" " <= c <= "~" and c not in "'\"\\" for c in value)


SAFE_TEXT = Check(_safe_text, "use printable ASCII without quotes, backslashes or "
                              "control characters")


def check_field(field: str, value: str, check: Check) -> None:
    """InvalidParameter naming a config field (not a param) unless the value passes."""
    if not isinstance(value, str) or not check.ok(value):
        raise InvalidParameter(f"{field} {value!r}: {check.message}")


def check_syntax(kind: GuestKind, params: Mapping[str, str]) -> dict[str, str]:
    """Every parameter checked without touching the host; returns them with defaults."""
    values = contract.check_params(kind, params, SUPPORT, "xm")
    for name, value in values.items():
        apply(name, value, SAFE_TEXT)
    if kind is GuestKind.PV and not any(values.get(boot) for boot in (
            "kernel_path", "kernel_image", "bootloader")):
        raise InvalidParameter("params['kernel_path'] is required for Xen PV guests "
                               "unless a bootloader (such as /usr/bin/pygrub) is given")
    return values
