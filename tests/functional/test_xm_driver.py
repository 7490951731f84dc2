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

from backends.xm.driver import XmDriver
from backends.xm.toolstack import choose_toolstack
from tests import libxlutil
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
from virt.imagecache import ImageCache
from virt.imagestore import LocalImageStore
from virt.objects import NIC, BlockDevice, Flavor, GuestKind, Instance, PowerState

MARKER = b"VIRT-XM-BASE"


class FixedProbe:
    def __init__(self, xend: bool, tap: bool):
        self.xend, self.tap = xend, tap

    def xend_running(self) -> bool:
        return self.xend

    def tap_ctl_ok(self) -> bool:
        return self.tap


class Env:
    def __init__(self, tmp_path, monkeypatch, spelling: str):
        self.spelling = spelling
        self.double = DoubleHost(str(tmp_path / "double"))
        monkeypatch.setenv("PATH", self.double.bin_dir + os.pathsep + os.environ["PATH"])
        self.conf = make_conf(state_path=str(tmp_path / "state"), boot_file_dirs=[str(tmp_path)],
                              xm__config_dir=str(tmp_path / "etc-xen"),
                              xm__log_dir=str(tmp_path / "log"), xm__toolstack=spelling,
                              xm__shutdown_timeout=1, xm__reboot_timeout=3)
        store = LocalImageStore(self.conf.images.store_path)
        source = tmp_path / "base.raw"
        source.write_bytes(MARKER + b"\0" * (1024 * 1024 - len(MARKER)))
        store.import_image("base", str(source), "raw")
        self.cache = ImageCache(self.conf.images.cache_path, self.conf.lock_path, store)
        self.kernel = tmp_path / "vmlinuz"
        self.kernel.write_bytes(b"kernel")
        self.driver = self.make_driver(self.conf)

    def make_driver(self, conf) -> XmDriver:
        # xl on 4.17 without xend gets qdisk (qcow2 overlay); xm on 4.0.1 gets blktap (raw).
        return XmDriver(conf, probe=FixedProbe(xend=self.spelling == "xm", tap=True),
                        image_cache=self.cache, sleep=lambda s: None)

    def instance(self, name="web-01", **kw) -> Instance:
        kw.setdefault("params", {"kernel_path": str(self.kernel)})
        kw.setdefault("kind", GuestKind.PV)
        return Instance(name=name, flavor=Flavor(memory_mb=256, vcpus=2, root_gb=1),
                        image="base", nics=(NIC("aa:00:00:00:00:01", bridge="xenbr0"),), **kw)

    def config_path(self, name="web-01") -> str:
        return os.path.join(self.conf.xm.config_dir, name)

    def commands(self) -> list[list[str]]:
        return [call[1:] for call in self.double.calls()]

    def leftovers(self, instance: Instance) -> list[str]:
        paths = [self.config_path(instance.name), self.driver.instance_dir(instance)]
        return [p for p in paths if os.path.exists(p)]


@pytest.fixture(params=["xl", "xm"])
def env(request, tmp_path, monkeypatch) -> Env:
    return Env(tmp_path, monkeypatch, request.param)


def test_spawn_writes_config_disk_and_creates(env):
    inst = env.instance()
    auto = os.path.join(env.conf.xm.config_dir, "auto", inst.name)
    os.makedirs(os.path.dirname(auto))
    open(auto, "w").close()
    expected = env.driver.describe_spawn(inst, "base")
    assert not os.path.exists(env.config_path())   # describe creates nothing
    env.driver.spawn(inst, "base")

    with open(env.config_path()) as f:
        assert f.read() == expected
    assert not os.path.exists(auto)
    assert env.commands()[-1] == ["create", env.config_path()]
    assert env.driver.list_instances() == ["web-01"]
    info = env.driver.get_info(inst)
    assert (info.state, info.mem_kb, info.num_cpu) == (PowerState.BLOCKED, 256 * 1024, 2)

    disk_path = env.driver.disk_path(inst)
    with libxlutil.XlConfig(env.config_path()) as xl:
        disk = xl.parse_disk(xl.get_list("disk")[0])
        assert (disk.target, disk.vdev, disk.readwrite) == (disk_path, "xvda", True)
        assert xl.get_string("kernel") == str(env.kernel)
    if env.spelling == "xl":
        assert disk.format == "qcow2"
        image = images.info(disk_path, "qcow2")
        assert image.backing_file.startswith(env.conf.images.cache_path)
        assert image.backing_format == "raw"
    else:
        assert disk.format == "raw"
        image = images.info(disk_path, "raw")
        with open(disk_path, "rb") as f:
            assert f.read(len(MARKER)) == MARKER
    assert image.virtual_size == 1024 ** 3


