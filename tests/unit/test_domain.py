"""virt/domain.py: every element both ways, libvirt's schema, libvirt's own XMLDesc.

Helpers at the top (schema check, test:///default definition) are shared
with test_guest.py.
"""

import dataclasses
import functools
import uuid

import libvirt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from virt.domain import (
    METADATA_NS,
    OS,
    Clock,
    Console,
    Disk,
    Domain,
    Features,
    Graphics,
    Input,
    InstanceMetadata,
    Interface,
    RawXML,
    Serial,
    Video,
)
from virt.errors import InvalidParameter
from virt.objects import Flavor, GuestKind

SCHEMA = "/usr/share/libvirt/schemas/domain.rng"


@functools.cache
def _schema() -> etree.RelaxNG:
    return etree.RelaxNG(file=SCHEMA)


def assert_valid(xml: str) -> None:
    """Validate against libvirt's own RelaxNG schema, with its complaint on failure."""
    schema = _schema()
    if not schema.validate(etree.fromstring(xml.encode())):
        pytest.fail(f"not valid per {SCHEMA}:\n{schema.error_log}\n{xml}")


@functools.cache
def _shared_test_conn() -> libvirt.virConnect:
    return libvirt.open("test:///default")


def assert_accepted(xml: str) -> None:
    """Valid per libvirt's schema, and defined (then undefined) in test:///default."""
    assert_valid(xml)
    dom = _shared_test_conn().defineXML(xml)
    dom.undefine()


@pytest.fixture
def test_conn():
    """libvirt's built-in test driver; it accepts domain types kvm, qemu and xen as given."""
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


def define(conn, xml: str):
    """Define in test:///default and return the domain; the caller undefines."""
    return conn.defineXML(xml)


def full_domain() -> Domain:
    """A domain that sets every field of every element."""
    uid = "0f0e0d0c-0b0a-4908-8706-050403020100"
    return Domain(
        type="qemu", name="every-field", uuid=uid, memory_kib=262144,
        current_memory_kib=131072, vcpus=2,
        os=OS(type="hvm", arch="x86_64", machine="pc", loader="/usr/share/seabios/bios.bin",
              kernel="/boot/vmlinuz", initrd="/boot/initrd.img",
              cmdline="console=ttyS0 root=/dev/vda a&b<c>\"d'", boot_devices=["hd", "cdrom"]),
        features=Features(acpi=True, apic=True, pae=True),
        clock=Clock(offset="localtime"),
        on_poweroff="destroy", on_reboot="restart", on_crash="preserve",
        metadata=InstanceMetadata(instance_uuid=uid, image="cirros-0.6",
                                  flavor=Flavor(memory_mb=256, vcpus=2, root_gb=3, name="m1.x"),
                                  kind=GuestKind.HVM),
        devices=[
            Disk(type="file", device="disk", source="/var/lib/vd/a b&c.qcow2",
                 target_dev="vda", target_bus="virtio", driver_name="qemu",
                 driver_type="qcow2", driver_cache="none", driver_io="native",
                 serial="SER-1"),
            Disk(type="block", device="disk", source="/dev/loop0", target_dev="sda",
                 target_bus="scsi", driver_name="qemu", driver_type="raw", readonly=True),
            Disk(type="file", device="cdrom", source="/iso/boot.iso", target_dev="hdc",
                 target_bus="ide", driver_name="qemu", driver_type="raw", readonly=True),
            Interface(type="bridge", mac="52:54:00:00:00:01", source="br0", model="virtio",
                      target_dev="vnet7"),
            Interface(type="network", mac="52:54:00:00:00:02", source="default",
                      model="e1000"),
            Interface(type="user", mac="52:54:00:00:00:03"),
            Serial(type="file", path="/var/log/vd/console.log", target_port=0),
            Console(type="file", path="/var/log/vd/console.log", target_type="serial",
                    target_port=0),
            Input(type="tablet", bus="usb"),
            Graphics(listen="127.0.0.1", port=5901, autoport=False, passwd="s3cr&t"),
            Video(model="cirrus", vram=16384, heads=1),
        ])


