"""virt/guest.py: golden documents for a matrix of guests, and bad input refused early."""

import dataclasses
import os
import stat

import libvirt
import pytest

from tests.support.disk import FakeProbe
from tests.support.domain import assert_accepted, assert_valid, define
from virt import guest
from virt import params as contract
from virt.domain import Console, Disk, Domain, Graphics, Interface, Serial
from virt.errors import InvalidParameter
from virt.objects import NIC, BlockDevice, Flavor, GuestKind, Instance

UUIDS = ["11111111-2222-4333-8444-555555555555", "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
         "12345678-9abc-4def-8123-456789abcdef", "0badc0de-0000-4000-8000-000000000001",
         "fedcba98-7654-4321-8fed-cba987654321"]
INSTANCES = "/var/lib/virt-driver/instances"


def kvm_3_disks_2_nics():
    inst = Instance(
        name="web-01", uuid=UUIDS[0], image="debian-12",
        flavor=Flavor(memory_mb=2048, vcpus=4, root_gb=20, name="m1.medium"),
        params={"boot_order": "c", "vnc_bind_address": "127.0.0.1", "vnc_password": "pass&<>",
                "disk_cache": "writeback", "disk_io": "threads"},
        nics=(NIC("52:54:00:00:01:01", bridge="br0"),
              NIC("52:54:00:00:01:02", network="default", model="e1000")))
    disks = [BlockDevice(f"{INSTANCES}/{UUIDS[0]}/disk", "qcow2"),
             BlockDevice(f"{INSTANCES}/{UUIDS[0]}/data", "raw"),
             BlockDevice(f"{INSTANCES}/{UUIDS[0]}/scratch", "qcow2", bus="scsi")]
    return inst, disks, dict(virt_type="kvm", hypervisor_version=7_002_000, machine="pc",
                             console_log=f"{INSTANCES}/{UUIDS[0]}/console.log")


def qemu_direct_kernel_user_net():
    inst = Instance(
        name="demo", uuid=UUIDS[1], image="demo",
        flavor=Flavor(memory_mb=128, vcpus=1, root_gb=1, name="tiny"),
        params={"kernel_path": "/srv/demo/vmlinuz", "initrd_path": "/srv/demo/initrd.img",
                "kernel_args": "console=ttyS0 virt_demo=wait quiet a&b<c"},
        nics=(NIC("52:54:00:00:02:01"),))
    disks = [BlockDevice(f"{INSTANCES}/{UUIDS[1]}/disk", "qcow2")]
    return inst, disks, dict(virt_type="qemu", hypervisor_version=7_002_000,
                             machine="pc", console_log=f"{INSTANCES}/{UUIDS[1]}/console.log")


def xen_pv_pygrub():
    inst = Instance(
        name="pv-guest", uuid=UUIDS[2], image="centos-5", kind=GuestKind.PV,
        flavor=Flavor(memory_mb=1024, vcpus=2, root_gb=10, name="xen.pv"),
        params={"bootloader": "/usr/lib/xen/bin/pygrub",
                "bootloader_args": "--kernel=/boot/vmlinuz --args=\"root=/dev/xvda1\""},
        nics=(NIC("00:16:3e:00:00:01", bridge="xenbr0"),))
    disks = [BlockDevice(f"{INSTANCES}/{UUIDS[2]}/disk", "raw"),
             BlockDevice(f"{INSTANCES}/{UUIDS[2]}/swap", "raw")]
    return inst, disks, dict(virt_type="xen", hypervisor_version=4_001_003,
                             probe=FakeProbe(xend=True, tap_ok=True))


def xen_hvm_cdrom_vnc():
    inst = Instance(
        name="hvm-guest", uuid=UUIDS[3], image="win2k8", network_port=5907,
        flavor=Flavor(memory_mb=4096, vcpus=2, root_gb=40, name="xen.hvm"),
        params={"boot_order": "dc", "cdrom_image_path": "/srv/iso/install.iso",
                "vnc_bind_address": "0.0.0.0", "vnc_password": "hvm-pw", "use_localtime": "true",
                "apic": "false"},
        nics=(NIC("00:16:3e:00:00:02", bridge="xenbr0", model="e1000"),))
    disks = [BlockDevice(f"{INSTANCES}/{UUIDS[3]}/disk", "qcow2"),
             BlockDevice(f"{INSTANCES}/{UUIDS[3]}/data", "raw")]
    return inst, disks, dict(virt_type="xen", hypervisor_version=4_017_000,
                             probe=FakeProbe(xend=False, tap_ok=False),
                             console_log=f"{INSTANCES}/{UUIDS[3]}/console.log")