def test_spawn_refuses_a_running_or_defined_instance(env):
    inst = env.instance()
    env.driver.spawn(inst, "base")
    with pytest.raises(InstanceExists, match="already running"):
        env.driver.spawn(env.instance(), "base")
    env.driver.power_off(inst)
    with pytest.raises(InstanceExists, match="is defined"):
        env.driver.spawn(env.instance(), "base")


def test_failure_at_each_spawn_step_leaves_nothing(env, tmp_path):
    inst = env.instance()
    with pytest.raises(SpawnError, match="step 'image'.*missing"):
        env.driver.spawn(inst, "missing")
    assert env.leftovers(inst) == []

    blocked = tmp_path / "etc-xen-is-a-file"
    blocked.write_text("")
    conf = make_conf(state_path=env.conf.state_path, boot_file_dirs=env.conf.boot_file_dirs,
                     xm__config_dir=str(blocked),
                     xm__toolstack=env.spelling)
    driver = env.make_driver(conf)
    with pytest.raises(SpawnError, match="step 'config'"):
        driver.spawn(inst, "base")
    assert not os.path.exists(driver.instance_dir(inst))

    env.double.fail("create", "libxl: error: cannot allocate memory")
    with pytest.raises(SpawnError, match="step 'create'.*cannot allocate memory"):
        env.driver.spawn(inst, "base")
    assert env.leftovers(inst) == []
    kept = os.listdir(env.conf.xm.log_dir)
    assert len(kept) == 1 and kept[0].startswith("web-01-")
    assert env.driver.list_instances() == []


def test_bad_parameters_refused_before_anything_is_made(env):
    inst = env.instance(params={"kernel_path": str(env.kernel), "kernel_args": "a'b"})
    with pytest.raises(InvalidParameter, match="kernel_args"):
        env.driver.spawn(inst, "base")
    inst = env.instance(params={"kernel_path": str(env.kernel.parent / "missing-vmlinuz")})
    with pytest.raises(InvalidParameter, match="No such file"):
        env.driver.spawn(inst, "base")
    assert env.leftovers(inst) == []
    assert all(command[0] in ("info", "list") for command in env.commands())


@pytest.mark.parametrize("kind, params, message", [
    (GuestKind.PV, {"kernel_path": "KERNEL", "initrd_path": "/etc/shadow"},
     "initrd_path'] '/etc/shadow': not inside a directory allowed for boot files"),
    (GuestKind.HVM, {"cdrom_image_path": "/dev/vda"}, "cdrom_image_path'] '/dev/vda': not inside"),
    (GuestKind.PV, {"kernel_image": "base", "initrd_image": "base", "kernel_path": "KERNEL"},
     "give kernel_image or kernel_path, not both"),
])
def test_host_files_never_reach_the_config(env, kind, params, message):
    params = {k: v.replace("KERNEL", str(env.kernel)) for k, v in params.items()}
    inst = env.instance(kind=kind, params=params)
    with pytest.raises(InvalidParameter) as err:
        env.driver.spawn(inst, "base")
    assert message in str(err.value)
    assert env.leftovers(inst) == []


def test_kernel_and_cdrom_from_the_store(env):
    base = env.cache.store.get("base").path
    pv = env.instance(params={"kernel_image": "base", "initrd_image": "base"})
    hvm = env.instance(name="win", kind=GuestKind.HVM, params={"cdrom_image": "base"})
    for inst in (pv, hvm):
        env.driver.spawn(inst, "base")
    with libxlutil.XlConfig(env.config_path()) as xl:
        assert (xl.get_string("kernel"), xl.get_string("ramdisk")) == (base, base)
    assert env.driver.get_instance("win").params["cdrom_image_path"] == base


