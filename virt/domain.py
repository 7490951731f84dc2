"""The libvirt domain XML model: one small class per element, built and parsed with lxml.

Each class converts both ways (`to_element(parent=None)` / `from_element()`;
to_element builds under parent when given) and holds no
policy: which bus, driver or boot device a guest gets is decided in
virt/disk.py and virt/guest.py. Elements the model does not know, such as
what libvirt adds to a running domain (aliases, addresses, controllers), are
kept as `RawXML` in the place they were found and written back untouched.
Attributes the model does not know are not kept; libvirt fills them in again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from lxml import etree

from virt.errors import InvalidParameter
from virt.objects import Flavor, GuestKind

# The namespace of the project's <metadata> child; libvirt keys metadata by it.
METADATA_NS = "http://virt-driver.org/xmlns/instance/1.0"
METADATA_PREFIX = "vd"
_MD = f"{{{METADATA_NS}}}"
_NSMAP = {METADATA_PREFIX: METADATA_NS}

# Blank text between elements is layout, not content; entities and network
# access are off because parsed XML may come from anywhere.
_PARSER = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)

_UNIT_KIB = {
    "b": 1 / 1024, "bytes": 1 / 1024,
    "kb": 1000 / 1024, "k": 1, "kib": 1,
    "mb": 1000**2 / 1024, "m": 1024, "mib": 1024,
    "gb": 1000**3 / 1024, "g": 1024**2, "gib": 1024**2,
    "tb": 1000**4 / 1024, "t": 1024**3, "tib": 1024**3,
}


class _NotModelled(Exception):
    """A known tag in a variant the model does not cover; kept as RawXML."""


def _parse_error(what: str) -> InvalidParameter:
    return InvalidParameter(f"domain XML: {what}")


def _int(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise _parse_error(f"{what} {value!r} is not a whole number") from None


def _yes(value: str | None) -> bool | None:
    return None if value is None else value == "yes"


def _children(element: etree._Element):
    """Child elements, leaving out comments and processing instructions."""
    return (child for child in element if isinstance(child.tag, str))


@dataclass(frozen=True)
class RawXML:
    """An element the model does not know, kept as its serialized text."""

    xml: str

    @classmethod
    def from_element(cls, element: etree._Element) -> RawXML:
        return cls(etree.tostring(element, encoding="unicode", with_tail=False))

    def to_element(self, parent: etree._Element | None = None) -> etree._Element:
        element = etree.fromstring(self.xml, _PARSER)
        if parent is not None:
            parent.append(element)
        return element


def _append_extra(element: etree._Element, extra: list[RawXML]) -> None:
    for raw in extra:
        raw.to_element(element)


# Each to_element(parent) builds in place under parent when given one:
# appending a finished element would move it between lxml documents, which
# costs about as much as building it. Attributes go in as keywords at
# creation, the cheapest way lxml offers; the model stays within 1.3x of
# bare lxml (benchmarks/bench_domain.py).


@dataclass(slots=True)
class InstanceMetadata:
    """The project's own metadata: enough to rebuild the Instance from a domain.

    owner: who manages the domain (see LibvirtDriver.owner); None in domains
    written by version 0.1.
    """

    instance_uuid: str | None = None
    flavor: Flavor | None = None
    image: str | None = None
    kind: GuestKind | None = None
    params: dict[str, str] = field(default_factory=dict)  # <vd:param name=...>value
    owner: str | None = None
    extra: list[RawXML] = field(default_factory=list)

    def to_element(self, parent: etree._Element | None = None) -> etree._Element:
        root = (etree.Element(_MD + "instance", nsmap=_NSMAP) if parent is None
                else etree.SubElement(parent, _MD + "instance", nsmap=_NSMAP))
        if self.owner is not None:
            etree.SubElement(root, _MD + "owner").text = self.owner
        if self.instance_uuid is not None:
            etree.SubElement(root, _MD + "uuid").text = self.instance_uuid
        if self.flavor is not None:
            f = self.flavor
            etree.SubElement(root, _MD + "flavor", {
                "name": f.name, "memory_mb": str(f.memory_mb), "vcpus": str(f.vcpus),
                "root_gb": str(f.root_gb)})
        if self.image is not None:
            etree.SubElement(root, _MD + "image").text = self.image
        if self.kind is not None:
            etree.SubElement(root, _MD + "kind").text = self.kind.value
        for key, value in sorted(self.params.items()):
            etree.SubElement(root, _MD + "param", name=key).text = value
        if self.extra:
            _append_extra(root, self.extra)
        return root

    @classmethod
    def from_element(cls, element: etree._Element) -> InstanceMetadata:
        meta = cls()
        for child in _children(element):
            tag = child.tag
            if tag == _MD + "owner":
                meta.owner = child.text or ""
            elif tag == _MD + "uuid":
                meta.instance_uuid = child.text or ""
            elif tag == _MD + "flavor":
                meta.flavor = Flavor(
                    name=child.get("name", ""),
                    memory_mb=_int(child.get("memory_mb", "0"), "flavor memory_mb"),
                    vcpus=_int(child.get("vcpus", "0"), "flavor vcpus"),
                    root_gb=_int(child.get("root_gb", "0"), "flavor root_gb"))
            elif tag == _MD + "image":
                meta.image = child.text or ""
            elif tag == _MD + "kind":
                try:
                    meta.kind = GuestKind(child.text)
                except ValueError:
                    raise _parse_error(f"guest kind {child.text!r} is not hvm or pv") from None
            elif tag == _MD + "param" and child.get("name"):
                meta.params[child.get("name")] = child.text or ""
            else:
                meta.extra.append(RawXML.from_element(child))
        return meta


@dataclass(slots=True)
class OS:
    """<os>: guest type, firmware or kernel, and boot devices."""

    type: str = "hvm"  # hvm, xen or linux (Xen PV)
    arch: str | None = None
    machine: str | None = None
    loader: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    boot_devices: list[str] = field(default_factory=list)  # hd, cdrom, network, fd
    extra: list[RawXML] = field(default_factory=list)

    def to_element(self, parent: etree._Element | None = None) -> etree._Element:
        root = (etree.Element("os") if parent is None
                else etree.SubElement(parent, "os"))
        type_ = etree.SubElement(root, "type")
        type_.text = self.type
        if self.arch is not None:
            type_.set("arch", self.arch)
        if self.machine is not None:
            type_.set("machine", self.machine)
        if self.loader is not None:
            etree.SubElement(root, "loader").text = self.loader
        if self.kernel is not None:
            etree.SubElement(root, "kernel").text = self.kernel
        if self.initrd is not None:
            etree.SubElement(root, "initrd").text = self.initrd
        if self.cmdline is not None:
            etree.SubElement(root, "cmdline").text = self.cmdline
        for dev in self.boot_devices:
            etree.SubElement(root, "boot", {"dev": dev})
        if self.extra:
            _append_extra(root, self.extra)
        return root

    @classmethod
    def from_element(cls, element: etree._Element) -> OS:
        os_ = cls()
        for child in _children(element):
            tag = child.tag
            if tag == "type":
                os_.type = child.text or ""
                os_.arch = child.get("arch")
                os_.machine = child.get("machine")
            elif tag in ("loader", "kernel", "initrd", "cmdline"):
                setattr(os_, tag, child.text or "")
            elif tag == "boot":
                os_.boot_devices.append(child.get("dev", ""))
            else:
                os_.extra.append(RawXML.from_element(child))
        return os_


_FEATURE_FLAGS = ("acpi", "apic", "pae")


@dataclass(slots=True)
class Features:
    """<features>: the platform flags the project sets; others kept as RawXML."""

    acpi: bool = False
    apic: bool = False
    pae: bool = False
    extra: list[RawXML] = field(default_factory=list)

    def to_element(self, parent: etree._Element | None = None) -> etree._Element:
        root = (etree.Element("features") if parent is None
                else etree.SubElement(parent, "features"))
        if self.acpi:
            etree.SubElement(root, "acpi")
        if self.apic:
            etree.SubElement(root, "apic")
        if self.pae:
            etree.SubElement(root, "pae")
        if self.extra:
            _append_extra(root, self.extra)
        return root

    @classmethod
    def from_element(cls, element: etree._Element) -> Features:
        features = cls()
        for child in _children(element):
            # <apic eoi='on'/> and the like carry settings: keep those whole.
            if child.tag in _FEATURE_FLAGS and not child.attrib and len(child) == 0:
                setattr(features, child.tag, True)
            else:
                features.extra.append(RawXML.from_element(child))
        return features


@dataclass(slots=True)
class Clock:
    """<clock offset='utc|localtime'>, timers kept as RawXML."""

    offset: str = "utc"
    extra: list[RawXML] = field(default_factory=list)

    def to_element(self, parent: etree._Element | None = None) -> etree._Element:
        root = (etree.Element("clock", offset=self.offset) if parent is None
                else etree.SubElement(parent, "clock", offset=self.offset))
        if self.extra:
            _append_extra(root, self.extra)
        return root

    @classmethod
    def from_element(cls, element: etree._Element) -> Clock:
        return cls(offset=element.get("offset", "utc"),
                   extra=[RawXML.from_element(c) for c in _children(element)])


@dataclass(slots=True)
class Disk:
    """<disk type='file|block' device='disk|cdrom'>."""

    source: str | None
    target_dev: str
    target_bus: str | None = None
    type: str = "file"
    device: str = "disk"
    driver_name: str | None = None
    driver_type: str | None = None
    driver_cache: str | None = None
    driver_io: str | None = None
    readonly: bool = False
    serial: str | None = None
    extra: list[RawXML] = field(default_factory=list)

    def to_element(self, parent: etree._Element | None = None) -> etree._Element:
        root = (etree.Element("disk", type=self.type, device=self.device) if parent is None
                else etree.SubElement(parent, "disk", type=self.type, device=self.device))
        driver = {}
        if self.driver_name is not None:
            driver["name"] = self.driver_name
        if self.driver_type is not None:
            driver["type"] = self.driver_type
        if self.driver_cache is not None:
            driver["cache"] = self.driver_cache
        if self.driver_io is not None:
            driver["io"] = self.driver_io
        if driver:
            etree.SubElement(root, "driver", **driver)
        if self.source is not None:
            etree.SubElement(root, "source",
                             {"file" if self.type == "file" else "dev": self.source})
        target = etree.SubElement(root, "target", dev=self.target_dev)
        if self.target_bus is not None:
            target.set("bus", self.target_bus)
        if self.readonly:
            etree.SubElement(root, "readonly")
        if self.serial is not None:
            etree.SubElement(root, "serial").text = self.serial
        if self.extra:
            _append_extra(root, self.extra)
        return root

    @classmethod
    def from_element(cls, element: etree._Element) -> Disk:
        type_ = element.get("type", "file")
        if type_ not in ("file", "block"):
            raise _NotModelled
        disk = cls(source=None, target_dev="", type=type_,
                   device=element.get("device", "disk"))
        for child in _children(element):
            tag = child.tag
            if tag == "driver":
                disk.driver_name = child.get("name")
                disk.driver_type = child.get("type")
                disk.driver_cache = child.get("cache")
                disk.driver_io = child.get("io")
            elif tag == "source":
                disk.source = child.get("file" if type_ == "file" else "dev")
            elif tag == "target":
                disk.target_dev = child.get("dev", "")
                disk.target_bus = child.get("bus")
            elif tag == "readonly":
                disk.readonly = True
            elif tag == "serial":
                disk.serial = child.text or ""
            else:
                disk.extra.append(RawXML.from_element(child))
        return disk


_INTERFACE_SOURCE = {"bridge": "bridge", "network": "network"}


@dataclass(slots=True)
class Interface:
    """<interface type='bridge|network|user'>."""

    type: str
    mac: str | None = None
    source: str | None = None  # the bridge or network name
    model: str | None = None
    target_dev: str | None = None
    extra: list[RawXML] = field(default_factory=list)

    def to_element(self, parent: etree._Element | None = None) -> etree._Element:
        root = (etree.Element("interface", type=self.type) if parent is None
                else etree.SubElement(parent, "interface", type=self.type))
        if self.mac is not None:
            etree.SubElement(root, "mac", address=self.mac)
        if self.source is not None:
            etree.SubElement(root, "source", {_INTERFACE_SOURCE[self.type]: self.source})
        if self.target_dev is not None:
            etree.SubElement(root, "target", dev=self.target_dev)
        if self.model is not None:
            etree.SubElement(root, "model", type=self.model)
        if self.extra:
            _append_extra(root, self.extra)
        return root

    @classmethod
    def from_element(cls, element: etree._Element) -> Interface:
        type_ = element.get("type")
        if type_ not in ("bridge", "network", "user"):
            raise _NotModelled
        iface = cls(type=type_)
        for child in _children(element):
            tag = child.tag
            if tag == "mac":
                iface.mac = child.get("address")
            elif tag == "source" and type_ in _INTERFACE_SOURCE:
                iface.source = child.get(_INTERFACE_SOURCE[type_])
            elif tag == "target":
                iface.target_dev = child.get("dev")
            elif tag == "model":
                iface.model = child.get("type")
            else:
                iface.extra.append(RawXML.from_element(child))
        return iface


@dataclass(slots=True)
class Graphics:
    """<graphics type='vnc'>: a fixed port, or autoport."""

    listen: str | None = None
    port: int | None = None
    autoport: bool | None = None
    passwd: str | None = None
    extra: list[RawXML] = field(default_factory=list)  # <listen> children and others

    def to_element(self, parent: etree._Element | None = None) -> etree._Element:
        root = (etree.Element("graphics", type="vnc") if parent is None
                else etree.SubElement(parent, "graphics", type="vnc"))
        if self.port is not None:
            root.set("port", str(self.port))
        if self.autoport is not None:
            root.set("autoport", "yes" if self.autoport else "no")
        if self.listen is not None:
            root.set("listen", self.listen)
        if self.passwd is not None:
            root.set("passwd", self.passwd)
        if self.extra:
            _append_extra(root, self.extra)
        return root

    @classmethod
    def from_element(cls, element: etree._Element) -> Graphics:
        if element.get("type") != "vnc":
            raise _NotModelled
        return cls(listen=element.get("listen"),
                   port=_int(element.get("port"), "graphics port"),
                   autoport=_yes(element.get("autoport")),
                   passwd=element.get("passwd"),
                   extra=[RawXML.from_element(c) for c in _children(element)])


@dataclass(slots=True)
class _CharDevice:
    """<serial> or <console> of type pty or file (path: the log file or pty).

    log_file: <log file=... append='on'>, a copy of the output that survives
    restarts (libvirt truncates a file-type device's path at every start).
    """

    TAG = ""
    type: str = "pty"
    path: str | None = None
    target_type: str | None = None
    target_port: int | None = None
    log_file: str | None = None
    extra: list[RawXML] = field(default_factory=list)

    def to_element(self, parent: etree._Element | None = None) -> etree._Element:
        root = (etree.Element(self.TAG, type=self.type) if parent is None
                else etree.SubElement(parent, self.TAG, type=self.type))
        if self.path is not None:
            etree.SubElement(root, "source", path=self.path)
        if self.log_file is not None:
            etree.SubElement(root, "log", file=self.log_file, append="on")
        if self.target_type is not None or self.target_port is not None:
            target = etree.SubElement(root, "target")
            if self.target_type is not None:
                target.set("type", self.target_type)
            if self.target_port is not None:
                target.set("port", str(self.target_port))
        if self.extra:
            _append_extra(root, self.extra)
        return root

    @classmethod
    def from_element(cls, element: etree._Element):
        type_ = element.get("type", "pty")
        if type_ not in ("pty", "file"):
            raise _NotModelled
        char = cls(type=type_)
        for child in _children(element):
            if child.tag == "source":
                char.path = child.get("path")
            elif child.tag == "target":
                char.target_type = child.get("type")
                char.target_port = _int(child.get("port"), f"{cls.TAG} target port")
            elif child.tag == "log" and child.get("append") == "on":
                char.log_file = child.get("file")
            else:
                char.extra.append(RawXML.from_element(child))
        return char


@dataclass(slots=True)
class Serial(_CharDevice):
    TAG = "serial"


@dataclass(slots=True)
class Console(_CharDevice):
    TAG = "console"


@dataclass(slots=True)
class Input:
    """<input type='tablet' bus='usb'> and other pointing devices."""

    type: str = "tablet"
    bus: str | None = "usb"
    extra: list[RawXML] = field(default_factory=list)

    def to_element(self, parent: etree._Element | None = None) -> etree._Element:
        root = (etree.Element("input", type=self.type) if parent is None
                else etree.SubElement(parent, "input", type=self.type))
        if self.bus is not None:
            root.set("bus", self.bus)
        if self.extra:
            _append_extra(root, self.extra)
        return root

    @classmethod
    def from_element(cls, element: etree._Element) -> Input:
        return cls(type=element.get("type", ""), bus=element.get("bus"),
                   extra=[RawXML.from_element(c) for c in _children(element)])


@dataclass(slots=True)
class Video:
    """<video><model type=... vram=... heads=.../></video>."""

    model: str | None = None
    vram: int | None = None
    heads: int | None = None
    extra: list[RawXML] = field(default_factory=list)

    def to_element(self, parent: etree._Element | None = None) -> etree._Element:
        root = (etree.Element("video") if parent is None
                else etree.SubElement(parent, "video"))
        if self.model is not None:
            model = etree.SubElement(root, "model", type=self.model)
            if self.vram is not None:
                model.set("vram", str(self.vram))
            if self.heads is not None:
                model.set("heads", str(self.heads))
        if self.extra:
            _append_extra(root, self.extra)
        return root

    @classmethod
    def from_element(cls, element: etree._Element) -> Video:
        video = cls()
        for child in _children(element):
            if child.tag == "model":
                video.model = child.get("type")
                video.vram = _int(child.get("vram"), "video vram")
                video.heads = _int(child.get("heads"), "video heads")
            else:
                video.extra.append(RawXML.from_element(child))
        return video


Device = Union[Disk, Interface, Graphics, Serial, Console, Input, Video, RawXML]  # noqa: UP007

_DEVICE_CLASSES = {
    "disk": Disk, "interface": Interface, "graphics": Graphics, "serial": Serial,
    "console": Console, "input": Input, "video": Video,
}


def _device_from_element(element: etree._Element) -> Device:
    cls = _DEVICE_CLASSES.get(element.tag)
    if cls is not None:
        try:
            return cls.from_element(element)
        except _NotModelled:
            pass
    return RawXML.from_element(element)


def _memory_kib(element: etree._Element) -> int:
    unit = element.get("unit", "KiB").lower()
    if unit not in _UNIT_KIB:
        raise _parse_error(f"memory unit {element.get('unit')!r} is unknown")
    return int(_int(element.text, "memory") * _UNIT_KIB[unit])


_LIFECYCLE = ("on_poweroff", "on_reboot", "on_crash")


@dataclass(slots=True)
class Domain:
    """<domain>: the whole guest. Memory in KiB, the unit libvirt reports."""

    type: str
    name: str
    memory_kib: int
    vcpus: int = 1
    uuid: str | None = None
    id: int | None = None  # set by libvirt on a running domain
    current_memory_kib: int | None = None
    os: OS = field(default_factory=OS)
    bootloader: str | None = None
    bootloader_args: str | None = None
    features: Features | None = None
    clock: Clock | None = None
    on_poweroff: str | None = None
    on_reboot: str | None = None
    on_crash: str | None = None
    metadata: InstanceMetadata | None = None
    metadata_extra: list[RawXML] = field(default_factory=list)  # other applications'
    devices: list[Device] = field(default_factory=list)
    extra: list[RawXML] = field(default_factory=list)

    def to_element(self, parent: etree._Element | None = None) -> etree._Element:
        root = (etree.Element("domain", type=self.type) if parent is None
                else etree.SubElement(parent, "domain", type=self.type))
        if self.id is not None:
            root.set("id", str(self.id))
        etree.SubElement(root, "name").text = self.name
        if self.uuid is not None:
            etree.SubElement(root, "uuid").text = self.uuid
        if self.metadata is not None or self.metadata_extra:
            metadata = etree.SubElement(root, "metadata")
            if self.metadata is not None:
                self.metadata.to_element(metadata)
            _append_extra(metadata, self.metadata_extra)
        etree.SubElement(root, "memory", unit="KiB").text = str(self.memory_kib)
        if self.current_memory_kib is not None:
            etree.SubElement(root, "currentMemory", unit="KiB").text = str(
                self.current_memory_kib)
        etree.SubElement(root, "vcpu").text = str(self.vcpus)
        if self.bootloader is not None:
            etree.SubElement(root, "bootloader").text = self.bootloader
        if self.bootloader_args is not None:
            etree.SubElement(root, "bootloader_args").text = self.bootloader_args
        self.os.to_element(root)
        if self.features is not None:
            self.features.to_element(root)
        if self.clock is not None:
            self.clock.to_element(root)
        if self.on_poweroff is not None:
            etree.SubElement(root, "on_poweroff").text = self.on_poweroff
        if self.on_reboot is not None:
            etree.SubElement(root, "on_reboot").text = self.on_reboot
        if self.on_crash is not None:
            etree.SubElement(root, "on_crash").text = self.on_crash
        devices = etree.SubElement(root, "devices")
        for device in self.devices:
            device.to_element(devices)
        if self.extra:
            _append_extra(root, self.extra)
        return root

    def to_xml(self, pretty_print: bool = True) -> str:
        return etree.tostring(self.to_element(), encoding="unicode", pretty_print=pretty_print)

    @classmethod
    def from_element(cls, element: etree._Element) -> Domain:
        if element.tag != "domain":
            raise _parse_error(f"root element is <{element.tag}>, not <domain>")
        domain = cls(type=element.get("type", ""), name="", memory_kib=0,
                     id=_int(element.get("id"), "domain id"))
        for child in _children(element):
            tag = child.tag
            if tag in ("name", "uuid", "bootloader", "bootloader_args") or tag in _LIFECYCLE:
                setattr(domain, tag, child.text or "")
            elif tag == "memory":
                domain.memory_kib = _memory_kib(child)
            elif tag == "currentMemory":
                domain.current_memory_kib = _memory_kib(child)
            elif tag == "vcpu":
                domain.vcpus = _int(child.text, "vcpu")
            elif tag == "os":
                domain.os = OS.from_element(child)
            elif tag == "features":
                domain.features = Features.from_element(child)
            elif tag == "clock":
                domain.clock = Clock.from_element(child)
            elif tag == "metadata":
                for item in _children(child):
                    if item.tag == _MD + "instance" and domain.metadata is None:
                        domain.metadata = InstanceMetadata.from_element(item)
                    else:
                        domain.metadata_extra.append(RawXML.from_element(item))
            elif tag == "devices":
                domain.devices = [_device_from_element(d) for d in _children(child)]
            else:
                domain.extra.append(RawXML.from_element(child))
        return domain

    @classmethod
    def from_xml(cls, text: str | bytes) -> Domain:
        """Parse a domain document, such as libvirt's XMLDesc() of a domain."""
        data = text.encode() if isinstance(text, str) else text
        try:
            element = etree.fromstring(data, _PARSER)
        except etree.XMLSyntaxError as exc:
            raise _parse_error(f"not well-formed: {exc}") from None
        return cls.from_element(element)

    def devices_of(self, kind: type) -> list:
        """The devices of one class, in document order: domain.devices_of(Disk)."""
        return [d for d in self.devices if type(d) is kind]