def qemu_30_virtio_disks():
    inst = Instance(name="many-disks", uuid=UUIDS[4], image="cirros",
                    flavor=Flavor(memory_mb=512, vcpus=1, root_gb=1, name="m1.tiny"),
                    nics=(NIC("52:54:00:00:03:01", bridge="br0"),))
    disks = [BlockDevice(f"{INSTANCES}/{UUIDS[4]}/disk", "qcow2")] + [
        BlockDevice(f"{INSTANCES}/{UUIDS[4]}/extra{i:02d}", "raw") for i in range(1, 30)]
    return inst, disks, dict(virt_type="qemu", hypervisor_version=7_002_000)


MATRIX = {f.__name__: f for f in (kvm_3_disks_2_nics, qemu_direct_kernel_user_net,
                                  xen_pv_pygrub, xen_hvm_cdrom_vnc, qemu_30_virtio_disks)}


def build(case):
    inst, disks, kwargs = case()
    kwargs = dict(kwargs)
    virt_type, version = kwargs.pop("virt_type"), kwargs.pop("hypervisor_version")
    return inst, guest.build_domain(inst, disks, inst.nics, virt_type, version, **kwargs)


@pytest.mark.parametrize("name", MATRIX)
def test_golden_document(name, golden, test_conn):  # noqa: F811
    inst, domain = build(MATRIX[name])
    xml = domain.to_xml()
    golden(f"domain/{name}.xml", xml)
    assert_valid(xml)
    assert Domain.from_xml(xml) == domain
    dom = define(test_conn, xml)
    try:
        desc = dom.XMLDesc()
        rebuilt = guest.instance_from_domain(Domain.from_xml(desc))
        assert (rebuilt.name, rebuilt.uuid, rebuilt.flavor, rebuilt.image, rebuilt.kind) \
            == (inst.name, inst.uuid, inst.flavor, inst.image, inst.kind)
        assert [n.mac for n in rebuilt.nics] == [n.mac for n in inst.nics]
        # Every param rides in the metadata but the VNC password, which only
        # the secure XML carries (in <graphics>).
        assert rebuilt.params == {k: v for k, v in inst.params.items() if k != "vnc_password"}
        secure = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
        assert guest.instance_from_domain(secure).params == inst.params
    finally:
        dom.undefine()


def test_kvm_matrix_details():
    _, domain = build(kvm_3_disks_2_nics)
    disks = domain.devices_of(Disk)
    assert [(d.target_dev, d.target_bus, d.driver_type) for d in disks] == [
        ("vda", "virtio", "qcow2"), ("vdb", "virtio", "raw"), ("sda", "scsi", "qcow2")]
    assert {(d.driver_name, d.driver_cache, d.driver_io) for d in disks} == {
        ("qemu", "writeback", "threads")}
    assert [(i.type, i.source, i.model) for i in domain.devices_of(Interface)] == [
        ("bridge", "br0", "virtio"), ("network", "default", "e1000")]
    assert domain.features.acpi and domain.os.boot_devices == ["hd"]
    assert domain.devices_of(Serial)[0].log_file.endswith("/console.log")
    assert domain.devices_of(Console)[0].target_type == "serial"
    assert domain.devices_of(Graphics)[0].passwd == "pass&<>"


def test_xen_pv_details():
    _, domain = build(xen_pv_pygrub)
    assert domain.os.type == "xen" and domain.os.kernel is None
    assert domain.bootloader == "/usr/lib/xen/bin/pygrub"
    assert [(d.target_dev, d.driver_name) for d in domain.devices_of(Disk)] == [
        ("xvda", "tap2"), ("xvdb", "tap2")]
    assert domain.features is None
    assert domain.devices_of(Console)[0].target_type == "xen"


