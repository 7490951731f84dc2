"""The forwarded user NIC of a KVM/QEMU guest: passt where libvirt offers it, else
QEMU's own user network on the QEMU command line.

libvirt's own way is <backend type='passt'/> with <portForward>. Its 9.0.0
release announces passt but its XML parser refuses it ("Invalid value for
attribute 'type' in element 'backend': 'passt'", libvirt issue 462, the
libvirt of Debian 12); later releases list the backends they take in the
domain capabilities (<interface><enum name='backendType'>). So passt is
chosen when the domain capabilities name it, and otherwise the forwarded NIC
is QEMU's user network given through <qemu:commandline>:
`-netdev user,hostfwd=tcp:127.0.0.1:HOST-:GUEST` and a virtio NIC with the
NIC's MAC. virt/forwards.py reads and checks the forwards; only 127.0.0.1
ever listens, whichever backend.
"""

from __future__ import annotations

from lxml import etree

from virt.domain import Domain, Interface, PortForward, PortRange
from virt.errors import InvalidParameter
from virt.forwards import LISTEN, ForwardedNIC
from virt.objects import NIC

PASST = "passt"
QEMU_USER = "qemu-user"

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
NETDEV_ID = "vdfwd0"
# A slot libvirt leaves free (it fills from 0x2 up): QEMU would otherwise take one
# libvirt has assigned to a device of its own.
PCI_SLOT = "0x1e"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


def pick_backend(domain_capabilities_xml: str | None) -> str:
    """PASST when libvirt's domain capabilities offer it for user NICs, else QEMU_USER.

    A libvirt that lists no backend types (9.0 and older) may still announce
    passt and refuse it (see above), so only a listed passt counts.
    """
    if not domain_capabilities_xml:
        return QEMU_USER
    root = etree.fromstring(domain_capabilities_xml.encode(), _PARSER)
    offered = root.xpath("devices/interface[@supported='yes']"
                         "/enum[@name='backendType']/value/text()")
    return PASST if PASST in offered else QEMU_USER


def other_nics(nics: list[NIC], forwarded: ForwardedNIC | None,
               backend: str = QEMU_USER) -> list[NIC]:
    """The NICs libvirt builds as <interface>: all but a forwarded one on QEMU_USER."""
    if forwarded is None:
        return nics
    for nic in nics:
        if nic.mac.lower() == forwarded.mac and (nic.bridge or nic.network):
            raise InvalidParameter(f"NIC {nic.mac}: only a user NIC can forward ports; drop "
                                   "bridge= or network=, or the forward")
    if backend == PASST:
        if not any(nic.mac.lower() == forwarded.mac for nic in nics):
            return [*nics, NIC(mac=forwarded.mac)]
        return nics
    return [nic for nic in nics if nic.mac.lower() != forwarded.mac]


def add_passt(domain: Domain, forwarded: ForwardedNIC) -> None:
    """The forwarded NIC's <interface type='user'> on passt, its ports on 127.0.0.1."""
    iface = next(i for i in domain.devices_of(Interface) if (i.mac or "").lower()
                 == forwarded.mac)
    iface.backend_type = PASST
    iface.port_forwards = [PortForward(proto="tcp", address=LISTEN, ranges=[
        PortRange(start=f.host_port, to=f.guest_port)]) for f in forwarded.forwards]


def qemu_arguments(forwarded: ForwardedNIC) -> list[str]:
    hostfwd = ",".join(f"hostfwd=tcp:{LISTEN}:{f.host_port}-:{f.guest_port}"
                       for f in forwarded.forwards)
    return ["-netdev", f"user,id={NETDEV_ID},{hostfwd}",
            "-device", f"virtio-net-pci,netdev={NETDEV_ID},mac={forwarded.mac},addr={PCI_SLOT}"]


def add_to_domain_xml(xml: str, forwarded: ForwardedNIC | None) -> str:
    """The domain XML with the forwarded NIC on the QEMU command line (built with lxml)."""
    if forwarded is None:
        return xml
    root = etree.fromstring(xml.encode(), _PARSER)
    commandline = etree.SubElement(root, f"{{{QEMU_NS}}}commandline", nsmap={"qemu": QEMU_NS})
    for argument in qemu_arguments(forwarded):
        etree.SubElement(commandline, f"{{{QEMU_NS}}}arg", value=argument)
    return etree.tostring(root, encoding="unicode", pretty_print=True)
