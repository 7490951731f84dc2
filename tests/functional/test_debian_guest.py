"""A real Debian 12 cloud guest (tools/build-debian-guest.sh) through the driver, reached
over SSH on 127.0.0.1: cloud-init applied the seed's host name, key and password, grew
the root file system to the flavor's disk, the guest agent answers with the address,
the guest stops gracefully when asked, a soft and a hard reboot keep the seed,
destroy removes everything.

A boot costs minutes under TCG, so each guest boots once and both boot together
(the module fixture starts them), one each way the image boots: the ConfigDrive
guest through the contract with its own kernel (direct boot), the NoCloud guest
through `virt-driver boot --password-file` from the image alone (BIOS, GRUB on
the disk, no kernel params). Only the NoCloud guest reboots: soft (seen going
down and up), at once hard (its seed rebuilt), then SSH again.
"""

from __future__ import annotations

import logging
import os
import time

import libvirt
import pytest

from tests.support import debian
from tests.support.cli import run_cli
from tests.support.debian import CMDLINE, IMAGE, boot_params, free_port
from tests.support.guests import cli_config
from virt.domain import Disk, Domain
from virt.objects import NIC, Flavor, Instance, SeedConfig

PREFIX = "gu-deb-"
MACS = {"nocloud": "52:54:00:5e:ed:51", "configdrive": "52:54:00:5e:ed:52"}
LABELS = {"nocloud": "cidata", "configdrive": "config-2"}
PASSWORD = "correct horse battery"


class Guest(debian.Guest):
    def check_seed_applied(self, fmt: str) -> None:
        assert self.ssh("hostname").stdout.strip() == f"gu-seeded-{fmt}"
        assert self.ssh(f"readlink /dev/disk/by-label/{LABELS[fmt]}").stdout.strip() \
            == "../../vdb"


@pytest.fixture(scope="module")
def debian_guests(tmp_path_factory, libvirt_daemons):
    """Both guests, spawned together: {format: Guest}."""
    state = tmp_path_factory.mktemp("debian")
    driver, key = debian.debian_driver(
        state, libvirt_daemons, libvirt__shutdown_timeout=300,
        libvirt__shutdown_retry_interval=5, libvirt__wait_soft_reboot_seconds=300)
    with open(key + ".pub") as f:
        public = f.read()
    password_file, askpass = state / "password", state / "askpass"
    password_file.write_text(PASSWORD + "\n")
    askpass.write_text(f"#!/bin/sh\necho '{PASSWORD}'\n")
    askpass.chmod(0o700)
    guests = {fmt: Guest(driver, f"{PREFIX}{fmt}", key, free_port(), str(askpass))
              for fmt in MACS}

    nocloud = guests["nocloud"]
    code, out, err = run_cli(
        cli_config(driver), "boot", nocloud.name, "--image", IMAGE, "--memory", "1024",
        "--vcpus", "2", "--disk-gb", "4",
        "--nic", f"user,mac={MACS['nocloud']},forward={nocloud.port}:22",
        "--ssh-key", key + ".pub", "--hostname", "gu-seeded-nocloud",
        "--password-file", str(password_file))
    assert (code, err) == (0, ""), out
    configdrive = guests["configdrive"]
    driver.spawn(Instance(
        name=configdrive.name, image="debian12", nics=(NIC(mac=MACS["configdrive"]),),
        flavor=Flavor(memory_mb=1024, vcpus=2, root_gb=4),
        params=boot_params(configdrive.port, MACS["configdrive"]),
        seed=SeedConfig(format="configdrive", hostname="gu-seeded-configdrive",
                        ssh_keys=(public,))), IMAGE)
    yield guests
    for name in driver.list_instances():
        if name.startswith(PREFIX):
            driver.destroy(driver.get_instance(name))
    driver.close()