def test_xen_hvm_details():
    _, domain = build(xen_hvm_cdrom_vnc)
    assert domain.os.loader == guest.XEN_HVMLOADER
    assert domain.os.boot_devices == ["cdrom", "hd"]
    assert [(d.target_dev, d.device, d.driver_name) for d in domain.devices_of(Disk)] == [
        ("hda", "disk", "qemu"), ("hdb", "disk", "qemu"), ("hdc", "cdrom", "qemu")]
    assert (domain.features.acpi, domain.features.apic, domain.features.pae) == \
        (True, False, True)
    assert domain.clock.offset == "localtime"
    vnc = domain.devices_of(Graphics)[0]
    assert (vnc.listen, vnc.port, vnc.autoport) == ("0.0.0.0", 5907, False)


@pytest.mark.parametrize("virt_type, params, listen", [
    ("xen", {}, "127.0.0.1"),                          # Xen HVM always has VNC: loopback
    ("kvm", {"vnc_bind_address": "::1"}, "::1"),
    ("kvm", {"vnc_bind_address": "127.0.0.2"}, "127.0.0.2"),
    ("kvm", {"vnc_bind_address": "0.0.0.0", "vnc_password": "pw"}, "0.0.0.0"),
])
def test_vnc_is_loopback_unless_a_password_is_set(virt_type, params, listen):
    inst = Instance(name="vnc", uuid=UUIDS[0], params=params)
    domain = guest.build_domain(inst, [BlockDevice("/d", "raw")], (), virt_type, 4_017_000)
    assert domain.devices_of(Graphics)[0].listen == listen


def test_thirty_virtio_disks_continue_past_z():
    _, domain = build(qemu_30_virtio_disks)
    targets = [d.target_dev for d in domain.devices_of(Disk)]
    assert targets[24:] == ["vdy", "vdz", "vdaa", "vdab", "vdac", "vdad"]


def test_xen_pv_direct_kernel():
    inst = Instance(name="pvk", kind=GuestKind.PV,
                    params={"kernel_path": "/boot/vmlinuz-xen", "initrd_path": "/boot/initrd",
                            "kernel_args": "root=/dev/xvda1 ro"})
    domain = guest.build_domain(inst, [BlockDevice("/var/lib/x/disk")], [], "xen", 4_002_000,
                                probe=FakeProbe(xend=False, tap_ok=False))
    assert (domain.os.kernel, domain.os.initrd, domain.os.cmdline) == (
        "/boot/vmlinuz-xen", "/boot/initrd", "root=/dev/xvda1 ro")
    assert domain.bootloader is None
    assert domain.devices_of(Disk)[0].driver_name == "qemu"
    assert_accepted(domain.to_xml())


def test_block_device_is_detected(tmp_path):
    node = tmp_path / "blk"
    os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 0))
    inst = Instance(name="pvb", kind=GuestKind.PV, params={"bootloader": "/usr/bin/pygrub"})
    domain = guest.build_domain(inst, [BlockDevice(str(node)), BlockDevice("/x/file.img")],
                                [], "xen", 4_002_000, probe=FakeProbe(xend=False, tap_ok=False))
    blk, file_ = domain.devices_of(Disk)
    assert (blk.type, blk.driver_name, blk.source) == ("block", "phy", str(node))
    assert (file_.type, file_.driver_name) == ("file", "qemu")
    assert f'<source dev="{node}"/>' in domain.to_xml()
    assert_accepted(domain.to_xml())


def test_pty_consoles_without_console_log():
    inst = Instance(name="nolog")
    domain = guest.build_domain(inst, [BlockDevice("/d")], [], "qemu", 0)
    assert [(c.type, c.path) for c in domain.devices_of(Serial) + domain.devices_of(Console)] \
        == [("pty", None), ("pty", None)]
    assert domain.devices_of(Graphics) == []
    assert_accepted(domain.to_xml())


def test_instance_from_foreign_domain_is_refused():
    with pytest.raises(InvalidParameter, match="no virt-driver metadata"):
        guest.instance_from_domain(Domain(type="kvm", name="theirs", memory_kib=1024))


def test_every_param_the_domain_expresses_is_in_the_contract():
    assert set(guest.SUPPORT) <= set(contract.BY_NAME)
    for name, kinds in guest.SUPPORT.items():
        assert kinds <= contract.BY_NAME[name].kinds, name


