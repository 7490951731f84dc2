"""The xm/xl toolstack: which one, how to run it, and what its output means.

The command name (xl or xm), the runner and the sleep between retries are
injected, so tests feed recorded output or put a toolstack double on PATH.
`parse_list` and `parse_info` are pure functions of the text; both skip the
notices xm prints around its output (NOTICE_LINES).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from oslo_concurrency import processutils

from virt.errors import ToolstackError
from virt.objects import HostInfo, PowerState

LOG = logging.getLogger(__name__)

TOOLSTACKS = ("xl", "xm")
DOM0_NAME = "Domain-0"

Runner = Callable[[Sequence[str]], str]

# What xm itself prints besides a command's answer, line by line. From Xen 4.4
# on, the xm wrapper (tools/python/xen/xm/xm) prints the first line on every
# run and, on the first run after boot, the longer notice after it. They go
# to stderr, but a runner over ssh or a pty, or `2>&1`, interleaves them with
# the table. Only exact lines are skipped: a domain may be named "WARNING:".
NOTICE_LINES = frozenset({
    "WARNING: xend/xm is deprecated.",
    "xend is deprecated and scheduled for removal. Please migrate to another",
    "toolstack ASAP.",
    "See http://wiki.xen.org/wiki/Choice_of_Toolstacks for information on",
    "other alternatives, including xl which is designed to be a drop in",
    "replacement for xm (http://wiki.xen.org/wiki/XL).",
})
LIST_HEADING = ("Name", "ID", "Mem", "VCPUs", "State", "Time(s)")


def answer_lines(text: str) -> list[str]:
    """The non-blank lines of a toolstack's output, without xm's notices."""
    return [line for line in text.splitlines()
            if line.strip() and line.strip() not in NOTICE_LINES]


def run_command(argv: Sequence[str]) -> str:
    """Run argv; return stdout, or raise ToolstackError quoting stderr."""
    try:
        out, _err = processutils.execute(*argv)
    except processutils.ProcessExecutionError as exc:
        detail = " ".join(answer_lines(exc.stderr or exc.stdout or ""))
        raise ToolstackError(
            f"'{' '.join(argv)}' failed with exit code {exc.exit_code}: {detail}") from None
    except OSError as exc:
        raise ToolstackError(f"'{' '.join(argv)}' could not run: {exc.strerror}") from None
    return out


def xm_available(conf) -> str | None:
    """The toolstack binary on PATH (the configured one, or xl then xm), or None."""
    wanted = conf.xm.toolstack
    names = TOOLSTACKS if wanted == "auto" else (wanted,)
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def choose_toolstack(setting: str, runner: Runner = run_command) -> str:
    """xl or xm. 'auto': xl when `xl info` answers, else xm when it is installed."""
    if setting in TOOLSTACKS:
        return setting
    try:
        runner(["xl", "info"])
        return "xl"
    except ToolstackError as exc:
        if shutil.which("xm"):
            LOG.info("using xm: 'xl info' did not answer (%s)", exc)
            return "xm"
        LOG.info("using xl although 'xl info' failed and xm is not installed: %s", exc)
        return "xl"


# Position i of the state column is either '-' or this letter.
STATE_LETTERS = "rbpscd"
# When several flags are set, the most telling one wins.
_STATE_PRECEDENCE = (
    ("c", PowerState.CRASHED),
    ("d", PowerState.SHUTDOWN),
    ("s", PowerState.SHUTDOWN),
    ("p", PowerState.PAUSED),
    ("b", PowerState.BLOCKED),
    ("r", PowerState.RUNNING),
)


@dataclass(frozen=True)
class DomainRow:
    """One line of `list`: memory in MiB, cpu time in seconds."""

    name: str
    id: int
    memory_mb: int
    vcpus: int
    flags: str
    cpu_time: float

    @property
    def state(self) -> PowerState:
        return state_from_flags(self.flags)


def state_from_flags(flags: str) -> PowerState:
    """'r-----' -> RUNNING; no flag at all means runnable, i.e. RUNNING."""
    for letter, state in _STATE_PRECEDENCE:
        if letter in flags:
            return state
    return PowerState.RUNNING


def _valid_flags(flags: str) -> bool:
    return len(flags) == len(STATE_LETTERS) and all(
        c in ("-", letter) for c, letter in zip(flags, STATE_LETTERS, strict=True))


def parse_list(text: str, include_dom0: bool = False) -> list[DomainRow]:
    """Rows of `xm list` / `xl list` output, which must start with the heading."""
    lines = answer_lines(text)
    if not lines or tuple(lines[0].split()) != LIST_HEADING:
        first = lines[0] if lines else ""
        raise ToolstackError(f"cannot parse list output: it starts with {first!r}, not the "
                             f"heading '{' '.join(LIST_HEADING)}'")
    rows = []
    for line in lines[1:]:
        fields = line.split()
        if len(fields) != 6:
            raise ToolstackError(f"cannot parse list output line {line!r}: "
                                 "expected 6 columns (name, id, mem, vcpus, state, time)")
        name, dom_id, mem, vcpus, flags, cpu_time = fields
        try:
            row = DomainRow(name, _natural(dom_id), _natural(mem), _natural(vcpus), flags,
                            _seconds(cpu_time))
        except ValueError as exc:
            raise ToolstackError(f"cannot parse list output line {line!r}: {exc}") from None
        if not _valid_flags(flags):
            raise ToolstackError(f"cannot parse list output line {line!r}: state {flags!r} "
                                 f"is not six flags from {STATE_LETTERS!r}")
        if include_dom0 or name != DOM0_NAME:
            rows.append(row)
    return rows


def _natural(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"{text!r} is not a whole number")
    return int(text)


def _seconds(text: str) -> float:
    head, _, tail = text.partition(".")
    if not head or not (head + tail).isascii() or not (head + tail).isdigit():
        raise ValueError(f"{text!r} is not a time in seconds")
    return float(text)


_INFO_INT_KEYS = {
    "memory": "memory_total",
    "total_memory": "memory_total",
    "free_memory": "memory_free",
    "nr_cpus": "cpu_total",
    "nr_nodes": "cpu_nodes",
    "cores_per_socket": "cores_per_socket",
    "threads_per_core": "threads_per_core",
    "xen_major": "xen_major",
    "xen_minor": "xen_minor",
}
_INFO_REQUIRED = {"memory_total": "total_memory", "memory_free": "free_memory",
                  "cpu_total": "nr_cpus", "xen_major": "xen_major", "xen_minor": "xen_minor"}


def parse_info(text: str) -> dict[str, int | str]:
    """`key : value` lines of `info`, the ones HostInfo needs, typed."""
    facts: dict[str, int | str] = {}
    for line in answer_lines(text):
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key in _INFO_INT_KEYS:
            try:
                facts[_INFO_INT_KEYS[key]] = _natural(value)
            except ValueError:
                raise ToolstackError(f"cannot parse info output line {line!r}: "
                                     f"{key} must be a whole number") from None
        elif key in ("xen_extra", "machine"):
            facts[key] = value
    missing = [label for key, label in _INFO_REQUIRED.items() if key not in facts]
    if missing:
        raise ToolstackError(f"info output lacks {', '.join(missing)}")
    return facts


def xen_version(facts: dict[str, int | str]) -> int:
    """major*1_000_000 + minor*1_000 + micro; micro from xen_extra like '.1' or '.4-pre'."""
    extra = str(facts.get("xen_extra", ""))
    digits = ""
    if extra.startswith("."):
        for char in extra[1:]:
            if not char.isdigit():
                break
            digits += char
    micro = min(int(digits), 999) if digits else 0
    return (min(int(facts["xen_major"]), 999) * 1_000_000
            + min(int(facts["xen_minor"]), 999) * 1_000 + micro)


def host_info(facts: dict[str, int | str], dom0: DomainRow | None) -> HostInfo:
    """HostInfo from parsed `info` facts and Domain-0's `list` row."""
    cpu_total = int(facts["cpu_total"])
    per_socket = int(facts.get("cores_per_socket", 0)) * int(facts.get("threads_per_core", 0))
    return HostInfo(
        memory_total=int(facts["memory_total"]),
        memory_free=int(facts["memory_free"]),
        memory_dom0=dom0.memory_mb if dom0 else None,
        cpu_total=cpu_total,
        cpu_nodes=int(facts.get("cpu_nodes", 1)),
        cpu_sockets=max(cpu_total // per_socket, 1) if per_socket else 1,
        hypervisor_type="xen",
        hypervisor_version=xen_version(facts),
        arch=str(facts.get("machine", "x86_64")),
        backend="xm",
    )


class Toolstack:
    """The xl or xm command: read-only commands retried, the rest run once."""

    def __init__(self, command: str, runner: Runner = run_command, retries: int = 3,
                 retry_delay: float = 1.0, sleep: Callable[[float], None] = time.sleep):
        if command not in TOOLSTACKS:
            raise ToolstackError(f"toolstack {command!r}: use one of {', '.join(TOOLSTACKS)}")
        self.command = command
        self._runner = runner
        self._retries = max(retries, 1)
        self._retry_delay = retry_delay
        self._sleep = sleep

    def run(self, *args: str) -> str:
        return self._runner([self.command, *args])

    def run_retried(self, *args: str) -> str:
        """Read-only commands: a transient failure (xend busy) is retried, bounded."""
        for attempt in range(1, self._retries + 1):
            try:
                return self.run(*args)
            except ToolstackError as exc:
                if attempt == self._retries:
                    raise ToolstackError(
                        f"{exc} (gave up after {self._retries} attempts)") from None
                LOG.warning("%s %s failed (attempt %d of %d): %s", self.command,
                            " ".join(args), attempt, self._retries, exc)
                self._sleep(self._retry_delay)
        raise AssertionError("unreachable")

    def list_domains(self, include_dom0: bool = False) -> list[DomainRow]:
        return parse_list(self.run_retried("list"), include_dom0)

    def find(self, name: str) -> DomainRow | None:
        rows = self.list_domains(include_dom0=name == DOM0_NAME)
        return next((row for row in rows if row.name == name), None)

    def info(self) -> dict[str, int | str]:
        return parse_info(self.run_retried("info"))

    def host_info(self) -> HostInfo:
        return host_info(self.info(), self.find(DOM0_NAME))
