"""Volumes and NICs on the demo guest: hot attach it sees, detach it lets go of.

The waiting demo guest reports a disk added ("VIRT-DEMO disk=vdb bytes=N"),
writes its marker to it ("marker written to vdb") and reports one removed
("gone=vdb"), and NICs likewise ("mac=...", "gone=..."); a cold-attached
disk is in its boot report.
"""

from __future__ import annotations

import os
import subprocess

import libvirt
import pytest

from tests.support.guests import (
    DEMO_GUEST_DIR,
    console_lines,
    demo_conf,
    read_disk_marker,
    wait_for_console,
)
from virt.cli import main
from virt.errors import InvalidParameter, Timeout, UnsafeImage
from virt.objects import NIC, Flavor, Instance

FLAVOR = Flavor(memory_mb=128, vcpus=1, root_gb=1, name="liveops")
PREFIX = "lo-vol-"


@pytest.fixture
def driver(tmp_path, libvirt_daemons, demo_driver):
    return demo_driver(demo_conf(tmp_path / "state", libvirt_daemons), PREFIX, init_host=False)


def _guest(driver, demo_guest, suffix):
    instance = Instance(name=PREFIX + suffix, flavor=FLAVOR, image="demo",
                        nics=(NIC(mac="52:54:00:10:15:02"),),
                        params={"kernel_path": demo_guest.kernel,
                                "initrd_path": demo_guest.initrd,
                                "kernel_args": demo_guest.cmdline()})
    driver.spawn(instance, "demo")
    console = os.path.join(driver.conf.instances_path, instance.uuid, "console.log")
    wait_for_console(console, "ready")
    return instance, console


def _targets(driver, name, flags=0):
    conn = libvirt.open(driver.uri)
    try:
        xml = conn.lookupByName(name).XMLDesc(flags)
    finally:
        conn.close()
    return [part.split("'")[1] for part in xml.split("<target dev=")[1:]]