def test_destroy_graceful_then_idempotent(env):
    inst = env.instance()
    env.driver.spawn(inst, "base")
    env.driver.destroy(inst)
    assert ["shutdown", "-w", "web-01"] in env.commands()
    assert ["destroy", "web-01"] not in env.commands()
    assert env.leftovers(inst) == []
    env.driver.destroy(inst)  # missing instance: success


def test_destroy_forces_after_shutdown_timeout(env):
    inst = env.instance()
    env.driver.spawn(inst, "base")
    env.double.set_behaviour(ignore_shutdown=True)
    env.driver.destroy(inst)
    commands = env.commands()
    assert commands.index(["shutdown", "-w", "web-01"]) < commands.index(["destroy", "web-01"])
    assert env.double.domains() == {}
    assert env.leftovers(inst) == []


def test_destroy_keeps_disks_when_asked(env):
    inst = env.instance()
    env.driver.spawn(inst, "base")
    env.driver.destroy(inst, destroy_disks=False)
    assert os.path.exists(env.driver.disk_path(inst))
    assert not os.path.exists(env.config_path())


def test_reboot_is_verified(env):
    inst = env.instance()
    env.driver.spawn(inst, "base")
    before = env.driver.get_info(inst).id
    env.driver.reboot(inst)
    assert env.driver.get_info(inst).id != before
    env.double.set_behaviour(reboot_noop=True)
    before = env.driver.get_info(inst).id
    env.driver.reboot(inst)  # not seen within 3 s: rebooted hard
    assert env.driver.get_info(inst).id != before
    assert ["destroy", "web-01"] in env.commands()  # the hard fallback
    before = env.driver.get_info(inst).id
    env.driver.reboot(inst, hard=True)
    assert env.driver.get_info(inst).id != before
    with pytest.raises(InstanceNotFound):
        env.driver.reboot(env.instance(name="ghost"))


def test_pause_unpause_power_off_on(env):
    inst = env.instance()
    env.driver.spawn(inst, "base")
    env.driver.pause(inst)
    assert env.driver.get_info(inst).state is PowerState.PAUSED
    env.driver.unpause(inst)
    assert env.driver.get_info(inst).state is PowerState.BLOCKED
    env.driver.power_off(inst)
    assert env.driver.instance_exists(inst)  # stopped, not gone
    assert env.driver.get_info(inst).state is PowerState.SHUTOFF
    assert env.driver.list_instances() == ["web-01"]
    assert os.path.exists(env.config_path()) and os.path.exists(env.driver.disk_path(inst))
    env.driver.power_on(inst)
    assert env.driver.instance_exists(inst)
    with pytest.raises(InstanceNotFound, match="spawn it first"):
        env.driver.power_on(env.instance(name="ghost"))
    with pytest.raises(InstanceNotFound):
        env.driver.pause(env.instance(name="ghost"))


def test_toolstack_failure_is_reported(env):
    inst = env.instance()
    env.driver.spawn(inst, "base")
    env.double.fail("pause", "domain is dying")
    with pytest.raises(ToolstackError, match="domain is dying"):
        env.driver.pause(inst)


def test_list_failure_is_retried(env):
    env.double.fail("list", "xend busy", times=2)
    assert env.driver.list_instances() == []
    env.double.fail("list", "xend gone")
    with pytest.raises(ToolstackError, match="gave up after 3 attempts"):
        env.driver.list_instances()


def test_xm_4_4_notice_in_the_output_is_skipped(env):
    env.double.set_behaviour(merged_notice=True, version="4.4.3")
    inst = env.instance()
    env.driver.spawn(inst, "base")
    assert env.driver.list_instances() == ["web-01"]
    assert env.driver.get_info(inst).num_cpu == 2
    assert env.driver.get_host_info().memory_dom0 == 1023