# --- each element both ways ----------------------------------------------------

ELEMENTS = [
    InstanceMetadata(),
    InstanceMetadata(instance_uuid="u", image="i", kind=GuestKind.PV,
                     flavor=Flavor(memory_mb=1, vcpus=2, root_gb=3, name="n")),
    InstanceMetadata(instance_uuid="u", owner="/srv/a b&c/instances"),
    OS(), OS(type="xen", arch="x86_64", kernel="/k", initrd="/i", cmdline="x=1 & y<2"),
    OS(type="hvm", machine="q35", loader="/l", boot_devices=["network", "fd", "hd"]),
    Features(), Features(acpi=True), Features(apic=True, pae=True),
    Clock(), Clock(offset="localtime"),
    Disk(source=None, target_dev="hdc", device="cdrom"),
    Disk(source="/d", target_dev="xvda", target_bus="xen", driver_name="phy", type="block"),
    Disk(source="/f", target_dev="vdaa", target_bus="virtio", driver_name="qemu",
         driver_type="qcow2", driver_cache="writeback", driver_io="threads",
         readonly=True, serial="abc"),
    Interface(type="user"), Interface(type="bridge", mac="52:54:00:aa:bb:cc", source="br0"),
    Interface(type="network", source="default", model="virtio", target_dev="tap0"),
    Graphics(), Graphics(listen="::1", port=5900, autoport=False, passwd="pw"),
    Graphics(autoport=True, port=-1),
    Serial(), Serial(type="file", path="/log", target_port=1),
    Serial(type="pty", log_file="/var/log/vd/console.log", target_port=0),
    Console(type="pty", target_type="xen", target_port=0),
    Console(type="file", path="/log", target_type="serial"),
    Input(), Input(type="mouse", bus="ps2"), Input(type="keyboard", bus=None),
    Video(), Video(model="vga", vram=9216, heads=2),
    RawXML("<controller type=\"usb\" index=\"0\"/>"),
]


@pytest.mark.parametrize("element", ELEMENTS, ids=lambda e: type(e).__name__)
def test_element_round_trip(element):
    built = element.to_element()
    text = etree.tostring(built)
    parsed = type(element).from_element(etree.fromstring(text))
    assert parsed == element
    assert etree.tostring(parsed.to_element()) == text


@pytest.mark.parametrize("element", ELEMENTS, ids=lambda e: type(e).__name__)
def test_element_built_under_a_parent(element):
    parent = etree.Element("devices")
    child = element.to_element(parent)
    assert child.getparent() is parent
    assert etree.tostring(child) == etree.tostring(element.to_element())


def test_full_domain_round_trip_is_valid_and_defines(test_conn):
    domain = full_domain()
    xml = domain.to_xml()
    assert_valid(xml)
    assert Domain.from_xml(xml) == domain
    assert Domain.from_xml(domain.to_xml(pretty_print=False)) == domain
    dom = define(test_conn, xml)
    try:
        assert dom.name() == "every-field"
        assert dom.UUIDString() == domain.uuid
    finally:
        dom.undefine()


def test_special_characters_are_escaped_and_survive():
    domain = full_domain()
    xml = domain.to_xml()
    assert "a&amp;b&lt;c&gt;" in xml
    assert 'passwd="s3cr&amp;t"' in xml
    parsed = Domain.from_xml(xml)
    assert parsed.os.cmdline == "console=ttyS0 root=/dev/vda a&b<c>\"d'"
    assert parsed.devices[0].source == "/var/lib/vd/a b&c.qcow2"


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=200))
def test_any_printable_cmdline_round_trips(cmdline):
    domain = Domain(type="qemu", name="t", memory_kib=1024, os=OS(kernel="/k", cmdline=cmdline))
    assert_accepted(domain.to_xml())
    assert Domain.from_xml(domain.to_xml()).os.cmdline == cmdline


def test_metadata_is_in_its_own_namespace():
    root = etree.fromstring(full_domain().to_xml().encode())
    instance = root.find(f"metadata/{{{METADATA_NS}}}instance")
    assert instance is not None
    assert instance.findtext(f"{{{METADATA_NS}}}image") == "cirros-0.6"
    assert instance.find(f"{{{METADATA_NS}}}flavor").get("memory_mb") == "256"


