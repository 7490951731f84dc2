"""Host ports forwarded to a guest's user-mode NIC: the param, its checks, the SSH port.

The instance param `user_forwards` ("MAC=HOST:GUEST[+HOST:GUEST...]") names the
user NIC and its forwards; the domain metadata keeps it, so a hard reboot
rebuilds the same NIC. Only 127.0.0.1 is ever a listening address: a forward
on any other address is refused. How a backend forwards is its own business
(backends/libvirt/usernet.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from virt.errors import InvalidParameter
from virt.validation import check_mac

PARAM = "user_forwards"
LISTEN = "127.0.0.1"
MAX_FORWARDS = 16
SSH_PORT = 22


@dataclass(frozen=True)
class Forward:
    host_port: int
    guest_port: int


@dataclass(frozen=True)
class ForwardedNIC:
    mac: str
    forwards: tuple[Forward, ...]


def _port(text: str, field: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InvalidParameter(f"{field} {text!r}: use a port number from 1 to 65535")
    return int(text)


def parse_forward(text: str, field: str = "forward") -> Forward:
    """[127.0.0.1:]HOST:GUEST; any other listening address is refused."""
    head, _, guest = text.rpartition(":")
    address, has_address, host = head.rpartition(":")
    if has_address and address != LISTEN:
        raise InvalidParameter(
            f"{field} {text!r}: forwards listen on {LISTEN} only (a guest port on "
            f"{address or 'every address'} would be open to the network); use "
            f"{LISTEN}:HOST:GUEST or HOST:GUEST")
    if not head:
        raise InvalidParameter(f"{field} {text!r}: use HOST:GUEST, e.g. 2222:22")
    return Forward(_port(host, f"{field} host port"), _port(guest, f"{field} guest port"))


def format_param(mac: str, forwards: list[Forward] | tuple[Forward, ...]) -> str:
    return f"{mac}=" + "+".join(f"{f.host_port}:{f.guest_port}" for f in forwards)


def read_param(params: dict[str, str]) -> ForwardedNIC | None:
    """The forwarded NIC the params ask for, checked; None when they ask for none."""
    value = params.get(PARAM)
    if value is None:
        return None
    field = f"params[{PARAM!r}]"
    mac, sep, rest = value.partition("=")
    if not sep or not rest:
        raise InvalidParameter(f"{field} {value!r}: use MAC=HOST:GUEST[+HOST:GUEST...]")
    forwards = tuple(parse_forward(item, field) for item in rest.split("+"))
    if len(forwards) > MAX_FORWARDS:
        raise InvalidParameter(f"{field}: {len(forwards)} forwards; give at most {MAX_FORWARDS}")
    hosts = [f.host_port for f in forwards]
    if len(set(hosts)) != len(hosts):
        raise InvalidParameter(f"{field} {value!r}: a host port is forwarded twice")
    return ForwardedNIC(check_mac(mac, f"{field} MAC"), forwards)


def ssh_port(params: dict[str, str]) -> int | None:
    """The host port forwarded to the guest's port 22, if any."""
    forwarded = read_param(params)
    if forwarded is None:
        return None
    return next((f.host_port for f in forwarded.forwards if f.guest_port == SSH_PORT), None)


def describe_nic(mac: str, params: dict[str, str]) -> str:
    """MAC, and for the forwarded user NIC its forwards: '52:54:..(user, 127.0.0.1:2222->22)'."""
    forwarded = read_param(params)
    if forwarded is None or mac.lower() != forwarded.mac:
        return mac
    ports = ", ".join(f"{LISTEN}:{f.host_port}->{f.guest_port}" for f in forwarded.forwards)
    return f"{mac} (user, {ports})"


def ssh_command(params: dict[str, str], addresses: tuple[tuple[str, str], ...],
                user: str) -> list[str] | None:
    """ssh to the forwarded port on 127.0.0.1, else to the first address the guest told."""
    port = ssh_port(params)
    if port is not None:
        return ["ssh", "-p", str(port), f"{user}@{LISTEN}"]
    if addresses:
        return ["ssh", f"{user}@{addresses[0][1].split('/')[0]}"]
    return None
