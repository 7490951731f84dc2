"""From an Instance to a Domain: the policy of what a guest's domain XML holds.

build_domain() checks every input first and only then builds the model, so
bad input never reaches an XML document. The instance params come
from the contract (virt/params.py); SUPPORT says which of them a domain expresses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from virt import disk as diskpolicy
from virt import forwards
from virt import params as contract
from virt.domain import (
    OS,
    Channel,
    Clock,
    Console,
    Device,
    Disk,
    Domain,
    Features,
    Graphics,
    Input,
    InstanceMetadata,
    Interface,
    Rng,
    Serial,
    Video,
    VirtualPort,
)
from virt.errors import InvalidParameter, NotSupported
from virt.objects import NIC, BlockDevice, GuestKind, Instance
from virt.validation import (
    check_absolute_path,
    check_instance,
    check_mac,
    check_uuid,
    check_vnc_listen,
)

# Checked params by name: each its own type (bool, list of boot devices, str).
Params = dict[str, Any]
VIRT_TYPES = ("kvm", "qemu", "xen")
XEN_HVMLOADER = contract.XEN_HVMLOADER
BOOT_LETTERS = {"a": "fd", "c": "hd", "d": "cdrom", "n": "network"}
NIC_MODELS = ("virtio", "e1000", "rtl8139", "ne2k_pci", "pcnet", "netfront")
IMAGE_FORMATS = ("raw", "qcow2", "qcow", "vmdk", "vpc", "vhd", "vdi", "qed", "iso")
ARCHES = ("x86_64", "i686", "aarch64", "armv7l", "ppc64le", "s390x", "riscv64")
_BRIDGE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_MACHINE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


def _choice(allowed: Sequence[str]) -> Callable[[str, str], str]:
    def check(value: str, field: str) -> str:
        if value not in allowed:
            raise InvalidParameter(f"{field} {value!r}: use one of {', '.join(allowed)}")
        return value
    return check


# The params of the contract (virt/params.py) a domain XML expresses, and for which kinds.
SUPPORT: contract.Support = {
    **dict.fromkeys(("kernel_image", "initrd_image", "kernel_path", "initrd_path",
                     "kernel_args", "vnc_bind_address", "vnc_password", "use_localtime",
                     "disk_cache", "disk_io", "user_forwards", "on_poweroff", "on_reboot",
                     "on_crash", "max_vcpus", "max_memory_mb"), contract.BOTH),
    **dict.fromkeys(("bootloader", "bootloader_args"), contract.PV),
    **dict.fromkeys(("boot_order", "cdrom_image", "cdrom_image_path", "acpi", "apic", "pae"),
                    contract.HVM),
}


def _canonical_ip(value: str) -> str:
    import ipaddress  # here: `show` converts no address
    return str(ipaddress.ip_address(value))


# How a checked string value becomes what build_domain uses; others stay strings.
_CONVERT: dict[str, Callable[[str], object]] = {
    "boot_order": lambda value: [BOOT_LETTERS[letter] for letter in value],
    "vnc_bind_address": _canonical_ip,
    **dict.fromkeys(("use_localtime", "acpi", "apic", "pae"), contract.as_bool),
    **dict.fromkeys(("max_vcpus", "max_memory_mb"), int),
}


# Lifecycle actions libvirt's QEMU driver refuses to define (tried on this kind of host).
_QEMU_REFUSED_ACTIONS = {
    "on_poweroff": ("preserve", "rename-restart"),
    "on_reboot": ("preserve", "rename-restart"),
    "on_crash": ("rename-restart",),
}


def _check_qemu_limits(virt_type: str, given: dict[str, str], params: Params) -> None:
    """NotSupported for what a KVM/QEMU domain cannot express (never silently dropped)."""
    if virt_type not in ("kvm", "qemu"):
        return
    if "pae" in given:
        raise NotSupported(f"params['pae']: {virt_type} guests always have PAE; leave it out")
    for name, refused in _QEMU_REFUSED_ACTIONS.items():
        if params[name] in refused:
            actions = contract.CRASH_ACTIONS if name == "on_crash" else contract.STOP_ACTIONS
            allowed = ", ".join(a for a in actions if a not in refused)
            raise NotSupported(f"params[{name!r}] {params[name]!r}: {virt_type} guests cannot "
                               f"do that; use one of {allowed}")


def read_params(kind: GuestKind, params: dict[str, str]) -> Params:
    """The checked values of the params, with the contract's defaults (virt/params.py).

    Raises InvalidParameter for an unknown key or a bad value, NotSupported
    for a param the domain XML cannot express.
    """
    values = contract.check_params(kind, params, SUPPORT, "libvirt")
    return {name: _CONVERT.get(name, str)(value) for name, value in values.items()}


def _check_disk(index: int, device: BlockDevice) -> None:
    field = f"disks[{index}]"
    check_absolute_path(device.path, f"{field}.path")
    _choice(IMAGE_FORMATS)(device.fmt, f"{field}.fmt")
    _choice(("disk", "cdrom"))(device.device_type, f"{field}.device_type")
    if device.bus is not None:
        diskpolicy.bus_policy(device.bus)


def interface_for(nic: NIC, virt_type: str) -> Interface:
    """The <interface> of one NIC, as build_domain makes it (for a hot-plugged NIC)."""
    return _interface(0, nic, _default_nic_model(virt_type))


def _default_nic_model(virt_type: str) -> str | None:
    return "virtio" if virt_type in ("kvm", "qemu") else None


def _interface(index: int, nic: NIC, default_model: str | None) -> Interface:
    field = f"nics[{index}]"
    mac = check_mac(nic.mac, f"{field}.mac")
    model = nic.model if nic.model is not None else default_model
    if model is not None:
        _choice(NIC_MODELS)(model, f"{field}.model")
    if nic.bridge is not None and nic.network is not None:
        raise InvalidParameter(f"{field}: give a bridge or a network, not both")
    host_side = _host_side(field, nic)
    if nic.bridge is not None:
        if not _BRIDGE_NAME.fullmatch(nic.bridge):
            raise InvalidParameter(
                f"{field}.bridge {nic.bridge!r}: use 1 to 15 letters, digits, '.', '_' or '-'")
        return Interface(type="bridge", mac=mac, source=nic.bridge, model=model, **host_side)
    if nic.network is not None:
        if not _NETWORK_NAME.fullmatch(nic.network):
            raise InvalidParameter(
                f"{field}.network {nic.network!r}: use 1 to 63 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit")
        return Interface(type="network", mac=mac, source=nic.network, model=model, **host_side)
    if nic.tap is not None:  # a tap device the manager plugs (Nova's tap/ethernet VIFs)
        return Interface(type="ethernet", mac=mac, model=model, **host_side)
    if host_side:
        raise InvalidParameter(f"{field}: mtu and ovs_interface_id need a bridge or a tap")
    return Interface(type="user", mac=mac, model=model)


def _host_side(field: str, nic: NIC) -> dict[str, object]:
    """The tap device name, Open vSwitch port and MTU of a NIC, checked, as Interface fields."""
    values: dict[str, object] = {}
    if nic.tap is not None:
        # libvirt names its own taps vnetN and would rename a given one.
        if not _BRIDGE_NAME.fullmatch(nic.tap) or nic.tap.startswith("vnet"):
            raise InvalidParameter(
                f"{field}.tap {nic.tap!r}: use 1 to 15 letters, digits, '.', '_' or '-', "
                "not starting with vnet")
        values["target_dev"] = nic.tap
    if nic.ovs_interface_id is not None:
        if nic.bridge is None:
            raise InvalidParameter(f"{field}.ovs_interface_id: set the Open vSwitch bridge too")
        values["virtualport"] = VirtualPort(
            type="openvswitch", interface_id=check_uuid(nic.ovs_interface_id,
                                                        f"{field}.ovs_interface_id"))
    if nic.mtu is not None:
        if isinstance(nic.mtu, bool) or not isinstance(nic.mtu, int) \
                or not 68 <= nic.mtu <= 65535:
            raise InvalidParameter(f"{field}.mtu {nic.mtu!r}: use an integer from 68 to 65535")
        values["mtu"] = nic.mtu
    return values


@dataclass(frozen=True)
class _Shape:
    """What kind of guest is being built, decided once from the inputs."""

    virt_type: str
    hvm: bool

    @property
    def xen_pv(self) -> bool:
        return self.virt_type == "xen" and not self.hvm

    @property
    def xen_hvm(self) -> bool:
        return self.virt_type == "xen" and self.hvm


def _shape(instance: Instance, virt_type: str) -> _Shape:
    _choice(VIRT_TYPES)(virt_type, "virt_type")
    if not isinstance(instance.kind, GuestKind):
        raise InvalidParameter(f"instance kind {instance.kind!r}: use GuestKind.HVM or PV")
    if virt_type != "xen" and instance.kind is GuestKind.PV:
        raise InvalidParameter(f"instance kind pv: {virt_type} guests are hvm; use GuestKind.HVM")
    return _Shape(virt_type, instance.kind is GuestKind.HVM)


def _os(shape: _Shape, params: Params, arch: str, machine: str | None) -> OS:
    kernel = params.get("kernel_path")
    bootloader = params.get("bootloader")
    if "initrd_path" in params and kernel is None:
        raise InvalidParameter("params['initrd_path']: set params['kernel_path'] too")
    if "kernel_args" in params and kernel is None:
        raise InvalidParameter("params['kernel_args']: set params['kernel_path'] too")
    if shape.xen_pv:
        if (kernel is None) == (bootloader is None):
            raise InvalidParameter(
                "params: a Xen PV guest needs exactly one of kernel_path or bootloader")
        if "bootloader_args" in params and bootloader is None:
            raise InvalidParameter("params['bootloader_args']: set params['bootloader'] too")
        return OS(type="xen", arch=arch, kernel=kernel, initrd=params.get("initrd_path"),
                  cmdline=params.get("kernel_args"))
    if bootloader is not None or "bootloader_args" in params:
        raise InvalidParameter("params['bootloader']: only Xen PV guests use a bootloader")
    if shape.xen_hvm and kernel is not None:
        raise InvalidParameter("params['kernel_path']: Xen HVM guests boot through hvmloader")
    boot = [] if kernel is not None else params["boot_order"]
    return OS(type="hvm", arch=arch, machine=machine,
              loader=XEN_HVMLOADER if shape.xen_hvm else None,
              kernel=kernel, initrd=params.get("initrd_path"),
              cmdline=params.get("kernel_args"), boot_devices=list(boot))


def _disks(shape: _Shape, devices: Sequence[BlockDevice], params: Params,
           hypervisor_version: int, machine: str | None,
           probe: diskpolicy.DiskProbe | None) -> list[Disk]:
    buses = [device.bus or diskpolicy.default_bus(shape.virt_type, shape.hvm,
                                                  device.device_type, machine)
             for device in devices]
    targets = diskpolicy.assign_targets(
        [(bus, device.device_type) for bus, device in zip(buses, devices, strict=True)])
    cache = params.get("disk_cache")
    disks = []
    for device, bus, target in zip(devices, buses, targets, strict=True):
        block = diskpolicy.is_block_device(device.path)
        driver = diskpolicy.pick_disk_driver_name(shape.virt_type, hypervisor_version,
                                                  block, probe)
        disks.append(Disk(
            type="block" if block else "file", device=device.device_type,
            source=device.path, target_dev=target, target_bus=bus,
            driver_name=driver, driver_type=diskpolicy.pick_disk_driver_type(driver, device.fmt),
            driver_cache=cache, driver_io=params.get("disk_io") if driver == "qemu" else None,
            readonly=device.readonly or device.device_type == "cdrom"))
    return disks


def _consoles(shape: _Shape, console_log: str | None) -> list[Device]:
    if shape.xen_pv:
        if console_log is not None:
            raise InvalidParameter(
                "console_log: Xen PV consoles are logged by xenconsoled; pass None")
        return [Console(type="pty", target_type="xen", target_port=0)]
    if console_log is None:
        return [Serial(type="pty", target_port=0),
                Console(type="pty", target_type="serial", target_port=0)]
    check_absolute_path(console_log, "console_log")
    # A pty logged to the file: `virsh console` still works and the log keeps every boot.
    return [Serial(type="pty", log_file=console_log, log_append=True, target_port=0),
            Console(type="pty", target_type="serial", target_port=0)]


def _graphics(shape: _Shape, instance: Instance, params: Params) -> list[Device]:
    listen = params.get("vnc_bind_address")
    if listen is None and not shape.xen_hvm:
        if "vnc_password" in params:
            raise InvalidParameter("params['vnc_password']: set params['vnc_bind_address'] too")
        return []
    listen = check_vnc_listen(listen or contract.VNC_LOOPBACK, "vnc_password" in params,
                              "params['vnc_bind_address']")
    port = instance.network_port
    graphics = Graphics(listen=listen, port=port,
                        autoport=port is None, passwd=params.get("vnc_password"))
    if shape.xen_pv:
        return [graphics]
    return [Input(type="tablet", bus="usb"), graphics, Video(model="cirrus")]


def _maximums(flavor, params: Params) -> tuple[int, int]:
    """(vCPUs, MiB) the guest boots able to reach live: the params', at least the flavor's."""
    max_vcpus = params.get("max_vcpus", flavor.vcpus)
    max_memory_mb = params.get("max_memory_mb", flavor.memory_mb)
    if max_vcpus < flavor.vcpus:
        raise InvalidParameter(f"params['max_vcpus'] {max_vcpus}: below the flavor's "
                               f"{flavor.vcpus} vCPUs; give at least {flavor.vcpus}")
    if max_memory_mb < flavor.memory_mb:
        raise InvalidParameter(f"params['max_memory_mb'] {max_memory_mb}: below the flavor's "
                               f"{flavor.memory_mb} MiB; give at least {flavor.memory_mb}")
    return max_vcpus, max_memory_mb


def build_domain(instance: Instance, disks: Sequence[BlockDevice], nics: Sequence[NIC],
                 virt_type: str, hypervisor_version: int, *, arch: str = "x86_64",
                 machine: str | None = None, console_log: str | None = None,
                 probe: diskpolicy.DiskProbe | None = None, owner: str | None = None) -> Domain:
    """The Domain of an instance, after every input was checked.

    disks: the root disk first (e.g. the qcow2 overlay), then extra disks and
    cdroms. nics: usually instance.nics. virt_type: kvm, qemu or xen;
    hypervisor_version as libvirt reports it (major*1_000_000 + ...), used
    for the Xen disk driver. console_log: the file the serial console writes
    to (KVM/QEMU and Xen HVM), else a pty. probe: see pick_disk_driver_name.
    owner: recorded in the metadata, so that a driver sees only its own domains.
    Raises InvalidParameter naming the field at fault.
    """
    shape = _shape(instance, virt_type)
    check_instance(instance)
    params = read_params(instance.kind, instance.params)
    _check_qemu_limits(virt_type, instance.params, params)
    _choice(ARCHES)(arch, "arch")
    if machine is not None and not _MACHINE.fullmatch(machine):
        raise InvalidParameter(f"machine {machine!r}: use letters, digits, '.', '_' or '-'")
    if shape.xen_pv and machine is not None:
        raise InvalidParameter("machine: Xen PV guests have no machine type; pass None")
    if isinstance(hypervisor_version, bool) or not isinstance(hypervisor_version, int) \
            or hypervisor_version < 0:
        raise InvalidParameter(
            f"hypervisor_version {hypervisor_version!r}: use an integer such as 4002000")
    if not disks:
        raise InvalidParameter("disks: give at least the root disk")
    devices = list(disks)
    for index, device in enumerate(devices):
        _check_disk(index, device)
    if "cdrom_image_path" in params:
        devices.append(BlockDevice(path=params["cdrom_image_path"], fmt="raw",
                                   readonly=True, device_type="cdrom"))

    os_ = _os(shape, params, arch, machine)
    # KVM guests get paravirtual NICs; Xen picks netfront (PV) or its emulated default.
    default_model = _default_nic_model(virt_type)
    interfaces = [_interface(i, nic, default_model) for i, nic in enumerate(nics)]
    disk_elements = _disks(shape, devices, params, hypervisor_version, machine, probe)
    consoles = _consoles(shape, console_log)
    graphics = _graphics(shape, instance, params)
    # Every KVM/QEMU guest can run qemu-guest-agent: addresses and clean freezes need it.
    # And gets entropy from the host: without it a guest's kernel took minutes under TCG
    # to seed its random generator, and sshd waited for it (SSH 2.4x later than with it).
    paravirt = [Channel(type="unix", target_type="virtio", target_name=GUEST_AGENT_CHANNEL),
                Rng(model="virtio", backend_model="random", backend="/dev/urandom")] \
        if virt_type in ("kvm", "qemu") else []

    features = None
    if shape.hvm:
        features = Features(acpi=params["acpi"], apic=params["apic"],
                            pae=params["pae"] if shape.xen_hvm else False)
    flavor = instance.flavor
    max_vcpus, max_memory_mb = _maximums(flavor, params)
    return Domain(
        type=virt_type, name=instance.name, uuid=instance.uuid,
        memory_kib=max_memory_mb * 1024, current_memory_kib=flavor.memory_mb * 1024,
        vcpus=max_vcpus, vcpu_current=flavor.vcpus if max_vcpus > flavor.vcpus else None,
        os=os_,
        bootloader=params.get("bootloader") if shape.xen_pv else None,
        bootloader_args=params.get("bootloader_args") if shape.xen_pv else None,
        features=features,
        clock=Clock(offset="localtime" if params.get("use_localtime") else "utc"),
        on_poweroff=params["on_poweroff"], on_reboot=params["on_reboot"],
        on_crash=params["on_crash"],
        metadata=InstanceMetadata(
            instance_uuid=instance.uuid, flavor=flavor, image=instance.image,
            kind=instance.kind, owner=owner,
            # Readable by any libvirt client: the VNC password stays in <graphics>.
            params={k: v for k, v in instance.params.items() if k != "vnc_password"}),
        devices=[*disk_elements, *interfaces, *consoles, *paravirt, *graphics])


def instance_from_domain(domain: Domain) -> Instance:
    """Rebuild the Instance a domain was built from (e.g. after a restart).

    Name, uuid, flavor, image, kind and params come from the project
    metadata (boot params also from <os>/<bootloader>, the VNC password from
    <graphics> when the XML was read securely), NICs from the interfaces. A domain without
    the metadata (not ours) is refused.
    """
    meta = domain.metadata
    if meta is None or meta.instance_uuid is None or meta.flavor is None:
        raise InvalidParameter(
            f"domain {domain.name!r}: no virt-driver metadata; it was not built by virt-driver")
    params = dict(meta.params)
    for key, value in (("kernel_path", domain.os.kernel), ("initrd_path", domain.os.initrd),
                       ("kernel_args", domain.os.cmdline), ("bootloader", domain.bootloader),
                       ("bootloader_args", domain.bootloader_args)):
        if value is not None:
            params.setdefault(key, value)
    passwords = [g.passwd for g in domain.devices_of(Graphics) if g.passwd]
    if passwords:  # present only in XML read with VIR_DOMAIN_XML_SECURE
        params["vnc_password"] = passwords[0]
    nics = tuple(_nic(iface) for iface in domain.devices_of(Interface))
    # A forwarded user NIC on QEMU's command line is no <interface>: the param names it.
    forwarded = forwards.read_param(params)
    if forwarded is not None and all(nic.mac.lower() != forwarded.mac for nic in nics):
        nics += (NIC(mac=forwarded.mac),)
    return Instance(name=domain.name, flavor=meta.flavor, image=meta.image,
                    uuid=meta.instance_uuid, kind=meta.kind or GuestKind.HVM,
                    params=params, nics=nics)


def _nic(iface: Interface) -> NIC:
    """The NIC an <interface> of build_domain was made from."""
    port = iface.virtualport
    tap = iface.target_dev
    return NIC(mac=iface.mac or "",
               bridge=iface.source if iface.type == "bridge" else None,
               network=iface.source if iface.type == "network" else None,
               model=iface.model,
               tap=tap if tap and not tap.startswith("vnet") else None,
               ovs_interface_id=port.interface_id if port is not None else None,
               mtu=iface.mtu)