def test_hot_attach_is_seen_by_the_guest_and_detach_waits_for_it(driver, demo_guest, tmp_path):
    instance, console = _guest(driver, demo_guest, "hot")
    target = driver.attach_volume(instance, "demo")
    assert target == "vdb"
    wait_for_console(console, "marker written to vdb")
    assert f"disk=vdb bytes={16 << 20}" in console_lines(console)
    assert "vdb" in _targets(driver, instance.name)
    assert "vdb" in _targets(driver, instance.name, libvirt.VIR_DOMAIN_XML_INACTIVE)
    directory = os.path.join(driver.conf.instances_path, instance.uuid)
    volume, = (os.path.join(directory, n) for n in os.listdir(directory)
               if n.startswith("volume-"))
    copy = tmp_path / "volume.raw"  # qemu-img -U: the running guest holds the write lock
    subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", volume, str(copy)],
                   check=True)
    assert "boot=1 " in (read_disk_marker(copy) or "")  # the guest wrote it

    driver.detach_volume(instance, "vdb")
    wait_for_console(console, "gone=vdb")
    assert "vdb" not in _targets(driver, instance.name)
    assert "vdb" not in _targets(driver, instance.name, libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert not os.path.exists(volume)
    with pytest.raises(InvalidParameter, match="root disk"):
        driver.detach_volume(instance, "vda")


def test_a_paused_guest_cannot_release_a_disk_detach_says_so(driver, demo_guest):
    instance, _ = _guest(driver, demo_guest, "paused")
    driver.attach_volume(instance, "demo", device="vdc")
    driver.pause(instance)
    with pytest.raises(Timeout, match="did not release vdc within 2s"):
        driver.detach_volume(instance, "vdc", timeout=2)
    assert "vdc" in _targets(driver, instance.name, libvirt.VIR_DOMAIN_XML_INACTIVE)
    driver.unpause(instance)  # the guest now lets go of the pending detach
    driver.detach_volume(instance, "vdc")
    assert "vdc" not in _targets(driver, instance.name, libvirt.VIR_DOMAIN_XML_INACTIVE)


def test_a_file_is_inspected_and_a_cold_attach_is_in_the_boot_report(
        driver, demo_guest, tmp_path):
    instance, console = _guest(driver, demo_guest, "cold")
    driver.power_off(instance)
    bad = tmp_path / "bad.raw"
    bad.write_bytes(b"QFI\xfb" + bytes(4096))  # a qcow2 header declared raw
    with pytest.raises(UnsafeImage):
        driver.attach_volume(instance, str(bad), fmt="raw")
    data = tmp_path / "data.raw"
    with open(data, "wb") as f:
        f.truncate(8 << 20)
    assert driver.attach_volume(instance, str(data), fmt="raw") == "vdb"
    driver.power_on(instance)
    wait_for_console(console, "ready", count=2)
    assert f"disk=vdb bytes={8 << 20}" in console_lines(console)
    driver.attach_volume(instance, "demo", device="vdd")
    driver.reboot(instance, hard=True)  # defined again: the volumes stay, renamed in order
    lines = wait_for_console(console, "ready", count=3)
    third_boot = lines[len(lines) - lines[::-1].index("boot"):]
    assert [line for line in third_boot if line.startswith("disk=")] == [
        "disk=vda bytes=1073741824", f"disk=vdb bytes={8 << 20}", f"disk=vdc bytes={16 << 20}"]
    assert driver.attach_volume(instance, "demo") == "vdd"  # vdd is free again
    driver.detach_volume(instance, "vdc")
    wait_for_console(console, "gone=vdc")
    leftovers = [n for n in os.listdir(os.path.join(driver.conf.instances_path, instance.uuid))
                 if n.startswith(".vd-")]
    assert leftovers == []


def test_cli_attaches_and_detaches_a_volume_and_a_nic(driver, demo_guest, tmp_path, capsys):
    instance, console = _guest(driver, demo_guest, "cli")
    config = tmp_path / "cli.conf"
    config.write_text(f"[DEFAULT]\nvirt_type = qemu\nstate_path = {driver.conf.state_path}\n"
                      f"boot_file_dirs = {DEMO_GUEST_DIR}\n")
    cli = ["--config-file", str(config), "volume"]
    assert main([*cli, "attach", instance.name, "demo", "--device", "vdd"]) == 0
    assert f"attached demo to {instance.name} as vdd" in capsys.readouterr().out
    wait_for_console(console, "marker written to vdb")  # the guest names disks in order
    assert main([*cli, "detach", instance.name, "vdd"]) == 0
    assert f"detached vdd from {instance.name}" in capsys.readouterr().out
    wait_for_console(console, "gone=vdb")
    assert main([*cli, "detach", instance.name, "vda"]) == 1
    assert "root disk" in capsys.readouterr().err
    nic = ["--config-file", str(config), "nic"]
    assert main([*nic, "attach", instance.name, "user,mac=52:54:00:10:15:43"]) == 0
    wait_for_console(console, "mac=52:54:00:10:15:43")
    assert main([*nic, "detach", instance.name, "52:54:00:10:15:43"]) == 0
    assert "detached NIC 52:54:00:10:15:43" in capsys.readouterr().out
    wait_for_console(console, "gone=52:54:00:10:15:43")


def test_a_nic_hot_attached_is_seen_and_detach_waits_for_the_guest(driver, demo_guest):
    instance, console = _guest(driver, demo_guest, "nic")
    mac = "52:54:00:10:15:42"
    driver.attach_interface(instance, NIC(mac=mac))
    wait_for_console(console, f"mac={mac}")
    with pytest.raises(InvalidParameter, match="already"):
        driver.attach_interface(instance, NIC(mac=mac))
    driver.pause(instance)
    with pytest.raises(Timeout, match=f"did not release NIC {mac} within 2s"):
        driver.detach_interface(instance, mac, timeout=2)
    driver.unpause(instance)
    driver.detach_interface(instance, mac)
    wait_for_console(console, f"gone={mac}")
    assert driver.get_instance(instance.name).nics == (NIC(mac="52:54:00:10:15:02",
                                                           model="virtio"),)
