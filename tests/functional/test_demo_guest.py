"""The demo guest under real libvirtd + QEMU (TCG), driven by plain libvirt-python.

These tests pin down what the backend's functional tests and `make demo`
rely on: the guest reports its vCPUs, memory, NIC MACs and command line,
marks its disk, powers off on its own or on an ACPI power button press,
boots again on reboot, and keeps running across a libvirtd restart. The
domain XML is a literal built here, independent of virt/domain.py.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt
import pytest
from lxml import etree
from lxml.builder import E
from oslo_concurrency import processutils

from tests.support.guests import (
    BUILD_DEMO_GUEST,
    DEMO_GUEST_DIR,
    START_DAEMONS,
    DemoGuest,
    console_lines,
    open_when_up,
    read_disk_marker,
    remove_domain,
    restart_libvirtd,
    wait_for_console,
    wait_for_shutoff,
)

MAC = "52:54:00:4d:0e:01"
MEMORY_MIB = 256


def domain_xml(name: str, guest: DemoGuest, cmdline: str, console: Path,
               disk: Path | None, disk_format: str = "raw") -> str:
    devices = E.devices()
    if disk is not None:
        devices.append(E.disk(E.driver(name="qemu", type=disk_format),
                              E.source(file=str(disk)),
                              E.target(dev="vda", bus="virtio"),
                              type="file", device="disk"))
    devices.append(E.interface(E.mac(address=MAC), E.model(type="virtio"), type="user"))
    devices.append(E.serial(E.source(path=str(console)), E.target(port="0"), type="file"))
    root = E.domain(
        E.name(name),
        E.memory(str(MEMORY_MIB), unit="MiB"),
        E.vcpu("2"),
        E.os(E.type("hvm", arch="x86_64", machine="pc"),
             E.kernel(guest.kernel), E.initrd(guest.initrd), E.cmdline(cmdline)),
        E.features(E.acpi()),
        devices,
        type="qemu")
    return etree.tostring(root, encoding="unicode")


@contextmanager
def running_guest(conn: libvirt.virConnect, guest: DemoGuest, tmp_path: Path, cmdline: str,
                  disk: Path | None, disk_format: str = "raw") -> Iterator[libvirt.virDomain]:
    """Define and start a demo domain; undefine it whatever happens."""
    name = f"vdtest-demo-{uuid.uuid4().hex[:8]}"
    xml = domain_xml(name, guest, cmdline, tmp_path / "console.log", disk, disk_format)
    try:
        dom = conn.defineXML(xml)
        dom.create()
        yield dom
    finally:
        # the connection may have died with a restarted libvirtd: use a new one
        cleanup = open_when_up()
        try:
            remove_domain(cleanup, name)
        finally:
            cleanup.close()


def fresh_disk(guest: DemoGuest, tmp_path: Path) -> Path:
    disk = tmp_path / "disk.raw"
    shutil.copyfile(guest.disk, disk)
    return disk


def value(lines: list[str], key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in lines if line.startswith(key + "=")]


def test_cmdline_names_the_action(demo_guest):
    assert "demo.action=poweroff" in demo_guest.cmdline("poweroff").split()
    assert demo_guest.cmdline().split()[0] == "console=ttyS0"
    with pytest.raises(ValueError, match="use one of wait, poweroff"):
        demo_guest.cmdline("reboot")


def test_poweroff_guest_reports_what_it_sees(libvirt_system, demo_guest, tmp_path):
    disk = fresh_disk(demo_guest, tmp_path)
    cmdline = demo_guest.cmdline("poweroff")
    with running_guest(libvirt_system, demo_guest, tmp_path, cmdline, disk) as dom:
        wait_for_shutoff(dom, timeout=120)
    lines = console_lines(tmp_path / "console.log")
    assert lines.count("boot") == 1
    assert value(lines, "cpus") == ["2"]
    mem_kb = int(value(lines, "mem_kb")[0])
    assert 150 * 1024 < mem_kb <= MEMORY_MIB * 1024
    assert value(lines, "mac") == [MAC]
    assert value(lines, "cmdline") == [cmdline]
    assert "disk=vda bytes=16777216" in lines
    assert lines[-2:] == ["marker written", "poweroff"]
    assert not [line for line in lines if line.startswith("error")]
    marker = read_disk_marker(disk)
    assert marker is not None and marker.startswith("VIRT-DEMO-MARKER boot=1 ")
    assert read_disk_marker(demo_guest.disk) is None, "the shared blank disk was written"


def test_acpi_shutdown_ends_waiting_guest(libvirt_system, demo_guest, tmp_path):
    disk = fresh_disk(demo_guest, tmp_path)
    console = tmp_path / "console.log"
    with running_guest(libvirt_system, demo_guest, tmp_path, demo_guest.cmdline("wait"),
                       disk) as dom:
        wait_for_console(console, "ready")
        assert dom.isActive()
        dom.shutdown()
        wait_for_shutoff(dom)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    lines = console_lines(console)
    assert lines[-3:] == ["ready", "power button", "poweroff"]
    assert read_disk_marker(disk).startswith("VIRT-DEMO-MARKER boot=1 ")


def test_reboot_boots_again_and_marks_the_overlay(libvirt_system, demo_guest, tmp_path):
    base = fresh_disk(demo_guest, tmp_path)
    overlay = tmp_path / "disk.qcow2"
    processutils.execute("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base),
                         "-F", "raw", str(overlay))
    console = tmp_path / "console.log"
    with running_guest(libvirt_system, demo_guest, tmp_path, demo_guest.cmdline("wait"),
                       overlay, disk_format="qcow2") as dom:
        wait_for_console(console, "ready")
        dom.reboot()
        lines = wait_for_console(console, "ready", count=2)
        assert dom.isActive()
        assert lines.count("boot") == 2
        assert "power button" in lines
        dom.destroy()
    assert read_disk_marker(overlay, "qcow2").startswith("VIRT-DEMO-MARKER boot=2 ")
    assert read_disk_marker(base) is None, "the guest wrote through the overlay into its base"


def test_guest_powers_off_when_init_fails(libvirt_system, demo_guest, tmp_path):
    # no disk to mark and an action it does not know: it must still end itself
    cmdline = "console=ttyS0 panic=-1 demo.action=dance"
    with running_guest(libvirt_system, demo_guest, tmp_path, cmdline, disk=None) as dom:
        wait_for_shutoff(dom, timeout=120)
    lines = console_lines(tmp_path / "console.log")
    assert lines.count("boot") == 1
    assert "error: no /dev/vda, marker not written" in lines
    assert "error: unknown demo.action 'dance': use poweroff or wait" in lines
    assert "marker written" not in lines
    assert lines[-1] == "poweroff"


def libvirtd_pid() -> int:
    with open("/var/run/libvirtd.pid") as f:
        return int(f.read().strip())


def test_guest_survives_libvirtd_restart(libvirt_system, demo_guest, tmp_path):
    disk = fresh_disk(demo_guest, tmp_path)
    console = tmp_path / "console.log"
    with running_guest(libvirt_system, demo_guest, tmp_path, demo_guest.cmdline("wait"),
                       disk) as dom:
        name = dom.name()
        wait_for_console(console, "ready")
        before = libvirtd_pid()
        restart_libvirtd(hard=True)
        assert libvirtd_pid() != before
        with pytest.raises(libvirt.libvirtError):
            libvirt_system.getVersion()
        conn = open_when_up()
        try:
            again = conn.lookupByName(name)
            assert again.isActive()
            again.shutdown()
            wait_for_shutoff(again)
        finally:
            conn.close()
    assert console_lines(console)[-1] == "poweroff"


def test_libvirt_system_reconnects_after_restart(libvirt_system):
    # runs after the restart above in file order; stands alone as well
    assert libvirt_system.isAlive()
    assert libvirt_system.getType() == "QEMU"


def test_start_daemons_is_idempotent(libvirt_daemons):
    before = libvirtd_pid()
    out, _ = processutils.execute(str(START_DAEMONS))
    assert "libvirtd already running" in out
    assert libvirtd_pid() == before


def test_start_daemons_rejects_unknown_arguments(libvirt_daemons):
    with pytest.raises(processutils.ProcessExecutionError) as exc:
        processutils.execute(str(START_DAEMONS), "--bogus")
    assert "unknown argument '--bogus'" in exc.value.stderr


def test_build_is_idempotent(demo_guest):
    files = [demo_guest.kernel, demo_guest.initrd, demo_guest.disk,
             str(DEMO_GUEST_DIR / "stamp")]
    mtimes = [os.stat(f).st_mtime_ns for f in files]
    out, _ = processutils.execute(str(BUILD_DEMO_GUEST), str(DEMO_GUEST_DIR))
    assert "up to date" in out
    assert [os.stat(f).st_mtime_ns for f in files] == mtimes


def test_build_rebuilds_what_is_missing(demo_guest, tmp_path):
    # a fresh OUTDIR sharing the kernel cache: built from the cached .deb
    out_dir = tmp_path / "guest"
    out, _ = processutils.execute(str(BUILD_DEMO_GUEST), str(out_dir))
    assert "using cached" in out
    assert (out_dir / "initrd.img").read_bytes() == Path(demo_guest.initrd).read_bytes()
    os.unlink(out_dir / "initrd.img")
    out, _ = processutils.execute(str(BUILD_DEMO_GUEST), str(out_dir))
    assert "up to date" not in out
    assert (out_dir / "initrd.img").stat().st_size > 0