def test_host_info_and_console(env):
    info = env.driver.get_host_info()
    assert (info.memory_total, info.memory_dom0, info.cpu_total, info.cpu_sockets) == (
        16378, 1023, 4, 2)
    assert info.hypervisor_version == (4_017_004 if env.spelling == "xl" else 4_000_001)
    assert (info.backend, info.hypervisor_type, info.arch) == ("xm", "xen", "x86_64")
    inst = env.instance()
    assert env.driver.get_console_command(inst) == [env.spelling, "console", "web-01"]
    for call in (lambda: env.driver.suspend(inst), lambda: env.driver.resume(inst),
                 lambda: env.driver.snapshot(inst, "snap"),
                 lambda: env.driver.get_console_output(inst)):
        with pytest.raises(NotSupported, match="not supported by the xm backend"):
            call()


@pytest.mark.parametrize("live", [True, False])
def test_migrate_and_hand_over_config(env, tmp_path, live):
    inst = env.instance()
    env.driver.spawn(inst, "base")
    text = env.driver.migration_config(inst)
    env.driver.migrate(inst, "node2.example.com", live=live)
    call = [c for c in env.commands() if c[0] == "migrate"][-1]
    if env.spelling == "xm":
        assert call == ["migrate", *(["-l"] if live else []), "web-01", "node2.example.com"]
    else:
        assert call == ["migrate", "-C", env.config_path(), "web-01", "node2.example.com"]
        assert (["pause", "web-01"] in env.commands()) is not live
    assert env.double.migrated()["web-01"]["host"] == "node2.example.com"
    assert not os.path.exists(env.config_path())

    target_conf = make_conf(state_path=str(tmp_path / "t"), boot_file_dirs=[str(tmp_path)],
                            xm__config_dir=str(tmp_path / "target-xen"),
                            xm__toolstack=env.spelling)
    target = env.make_driver(target_conf)
    target.accept_migration(inst, text)
    with pytest.raises(InvalidParameter, match="refusing to write it"):
        target.finalize_migration(env.instance(name="other"), text, success=True)
    target.finalize_migration(inst, text, success=False)
    assert not os.path.exists(target.config_path("web-01"))
    target.finalize_migration(inst, text, success=True)
    with open(target.config_path("web-01")) as f:
        assert f.read() == text
    other = env.instance(name="b")
    env.driver.spawn(other, "base")
    with pytest.raises(InvalidParameter, match="destination"):
        env.driver.migrate(other, "-oProxyCommand=x")
    assert env.driver.instance_exists(other)


def test_migrate_failure_keeps_source(env):
    inst = env.instance()
    env.driver.spawn(inst, "base")
    env.double.fail("migrate", "connection refused")
    with pytest.raises(ToolstackError, match="connection refused"):
        env.driver.migrate(inst, "node2", live=False)
    assert env.driver.get_info(inst).state is PowerState.BLOCKED
    assert os.path.exists(env.config_path())
    with pytest.raises(InstanceNotFound):
        env.driver.migrate(env.instance(name="ghost"), "node2")


