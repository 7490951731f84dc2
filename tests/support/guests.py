"""Helpers for tests that run real libvirtd + QEMU (TCG) guests: plain functions.

The fixtures that use them (`libvirt_daemons`, `libvirt_system`, `demo_guest`)
live in tests/conftest.py; a failure to get daemons or a guest fails the
test, never skips it: CI must notice a host that cannot run guests.
"""

from __future__ import annotations

import os
import queue
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest
from oslo_concurrency import processutils

from virt.conf import make_conf
from virt.imagestore import LocalImageStore

PROJECT_DIR = Path(__file__).resolve().parents[2]
START_DAEMONS = PROJECT_DIR / "tools" / "start-daemons.sh"
BUILD_DEMO_GUEST = PROJECT_DIR / "tools" / "build-demo-guest.sh"
DEMO_GUEST_DIR = PROJECT_DIR / "build" / "demo-guest"
SYSTEM_URI = "qemu:///system"

# generous: TCG on a busy two-core CI machine
BOOT_TIMEOUT = 120.0
BUSY_BOOT_TIMEOUT = 360.0  # for tests whose guests share the host with many others
SHUTOFF_TIMEOUT = 60.0

# the guest's /init writes one 512-byte marker block here on /dev/vda
MARKER_OFFSET = 1024 * 1024
MARKER_SIZE = 512
DEMO_ACTIONS = ("wait", "poweroff")


def run_tool(what: str, *argv: str) -> str:
    """Run one of our tools; turn a failure into a test failure with its output."""
    try:
        out, _err = processutils.execute(*argv)
        return out
    except processutils.ProcessExecutionError as exc:
        failure = (f"{what} failed (exit {exc.exit_code}): {' '.join(argv)}\n"
                   f"--- stdout ---\n{exc.stdout}\n--- stderr ---\n{exc.stderr}")
    pytest.fail(failure, pytrace=False)


_connections: dict[str, libvirt.virConnect] = {}


def live_connection(uri: str) -> libvirt.virConnect:
    conn = _connections.get(uri)
    if conn is not None:
        # isAlive() only notices a dead daemon once a call fails: make one
        try:
            conn.getVersion()
            return conn
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass  # the daemon that held it is gone
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        # an earlier test may have stopped libvirtd: start what is missing, once
        run_tool("starting libvirtd", str(START_DAEMONS))
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            pytest.fail(f"cannot connect to {uri} although start-daemons.sh succeeded: {exc}",
                        pytrace=False)
    _connections[uri] = conn
    return conn


def close_connections() -> None:
    """Close the shared connections (at the end of a session)."""
    for conn in _connections.values():
        try:
            conn.close()
        except libvirt.libvirtError:
            pass
    _connections.clear()


def restart_libvirtd(hard: bool = False) -> None:
    """Stop libvirtd (SIGTERM, or SIGKILL when hard) and start it again.

    Returns once qemu:///system answers again. Running guests survive; every
    connection opened before is dead afterwards and must be reopened.
    """
    flag = "--kill-libvirtd" if hard else "--restart-libvirtd"
    run_tool("restarting libvirtd", str(START_DAEMONS), flag)


@dataclass(frozen=True)
class DemoGuest:
    """The real test guest built by tools/build-demo-guest.sh.

    Boot it with direct kernel boot (kernel, initrd, cmdline()), <acpi/> in
    the features, its disk as virtio (a copy of `disk`: the original is shared)
    and the console on the first serial port. See tools/demo-guest/init for
    the "VIRT-DEMO ..." lines it prints.
    """

    kernel: str
    initrd: str
    disk: str
    marker_offset: int = MARKER_OFFSET

    def cmdline(self, action: str = "wait") -> str:
        """Kernel command line: console on ttyS0, what to do once booted.

        panic=-1 makes a crashed guest reboot at once rather than spin in
        the panic loop; a boot loop then shows as repeated "VIRT-DEMO boot".
        """
        if action not in DEMO_ACTIONS:
            raise ValueError(f"demo guest action {action!r}: use one of {', '.join(DEMO_ACTIONS)}")
        return f"console=ttyS0 panic=-1 demo.action={action}"


