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
    for program in HOST_PROGRAMS:
        value = resolved.get(program.param)
        if value != "" and value is not None:
            resolved[program.param] = _allowed_program(program, value, allowed[program.param])
    return resolved


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
