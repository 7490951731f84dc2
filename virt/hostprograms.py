"""Host programs and firmware an instance's params may name: only those the operator lists.

A Xen PV bootloader runs in dom0 as root, the xm device model is the qemu
process serving the guest, hvmloader is the firmware it boots: a tenant who
names any host file there chooses what the host runs or loads. So each such
param is one row below, tied to the option listing what this host allows;
a value is accepted only when, links resolved, it is one of those files.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from virt.errors import InvalidParameter
from virt.validation import check_absolute_path


@dataclass(frozen=True)
class HostProgram:
    """One param naming a host file, and the option that lists the allowed ones."""

    param: str
    what: str
    group: str | None
    option: str
    executable: bool


# pygrub's options that only choose what to boot from the guest's own disk;
# others (--output, --output-directory, --isconfig, a disk path) name host files.
BOOTLOADER_FLAGS = frozenset({"-q", "--quiet", "-n", "--not-really"})
BOOTLOADER_OPTIONS = frozenset({"--entry", "--kernel", "--ramdisk", "--args"})

HOST_PROGRAMS = (
    HostProgram("bootloader", "bootloader", None, "bootloaders", executable=True),
    HostProgram("device_model", "device model", "xm", "device_models", executable=True),
    HostProgram("hvmloader_path", "HVM firmware", "xm", "hvmloaders", executable=False),
)


def allowed_programs(conf) -> dict[str, Sequence[str]]:
    """param -> the files the configuration allows for it."""
    return {program.param: (conf[program.group] if program.group else conf)[program.option]
            for program in HOST_PROGRAMS}


def resolve_host_programs(params: Mapping[str, str],
                          allowed: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """params with every host program as the canonical path of an allowed file.

    An empty value is left alone: the backend reads it as "not set".
    """
    resolved = dict(params)
    if resolved.get("bootloader_args"):
        check_bootloader_args(resolved["bootloader_args"])
    for program in HOST_PROGRAMS:
        value = resolved.get(program.param)
        if value != "" and value is not None:
            resolved[program.param] = _allowed_program(program, value, allowed[program.param])
    return resolved


def check_bootloader_args(value: str, field: str = "params['bootloader_args']") -> str:
    """Bootloader arguments that choose from the guest's disk and never name a host file.

    The bootloader runs as root in dom0 and the toolstack appends these to its
    own command line, so any other option could point it at host paths.
    """
    for word in value.split():
        option, has_value, _ = word.partition("=")
        if not (word in BOOTLOADER_FLAGS or (has_value and option in BOOTLOADER_OPTIONS)):
            raise InvalidParameter(
                f"{field} {value!r}: {word!r} is not allowed; use only "
                f"{', '.join(sorted(BOOTLOADER_FLAGS))} or "
                f"{', '.join(o + '=VALUE' for o in sorted(BOOTLOADER_OPTIONS))}")
    return value


def _allowed_program(program: HostProgram, value: str, allowed: Sequence[str]) -> str:
    field = f"params[{program.param!r}]"
    check_absolute_path(value, field)
    real = os.path.realpath(value)
    if real not in {os.path.realpath(path) for path in allowed}:
        option = f"[{program.group or 'DEFAULT'}] {program.option}"
        raise InvalidParameter(
            f"{field} {value!r}: not a {program.what} this host allows "
            f"({', '.join(allowed) or 'none configured'}); name one of those, or have the "
            f"operator add it to {option}")
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        raise InvalidParameter(f"{field} {value!r}: cannot use it ({exc.strerror}); "
                               f"install the {program.what} or fix {program.option}") from None
    if not stat.S_ISREG(mode) or (program.executable and not os.access(real, os.X_OK)):
        kind = "an executable regular file" if program.executable else "a regular file"
        raise InvalidParameter(f"{field} {value!r}: not {kind}; fix the file or "
                               f"{program.option}")
    return real
