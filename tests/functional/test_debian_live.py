"""Live operations on the real Debian 12 guest, booted once (about a minute or more
under TCG): a live resize it sees over SSH (lsblk, nproc, MemTotal), and a live
snapshot that its guest agent froze and thawed (the image recorded as consistent,
the file systems writable right after).
"""

from __future__ import annotations

import json
import time

import libvirt_qemu
import pytest

from tests.support.debian import IMAGE, Guest, boot_params, debian_driver, free_port
from virt.imagestore import LocalImageStore
from virt.objects import NIC, Flavor, Instance, SeedConfig

GIB = 1 << 30
MAC = "52:54:00:5e:ed:72"


def _ssh_int(guest: Guest, command: str) -> int:
    result = guest.ssh(command)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[0])


@pytest.fixture(scope="module")
def debian(tmp_path_factory, libvirt_daemons):
    driver, key = debian_driver(tmp_path_factory.mktemp("debian-live"), libvirt_daemons,
                                libvirt__shutdown_timeout=60, libvirt__shutdown_retry_interval=5)
    yield driver, key
    driver.close()


def _until(read, wanted, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while (value := read()) != wanted:
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: {value!r}, not {wanted!r} after {timeout:.0f}s",
                        pytrace=False)
        time.sleep(2)
    return value


def test_the_debian_guest_sees_a_live_resize_and_is_thawed_after_a_live_snapshot(
        debian):
    driver, key = debian
    port = free_port()
    with open(key + ".pub") as f:
        public = f.read()
    instance = Instance(
        name="rz-deb-live", image="debian12", nics=(NIC(mac=MAC),),
        flavor=Flavor(memory_mb=1024, vcpus=1, root_gb=4),
        params=boot_params(port, MAC, max_vcpus="2", max_memory_mb="1536"),
        seed=SeedConfig(hostname="rz-deb", ssh_keys=(public,)))
    guest = Guest(driver, instance.name, key, port)
    try:
        driver.spawn(instance, IMAGE)
        guest.wait_for_ssh()
        assert _ssh_int(guest, "nproc") == 1
        assert _ssh_int(guest, "lsblk -bndo SIZE /dev/vda") == 4 * GIB
        mem_before = _ssh_int(guest, "awk '/^MemTotal/ {print $2}' /proc/meminfo")
        deadline = time.monotonic() + 600
        while not driver.get_addresses(instance).agent_answers:
            assert time.monotonic() < deadline, "qemu-guest-agent did not answer"
            time.sleep(2)

        driver.resize(instance, root_gb=5, vcpus=2, memory_mb=1536)
        _until(lambda: _ssh_int(guest, "lsblk -bndo SIZE /dev/vda"), 5 * GIB, "disk size")
        # Debian has no udev rule that onlines a hot-added CPU: the agent did
        _until(lambda: _ssh_int(guest, "nproc"), 2, "online CPUs")
        deadline = time.monotonic() + 120
        while _ssh_int(guest, "awk '/^MemTotal/ {print $2}' /proc/meminfo") \
                < mem_before + 400 * 1024:
            assert time.monotonic() < deadline, "the balloon did not give the 512 MiB back"
            time.sleep(2)

        driver.snapshot(instance, "rz-deb-snap")
        image = LocalImageStore.from_conf(driver.conf).get("rz-deb-snap")
        assert image.properties["consistency"] == "filesystem"  # the agent froze it
        # thawed: the agent says so, and a write to the root file system returns at once
        status = driver._with_domain(instance.name, "ask the agent of", lambda dom: json.loads(
            libvirt_qemu.qemuAgentCommand(dom, '{"execute": "guest-fsfreeze-status"}', 30, 0)))
        assert status == {"return": "thawed"}
        assert guest.ssh("echo after > ~/after-snapshot && sync && cat ~/after-snapshot",
                         timeout=180).stdout.strip() == "after"
    finally:
        driver.destroy(instance)
