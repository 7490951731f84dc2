"""Seeds with real guests: the demo guest sees the seed as a read-only virtio disk of
the ISO's size, through a hard reboot; destroy leaves nothing. Its agent channel is
there and, the busybox guest running no agent, reported as not answering. The xm backend writes
the seed disk line that Xen's own parser reads read-only, and rebuilds it too.

One demo guest per format; each boot costs about 2 s under TCG.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from backends.libvirt.driver import LibvirtDriver
from tests import libxlutil
from tests.functional.conftest import DEMO_GUEST_DIR, wait_for_console
from tests.functional.test_xm_driver import Env
from tests.unit.test_cli import run_cli
from virt import seed
from virt.conf import make_conf
from virt.domain import Channel, Domain
from virt.errors import InvalidParameter
from virt.imagestore import LocalImageStore
from virt.objects import NIC, Flavor, GuestAddresses, GuestKind, Instance, SeedConfig

MAC = "52:54:00:5e:ed:21"


@pytest.fixture(scope="module")
def public_key(tmp_path_factory):
    path = tmp_path_factory.mktemp("key") / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text()


@pytest.fixture
def driver(tmp_path, libvirt_daemons, demo_guest):
    conf = make_conf(virt_type="qemu", state_path=str(tmp_path),
                     boot_file_dirs=[str(DEMO_GUEST_DIR)],
                     libvirt__connection_uri=libvirt_daemons, libvirt__shutdown_timeout=20,
                     libvirt__shutdown_retry_interval=3)
    LocalImageStore.from_conf(conf).import_image("demo", demo_guest.disk, "raw",
                                                 {"arch": "x86_64"})
    driver = LibvirtDriver(conf)
    driver.init_host("localhost")
    yield driver
    for name in driver.list_instances():
        if name.startswith("seeds-"):
            driver.destroy(driver.get_instance(name))
    driver.close()


def _cli_config(driver) -> str:
    """A config file for the CLI that names what the driver's conf names."""
    path = os.path.join(driver.conf.state_path, "cli.conf")
    with open(path, "w") as f:
        f.write(f"[DEFAULT]\nstate_path = {driver.conf.state_path}\nvirt_type = qemu\n"
                f"boot_file_dirs = {','.join(driver.conf.boot_file_dirs)}\n"
                f"[libvirt]\nconnection_uri = {driver.conf.libvirt.connection_uri}\n")
    return path


def _disk_lines(lines):
    return {line.split()[0]: line for line in lines if line.startswith("disk=")}


@pytest.mark.parametrize("fmt, label", [("nocloud", "cidata"), ("configdrive", "config-2")])
def test_the_guest_sees_the_seed_through_a_hard_reboot_and_destroy_removes_it(
        driver, demo_guest, public_key, fmt, label):
    instance = Instance(
        name=f"seeds-{fmt}", image="demo", nics=(NIC(mac=MAC),),
        flavor=Flavor(memory_mb=192, vcpus=1, root_gb=1),
        params={"kernel_path": demo_guest.kernel, "initrd_path": demo_guest.initrd,
                "kernel_args": demo_guest.cmdline("wait")},
        seed=SeedConfig(format=fmt, hostname="seeded", ssh_keys=(public_key,)))
    directory = os.path.join(driver.conf.instances_path, instance.uuid)
    console = os.path.join(directory, "console.log")
    driver.spawn(instance, "demo")
    lines = wait_for_console(console, "ready")
    iso = os.path.join(directory, seed.SEED_FILE)
    size = os.path.getsize(iso)
    assert _disk_lines(lines)["disk=vdb"] == f"disk=vdb bytes={size}"
    cmdline = next(line for line in lines if line.startswith("cmdline="))
    assert ("ds=nocloud" in cmdline) == (fmt == "nocloud")
    assert subprocess.run(["blkid", "-o", "value", "-s", "LABEL", iso], capture_output=True,
                          text=True, check=True).stdout.strip() == label
    # The busybox guest runs no agent: the channel is there, nobody answers on it.
    live = Domain.from_xml(driver._with_domain(instance.name, "read", lambda d: d.XMLDesc(0)))
    (channel,) = live.devices_of(Channel)
    assert (channel.target_name, channel.target_state) == \
        ("org.qemu.guest_agent.0", "disconnected")
    assert driver.get_addresses(instance) == GuestAddresses(agent_answers=False)
    code, out, err = run_cli(_cli_config(driver), "--json", "show", instance.name)
    assert (code, err) == (0, "")
    shown = json.loads(out)
    assert (shown["agent"], shown["addresses"], shown["addresses_from"]) == \
        ("does not answer", None, None)

    os.remove(iso)  # lost while the guest ran: the hard reboot builds it again
    driver.reboot(instance, hard=True)
    lines = wait_for_console(console, "ready", count=2)
    assert os.path.getsize(iso) == size
    assert [line for line in lines if line.startswith("disk=vdb")][-1] == \
        f"disk=vdb bytes={size}"
    assert "disk=vdc" not in _disk_lines(lines)

    driver.destroy(instance)
    assert not os.path.exists(directory)
    assert instance.name not in driver.list_instances()


@pytest.fixture(params=["xl", "xm"])
def xm_env(request, tmp_path, monkeypatch) -> Env:
    return Env(tmp_path, monkeypatch, request.param)


def test_xm_attaches_the_seed_read_only_rebuilds_it_and_destroy_removes_it(xm_env, public_key):
    env = xm_env
    inst = env.instance(seed=SeedConfig(format="configdrive", ssh_keys=(public_key,)))
    seed_path = env.driver.seed_path(inst)
    assert seed_path in env.driver.describe_spawn(inst, "base")
    env.driver.spawn(inst, "base")
    with libxlutil.XlConfig(env.config_path()) as xl:
        disks = [xl.parse_disk(spec) for spec in xl.get_list("disk")]
    assert [(d.target, d.vdev, d.readwrite, d.is_cdrom) for d in disks[1:]] == \
        [(seed_path, "xvdb", False, False)]
    assert disks[1].format == "raw"
    assert seed.read_record(env.driver.instance_dir(inst)).format == "configdrive"

    assert env.driver.get_addresses(inst) == GuestAddresses(agent_answers=False)
    os.remove(seed_path)
    env.driver.reboot(inst, hard=True)
    assert os.path.isfile(seed_path)
    env.driver.destroy(inst)
    assert env.leftovers(inst) == []


def test_xm_refuses_a_bad_seed_before_anything_is_made(xm_env):
    env = xm_env
    inst = env.instance(kind=GuestKind.PV, seed=SeedConfig(hostname="not a host"))
    with pytest.raises(InvalidParameter, match="seed hostname 'not a host'"):
        env.driver.spawn(inst, "base")
    assert env.leftovers(inst) == []
    assert ["create", env.config_path()] not in env.commands()
