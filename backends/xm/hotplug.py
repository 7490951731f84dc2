"""Volumes and NICs of xm/xl guests: the running domain and its config file.

A running guest gets the device through the toolstack (`block-attach`,
`network-attach`, and their detach), and the config file says it too, so
the next `create` has it. The disk spec is the config file's own
(`prefix:path,vdev,mode`): xl reads that legacy form as well, xm takes it
as three arguments. These are pure functions of the config text; the
driver runs the commands and writes the file.
"""

from __future__ import annotations

import re

from backends.xm import config as xmconfig
from virt.errors import InvalidParameter
from virt.instancefiles import InstanceFiles

MAX_DISKS = 26
_VDEV = re.compile(r"(xvd|hd|sd)([a-z])")


def _specs(text: str, key: str) -> list[str]:
    """The list `key` of a config file this backend wrote (a list of strings there)."""
    value = xmconfig.parse(text).get(key, [])
    return [str(spec) for spec in value] if isinstance(value, list) else []


def disks(text: str) -> list[str]:
    return _specs(text, "disk")


def vifs(text: str) -> list[str]:
    return _specs(text, "vif")


def vdev_of(spec: str) -> str:
    """The guest device name of a disk spec (without ':cdrom')."""
    return spec.split(",")[1].split(":")[0]


def free_vdev(specs: list[str], wanted: str | None) -> str:
    """`wanted` if free, else the next free name on the root disk's bus (xvdX, hdX, sdX)."""
    used = {vdev_of(spec) for spec in specs}
    root = _VDEV.fullmatch(vdev_of(specs[0])) if specs else None
    bus = root.group(1) if root else "xvd"
    if wanted is not None:
        if not _VDEV.fullmatch(wanted) or not wanted.startswith(bus):
            raise InvalidParameter(f"device {wanted!r}: use {bus}b to {bus}z, the root disk's "
                                   "bus")
        if wanted in used:
            raise InvalidParameter(f"device {wanted!r} is in use by the guest: choose another "
                                   f"or leave it out to get the next free {bus}* name")
        return wanted
    for letter in "abcdefghijklmnopqrstuvwxyz"[:MAX_DISKS]:
        if bus + letter not in used:
            return bus + letter
    raise InvalidParameter(f"the guest has {MAX_DISKS} disks on {bus}: detach one first")


def attached_volume(specs: list[str], files: InstanceFiles, vdev: str) -> str:
    """The spec of the volume at `vdev`; refuses the root disk and disks from spawn."""
    spec = next((s for s in specs if vdev_of(s) == vdev), None)
    if spec is None:
        raise InvalidParameter(f"device {vdev!r}: the guest has no such disk; see its config "
                               "for attached volumes")
    path = volume_path(spec)
    if not files.is_volume(path):
        raise InvalidParameter(f"device {vdev!r} is not a volume attached by attach_volume "
                               "(the root disk or a disk from boot): it cannot be detached")
    return spec


def volume_path(spec: str) -> str:
    target = spec.split(",")[0]
    return target[target.index("/"):] if "/" in target else target


def with_list(text: str, key: str, items: list[str]) -> str:
    """The config text with `key = [...]` holding `items` (added at the end if absent)."""
    line = f"{key} = {xmconfig._list(key, items)}"
    pattern = re.compile(rf"^{key} = \[.*\]$", re.M)
    if pattern.search(text):
        return pattern.sub(lambda _match: line, text, count=1)
    return text.rstrip("\n") + "\n" + line + "\n"


def block_attach_args(toolstack: str, name: str, spec: str) -> list[str]:
    """xl takes the spec whole; xm takes back end, front end and mode apart."""
    if toolstack == "xl":
        return ["block-attach", name, spec]
    return ["block-attach", name, *spec.split(",")]


def network_attach_args(name: str, spec: str) -> list[str]:
    """Both toolstacks take the vif spec's key=value pairs as separate arguments."""
    return ["network-attach", name, *spec.split(",")]
