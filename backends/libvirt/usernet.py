"""The forwarded user NIC of a KVM/QEMU guest, on the QEMU command line.

libvirt's own way (<backend type='passt'/> with <portForward>) is refused by
this host's libvirt 9.0 ("Invalid value for attribute 'type' in element
'backend': 'passt'"), so the forwarded NIC is QEMU's user network given
through <qemu:commandline>: `-netdev user,hostfwd=tcp:127.0.0.1:HOST-:GUEST`
and a virtio NIC with the NIC's MAC. virt/forwards.py reads and checks the
forwards; only 127.0.0.1 ever listens.
"""

from __future__ import annotations

from lxml import etree

from virt.errors import InvalidParameter
from virt.forwards import LISTEN, ForwardedNIC
from virt.objects import NIC

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
NETDEV_ID = "vdfwd0"
# A slot libvirt leaves free (it fills from 0x2 up): QEMU would otherwise take one
# libvirt has assigned to a device of its own.
PCI_SLOT = "0x1e"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


def other_nics(nics: list[NIC], forwarded: ForwardedNIC | None) -> list[NIC]:
    """The NICs libvirt builds itself: all but the forwarded one."""
    if forwarded is None:
        return nics
    for nic in nics:
        if nic.mac.lower() == forwarded.mac and (nic.bridge or nic.network):
            raise InvalidParameter(f"NIC {nic.mac}: only a user NIC can forward ports; drop "
                                   "bridge= or network=, or the forward")
    return [nic for nic in nics if nic.mac.lower() != forwarded.mac]


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