def console_lines(path: str | os.PathLike[str]) -> list[str]:
    """The "VIRT-DEMO ..." lines of a serial console log, without the prefix."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [m.group(1) for m in re.finditer(r"^VIRT-DEMO (.*?)\r?$", text, re.MULTILINE)]


def wait_for_console(path: str | os.PathLike[str], line: str, count: int = 1,
                     timeout: float = BOOT_TIMEOUT) -> list[str]:
    """Wait until `line` ("ready", "boot", ...) appeared `count` times; all lines.

    Fails the test on timeout with what the console said so far.
    """
    deadline = time.monotonic() + timeout
    while True:
        lines = console_lines(path)
        if lines.count(line) >= count:
            return lines
        if time.monotonic() > deadline:
            pytest.fail(f"guest console {path} did not show 'VIRT-DEMO {line}' {count} time(s) "
                        f"within {timeout:.0f}s; it showed: {lines}", pytrace=False)
        time.sleep(0.1)


def wait_for_shutoff(dom: libvirt.virDomain, timeout: float = SHUTOFF_TIMEOUT) -> None:
    """Wait until the domain is no longer active; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while dom.isActive():
        if time.monotonic() > deadline:
            pytest.fail(f"domain {dom.name()} still running after {timeout:.0f}s",
                        pytrace=False)
        time.sleep(0.1)


def read_disk_marker(path: str | os.PathLike[str], fmt: str = "raw") -> str | None:
    """The marker line the guest wrote to its disk, or None if there is none.

    Reads through qemu-img so that qcow2 overlays work as well as raw copies.
    """
    out_path = f"{path}.marker"
    skip = MARKER_OFFSET // MARKER_SIZE
    try:
        # qemu-img 7.2 counts `count` from the start of the input, not from
        # `skip`: ask for skip + 1 blocks and use the first one written.
        processutils.execute("qemu-img", "dd", "-f", fmt, "-O", "raw",
                             f"bs={MARKER_SIZE}", f"skip={skip}", f"count={skip + 1}",
                             f"if={path}", f"of={out_path}")
        with open(out_path, "rb") as f:
            block = f.read(MARKER_SIZE)
    finally:
        try:
            os.unlink(out_path)
        except FileNotFoundError:
            pass
    text = block.rstrip(b"\0").decode("ascii", errors="replace").strip()
    return text if text.startswith("VIRT-DEMO-MARKER ") else None


def open_when_up(uri: str = SYSTEM_URI, timeout: float = 30.0) -> libvirt.virConnect:
    """A new connection, retried while libvirtd is (re)starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return libvirt.open(uri)
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def remove_domain(conn: libvirt.virConnect, name: str) -> None:
    """Destroy and undefine a domain if it exists: cleanup that never raises."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    try:
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError:
        pass
    try:
        dom.undefine()
    except libvirt.libvirtError:
        pass


def wait_for_event(got, expected, timeout=60.0):
    """Events up to and including `expected` (a (name, state) pair)."""
    seen = []
    while expected not in seen:
        try:
            seen.append(got.get(timeout=timeout))
        except queue.Empty:
            pytest.fail(f"no {expected} event within {timeout:.0f}s; saw {seen}")
    return seen


def demo_conf(state_dir: str | os.PathLike[str], uri: str = SYSTEM_URI, **overrides: Any):
    """A configuration for driving the demo guest on `uri`, state under state_dir.

    Defaults: TCG, the demo guest's boot files allowed, destroy without waiting
    for ACPI (shutdown_timeout 0); any option can be overridden.
    """
    options = {"virt_type": "qemu", "state_path": str(state_dir),
               "boot_file_dirs": [str(DEMO_GUEST_DIR)], "libvirt__connection_uri": uri,
               "libvirt__shutdown_timeout": 0, **overrides}
    return make_conf(**options)


def demo_store(conf, guest: DemoGuest) -> LocalImageStore:
    """The store of `conf`, with the demo guest's disk imported as "demo" (once)."""
    store = LocalImageStore.from_conf(conf)
    if "demo" not in [image.name for image in store.list()]:
        store.import_image("demo", guest.disk, "raw", {"arch": "x86_64"})
    return store


def cli_config(driver) -> str:
    """A config file for the CLI that names what the driver's conf names."""
    path = os.path.join(driver.conf.state_path, "cli.conf")
    with open(path, "w") as f:
        f.write(f"[DEFAULT]\nstate_path = {driver.conf.state_path}\nvirt_type = qemu\n"
                f"boot_file_dirs = {','.join(driver.conf.boot_file_dirs)}\n"
                f"[libvirt]\nconnection_uri = {driver.conf.libvirt.connection_uri}\n")
    return path


def spawn_demo_guest(driver, demo_guest: DemoGuest, name: str, flavor, **params):
    """(instance, console log path) of a demo guest spawned and waiting ("ready"); a boot
    may take BUSY_BOOT_TIMEOUT when other guests share the host."""
    from virt.objects import Instance
    instance = Instance(name=name, flavor=flavor, image="demo",
                        params={"kernel_path": demo_guest.kernel,
                                "initrd_path": demo_guest.initrd,
                                "kernel_args": demo_guest.cmdline(), **params})
    driver.spawn(instance, "demo")
    console = driver.instance_files(instance).console_log
    wait_for_console(console, "ready", timeout=BUSY_BOOT_TIMEOUT)
    return instance, console