def test_hvm_with_vnc_password_is_private(env, tmp_path):
    iso = tmp_path / "install.iso"
    iso.write_bytes(b"iso")
    inst = env.instance(kind=GuestKind.HVM, network_port=5905,
                        params={"vnc_password": "s3cret",
                                "cdrom_image_path": str(iso), "nic_type": "e1000"})
    extra = tmp_path / "data.raw"
    images.create_image("raw", str(extra), "1M")
    env.driver.spawn(inst, "base", block_devices=[BlockDevice(str(extra), readonly=True)])
    mode = stat.S_IMODE(os.stat(env.config_path()).st_mode)
    assert mode == 0o600
    with libxlutil.XlConfig(env.config_path()) as xl:
        assert xl.get_string("vncpasswd") == "s3cret"
        assert xl.get_long("vncdisplay") == 5
        disks = [xl.parse_disk(spec) for spec in xl.get_list("disk")]
    assert [(d.target, d.vdev, d.readwrite, d.is_cdrom) for d in disks] == [
        (env.driver.disk_path(inst), "hda", True, False), (str(extra), "hdb", False, False),
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
def test_host_programs_and_files_are_refused(env, kind, params, message):
    inst = env.instance(kind=kind, params=params)
    with pytest.raises(InvalidParameter, match=message):
        env.driver.describe_spawn(inst, "base")
    with pytest.raises(InvalidParameter, match=message):
        env.driver.spawn(inst, "base")
    assert env.leftovers(inst) == []
    assert not any("create" in command for command in env.commands())


def test_listed_host_programs_reach_the_config(env, tmp_path):
    tools = tmp_path / "xen-tools"
    tools.mkdir()
    for name in ("pygrub", "qemu-dm", "hvmloader"):
        (tools / name).write_bytes(b"#!/bin/true\n")
        (tools / name).chmod(0o755)
    os.symlink(tools / "pygrub", tmp_path / "pygrub-link")
    conf = make_conf(state_path=env.conf.state_path, bootloaders=[str(tmp_path / "pygrub-link")],
                     xm__device_models=[str(tools / "qemu-dm")],
                     xm__hvmloaders=[str(tools / "hvmloader")],
                     xm__config_dir=env.conf.xm.config_dir, xm__log_dir=env.conf.xm.log_dir,
                     xm__toolstack=env.spelling)
    driver = env.make_driver(conf)
    pv = env.instance(params={"bootloader": str(tmp_path / "pygrub-link")})
    hvm = env.instance(name="win", kind=GuestKind.HVM,
                       params={"device_model": str(tools / "qemu-dm"),
                               "hvmloader_path": str(tools / "hvmloader")})
    for inst in (pv, hvm):
        driver.spawn(inst, "base")
    with libxlutil.XlConfig(env.config_path()) as xl:
        assert xl.get_string("bootloader") == str(tools / "pygrub")
    firmware, model = (("kernel", "device_model") if env.spelling == "xm"
                       else ("firmware_override", "device_model_override"))
    with libxlutil.XlConfig(env.config_path("win")) as xl:
        assert xl.get_string(firmware) == str(tools / "hvmloader")
        assert xl.get_string(model) == str(tools / "qemu-dm")


def test_hvm_vnc_is_loopback_unless_a_password_is_set(env):
    open_vnc = env.instance(kind=GuestKind.HVM, params={"vnc_bind_address": "0.0.0.0"})
    with pytest.raises(InvalidParameter, match="VNC beyond loopback needs a password"):
        env.driver.spawn(open_vnc, "base")
    assert env.leftovers(open_vnc) == []
    inst = env.instance(kind=GuestKind.HVM, params={})
    env.driver.spawn(inst, "base")
    with libxlutil.XlConfig(env.config_path()) as xl:
        assert xl.get_string("vnclisten") == "127.0.0.1" and xl.get_string("vncpasswd") is None


def test_get_instance_rebuilds_from_config(env, tmp_path):
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"iso")
    hvm = env.instance(name="win", kind=GuestKind.HVM, network_port=5907,
                       params={"boot_order": "dc", "nic_type": "e1000", "vnc_password": "pw",
                               "cdrom_image_path": str(iso), "pae": "false"})
    pv = env.instance(params={"kernel_path": str(env.kernel), "kernel_args": "ro quiet",
                              "cpu_mask": "0-1"})
    for inst in (pv, hvm):
        env.driver.spawn(inst, "base")
        back = env.driver.get_instance(inst.name)
        assert (back.name, back.uuid, back.kind, back.image) == (
            inst.name, inst.uuid, inst.kind, "base")
        assert back.flavor == inst.flavor
        assert [n.mac for n in back.nics] == [n.mac for n in inst.nics]
        assert back.network_port == inst.network_port
        for key, value in inst.params.items():
            assert back.params[key] == value
        # What was read back renders to the very same file.
        assert env.driver.describe_spawn(back, "base") == env.driver.migration_config(inst)
    with pytest.raises(InstanceNotFound):
        env.driver.get_instance("ghost")


def test_events_reach_listeners(env):
    events = []
    env.driver.register_event_listener(lambda name, event: events.append((name, event)))
    inst = env.instance()
    env.driver.spawn(inst, "base")
    env.driver.pause(inst)
    env.driver.destroy(inst)
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
