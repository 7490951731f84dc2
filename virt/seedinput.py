"""Checks of what a tenant puts in a cloud-init seed, and password hashing.

Each check returns the normalised value or raises InvalidParameter saying
what was wrong and what to give instead. Nothing here touches the host,
except hash_password, which runs `openssl passwd` (crypt left Python 3.13).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct

from virt.errors import InvalidParameter

MAX_USER_DATA = 64 * 1024  # what Nova's metadata service and ConfigDrive accept
MAX_SSH_KEYS = 32
MAX_KEY_LENGTH = 16 * 1024
MAX_PASSWORD = 1024
SEED_FORMATS = ("nocloud", "configdrive")

# Key types OpenSSH reads in authorized_keys, as the key blob names itself.
SSH_KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# SHA-512 or SHA-256 crypt, or yescrypt: what chpasswd -e and cloud-init take.
_PASSWORD_HASH = re.compile(r"\$(6|5)\$(rounds=\d{4,9}\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{43,86}"
                            r"|\$y\$[./A-Za-z0-9]{1,32}\$[./A-Za-z0-9]{1,86}\$[./A-Za-z0-9]{43}")
_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def check_format(value: str) -> str:
    if value not in SEED_FORMATS:
        raise InvalidParameter(f"seed format {value!r}: use nocloud or configdrive")
    return value


def check_hostname(value: str, field: str = "seed hostname") -> str:
    """An RFC 1123 host name (labels of letters, digits and '-'), in lower case."""
    lowered = value.lower() if isinstance(value, str) else ""
    if not lowered or len(lowered) > 253 \
            or not all(_HOST_LABEL.fullmatch(label) for label in lowered.split(".")):
        raise InvalidParameter(
            f"{field} {value!r}: use dot-separated labels of 1 to 63 letters, digits or "
            "'-' (not at either end), at most 253 characters")
    return lowered


def hostname_from_name(name: str) -> str:
    """The default host name: the instance name with what a host name cannot hold as '-'."""
    candidate = re.sub(r"[^a-z0-9.-]", "-", name.lower()).strip("-.")[:63].strip("-.")
    return check_hostname(candidate or "guest", "host name from the instance name")


def check_ssh_key(line: str, field: str) -> str:
    """One OpenSSH public key line: type, base64 blob naming the same type, optional comment."""
    if not isinstance(line, str) or len(line) > MAX_KEY_LENGTH:
        raise InvalidParameter(f"{field}: use one public key line of at most "
                               f"{MAX_KEY_LENGTH} characters")
    text = line.strip()
    if "PRIVATE KEY" in text:
        raise InvalidParameter(f"{field} is a private key: give the public key (the .pub file)")
    if _XML_UNSAFE.search(text) or "\n" in text or "\r" in text:
        raise InvalidParameter(f"{field}: use one printable line per key")
    parts = text.split(None, 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise InvalidParameter(
            f"{field} {text[:40]!r}...: not an OpenSSH public key; use a line such as "
            f"'ssh-ed25519 AAAA... comment' (types: {', '.join(SSH_KEY_TYPES)})")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        named = blob[4:4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        named = None
    if named != parts[0]:
        raise InvalidParameter(f"{field}: the key data is not a {parts[0]} key (damaged or "
                               "truncated); copy the whole line of the .pub file")
    return " ".join(parts)


def check_ssh_keys(keys, field: str = "seed ssh_keys") -> tuple[str, ...]:
    if isinstance(keys, str) or not isinstance(keys, tuple | list):
        raise InvalidParameter(f"{field}: use a list of public key lines")
    if len(keys) > MAX_SSH_KEYS:
        raise InvalidParameter(f"{field}: {len(keys)} keys; give at most {MAX_SSH_KEYS}")
    return tuple(check_ssh_key(key, f"{field}[{i}]") for i, key in enumerate(keys))


def check_user_data(data, field: str = "seed user_data") -> str:
    """`#cloud-config` YAML (a mapping) or a script (`#!`), UTF-8, at most MAX_USER_DATA bytes."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidParameter(f"{field}: not UTF-8 text; give #cloud-config YAML "
                                   "or a script") from None
    if not isinstance(data, str):
        raise InvalidParameter(f"{field}: use text")
    size = len(data.encode("utf-8"))
    if size > MAX_USER_DATA:
        raise InvalidParameter(f"{field} is {size} bytes: give at most {MAX_USER_DATA}")
    if _XML_UNSAFE.search(data):
        raise InvalidParameter(f"{field}: holds control characters; give text")
    if data.startswith("#!"):
        return data
    if not data.startswith("#cloud-config"):
        raise InvalidParameter(f"{field}: starts with {data[:20]!r}; begin with "
                               "'#cloud-config' (YAML) or '#!' (a script)")
    import yaml  # imported here: only a seed with user-data needs it
    try:
        parsed = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidParameter(f"{field}: not valid YAML{where}; fix the #cloud-config "
                               "document") from None
    if parsed is not None and not isinstance(parsed, dict):
        raise InvalidParameter(f"{field}: #cloud-config must be a YAML mapping "
                               f"(key: value), not a {type(parsed).__name__}")
    return data


def check_password_hash(value, field: str = "seed password_hash") -> str:
    if not isinstance(value, str) or not _PASSWORD_HASH.fullmatch(value):
        raise InvalidParameter(f"{field}: use a SHA-512 crypt hash ($6$...), e.g. from "
                               "`openssl passwd -6`; a password is never stored in clear")
    return value


def hash_password(password: str) -> str:
    """The SHA-512 crypt hash of `password` with a random salt (`openssl passwd -6`)."""
    if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD \
            or "\n" in password or "\r" in password:
        raise InvalidParameter(f"password: use one line of 1 to {MAX_PASSWORD} characters")
    from oslo_concurrency import processutils  # its import costs 40-60 ms: only when used
    try:
        out, _err = processutils.execute("openssl", "passwd", "-6", "-stdin",
                                         process_input=password.encode())
    except (processutils.ProcessExecutionError, OSError) as exc:
        raise InvalidParameter(f"password: cannot hash it with openssl ({exc}); "
                               "install openssl or give password_hash") from None
    return check_password_hash(out.strip())


def check_address(value: str, field: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """ADDRESS/PREFIX, or a bare address (/24 for IPv4, /64 for IPv6)."""
    try:
        if "/" not in value:
            address = ipaddress.ip_address(value)
            value = f"{value}/{24 if address.version == 4 else 64}"
        interface = ipaddress.ip_interface(value)
    except (ValueError, TypeError):
        raise InvalidParameter(f"{field} {value!r}: use an address such as 192.0.2.10/24 "
                               "or 2001:db8::10/64") from None
    if interface.network.prefixlen == interface.max_prefixlen \
            or interface.ip in (interface.network.network_address,
                                interface.network.broadcast_address):
        raise InvalidParameter(f"{field} {value!r}: the address is its network's own or "
                               "broadcast address; give a host address and a shorter prefix")
    return interface


def check_ip(value: str, field: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except (ValueError, TypeError):
        raise InvalidParameter(f"{field} {value!r}: use an IP address such as "
                               "192.0.2.1") from None