# --- bad input: refused with the field named, before any XML exists ----------------

def _base():
    return Instance(name="ok", flavor=Flavor(memory_mb=256, vcpus=1, root_gb=1, name="f"),
                    nics=(NIC("52:54:00:00:00:01"),))


def _with(**changes):
    return dataclasses.replace(_base(), **changes)


def _params(**params):
    return _with(params=params)


def _flavor(**changes):
    return _with(flavor=dataclasses.replace(_base().flavor, **changes))


DISK = [BlockDevice("/var/lib/x/disk", "qcow2")]
RAW = [BlockDevice("/var/lib/x/disk", "raw")]
PV = dict(kind=GuestKind.PV)

BAD = [
    # (instance, disks, nics or None for instance.nics, keyword overrides, message pattern)
    (_with(name="bad name"), DISK, None, {}, r"instance name 'bad name': use 1 to 63"),
    (_with(name="-lead"), DISK, None, {}, "instance name '-lead'"),
    (_with(name="x" * 64), DISK, None, {}, "instance name"),
    (_with(name="a/b"), DISK, None, {}, "instance name 'a/b'"),
    (_with(name="<x>"), DISK, None, {}, "instance name '<x>'"),
    (_with(uuid="not-a-uuid"), DISK, None, {}, "instance uuid 'not-a-uuid'"),
    (_with(image="../etc/passwd"), DISK, None, {}, "instance image"),
    (_flavor(memory_mb=8), DISK, None, {}, "flavor memory_mb 8: use a whole number from 16"),
    (_flavor(memory_mb=5 * 1024 * 1024), DISK, None, {}, "flavor memory_mb"),
    (_flavor(vcpus=0), DISK, None, {}, "flavor vcpus 0"),
    (_flavor(vcpus=257), DISK, None, {}, "flavor vcpus 257"),
    (_flavor(vcpus=True), DISK, None, {}, "flavor vcpus True"),
    (_flavor(name="m1\nsmall"), DISK, None, {}, "flavor name"),
    (_with(network_port=80), DISK, None, {}, "network_port 80"),
    (_params(kernel_path="vmlinuz"), DISK, None, {}, r"params\['kernel_path'\] 'vmlinuz'"),
    (_params(kernel_path="/k", initrd_path="boot/initrd"), DISK, None, {},
     r"params\['initrd_path'\] 'boot/initrd': use an absolute path"),
    (_params(initrd_path="/i"), DISK, None, {}, r"initrd_path.*kernel_path'\] too"),
    (_params(kernel_args="x=1"), DISK, None, {}, r"kernel_args.*kernel_path'\] too"),
    (_params(kernel_path="/k", kernel_args="a\x00b"), DISK, None, {}, r"kernel_args"),
    (_params(kernel_path="/k", kernel_args="a\nb"), DISK, None, {}, r"kernel_args"),
    (_params(boot_order="xz"), DISK, None, {}, r"boot_order'\] 'xz': use one or more of a, c"),
    (_params(boot_order="cc"), DISK, None, {}, r"boot_order'\] 'cc'.*at most once"),
    (_params(vnc_bind_address="localhost"), DISK, None, {}, r"vnc_bind_address'\] 'localhost'"),
    (_params(vnc_bind_address="300.1.1.1"), DISK, None, {}, r"vnc_bind_address"),
    (_params(vnc_bind_address="0.0.0.0'/>"), DISK, None, {}, r"vnc_bind_address"),
    (_params(vnc_bind_address="::1", vnc_password="123456789"), DISK, None, {},
     r"vnc_password.*1 to 8"),
    (_params(vnc_password="pw"), DISK, None, {}, r"vnc_password.*vnc_bind_address'\] too"),
    (_params(vnc_bind_address="0.0.0.0"), DISK, None, {},
     r"vnc_bind_address'\] '0.0.0.0': VNC beyond loopback needs a password"),
    (_params(vnc_bind_address="192.0.2.7"), DISK, None, {}, r"needs a password"),
    (_params(vnc_bind_address="::"), DISK, None, {}, r"needs a password"),
    (_params(vnc_bind_address="0.0.0.0"), RAW, None, dict(virt_type="xen"), r"needs a password"),
    (_params(use_localtime="maybe"), DISK, None, {}, r"use_localtime'\] 'maybe': use true"),
    (_params(disk_cache="fast"), DISK, None, {}, r"disk_cache'\] 'fast': use one of default"),
    (_params(boot_order=3), DISK, None, {}, r"boot_order'\] 3: use a string"),
    (_params(bootloader="/usr/bin/pygrub"), DISK, None, {},
     r"params\['bootloader'\] is not a known param for hvm guests: use one of kernel_image"),
    (_params(root_path="/dev/vda1"), DISK, None, {}, r"root_path'\] is not a known param"),
    (_params(localtime="true"), DISK, None, {}, r"localtime'\] is no longer read: pass use_"),
    (_params(kernle_path="/k"), DISK, None, {}, r"kernle_path'\] is not a known param"),
    (_base(), DISK, [NIC("52:54:00:zz:00:01")], {}, r"nics\[0\]\.mac '52:54:00:zz:00:01'"),
    (_base(), DISK, [NIC("525400000001")], {}, r"nics\[0\]\.mac"),
    (_base(), DISK, [NIC("52:54:00:00:00:01"), NIC("52:54:00:00:00:02", bridge="br0",
                                                    network="n")], {}, r"nics\[1\]: give a"),
    (_base(), DISK, [NIC("52:54:00:00:00:01", bridge="b" * 16)], {}, r"nics\[0\]\.bridge"),
    (_base(), DISK, [NIC("52:54:00:00:00:01", network="my net")], {}, r"nics\[0\]\.network"),
    (_base(), DISK, [NIC("52:54:00:00:00:01", model="virtio'")], {}, r"nics\[0\]\.model"),
    (_base(), [BlockDevice("disk.qcow2")], None, {}, r"disks\[0\]\.path 'disk.qcow2'"),
    (_base(), DISK + [BlockDevice("/d", "qcow3")], None, {}, r"disks\[1\]\.fmt 'qcow3'"),
    (_base(), [BlockDevice("/d", device_type="floppy")], None, {}, r"disks\[0\]\.device_type"),
    (_base(), [BlockDevice("/d", bus="floppy")], None, {}, r"disk bus 'floppy'"),
    (_base(), [], None, {}, r"disks: give at least the root disk"),
    (_base(), DISK, None, dict(virt_type="lxc"), r"virt_type 'lxc': use one of kvm, qemu, xen"),
    (_with(**PV), DISK, None, {}, r"instance kind pv: qemu guests are hvm"),
    (_with(**PV), DISK, None, dict(virt_type="xen"), r"exactly one of kernel_path or bootloader"),
    (_with(kind=GuestKind.PV, params={"kernel_path": "/k", "bootloader": "/b"}), DISK, None,
     dict(virt_type="xen"), r"exactly one"),
    (_with(kind=GuestKind.PV, params={"kernel_path": "/k"}), RAW, None,
     dict(virt_type="xen", console_log="/var/log/c.log"), r"console_log: Xen PV"),
    (_with(kind=GuestKind.PV, params={"kernel_path": "/k"}), RAW, None,
     dict(virt_type="xen", machine="pc"), r"machine: Xen PV"),
    (_params(kernel_path="/k"), RAW, None, dict(virt_type="xen"), r"hvmloader"),
    (_base(), [BlockDevice(f"/d{i}") for i in range(5)], None,
     dict(virt_type="xen"), r"disk 5 on bus 'ide'.*at most 4"),
    (_params(cdrom_image_path="/iso"), [BlockDevice(f"/d{i}") for i in range(4)], None,
     dict(virt_type="xen"), r"bus 'ide'.*at most 4"),
    (_base(), [BlockDevice("/d", "qcow2")], None,
     dict(virt_type="xen", hypervisor_version=4_001_000), r"Xen 'file' driver reads raw"),
    (_base(), DISK, None, dict(console_log="console.log"), r"console_log 'console.log'"),
    (_base(), DISK, None, dict(arch="x86"), r"arch 'x86': use one of x86_64"),
    (_base(), DISK, None, dict(machine="pc q35"), r"machine 'pc q35'"),
    (_base(), DISK, None, dict(hypervisor_version="4.2.0"), r"hypervisor_version '4.2.0'"),
    (_base(), DISK, None, dict(hypervisor_version=-1), r"hypervisor_version -1"),
]


