"""Checks for names and values that reach a file path, XML or a config file.

Each raises InvalidParameter naming the field and saying what is allowed.
"""

from __future__ import annotations

import ipaddress
import os
import re

from virt.errors import InvalidParameter

# The only image formats ever accepted from outside: each has a safety check
# in virt.images.inspect_untrusted. Drivers such as file, host_device or
# blkdebug name host resources and are never formats of an image.
ACCEPTED_IMAGE_FORMATS = ("raw", "qcow2", "vmdk", "vpc", "vhdx")

_INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_IMAGE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


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
    if (not isinstance(path, str) or not os.path.isabs(path)
            or any(ord(c) < 32 or c == "\x7f" for c in path)):
        raise InvalidParameter(f"{field} {path!r}: use an absolute path without control characters")
    return path


def check_int_range(value, low: int, high: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameter(f"{field} {value!r}: use a whole number from {low} to {high}")
    return value


def check_vnc_listen(address: str, has_password: bool, field: str) -> str:
    """A VNC listen address; anything but loopback needs a password (anyone could connect)."""
    try:
        loopback = ipaddress.ip_address(address).is_loopback
    except (ValueError, TypeError):
        raise InvalidParameter(f"{field} {address!r}: use an IPv4 or IPv6 address such as "
                               "127.0.0.1 or ::1") from None
    if not loopback and not has_password:
        raise InvalidParameter(f"{field} {address!r}: VNC beyond loopback needs a password; "
                               "set one, or listen on 127.0.0.1 or ::1")
    return address
