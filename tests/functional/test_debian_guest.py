"""A real Debian 12 cloud guest (tools/build-debian-guest.sh) through the driver, reached
over SSH on 127.0.0.1: cloud-init applied the seed's host name and key, grew the root
file system to the flavor's disk, the guest agent answers with the address, a reboot
keeps the seed, destroy removes everything.

One guest per seed format, shared by the assertions: booting one costs about a
minute under TCG.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from backends.libvirt.driver import LibvirtDriver
from tests.support.guests import PROJECT_DIR, run_tool
from virt.conf import make_conf
from virt.imagestore import LocalImageStore
from virt.objects import NIC, Flavor, Instance, SeedConfig

GUEST_DIR = PROJECT_DIR / "build" / "debian-guest"
SSH_TIMEOUT = 480.0
MAC = "52:54:00:5e:ed:51"
CMDLINE = "root=LABEL=rootfs console=ttyS0 net.ifnames=0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Guest:
    def __init__(self, driver, instance, key, port):
        self.driver, self.instance, self.key, self.port = driver, instance, key, port

    def ssh(self, command: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", "-i", self.key, "-p", str(self.port), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "debian@127.0.0.1", command],
            capture_output=True, text=True, timeout=timeout)

    def wait_for_ssh(self) -> None:
        deadline = time.monotonic() + SSH_TIMEOUT
        while True:
            try:
                if self.ssh("true", timeout=30).returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                console = self.driver.get_console_output(self.instance)[-3000:]
                pytest.fail(f"no SSH on 127.0.0.1:{self.port} within {SSH_TIMEOUT:.0f}s; "
                            f"console ends:\n{console}", pytrace=False)
            time.sleep(3)


@pytest.fixture(scope="module")
def debian_guest(tmp_path_factory, libvirt_daemons):
    run_tool("building the Debian guest", str(PROJECT_DIR / "tools" / "build-debian-guest.sh"),
              str(GUEST_DIR))
    state = tmp_path_factory.mktemp("debian")
    conf = make_conf(virt_type="qemu", state_path=str(state), boot_file_dirs=[str(GUEST_DIR)],
                     libvirt__connection_uri=libvirt_daemons, libvirt__shutdown_timeout=60,
                     libvirt__shutdown_retry_interval=5, libvirt__wait_soft_reboot_seconds=120)
    LocalImageStore.from_conf(conf).import_image("debian12", str(GUEST_DIR / "disk.raw"), "raw",
                                                 {"arch": "x86_64"})
    key = state / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    driver = LibvirtDriver(conf)
    driver.init_host("localhost")
    yield driver, str(key)
    for name in driver.list_instances():
        if name.startswith("seeds-deb"):
            driver.destroy(driver.get_instance(name))
    driver.close()


@pytest.mark.parametrize("fmt, label", [("nocloud", "cidata"), ("configdrive", "config-2")])
def test_the_debian_guest_takes_its_seed_and_answers_over_ssh(debian_guest, fmt, label):
    driver, key = debian_guest
    port = _free_port()
    with open(key + ".pub") as f:
        public = f.read()
    instance = Instance(
        name=f"seeds-deb-{fmt}", image="debian12", nics=(NIC(mac=MAC),),
        flavor=Flavor(memory_mb=1024, vcpus=2, root_gb=4),
        params={"kernel_path": str(GUEST_DIR / "vmlinuz"),
                "initrd_path": str(GUEST_DIR / "initrd.img"), "kernel_args": CMDLINE,
                "user_forwards": f"{MAC}={port}:22"},
        seed=SeedConfig(format=fmt, hostname=f"seeded-{fmt}", ssh_keys=(public,)))
    directory = os.path.join(driver.conf.instances_path, instance.uuid)
    guest = Guest(driver, instance, key, port)
    driver.spawn(instance, "debian12")
    guest.wait_for_ssh()  # the key from the seed let us in

    assert guest.ssh("hostname").stdout.strip() == f"seeded-{fmt}"
    status = guest.ssh("cloud-init status --wait", timeout=300)
    assert "done" in status.stdout, status.stdout + status.stderr
    size = int(guest.ssh("df -B1 --output=size / | tail -1").stdout.strip())
    assert size > 3.5 * 2**30  # grown from the 3 GiB image to the 4 GiB flavor disk
    assert guest.ssh(f"readlink /dev/disk/by-label/{label}").stdout.strip() == "../../vdb"

    deadline = time.monotonic() + 120
    while not (reach := driver.get_addresses(instance)).agent_answers \
            and time.monotonic() < deadline:
        time.sleep(2)
    assert reach.agent_answers and reach.source == "agent"
    assert (MAC, "10.0.2.15/24") in reach.addresses

    driver.reboot(instance)  # soft: the guest shuts down and starts again
    guest.wait_for_ssh()
    assert guest.ssh("hostname").stdout.strip() == f"seeded-{fmt}"
    assert guest.ssh(f"readlink /dev/disk/by-label/{label}").stdout.strip() == "../../vdb"

    driver.destroy(instance)
    assert not os.path.exists(directory)
    assert instance.name not in driver.list_instances()