@pytest.mark.parametrize("inst, disks, nics, overrides, message", BAD,
                         ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_is_refused_naming_the_field(inst, disks, nics, overrides, message):
    kwargs = dict(virt_type="qemu", hypervisor_version=7_002_000,
                  probe=FakeProbe(xend=True, tap_ok=False))
    kwargs.update(overrides)
    virt_type, version = kwargs.pop("virt_type"), kwargs.pop("hypervisor_version")
    with pytest.raises(InvalidParameter, match=message):
        guest.build_domain(inst, disks, inst.nics if nics is None else nics,
                           virt_type, version, **kwargs)


def test_good_base_case_builds():
    """The BAD cases differ from this one by one field; it must build."""
    domain = guest.build_domain(_base(), DISK, _base().nics, "qemu", 7_002_000)
    assert_accepted(domain.to_xml())


def test_the_owner_rides_in_the_metadata():
    inst, disks, kwargs = kvm_3_disks_2_nics()
    kwargs = dict(kwargs)
    virt_type, version = kwargs.pop("virt_type"), kwargs.pop("hypervisor_version")
    domain = guest.build_domain(inst, disks, inst.nics, virt_type, version,
                                owner="/srv/instances", **kwargs)
    assert Domain.from_xml(domain.to_xml()).metadata.owner == "/srv/instances"
    assert build(kvm_3_disks_2_nics)[1].metadata.owner is None  # no owner: as 0.1 wrote


PORT_ID = "5a0c3a8e-7d0b-4b6e-9b55-2f3c0d1e2a10"
HOST_SIDE_NICS = (
    NIC("52:54:00:00:00:11", tap="tap5a0c3a8e-7d"),
    NIC("52:54:00:00:00:12", bridge="br-int", tap="tap5a0c3a8e-7e",
        ovs_interface_id=PORT_ID, mtu=1450),
    NIC("52:54:00:00:00:13", bridge="br0", mtu=9000),
)


def test_tap_ovs_port_and_mtu_reach_the_xml_and_come_back(test_conn):  # noqa: F811
    inst = _with(nics=HOST_SIDE_NICS)
    xml = guest.build_domain(inst, [BlockDevice("/var/lib/vd/disk", "qcow2")], inst.nics,
                             "kvm", 8_000_000).to_xml()
    assert_valid(xml)
    ifaces = Domain.from_xml(xml).devices_of(Interface)
    assert [(i.type, i.target_dev, i.mtu) for i in ifaces] == [
        ("ethernet", "tap5a0c3a8e-7d", None), ("bridge", "tap5a0c3a8e-7e", 1450),
        ("bridge", None, 9000)]
    assert (ifaces[1].virtualport.type, ifaces[1].virtualport.interface_id) \
        == ("openvswitch", PORT_ID)
    define(test_conn, xml).undefine()
    # A hard reboot rebuilds the NICs from the definition.
    rebuilt = guest.instance_from_domain(Domain.from_xml(xml))
    assert rebuilt.nics == tuple(dataclasses.replace(n, model="virtio") for n in HOST_SIDE_NICS)


@pytest.mark.parametrize(("nic", "message"), [
    (NIC("52:54:00:00:00:11", tap="vnet3"), "not starting with vnet"),
    (NIC("52:54:00:00:00:11", tap="a-tap-name-too-long"), "1 to 15 letters"),
    (NIC("52:54:00:00:00:11", tap="tap0", ovs_interface_id=PORT_ID), "Open vSwitch bridge"),
    (NIC("52:54:00:00:00:11", bridge="br-int", ovs_interface_id="port-1"), "use a UUID"),
    (NIC("52:54:00:00:00:11", bridge="br0", mtu=20), "from 68 to 65535"),
    (NIC("52:54:00:00:00:11", mtu=1500), "need a bridge or a tap"),
])
def test_bad_host_side_of_a_nic_is_refused(nic, message):
    inst = _with(nics=(nic,))
    with pytest.raises(InvalidParameter, match=message):
        guest.build_domain(inst, [BlockDevice("/var/lib/vd/disk", "qcow2")], inst.nics,
                           "kvm", 8_000_000)
