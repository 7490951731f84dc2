"""Fixtures and helpers for tests that run real libvirtd + QEMU (TCG) guests.

- `libvirt_daemons` (session): runs tools/start-daemons.sh once, gives the URI.
- `libvirt_system`: a live connection to qemu:///system. Function-scoped over
  a session cache: after `restart_libvirtd()` the old connection is dead, and
  the next test gets a fresh one instead of inheriting a corpse.
- `demo_guest` (session): runs tools/build-demo-guest.sh once, gives a
  `DemoGuest` (kernel, initrd, blank raw disk, kernel command line).
- `restart_libvirtd()`, `open_when_up()`, `wait_for_console()`,
  `console_lines()`, `wait_for_shutoff()`, `read_disk_marker()`,
  `remove_domain()`: plain functions, import them from
  tests.functional.conftest.

When the daemons or the guest cannot be had, the fixtures fail the test
(never skip it): CI must notice a host that cannot run guests.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
from oslo_concurrency import processutils

PROJECT_DIR = Path(__file__).resolve().parents[2]
START_DAEMONS = PROJECT_DIR / "tools" / "start-daemons.sh"
BUILD_DEMO_GUEST = PROJECT_DIR / "tools" / "build-demo-guest.sh"
DEMO_GUEST_DIR = PROJECT_DIR / "build" / "demo-guest"
SYSTEM_URI = "qemu:///system"

# generous: TCG on a busy two-core CI machine
BOOT_TIMEOUT = 120.0
BUSY_BOOT_TIMEOUT = 360.0  # several helpers' guests and test runs on two cores
SHUTOFF_TIMEOUT = 60.0

# the guest's /init writes one 512-byte marker block here on /dev/vda
MARKER_OFFSET = 1024 * 1024
MARKER_SIZE = 512
DEMO_ACTIONS = ("wait", "poweroff")


def _run_tool(what: str, *argv: str) -> str:
    """Run one of our tools; turn a failure into a test failure with its output."""
    try:
        out, _err = processutils.execute(*argv)
        return out
    except processutils.ProcessExecutionError as exc:
        failure = (f"{what} failed (exit {exc.exit_code}): {' '.join(argv)}\n"
                   f"--- stdout ---\n{exc.stdout}\n--- stderr ---\n{exc.stderr}")
    pytest.fail(failure, pytrace=False)


# -- libvirtd -----------------------------------------------------------------

@pytest.fixture(scope="session")
def libvirt_daemons() -> str:
    """Make sure virtlogd and libvirtd run (once per session); the URI to use."""
    if os.geteuid() != 0:
        pytest.fail("functional tests need root: libvirtd and QEMU guests run as root",
                    pytrace=False)
    _run_tool("starting libvirtd", str(START_DAEMONS))
    return SYSTEM_URI


_connections: dict[str, libvirt.virConnect] = {}


def _live_connection(uri: str) -> libvirt.virConnect:
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
        _run_tool("starting libvirtd", str(START_DAEMONS))
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            pytest.fail(f"cannot connect to {uri} although start-daemons.sh succeeded: {exc}",
                        pytrace=False)
    _connections[uri] = conn
    return conn


@pytest.fixture
def libvirt_system(libvirt_daemons: str) -> libvirt.virConnect:
    """An open, live connection to qemu:///system (shared while it stays alive)."""
    return _live_connection(libvirt_daemons)


@pytest.fixture(scope="session", autouse=True)
def _close_connections() -> Iterator[None]:
    yield
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
    _run_tool("restarting libvirtd", str(START_DAEMONS), flag)


# -- the demo guest -----------------------------------------------------------

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


@pytest.fixture(scope="session")
def demo_guest() -> DemoGuest:
    """Build (or reuse) the demo guest under build/demo-guest, once per session."""
    _run_tool("building the demo guest", str(BUILD_DEMO_GUEST), str(DEMO_GUEST_DIR))
    guest = DemoGuest(kernel=str(DEMO_GUEST_DIR / "vmlinuz"),
                      initrd=str(DEMO_GUEST_DIR / "initrd.img"),
                      disk=str(DEMO_GUEST_DIR / "disk.raw"))
    for path in (guest.kernel, guest.initrd, guest.disk):
        if not os.path.isfile(path):
            pytest.fail(f"build-demo-guest.sh succeeded but {path} is missing", pytrace=False)
    return guest


# -- watching a guest ---------------------------------------------------------

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


# -- a driver whose guests are demo guests -------------------------------------

def demo_driver(state_path: str, uri: str, demo_guest: DemoGuest, prefix: str,
                **options) -> Iterator:
    """For a fixture to `yield from`: a LibvirtDriver with the demo disk as image "demo";
    afterwards the guests named `prefix`... are destroyed (other tests' guests share
    libvirtd). `options` are more make_conf overrides."""
    from backends.libvirt.driver import LibvirtDriver
    from virt.conf import make_conf
    from virt.imagestore import LocalImageStore
    conf = make_conf(virt_type="qemu", state_path=state_path,
                     boot_file_dirs=[str(DEMO_GUEST_DIR)], libvirt__connection_uri=uri,
                     libvirt__shutdown_timeout=0, **options)
    LocalImageStore.from_conf(conf).import_image("demo", demo_guest.disk, "raw",
                                                 {"arch": "x86_64"})
    driver = LibvirtDriver(conf)
    yield driver
    for name in driver.list_instances():
        if name.startswith(prefix):
            driver.destroy(driver.get_instance(name))
    driver.close()


def spawn_demo_guest(driver, demo_guest: DemoGuest, name: str, flavor, **params):
    """(instance, console log path) of a demo guest spawned and waiting ("ready"); a boot
    may take BUSY_BOOT_TIMEOUT when other guests share the host."""
    from virt.objects import Instance
    instance = Instance(name=name, flavor=flavor, image="demo",
                        params={"kernel_path": demo_guest.kernel,
                                "initrd_path": demo_guest.initrd,
                                "kernel_args": demo_guest.cmdline(), **params})
    driver.spawn(instance, "demo")
    console = os.path.join(driver.conf.instances_path, instance.uuid, "console.log")
    wait_for_console(console, "ready", timeout=BUSY_BOOT_TIMEOUT)
    return instance, console
