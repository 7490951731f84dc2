"""Seeds through LibvirtDriver (test:///default) and the CLI: attached read-only, refused
input before anything exists, rebuilt on hard reboot, gone with the instance. The
guest agent channel and the addresses it reports.
"""

from __future__ import annotations

import os
import subprocess

import libvirt
import pytest

from tests.support.cli import run_cli
from virt import images, seed
from virt.domain import Channel, Disk, Domain, Rng
from virt.errors import InvalidParameter
from virt.objects import NIC, Flavor, GuestAddresses, Instance, SeedConfig

TEST_URI = "test:///default"
MAC = "52:54:00:5e:ed:11"


@pytest.fixture(scope="module")
def public_key(tmp_path_factory):
    path = tmp_path_factory.mktemp("key") / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def _instance(driver, public_key, **seed_fields) -> Instance:
    seed_fields.setdefault("ssh_keys", (public_key.with_suffix(".pub").read_text(),))
    return Instance(name="seed-unit", image="tiny", nics=(NIC(mac=MAC),),
                    flavor=Flavor(memory_mb=128, vcpus=1, root_gb=1),
                    params={"kernel_path": driver.kernel, "kernel_args": "console=ttyS0"},
                    seed=SeedConfig(**seed_fields))


def _defined(name) -> Domain:
    conn = libvirt.open(TEST_URI)
    try:
        return Domain.from_xml(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    finally:
        conn.close()


def _seed_disks(domain: Domain) -> list[Disk]:
    return [d for d in domain.devices_of(Disk) if (d.source or "").endswith("/seed.iso")]


def test_spawn_attaches_the_seed_read_only_and_destroy_removes_it(kernel_driver, public_key):
    driver = kernel_driver
    instance = _instance(driver, public_key)
    directory = os.path.join(driver.conf.instances_path, instance.uuid)
    described = Domain.from_xml(driver.describe_spawn(instance, "tiny"))
    assert not os.path.exists(directory)  # describe checks the seed but writes nothing
    driver.spawn(instance, "tiny")
    assert sorted(os.listdir(directory)) == ["console.log", "disk", "seed.iso", "seed.json"]
    for domain in (described, _defined(instance.name)):
        (disk,) = _seed_disks(domain)
        assert (disk.source, disk.readonly, disk.device, disk.target_bus, disk.driver_type) == \
            (os.path.join(directory, "seed.iso"), True, "disk", "virtio", "raw")
        assert domain.os.cmdline == "console=ttyS0 ds=nocloud"
    assert seed.read_record(directory).instance_id == instance.uuid
    driver.destroy(instance)
    assert not os.path.exists(directory)


def test_bad_seed_input_is_refused_before_anything_is_created(kernel_driver, public_key):
    driver = kernel_driver
    instance = _instance(driver, public_key, ssh_keys=(
        public_key.read_text(),))  # the private key
    with pytest.raises(InvalidParameter, match="private key"):
        driver.describe_spawn(instance, "tiny")
    with pytest.raises(InvalidParameter, match="is a private key"):  # never a SpawnError
        driver.spawn(instance, "tiny")
    assert os.listdir(driver.conf.instances_path) == []
    assert driver.list_instances() == []


def test_hard_reboot_rebuilds_the_seed_from_its_record(kernel_driver, public_key):
    driver = kernel_driver
    instance = _instance(driver, public_key, hostname="first")
    directory = os.path.join(driver.conf.instances_path, instance.uuid)
    driver.spawn(instance, "tiny")
    path = os.path.join(directory, "seed.iso")
    with open(path, "wb") as f:  # damaged while the guest ran
        f.write(b"\0" * 4096)
    driver.reboot(instance, hard=True)
    assert seed.iso_bytes(seed.read_record(directory))[32768:32768 + 6] == \
        open(path, "rb").read()[32768:32768 + 6]  # the ISO9660 volume descriptor is back
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", path],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert label == "cidata"
    domain = _defined(instance.name)
    assert len(_seed_disks(domain)) == 1  # attached once, not once per reboot
    assert domain.os.cmdline == "console=ttyS0 ds=nocloud"
    driver.reboot(instance, hard=False)
    assert os.path.exists(path)


def test_cli_print_config_shows_the_seed_disk_and_files(tmp_path, public_key):
    config = tmp_path / "virt-driver.conf"
    config.write_text(f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\nvirt_type = qemu\n")
    raw = tmp_path / "disk.raw"
    images.create_image("raw", str(raw), "4M")
    assert run_cli(str(config), "image", "import", "img", str(raw), "--format", "raw")[0] == 0
    user_data = tmp_path / "user-data"
    user_data.write_text("#cloud-config\nruncmd: [[touch, /ran]]\n")
    password = tmp_path / "password"
    password.write_text("hunter2\n")
    base = ["--backend", "libvirt", "--connection-uri", TEST_URI, "boot", "vm1",
            "--image", "img", "--nic", f"user,mac={MAC}", "--print-config"]
    code, out, err = run_cli(str(config), *base, "--ssh-key", f"{public_key}.pub",
                             "--user-data", str(user_data), "--password-file", str(password),
                             "--hostname", "web1")
    assert (code, err) == (0, "")
    assert "/seed.iso\"/>" in out and "<readonly/>" in out
    assert "--- seed cidata:meta-data\n" in out and "local-hostname: web1" in out
    assert "runcmd: [[touch, /ran]]" in out and "password: $6$" in out
    assert "hunter2" not in out
    assert not os.path.exists(tmp_path / "state" / "instances")

    code, out, err = run_cli(str(config), *base, "--ssh-key", str(public_key))
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "is a private key: give the public key (the .pub file)" in err
    big = tmp_path / "big"
    big.write_text("#cloud-config\n" + "#" * 70000)
    code, _out, err = run_cli(str(config), *base, "--user-data", str(big))
    assert code == 1 and "larger than 65536 bytes" in err
    code, _out, err = run_cli(str(config), *base, "--hostname", "bad_host")
    assert code == 1 and "seed hostname 'bad_host'" in err
    assert not os.path.exists(tmp_path / "state" / "instances")


def test_every_guest_has_the_agent_channel_and_addresses_come_from_the_agent(kernel_driver):
    driver = kernel_driver
    instance = Instance(name="agent-unit", image="tiny", nics=(NIC(mac=MAC),))
    driver.spawn(instance, "tiny")
    defined = _defined(instance.name)
    (channel,) = defined.devices_of(Channel)
    assert (channel.type, channel.target_type, channel.target_name) == \
        ("unix", "virtio", "org.qemu.guest_agent.0")
    # and the host's entropy: without it sshd waits minutes for the guest's generator
    (rng,) = defined.devices_of(Rng)
    assert (rng.model, rng.backend_model, rng.backend) == ("virtio", "random", "/dev/urandom")
    # libvirt's test driver answers every source as an agent would
    assert driver.get_addresses(instance) == GuestAddresses(
        agent_answers=True, source="agent",
        addresses=((MAC, "192.168.0.1/24"),))
    with pytest.raises(InvalidParameter, match="instance name"):
        driver.get_addresses(Instance(name="../x"))


def test_cli_forwards_reach_the_qemu_command_line_on_loopback_only(tmp_path):
    config = tmp_path / "virt-driver.conf"
    config.write_text(f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\nvirt_type = qemu\n")
    raw = tmp_path / "disk.raw"
    images.create_image("raw", str(raw), "4M")
    assert run_cli(str(config), "image", "import", "img", str(raw), "--format", "raw")[0] == 0
    base = ["--backend", "libvirt", "--connection-uri", TEST_URI, "boot", "vm1",
            "--image", "img", "--print-config"]
    code, out, err = run_cli(str(config), *base,
                             "--nic", f"user,mac={MAC},forward=2222:22+8080:80")
    assert (code, err) == (0, "")
    assert ('<qemu:arg value="user,id=vdfwd0,hostfwd=tcp:127.0.0.1:2222-:22,'
            'hostfwd=tcp:127.0.0.1:8080-:80"/>') in out
    assert f"mac={MAC}" in out and "<interface" not in out
    for forward in ("0.0.0.0:2222:22", "[::]:2222:22", "10.0.0.1:2222:22"):
        code, out, err = run_cli(str(config), *base, "--nic", f"user,mac={MAC},forward={forward}")
        assert code == 1 and out == "" and "forwards listen on 127.0.0.1 only" in err
    code, _out, err = run_cli(str(config), *base, "--nic", "user,forward=22:22",
                              "--nic", "user,forward=23:22")
    assert code == 2 and "forwards on one user NIC only" in err
    code, _out, err = run_cli(str(config), *base,
                              "--nic", f"bridge=br0,mac={MAC},forward=2222:22")
    assert code == 1 and "only a user NIC can forward ports" in err
    assert not os.path.exists(tmp_path / "state" / "instances")