def _check_first_boot(guest: Guest, fmt: str) -> None:
    guest.wait_for_ssh()  # the key from the seed let us in
    guest.check_seed_applied(fmt)
    status = guest.ssh("cloud-init status --wait", timeout=300)
    assert "done" in status.stdout, status.stdout + status.stderr
    # The root partition and its file system grown from the 3 GiB image to the 4 GiB disk.
    grown = guest.ssh("findmnt -no SOURCE /; lsblk -bdno SIZE /dev/vda1; "
                      "df -B1 --output=size / | tail -1")
    assert grown.returncode == 0, grown.stderr
    source, partition, size = grown.stdout.split()
    assert source == "/dev/vda1" and int(partition) > 3.9 * 2**30
    assert int(size) > 3.5 * 2**30
    deadline = time.monotonic() + 120
    while not (reach := guest.driver.get_addresses(guest.instance)).agent_answers \
            and time.monotonic() < deadline:
        time.sleep(2)
    assert reach.agent_answers and reach.source == "agent"
    assert (MACS[fmt], "10.0.2.15/24") in reach.addresses


def _shutoff_reason(uri: str, name: str) -> int:
    conn = libvirt.open(uri)
    try:
        state, reason = conn.lookupByName(name).state()
    finally:
        conn.close()
    assert state == libvirt.VIR_DOMAIN_SHUTOFF
    return reason


def test_configdrive_guest_takes_its_seed_and_stops_gracefully(debian_guests):
    guest = debian_guests["configdrive"]
    driver, instance = guest.driver, guest.instance
    os_ = Domain.from_xml(guest_xml(driver, guest.name)).os  # booted with its own kernel
    assert os_.kernel is not None and CMDLINE in os_.cmdline
    _check_first_boot(guest, "configdrive")

    # The guest powers itself off (asked through the agent, else ACPI): not forced.
    driver.power_off(instance)
    assert _shutoff_reason(driver.conf.libvirt.connection_uri, guest.name) == \
        libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN
    directory = os.path.join(driver.conf.instances_path, instance.uuid)
    driver.destroy(instance)
    assert not os.path.exists(directory)
    assert guest.name not in driver.list_instances()


def test_nocloud_guest_boots_from_the_image_alone_and_keeps_its_seed_through_reboots(
        debian_guests, caplog):
    guest = debian_guests["nocloud"]
    driver, instance = guest.driver, guest.instance
    os_ = Domain.from_xml(guest_xml(driver, guest.name)).os
    assert (os_.kernel, os_.initrd, os_.cmdline, os_.boot_devices) == (None, None, None, ["hd"])
    _check_first_boot(guest, "nocloud")
    # The disk's own GRUB ran its menu entry (tools/build-debian-guest.sh's grub.cfg).
    assert "Booting `Debian GNU/Linux 12'" in driver.get_console_output(instance)
    login = guest.ssh_with_password("id -un")
    assert (login.returncode, login.stdout.strip()) == (0, "debian"), login.stderr

    with caplog.at_level(logging.WARNING, logger="backends.libvirt.driver"):
        driver.reboot(instance)  # soft: the guest goes down by itself and starts again
    assert "rebooting hard" not in caplog.text
    seeds = [d for d in Domain.from_xml(guest_xml(driver, guest.name)).devices_of(Disk)
             if (d.source or "").endswith("seed.iso")]
    assert len(seeds) == 1 and seeds[0].readonly

    driver.reboot(instance, hard=True)  # defined again from the metadata, seed rebuilt
    guest.wait_for_ssh()
    guest.check_seed_applied("nocloud")
    login = guest.ssh_with_password("id -un")
    assert (login.returncode, login.stdout.strip()) == (0, "debian"), login.stderr

    directory = os.path.join(driver.conf.instances_path, instance.uuid)
    driver.destroy(instance)
    assert not os.path.exists(directory)
    assert guest.name not in driver.list_instances()


def guest_xml(driver, name: str) -> str:
    conn = libvirt.open(driver.conf.libvirt.connection_uri)
    try:
        return conn.lookupByName(name).XMLDesc(0)
    finally:
        conn.close()