# --- parsing what libvirt returns ----------------------------------------------------

def test_libvirt_xmldesc_parses_and_redefines_identically(test_conn):
    """XMLDesc -> model -> XML -> define gives libvirt's very same document back."""
    dom = define(test_conn, full_domain().to_xml())
    try:
        desc = dom.XMLDesc()
        parsed = Domain.from_xml(desc)
        assert parsed.metadata == full_domain().metadata
        assert parsed.os == full_domain().os
        # libvirt adds drive addresses to SCSI/IDE disks: kept as RawXML
        disks = parsed.devices_of(Disk)
        assert [dataclasses.replace(d, extra=[]) for d in disks] \
            == full_domain().devices_of(Disk)
        assert {etree.fromstring(r.xml).tag for d in disks for r in d.extra} == {"address"}
        assert parsed.memory_kib == 262144 and parsed.current_memory_kib == 131072
        assert_valid(parsed.to_xml())
        dom.undefine()
        dom = define(test_conn, parsed.to_xml())
        assert dom.XMLDesc() == desc
    finally:
        dom.undefine()


def test_running_domain_xmldesc_round_trips(test_conn):
    domain = full_domain()
    domain.name, domain.uuid = "running-one", str(uuid.uuid4())
    dom = test_conn.createXML(domain.to_xml())
    try:
        desc = dom.XMLDesc()
        parsed = Domain.from_xml(desc)
        assert parsed.id == dom.ID() and parsed.id > 0
        assert parsed.metadata.instance_uuid == domain.metadata.instance_uuid
        again = Domain.from_xml(parsed.to_xml())
        assert again == parsed
        assert_valid(parsed.to_xml())
        dom.destroy()
        dom = test_conn.createXML(parsed.to_xml())
        assert Domain.from_xml(dom.XMLDesc()).metadata == parsed.metadata
    finally:
        dom.destroy()


UNKNOWN_EVERYWHERE = """
<domain type='kvm' id='7'>
  <name>odd</name>
  <title>kept title</title>
  <metadata>
    <other:thing xmlns:other='urn:other'><other:x a='1'>text</other:x></other:thing>
    <vd:instance xmlns:vd='{ns}'><vd:uuid>u-1</vd:uuid><vd:future>1</vd:future></vd:instance>
  </metadata>
  <memory unit='MiB'>64</memory>
  <currentMemory unit='GiB'>1</currentMemory>
  <vcpu placement='static'>3</vcpu>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type><bootmenu enable='yes'/></os>
  <features><acpi/><apic eoi='on'/><vmport state='off'/></features>
  <cpu mode='host-model'/>
  <clock offset='utc'><timer name='rtc' tickpolicy='catchup'/></clock>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='network' device='disk'><source protocol='rbd' name='pool/img'/>
      <target dev='vdz' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='/f' index='1'/><backingStore/><target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/></disk>
    <controller type='usb' index='0' model='piix3-uhci'/>
    <interface type='direct'><source dev='eth0' mode='bridge'/></interface>
    <interface type='network'><mac address='52:54:00:01:02:03'/>
      <source network='default' portid='abc' bridge='virbr0'/><target dev='vnet0'/>
      <model type='virtio'/><alias name='net0'/></interface>
    <serial type='tcp'><source mode='bind' host='127.0.0.1' service='4555'/></serial>
    <serial type='pty'><source path='/dev/pts/3'/>
      <target type='isa-serial' port='0'><model name='isa-serial'/></target></serial>
    <graphics type='spice' autoport='yes'/>
    <graphics type='vnc' port='5900' autoport='yes' listen='0.0.0.0'>
      <listen type='address' address='0.0.0.0'/></graphics>
    <video><model type='vga' vram='16384' heads='1' primary='yes'/><alias name='video0'/></video>
    <memballoon model='virtio'/>
  </devices>
  <seclabel type='none' model='none'/>
</domain>
""".replace("{ns}", METADATA_NS)


