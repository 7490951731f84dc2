"""XmDriver end to end against the toolstack double, for both xl and xm spellings.

Real parts only: qemu-img makes the disks, the image store and cache are the
project's own, Xen's libxlutil reads every config written, and the toolstack
is an executable on PATH that keeps domains in a state directory.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from backends.xm.toolstack import choose_toolstack
from tests import libxlutil
from tests.support.xm import MARKER
from tests.xm_double import DoubleHost
from virt import images
from virt.conf import make_conf
from virt.errors import (
    InstanceExists,
    InstanceNotFound,
    InvalidParameter,
    NotSupported,
    SpawnError,
    ToolstackError,
)
from virt.objects import BlockDevice, GuestKind, PowerState


def test_spawn_writes_config_disk_and_creates(xm_env):
    inst = xm_env.instance()
    auto = os.path.join(xm_env.conf.xm.config_dir, "auto", inst.name)
    os.makedirs(os.path.dirname(auto))
    open(auto, "w").close()
    expected = xm_env.driver.describe_spawn(inst, "base")
    assert not os.path.exists(xm_env.config_path())   # describe creates nothing
    xm_env.driver.spawn(inst, "base")

    with open(xm_env.config_path()) as f:
        assert f.read() == expected
    assert not os.path.exists(auto)
    assert xm_env.commands()[-1] == ["create", xm_env.config_path()]
    assert xm_env.driver.list_instances() == ["web-01"]
    info = xm_env.driver.get_info(inst)
    assert (info.state, info.mem_kb, info.num_cpu) == (PowerState.BLOCKED, 256 * 1024, 2)

    disk_path = xm_env.driver.instance_files(inst).disk
    with libxlutil.XlConfig(xm_env.config_path()) as xl:
        disk = xl.parse_disk(xl.get_list("disk")[0])
        assert (disk.target, disk.vdev, disk.readwrite) == (disk_path, "xvda", True)
        assert xl.get_string("kernel") == str(xm_env.kernel)
    if xm_env.spelling == "xl":
        assert disk.format == "qcow2"
        image = images.info(disk_path, "qcow2")
        assert image.backing_file.startswith(xm_env.conf.images.cache_path)
        assert image.backing_format == "raw"
    else:
        assert disk.format == "raw"
        image = images.info(disk_path, "raw")
        with open(disk_path, "rb") as f:
            assert f.read(len(MARKER)) == MARKER
    assert image.virtual_size == 1024 ** 3


def test_spawn_refuses_a_running_or_defined_instance(xm_env):
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    with pytest.raises(InstanceExists, match="already running"):
        xm_env.driver.spawn(xm_env.instance(), "base")
    xm_env.driver.power_off(inst)
    with pytest.raises(InstanceExists, match="is defined"):
        xm_env.driver.spawn(xm_env.instance(), "base")


def test_failure_at_each_spawn_step_leaves_nothing(xm_env, tmp_path):
    inst = xm_env.instance()
    with pytest.raises(SpawnError, match="step 'image'.*missing"):
        xm_env.driver.spawn(inst, "missing")
    assert xm_env.leftovers(inst) == []

    blocked = tmp_path / "etc-xen-is-a-file"
    blocked.write_text("")
    conf = make_conf(state_path=xm_env.conf.state_path, boot_file_dirs=xm_env.conf.boot_file_dirs,
                     xm__config_dir=str(blocked),
                     xm__toolstack=xm_env.spelling)
    driver = xm_env.make_driver(conf)
    with pytest.raises(SpawnError, match="step 'config'"):
        driver.spawn(inst, "base")
    assert not os.path.exists(driver.instance_files(inst).directory)

    xm_env.double.fail("create", "libxl: error: cannot allocate memory")
    with pytest.raises(SpawnError, match="step 'create'.*cannot allocate memory"):
        xm_env.driver.spawn(inst, "base")
    assert xm_env.leftovers(inst) == []
    kept = os.listdir(xm_env.conf.xm.log_dir)
    assert len(kept) == 1 and kept[0].startswith("web-01-")
    assert xm_env.driver.list_instances() == []


def test_bad_parameters_refused_before_anything_is_made(xm_env):
    inst = xm_env.instance(params={"kernel_path": str(xm_env.kernel), "kernel_args": "a'b"})
    with pytest.raises(InvalidParameter, match="kernel_args"):
        xm_env.driver.spawn(inst, "base")
    inst = xm_env.instance(params={"kernel_path": str(xm_env.kernel.parent / "missing-vmlinuz")})
    with pytest.raises(InvalidParameter, match="No such file"):
        xm_env.driver.spawn(inst, "base")
    assert xm_env.leftovers(inst) == []
    assert all(command[0] in ("info", "list") for command in xm_env.commands())


@pytest.mark.parametrize("kind, params, message", [
    (GuestKind.PV, {"kernel_path": "KERNEL", "initrd_path": "/etc/shadow"},
     "initrd_path'] '/etc/shadow': not inside a directory allowed for boot files"),
    (GuestKind.HVM, {"cdrom_image_path": "/dev/vda"}, "cdrom_image_path'] '/dev/vda': not inside"),
    (GuestKind.PV, {"kernel_image": "base", "initrd_image": "base", "kernel_path": "KERNEL"},
     "give kernel_image or kernel_path, not both"),
])
def test_host_files_never_reach_the_config(xm_env, kind, params, message):
    params = {k: v.replace("KERNEL", str(xm_env.kernel)) for k, v in params.items()}
    inst = xm_env.instance(kind=kind, params=params)
    with pytest.raises(InvalidParameter) as err:
        xm_env.driver.spawn(inst, "base")
    assert message in str(err.value)
    assert xm_env.leftovers(inst) == []


def test_kernel_and_cdrom_from_the_store(xm_env):
    base = xm_env.cache.store.get("base").path
    pv = xm_env.instance(params={"kernel_image": "base", "initrd_image": "base"})
    hvm = xm_env.instance(name="win", kind=GuestKind.HVM, params={"cdrom_image": "base"})
    for inst in (pv, hvm):
        xm_env.driver.spawn(inst, "base")
    with libxlutil.XlConfig(xm_env.config_path()) as xl:
        assert (xl.get_string("kernel"), xl.get_string("ramdisk")) == (base, base)
    assert xm_env.driver.get_instance("win").params["cdrom_image_path"] == base


def test_destroy_graceful_then_idempotent(xm_env):
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    xm_env.driver.destroy(inst)
    assert ["shutdown", "-w", "web-01"] in xm_env.commands()
    assert ["destroy", "web-01"] not in xm_env.commands()
    assert xm_env.leftovers(inst) == []
    xm_env.driver.destroy(inst)  # missing instance: success


def test_destroy_forces_after_shutdown_timeout(xm_env):
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    xm_env.double.set_behaviour(ignore_shutdown=True)
    xm_env.driver.destroy(inst)
    commands = xm_env.commands()
    assert commands.index(["shutdown", "-w", "web-01"]) < commands.index(["destroy", "web-01"])
    assert xm_env.double.domains() == {}
    assert xm_env.leftovers(inst) == []


def test_destroy_keeps_disks_when_asked(xm_env):
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    xm_env.driver.destroy(inst, destroy_disks=False)
    assert os.path.exists(xm_env.driver.instance_files(inst).disk)
    assert not os.path.exists(xm_env.config_path())


def test_reboot_is_verified(xm_env):
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    before = xm_env.driver.get_info(inst).id
    xm_env.driver.reboot(inst)
    assert xm_env.driver.get_info(inst).id != before
    xm_env.double.set_behaviour(reboot_noop=True)
    before = xm_env.driver.get_info(inst).id
    xm_env.driver.reboot(inst)  # not seen within 3 s: rebooted hard
    assert xm_env.driver.get_info(inst).id != before
    assert ["destroy", "web-01"] in xm_env.commands()  # the hard fallback
    before = xm_env.driver.get_info(inst).id
    xm_env.driver.reboot(inst, hard=True)
    assert xm_env.driver.get_info(inst).id != before
    with pytest.raises(InstanceNotFound):
        xm_env.driver.reboot(xm_env.instance(name="ghost"))


def test_pause_unpause_power_off_on(xm_env):
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    xm_env.driver.pause(inst)
    assert xm_env.driver.get_info(inst).state is PowerState.PAUSED
    xm_env.driver.unpause(inst)
    assert xm_env.driver.get_info(inst).state is PowerState.BLOCKED
    xm_env.driver.power_off(inst)
    assert xm_env.driver.instance_exists(inst)  # stopped, not gone
    assert xm_env.driver.get_info(inst).state is PowerState.SHUTOFF
    assert xm_env.driver.list_instances() == ["web-01"]
    assert os.path.exists(xm_env.config_path())
    assert os.path.exists(xm_env.driver.instance_files(inst).disk)
    xm_env.driver.power_on(inst)
    assert xm_env.driver.instance_exists(inst)
    with pytest.raises(InstanceNotFound, match="spawn it first"):
        xm_env.driver.power_on(xm_env.instance(name="ghost"))
    with pytest.raises(InstanceNotFound):
        xm_env.driver.pause(xm_env.instance(name="ghost"))


def test_toolstack_failure_is_reported(xm_env):
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    xm_env.double.fail("pause", "domain is dying")
    with pytest.raises(ToolstackError, match="domain is dying"):
        xm_env.driver.pause(inst)


def test_list_failure_is_retried(xm_env):
    xm_env.double.fail("list", "xend busy", times=2)
    assert xm_env.driver.list_instances() == []
    xm_env.double.fail("list", "xend gone")
    with pytest.raises(ToolstackError, match="gave up after 3 attempts"):
        xm_env.driver.list_instances()


def test_xm_4_4_notice_in_the_output_is_skipped(xm_env):
    xm_env.double.set_behaviour(merged_notice=True, version="4.4.3")
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    assert xm_env.driver.list_instances() == ["web-01"]
    assert xm_env.driver.get_info(inst).num_cpu == 2
    assert xm_env.driver.get_host_info().memory_dom0 == 1023


def test_host_info_and_console(xm_env):
    info = xm_env.driver.get_host_info()
    assert (info.memory_total, info.memory_dom0, info.cpu_total, info.cpu_sockets) == (
        16378, 1023, 4, 2)
    assert info.hypervisor_version == (4_017_004 if xm_env.spelling == "xl" else 4_000_001)
    assert (info.backend, info.hypervisor_type, info.arch) == ("xm", "xen", "x86_64")
    inst = xm_env.instance()
    assert xm_env.driver.get_console_command(inst) == [xm_env.spelling, "console", "web-01"]
    for call in (lambda: xm_env.driver.suspend(inst), lambda: xm_env.driver.resume(inst),
                 lambda: xm_env.driver.snapshot(inst, "snap"),
                 lambda: xm_env.driver.get_console_output(inst)):
        with pytest.raises(NotSupported, match="not supported by the xm backend"):
            call()


@pytest.mark.parametrize("live", [True, False])
def test_migrate_and_hand_over_config(xm_env, tmp_path, live):
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    text = xm_env.driver.migration_config(inst)
    xm_env.driver.migrate(inst, "node2.example.com", live=live)
    call = [c for c in xm_env.commands() if c[0] == "migrate"][-1]
    if xm_env.spelling == "xm":
        assert call == ["migrate", *(["-l"] if live else []), "web-01", "node2.example.com"]
    else:
        assert call == ["migrate", "-C", xm_env.config_path(), "web-01", "node2.example.com"]
        assert (["pause", "web-01"] in xm_env.commands()) is not live
    assert xm_env.double.migrated()["web-01"]["host"] == "node2.example.com"
    assert not os.path.exists(xm_env.config_path())

    target_conf = make_conf(state_path=str(tmp_path / "t"), boot_file_dirs=[str(tmp_path)],
                            xm__config_dir=str(tmp_path / "target-xen"),
                            xm__toolstack=xm_env.spelling)
    target = xm_env.make_driver(target_conf)
    target.accept_migration(inst, text)
    with pytest.raises(InvalidParameter, match="refusing to write it"):
        target.finalize_migration(xm_env.instance(name="other"), text, success=True)
    target.finalize_migration(inst, text, success=False)
    assert not os.path.exists(target.config_path("web-01"))
    target.finalize_migration(inst, text, success=True)
    with open(target.config_path("web-01")) as f:
        assert f.read() == text
    other = xm_env.instance(name="b")
    xm_env.driver.spawn(other, "base")
    with pytest.raises(InvalidParameter, match="destination"):
        xm_env.driver.migrate(other, "-oProxyCommand=x")
    assert xm_env.driver.instance_exists(other)


def test_migrate_failure_keeps_source(xm_env):
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    xm_env.double.fail("migrate", "connection refused")
    with pytest.raises(ToolstackError, match="connection refused"):
        xm_env.driver.migrate(inst, "node2", live=False)
    assert xm_env.driver.get_info(inst).state is PowerState.BLOCKED
    assert os.path.exists(xm_env.config_path())
    with pytest.raises(InstanceNotFound):
        xm_env.driver.migrate(xm_env.instance(name="ghost"), "node2")


def test_hvm_with_vnc_password_is_private(xm_env, tmp_path):
    iso = tmp_path / "install.iso"
    iso.write_bytes(b"iso")
    inst = xm_env.instance(kind=GuestKind.HVM, network_port=5905,
                        params={"vnc_password": "s3cret",
                                "cdrom_image_path": str(iso), "nic_type": "e1000"})
    extra = tmp_path / "data.raw"
    images.create_image("raw", str(extra), "1M")
    xm_env.driver.spawn(inst, "base", block_devices=[BlockDevice(str(extra), readonly=True)])
    mode = stat.S_IMODE(os.stat(xm_env.config_path()).st_mode)
    assert mode == 0o600
    with libxlutil.XlConfig(xm_env.config_path()) as xl:
        assert xl.get_string("vncpasswd") == "s3cret"
        assert xl.get_long("vncdisplay") == 5
        disks = [xl.parse_disk(spec) for spec in xl.get_list("disk")]
    assert [(d.target, d.vdev, d.readwrite, d.is_cdrom) for d in disks] == [
        (xm_env.driver.instance_files(inst).disk, "hda", True, False),
        (str(extra), "hdb", False, False),
        (str(iso), "hdc", False, True)]


@pytest.mark.parametrize("kind, params, message", [
    (GuestKind.PV, {"bootloader": "/bin/sh"}, "not a bootloader this host allows"),
    (GuestKind.PV, {"bootloader": "/usr/bin/pygrub/../../../bin/sh"}, "not a bootloader"),
    (GuestKind.HVM, {"device_model": "/bin/sh"},
     r"not a device model this host allows \(none configured\)"),
    (GuestKind.HVM, {"hvmloader_path": "/etc/shadow"}, "not a HVM firmware this host allows"),
    (GuestKind.HVM, {"vnc_password_file": "/etc/shadow"},
     r"vnc_password_file'\] is no longer read: pass the password itself as vnc_password"),
    (GuestKind.HVM, {"vnc_password": "toolongpassword"}, "use 1 to 8 printable characters"),
])
def test_host_programs_and_files_are_refused(xm_env, kind, params, message):
    inst = xm_env.instance(kind=kind, params=params)
    with pytest.raises(InvalidParameter, match=message):
        xm_env.driver.describe_spawn(inst, "base")
    with pytest.raises(InvalidParameter, match=message):
        xm_env.driver.spawn(inst, "base")
    assert xm_env.leftovers(inst) == []
    assert not any("create" in command for command in xm_env.commands())


def test_listed_host_programs_reach_the_config(xm_env, tmp_path):
    tools = tmp_path / "xen-tools"
    tools.mkdir()
    for name in ("pygrub", "qemu-dm", "hvmloader"):
        (tools / name).write_bytes(b"#!/bin/true\n")
        (tools / name).chmod(0o755)
    os.symlink(tools / "pygrub", tmp_path / "pygrub-link")
    conf = make_conf(state_path=xm_env.conf.state_path, bootloaders=[str(tmp_path / "pygrub-link")],
                     xm__device_models=[str(tools / "qemu-dm")],
                     xm__hvmloaders=[str(tools / "hvmloader")],
                     xm__config_dir=xm_env.conf.xm.config_dir, xm__log_dir=xm_env.conf.xm.log_dir,
                     xm__toolstack=xm_env.spelling)
    driver = xm_env.make_driver(conf)
    pv = xm_env.instance(params={"bootloader": str(tmp_path / "pygrub-link")})
    hvm = xm_env.instance(name="win", kind=GuestKind.HVM,
                       params={"device_model": str(tools / "qemu-dm"),
                               "hvmloader_path": str(tools / "hvmloader")})
    for inst in (pv, hvm):
        driver.spawn(inst, "base")
    with libxlutil.XlConfig(xm_env.config_path()) as xl:
        assert xl.get_string("bootloader") == str(tools / "pygrub")
    firmware, model = (("kernel", "device_model") if xm_env.spelling == "xm"
                       else ("firmware_override", "device_model_override"))
    with libxlutil.XlConfig(xm_env.config_path("win")) as xl:
        assert xl.get_string(firmware) == str(tools / "hvmloader")
        assert xl.get_string(model) == str(tools / "qemu-dm")


def test_hvm_vnc_is_loopback_unless_a_password_is_set(xm_env):
    open_vnc = xm_env.instance(kind=GuestKind.HVM, params={"vnc_bind_address": "0.0.0.0"})
    with pytest.raises(InvalidParameter, match="VNC beyond loopback needs a password"):
        xm_env.driver.spawn(open_vnc, "base")
    assert xm_env.leftovers(open_vnc) == []
    inst = xm_env.instance(kind=GuestKind.HVM, params={})
    xm_env.driver.spawn(inst, "base")
    with libxlutil.XlConfig(xm_env.config_path()) as xl:
        assert xl.get_string("vnclisten") == "127.0.0.1" and xl.get_string("vncpasswd") is None


def test_get_instance_rebuilds_from_config(xm_env, tmp_path):
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"iso")
    hvm = xm_env.instance(name="win", kind=GuestKind.HVM, network_port=5907,
                       params={"boot_order": "dc", "nic_type": "e1000", "vnc_password": "pw",
                               "cdrom_image_path": str(iso), "pae": "false"})
    pv = xm_env.instance(params={"kernel_path": str(xm_env.kernel), "kernel_args": "ro quiet",
                              "cpu_mask": "0-1"})
    for inst in (pv, hvm):
        xm_env.driver.spawn(inst, "base")
        back = xm_env.driver.get_instance(inst.name)
        assert (back.name, back.uuid, back.kind, back.image) == (
            inst.name, inst.uuid, inst.kind, "base")
        assert back.flavor == inst.flavor
        assert [n.mac for n in back.nics] == [n.mac for n in inst.nics]
        assert back.network_port == inst.network_port
        for key, value in inst.params.items():
            assert back.params[key] == value
        # What was read back renders to the very same file.
        assert xm_env.driver.describe_spawn(back, "base") == xm_env.driver.migration_config(inst)
    with pytest.raises(InstanceNotFound):
        xm_env.driver.get_instance("ghost")


def test_events_reach_listeners(xm_env):
    events = []
    xm_env.driver.register_event_listener(lambda name, event: events.append((name, event)))
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    xm_env.driver.pause(inst)
    xm_env.driver.destroy(inst)
    assert events == [("web-01", "running"), ("web-01", "paused"), ("web-01", "shutoff")]


def test_auto_toolstack_uses_xm_when_xl_does_not_answer(tmp_path, monkeypatch):
    double = DoubleHost(str(tmp_path / "d"), spellings=("xm",))
    monkeypatch.setenv("PATH", double.bin_dir + os.pathsep + "/usr/bin:/bin")
    assert choose_toolstack("auto") == "xm"
    double2 = DoubleHost(str(tmp_path / "d2"), spellings=("xl", "xm"))
    monkeypatch.setenv("PATH", double2.bin_dir + os.pathsep + "/usr/bin:/bin")
    assert choose_toolstack("auto") == "xl"
    double2.fail("info", "xl: cannot connect to the hypervisor")
    assert choose_toolstack("auto") == "xm"
    assert json.dumps(double2.calls()).count("info") == 2
