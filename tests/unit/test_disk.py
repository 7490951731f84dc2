"""virt/disk.py: versions, the disk driver name per hypervisor, buses and target names."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from oslo_concurrency import processutils

from tests.support.disk import FakeProbe
from virt import disk
from virt.errors import InvalidParameter

V = disk.version_to_int


# --- versions ---------------------------------------------------------------

@pytest.mark.parametrize("text, number", [
    ("4.2.0", 4_002_000), ("4.0.1", 4_000_001), ("0.0.0", 0), ("10.11.12", 10_011_012),
    ("4.2", 4_002_000), ("4", 4_000_000), ("999.999.999", 999_999_999),
])
def test_version_to_int(text, number):
    assert disk.version_to_int(text) == number


@pytest.mark.parametrize("number, text", [
    (4_002_000, "4.2.0"), (4_000_001, "4.0.1"), (0, "0.0.0"), (9_000_000, "9.0.0"),
    (1_234_567_890, "1234.567.890"),
])
def test_version_from_int(number, text):
    assert disk.version_from_int(number) == text


@pytest.mark.parametrize("bad", ["", "4.2.0.1", "4.x", "-1.0", "4.1000.0", " . ", None, 4002000])
def test_version_to_int_refuses_malformed(bad):
    with pytest.raises(InvalidParameter, match="MAJOR"):
        disk.version_to_int(bad)


@pytest.mark.parametrize("bad", [-1, "4.2.0", True, 1.5])
def test_version_from_int_refuses_malformed(bad):
    with pytest.raises(InvalidParameter):
        disk.version_from_int(bad)


@given(st.integers(0, 999), st.integers(0, 999), st.integers(0, 999))
def test_version_round_trip(major, minor, micro):
    text = f"{major}.{minor}.{micro}"
    assert disk.version_from_int(disk.version_to_int(text)) == text


# --- pick_disk_driver_name --------------------------------------------------

@pytest.mark.parametrize("virt_type", ["kvm", "qemu"])
@pytest.mark.parametrize("block", [False, True])
def test_kvm_and_qemu_use_qemu_without_probing(virt_type, block):
    probe = FakeProbe(xend=True, tap_ok=True)
    assert disk.pick_disk_driver_name(virt_type, V("4.2.0"), block, probe) == "qemu"
    assert probe.asked == []


@pytest.mark.parametrize("version", ["3.4.0", "4.0.0", "4.0.1", "4.1.5", "4.2.0", "4.17.0"])
def test_xen_block_device_is_phy(version):
    probe = FakeProbe(xend=False, tap_ok=True)
    assert disk.pick_disk_driver_name("xen", V(version), True, probe) == "phy"
    assert probe.asked == []


@pytest.mark.parametrize("version", ["4.2.0", "4.2.1", "4.17.0"])
def test_xen_file_from_4_2_without_xend_is_qemu(version):
    probe = FakeProbe(xend=False, tap_ok=True)
    assert disk.pick_disk_driver_name("xen", V(version), False, probe) == "qemu"
    assert probe.asked == ["xend"]


@pytest.mark.parametrize("version, xend, tap_ok, expected", [
    # below 4.2.0 xend does not matter: blktap decides
    ("4.1.9", False, True, "tap2"),
    ("4.1.0", True, True, "tap2"),
    ("4.0.1", False, True, "tap2"),
    ("4.0.0", False, True, "tap"),
    ("3.4.3", True, True, "tap"),
    ("4.1.9", False, False, "file"),
    ("4.0.0", False, False, "file"),
    # 4.2.0 and later with xend running: still the blktap path
    ("4.2.0", True, True, "tap2"),
    ("4.2.0", True, False, "file"),
    ("4.5.0", True, True, "tap2"),
])
def test_xen_file_blktap_path(version, xend, tap_ok, expected):
    probe = FakeProbe(xend=xend, tap_ok=tap_ok)
    assert disk.pick_disk_driver_name("xen", V(version), False, probe) == expected
    assert "tap-ctl" in probe.asked


@pytest.mark.parametrize("virt_type", ["lxc", "uml", "parallels", ""])
def test_other_virt_types_get_no_driver_name(virt_type):
    probe = FakeProbe(xend=False, tap_ok=True)
    assert disk.pick_disk_driver_name(virt_type, V("4.2.0"), False, probe) is None
    assert probe.asked == []


# --- HostProbe: the real commands, injected runner ------------------------------

class RecordingExecute:
    """An execute() double with scripted outcomes per command, counting calls."""

    def __init__(self, outcomes):
        self.outcomes = outcomes
        self.calls: list[tuple] = []

    def __call__(self, *argv, **kwargs):
        self.calls.append(argv)
        outcome = self.outcomes[argv[0]]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def test_host_probe_reads_and_caches_answers():
    execute = RecordingExecute({"xend": ("", ""), "tap-ctl": ("ok\n", "")})
    probe = disk.HostProbe(execute)
    for _ in range(3):
        assert probe.xend_running() is True
        assert probe.tap_ctl_ok() is True
    assert execute.calls == [("xend", "status"), ("tap-ctl", "check")]


@pytest.mark.parametrize("xend_outcome", [
    processutils.ProcessExecutionError(exit_code=3, cmd="xend status"),
    FileNotFoundError(2, "No such file or directory", "xend"),
])
def test_host_probe_xend_failing_or_missing_means_not_running(xend_outcome):
    probe = disk.HostProbe(RecordingExecute({"xend": xend_outcome}))
    assert probe.xend_running() is False


@pytest.mark.parametrize("tap_outcome", [
    ("error: blktap not loaded\n", ""),
    ("", "ok"),
    FileNotFoundError(2, "No such file or directory", "tap-ctl"),
])
def test_host_probe_tap_ctl_not_ok(tap_outcome):
    probe = disk.HostProbe(RecordingExecute({"tap-ctl": tap_outcome}))
    assert probe.tap_ctl_ok() is False


def test_host_probe_on_this_host_runs_the_real_commands():
    # Neither xend nor tap-ctl is installed here: both answer False, no error.
    probe = disk.HostProbe()
    assert probe.xend_running() is False
    assert probe.tap_ctl_ok() is False
    assert disk.pick_disk_driver_name("xen", V("4.2.0"), False, probe) == "qemu"
    assert disk.pick_disk_driver_name("xen", V("4.1.0"), False, probe) == "file"


def test_default_probe_is_shared_per_host():
    assert disk.host_probe() is disk.host_probe()


# --- driver type ----------------------------------------------------------------

@pytest.mark.parametrize("driver, fmt, expected", [
    ("qemu", "qcow2", "qcow2"), ("qemu", "raw", "raw"), ("tap2", "qcow2", "qcow2"),
    ("phy", "raw", "raw"), ("file", "raw", "raw"), (None, "qcow2", None),
])
def test_pick_disk_driver_type(driver, fmt, expected):
    assert disk.pick_disk_driver_type(driver, fmt) == expected


@pytest.mark.parametrize("driver", ["phy", "file"])
def test_raw_only_drivers_refuse_qcow2(driver):
    with pytest.raises(InvalidParameter, match=f"'qcow2'.*{driver}.*raw"):
        disk.pick_disk_driver_type(driver, "qcow2")


# --- target names ------------------------------------------------------------------

@pytest.mark.parametrize("prefix, index, name", [
    ("vd", 0, "vda"), ("vd", 1, "vdb"), ("vd", 25, "vdz"), ("vd", 26, "vdaa"),
    ("vd", 27, "vdab"), ("vd", 51, "vdaz"), ("vd", 52, "vdba"), ("vd", 701, "vdzz"),
    ("vd", 702, "vdaaa"), ("xvd", 0, "xvda"), ("sd", 29, "sdad"), ("hd", 3, "hdd"),
])
def test_disk_target_follows_kernel_naming(prefix, index, name):
    assert disk.disk_target(prefix, index) == name
    assert disk.target_index(name, prefix) == index


@given(st.integers(0, 100_000))
def test_target_index_inverts_disk_target(index):
    assert disk.target_index(disk.disk_target("vd", index), "vd") == index


@pytest.mark.parametrize("bad", [-1, True, "1", 1.0])
def test_disk_target_refuses_bad_index(bad):
    with pytest.raises(InvalidParameter, match="disk index"):
        disk.disk_target("vd", bad)


@pytest.mark.parametrize("name", ["sda", "vd", "vd1", "vdA", ""])
def test_target_index_refuses_foreign_names(name):
    with pytest.raises(InvalidParameter, match="disk target"):
        disk.target_index(name, "vd")


@pytest.mark.parametrize("bus, last_index, last_name", [
    ("ide", 3, "hdd"), ("fdc", 1, "fdb"), ("virtio", 701, "vdzz"), ("xen", 701, "xvdzz"),
    ("scsi", 701, "sdzz"), ("sata", 701, "sdzz"),
])
def test_bus_limits(bus, last_index, last_name):
    assert disk.target_for(bus, last_index) == last_name
    with pytest.raises(InvalidParameter, match=f"bus '{bus}'.*at most {last_index + 1}"):
        disk.target_for(bus, last_index + 1)


def test_unknown_bus_is_refused():
    with pytest.raises(InvalidParameter, match="disk bus 'floppy': use one of"):
        disk.target_for("floppy", 0)


@pytest.mark.parametrize("virt_type, hvm, device, machine, bus", [
    ("kvm", True, "disk", None, "virtio"), ("qemu", True, "disk", "pc", "virtio"),
    ("kvm", True, "cdrom", "pc", "ide"), ("qemu", True, "cdrom", "q35", "sata"),
    ("qemu", True, "cdrom", "pc-q35-7.2", "sata"), ("xen", False, "disk", None, "xen"),
    ("xen", True, "disk", None, "ide"), ("xen", True, "cdrom", None, "ide"),
])
def test_default_bus(virt_type, hvm, device, machine, bus):
    assert disk.default_bus(virt_type, hvm, device, machine) == bus


def test_default_bus_refuses_unknown_virt_type():
    with pytest.raises(InvalidParameter, match="virt_type 'lxc'"):
        disk.default_bus("lxc", True)


def test_assign_targets_virtio_past_z():
    targets = disk.assign_targets([("virtio", "disk")] * 30)
    assert targets[:3] == ["vda", "vdb", "vdc"]
    assert targets[25:] == ["vdz", "vdaa", "vdab", "vdac", "vdad"]
    assert len(set(targets)) == 30


def test_assign_targets_ide_cdrom_on_hdc():
    pairs = [("ide", "disk"), ("ide", "cdrom"), ("ide", "disk"), ("ide", "disk")]
    assert disk.assign_targets(pairs) == ["hda", "hdc", "hdb", "hdd"]
    assert disk.assign_targets([("ide", "disk"), ("ide", "disk"), ("ide", "cdrom")]) \
        == ["hda", "hdb", "hdc"]


def test_assign_targets_ide_full():
    with pytest.raises(InvalidParameter, match="bus 'ide'.*at most 4.*hda to hdd"):
        disk.assign_targets([("ide", "disk")] * 4 + [("ide", "cdrom")])


def test_assign_targets_share_sd_namespace():
    pairs = [("virtio", "disk"), ("scsi", "disk"), ("sata", "cdrom"), ("usb", "disk"),
             ("virtio", "disk")]
    assert disk.assign_targets(pairs) == ["vda", "sda", "sdb", "sdc", "vdb"]
