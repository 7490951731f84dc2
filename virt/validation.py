"""Checks for names and values that reach a file path, XML or a config file.

Each raises InvalidParameter naming the field and saying what is allowed.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from virt.errors import InvalidParameter
from virt.lazymodules import LazyModule

if TYPE_CHECKING:
    from virt import objects
    from virt.objects import NIC, BlockDevice, Flavor, Instance
else:  # its dataclasses are a sixth of `image list`, which checks only an image name
    objects = LazyModule("virt.objects")

# The only image formats ever accepted from outside: each has a safety check
# in virt.images.inspect_untrusted. Drivers such as file, host_device or
# blkdebug name host resources and are never formats of an image.
ACCEPTED_IMAGE_FORMATS = ("raw", "qcow2", "vmdk", "vpc", "vhdx")


class _Pattern:
    """A regular expression compiled at its first use: compiling this module's
    patterns at import was 2% of every read command."""

    def __init__(self, pattern: str):
        self.pattern = pattern

    @functools.cached_property
    def compiled(self) -> re.Pattern:
        return re.compile(self.pattern)

    def fullmatch(self, text: str) -> re.Match | None:
        return self.compiled.fullmatch(text)

    def search(self, text: str) -> re.Match | None:
        return self.compiled.search(text)


_INSTANCE_NAME = _Pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_IMAGE_NAME = _Pattern(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_MAC = _Pattern(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_CONTROL = _Pattern("[\x00-\x1f\x7f]")
_PARAM_KEY = _Pattern(r"[a-z][a-z0-9_]{0,63}")
_CANONICAL_UUID = _Pattern(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# What no XML document, xm config or log line can carry: C0 and C1 controls,
# DEL, lone surrogates (not encodable) and the two non-characters XML refuses.
_NOT_TEXT = _Pattern("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
MAX_TEXT = 4096
MEMORY_MB_RANGE = (16, 4 * 1024 * 1024)
VCPUS_RANGE = (1, 256)
ROOT_GB_RANGE = (0, 1 << 20)


def check_instance_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not _INSTANCE_NAME.fullmatch(name):
        raise InvalidParameter(
            f"{field} {name!r}: use 1 to 63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")
    return name


def check_image_name(name: str, field: str = "image name") -> str:
    if not isinstance(name, str) or not _IMAGE_NAME.fullmatch(name):
        raise InvalidParameter(
            f"{field} {name!r}: use letters, digits, '.', '_' or '-' "
            "(at most 128), not starting with '.'")
    return name


def check_mac(mac: str, field: str = "mac") -> str:
    """Return the MAC in lower case, or raise."""
    if not isinstance(mac, str) or not _MAC.fullmatch(mac.lower()):
        raise InvalidParameter(f"{field} {mac!r}: use six hex pairs like 52:54:00:12:34:56")
    return mac.lower()


def check_absolute_path(path: str, field: str = "path") -> str:
    if not isinstance(path, str) or not os.path.isabs(path) or _CONTROL.search(path):
        raise InvalidParameter(f"{field} {path!r}: use an absolute path without control characters")
    return path


def check_int_range(value, low: int, high: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameter(f"{field} {value!r}: use a whole number from {low} to {high}")
    return value


VNC_PASSWORD_RULE = "use 1 to 8 printable characters (a VNC limit)"


def is_vnc_password(value: str) -> bool:
    """VNC authentication reads at most 8 characters; more would be silently cut."""
    return 1 <= len(value) <= 8 and value.isprintable()


def check_vnc_listen(address: str, has_password: bool, field: str) -> str:
    """A VNC listen address; anything but loopback needs a password (anyone could connect)."""
    import ipaddress  # here: a read command checks no address
    try:
        loopback = ipaddress.ip_address(address).is_loopback
    except (ValueError, TypeError):
        raise InvalidParameter(f"{field} {address!r}: use an IPv4 or IPv6 address such as "
                               "127.0.0.1 or ::1") from None
    if not loopback and not has_password:
        raise InvalidParameter(f"{field} {address!r}: VNC beyond loopback needs a password; "
                               "set one, or listen on 127.0.0.1 or ::1")
    return address


def check_text(value, field: str) -> str:
    """Printable text on one line, short enough for any document it reaches."""
    if not isinstance(value, str) or len(value) > MAX_TEXT or _NOT_TEXT.search(value):
        raise InvalidParameter(f"{field} {_show(value)}: use a string of printable characters "
                               f"on one line (at most {MAX_TEXT})")
    return value


def check_optional_text(value, field: str) -> str | None:
    return None if value is None else check_text(value, field)


def check_bool(value, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidParameter(f"{field} {_show(value)}: use True or False")
    return value


def check_optional_int(value, field: str) -> int | None:
    return None if value is None else check_int_range(value, 0, 1 << 31, field)


def check_optional_count(value, field: str) -> int | None:
    """None, or a whole number of at least 1 (vCPUs, MiB, GiB)."""
    return None if value is None else check_int_range(value, 1, 1 << 31, field)


def check_callable(value, field: str) -> Callable:
    if not callable(value):
        raise InvalidParameter(f"{field} {_show(value)}: use a function")
    return value


def check_optional_callable(value, field: str) -> Callable | None:
    return None if value is None else check_callable(value, field)


def check_params(params, field: str = "params") -> dict[str, str]:
    """A dict of lower-case keys to one-line strings; each backend checks the meaning."""
    if not isinstance(params, dict):
        raise InvalidParameter(f"{field} {_show(params)}: use a dict of strings")
    for key, value in params.items():
        if not isinstance(key, str) or not _PARAM_KEY.fullmatch(key):
            raise InvalidParameter(f"{field} key {_show(key)}: use lower-case letters, digits "
                                   "and '_', starting with a letter")
        check_text(value, f"{field}[{key!r}]")
    return params


def check_flavor(flavor, field: str = "flavor") -> Flavor:
    if not isinstance(flavor, objects.Flavor):
        raise InvalidParameter(f"{field} {_show(flavor)}: use a virt.objects.Flavor")
    check_int_range(flavor.memory_mb, *MEMORY_MB_RANGE, f"{field} memory_mb")
    check_int_range(flavor.vcpus, *VCPUS_RANGE, f"{field} vcpus")
    check_int_range(flavor.root_gb, *ROOT_GB_RANGE, f"{field} root_gb")
    check_text(flavor.name, f"{field} name")
    return flavor


def check_nic(nic, field: str) -> NIC:
    if not isinstance(nic, objects.NIC):
        raise InvalidParameter(f"{field} {_show(nic)}: use a virt.objects.NIC")
    check_mac(nic.mac, f"{field}.mac")
    for name in ("bridge", "network", "model", "ip", "tap", "ovs_interface_id"):
        check_optional_text(getattr(nic, name), f"{field}.{name}")
    check_optional_int(nic.mtu, f"{field}.mtu")
    return nic


def check_nics(nics, field: str = "nics") -> tuple[NIC, ...]:
    return tuple(check_nic(nic, f"{field}[{i}]") for i, nic in enumerate(_items(nics, field)))


def check_block_device(device, field: str) -> BlockDevice:
    if not isinstance(device, objects.BlockDevice):
        raise InvalidParameter(f"{field} {_show(device)}: use a virt.objects.BlockDevice")
    check_absolute_path(device.path, f"{field}.path")
    check_text(device.fmt, f"{field}.fmt")
    check_optional_text(device.bus, f"{field}.bus")
    check_bool(device.readonly, f"{field}.readonly")
    check_text(device.device_type, f"{field}.device_type")
    return device


def check_block_devices(devices, field: str = "block_devices") -> tuple[BlockDevice, ...]:
    return tuple(check_block_device(device, f"{field}[{i}]")
                 for i, device in enumerate(_items(devices, field)))


def is_uuid(value) -> bool:
    """A UUID in its canonical form, the only one that may name a path.

    The form str(uuid.UUID(value)) gives, matched without the uuid module
    (which imports platform: 3% of `show`).
    """
    return isinstance(value, str) and _CANONICAL_UUID.fullmatch(value) is not None


def check_uuid(value, field: str) -> str:
    """The UUID in its canonical form (lower case, with dashes)."""
    if is_uuid(value):
        return value
    import uuid as uuidlib  # another spelling (upper case, braces, urn:uuid:) made canonical
    try:
        return str(uuidlib.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise InvalidParameter(f"{field} {_show(value)}: use a UUID such as "
                               "6f1d1a7e-3b8f-4f57-9f5b-2f0a8c2e6d41") from None


def check_instance(instance, field: str = "instance") -> Instance:
    """Every part of an Instance well-formed: the one check at the driver boundary."""
    if not isinstance(instance, objects.Instance):
        raise InvalidParameter(f"{field} {_show(instance)}: use a virt.objects.Instance")
    check_instance_name(instance.name, f"{field} name")
    check_uuid(instance.uuid, f"{field} uuid")
    if instance.image is not None:
        check_image_name(instance.image, f"{field} image")
    check_flavor(instance.flavor, f"{field} flavor")
    if not isinstance(instance.kind, objects.GuestKind):
        raise InvalidParameter(f"{field} kind {_show(instance.kind)}: use GuestKind.HVM or PV")
    check_params(instance.params, f"{field} params")
    check_nics(instance.nics, f"{field} nics")
    if instance.network_port is not None:
        check_int_range(instance.network_port, 5900, 65535, f"{field} network_port")
    if instance.seed is not None and not isinstance(instance.seed, objects.SeedConfig):
        raise InvalidParameter(f"{field} seed {_show(instance.seed)}: use a "
                               "virt.objects.SeedConfig or None")
    return instance


def _items(values, field: str) -> list:
    """The items of a list, tuple or other finite iterable (not a string or mapping)."""
    if isinstance(values, str | bytes | dict) or not isinstance(values, Iterable):
        raise InvalidParameter(f"{field} {_show(values)}: use a list or tuple")
    return list(values)


def _show(value) -> str:
    """A short repr for messages: a huge or hostile value must not flood the error line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