def test_unknown_elements_are_kept_in_place():
    parsed = Domain.from_xml(UNKNOWN_EVERYWHERE)
    assert parsed.id == 7 and parsed.vcpus == 3
    assert parsed.memory_kib == 64 * 1024 and parsed.current_memory_kib == 1024 * 1024
    assert parsed.metadata.instance_uuid == "u-1"
    assert [etree.fromstring(r.xml).tag for r in parsed.metadata.extra] == \
        [f"{{{METADATA_NS}}}future"]
    assert [etree.fromstring(r.xml).tag for r in parsed.metadata_extra] == ["{urn:other}thing"]
    assert parsed.features == Features(acpi=True, extra=[
        RawXML('<apic eoi="on"/>'), RawXML('<vmport state="off"/>')])
    assert [etree.fromstring(r.xml).tag for r in parsed.extra] == ["title", "cpu", "seclabel"]
    kinds = [type(d).__name__ for d in parsed.devices]
    assert kinds == ["RawXML", "RawXML", "Disk", "RawXML", "RawXML", "Interface", "RawXML",
                     "Serial", "RawXML", "Graphics", "Video", "RawXML"]
    disk = parsed.devices[2]
    assert disk.source == "/f" and disk.driver_type == "qcow2"
    assert [etree.fromstring(r.xml).tag for r in disk.extra] == ["backingStore", "alias",
                                                                  "address"]
    graphics = parsed.devices[9]
    assert (graphics.port, graphics.autoport, graphics.listen) == (5900, True, "0.0.0.0")
    assert parsed.clock.extra == [RawXML('<timer name="rtc" tickpolicy="catchup"/>')]

    again = Domain.from_xml(parsed.to_xml())
    assert again == parsed
    text = parsed.to_xml()
    assert_accepted(text)
    for kept in ("protocol=\"rbd\"", "<emulator>/usr/bin/qemu-system-x86_64</emulator>",
                 "piix3-uhci", "type=\"direct\"", "<title>kept title</title>",
                 "xmlns:other=\"urn:other\"", "<bootmenu enable=\"yes\"/>", "<memballoon"):
        assert kept in text


def test_devices_of_filters_by_class():
    domain = full_domain()
    assert [d.target_dev for d in domain.devices_of(Disk)] == ["vda", "sda", "hdc"]
    assert [i.type for i in domain.devices_of(Interface)] == ["bridge", "network", "user"]
    assert domain.devices_of(Serial) != domain.devices_of(Console)


@pytest.mark.parametrize("bad, message", [
    ("<domain", "not well-formed"),
    ("<guest type='kvm'><name>x</name></guest>", "root element is <guest>"),
    ("<domain type='kvm'><name>x</name><memory unit='parsecs'>1</memory></domain>",
     "memory unit 'parsecs'"),
    ("<domain type='kvm'><name>x</name><memory>lots</memory></domain>", "memory 'lots'"),
    ("<domain type='kvm'><vcpu>two</vcpu></domain>", "vcpu 'two'"),
    ("<domain type='kvm' id='x'/>", "domain id 'x'"),
    ("<domain type='kvm'><devices><graphics type='vnc' port='p'/></devices></domain>",
     "graphics port 'p'"),
    (f"<domain type='kvm'><metadata><vd:instance xmlns:vd='{METADATA_NS}'>"
     "<vd:kind>fv</vd:kind></vd:instance></metadata></domain>", "guest kind 'fv'"),
])
def test_malformed_documents_are_refused(bad, message):
    with pytest.raises(InvalidParameter, match=message):
        Domain.from_xml(bad)


def test_entities_are_not_expanded():
    xml = ('<!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
           "<domain type='kvm'><name>&e;</name><memory>1</memory></domain>")
    parsed = Domain.from_xml(xml)
    assert "root:" not in (parsed.name or "")


def test_bytes_with_declaration_parse():
    data = b"<?xml version='1.0' encoding='UTF-8'?>\n" + full_domain().to_xml().encode()
    assert Domain.from_xml(data) == full_domain()
    assert_accepted(data.decode())
