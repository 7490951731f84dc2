"""What a running guest tells about itself: addresses, and whether its agent answers.

The qemu-guest-agent knows every address; without it, libvirt's DHCP leases
(guests on a libvirt network) or the host's ARP table may know some. Each
source that cannot tell is passed over, so the answer is the best one there is.
"""

from __future__ import annotations

import libvirt

from virt.objects import GuestAddresses

AGENT_CHANNEL = "org.qemu.guest_agent.0"
SOURCES = (("agent", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT),
           ("lease", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE),
           ("arp", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP))
_LOOPBACK_MAC = "00:00:00:00:00:00"


def read_addresses(dom: libvirt.virDomain) -> GuestAddresses:
    """Addresses from the first source that knows any; whether the agent answered."""
    agent_answers = False
    for name, source in SOURCES:
        try:
            found = dom.interfaceAddresses(source)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise
            continue  # agent not connected, no libvirt network, guest not running ...
        agent_answers = agent_answers or name == "agent"
        addresses = _pairs(found)
        if addresses:
            return GuestAddresses(agent_answers, name, addresses)
    return GuestAddresses(agent_answers)


def _pairs(found: dict) -> tuple[tuple[str, str], ...]:
    """(MAC, ADDRESS/PREFIX) of every interface but loopback, in interface order."""
    pairs = []
    for interface, details in sorted((found or {}).items()):
        mac = (details.get("hwaddr") or "").lower()
        if interface == "lo" or mac == _LOOPBACK_MAC:
            continue
        for addr in details.get("addrs") or ():
            pairs.append((mac, f"{addr['addr']}/{addr['prefix']}"))
    return tuple(pairs)
