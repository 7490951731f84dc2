"""Nova's network_info VIFs as the project's NICs.

A VIF is Nova's dict-like model (keys id, address, type, devname, network
with bridge and meta.mtu). Open vSwitch VIFs become a bridge NIC with the
port id (libvirt adds the tap to the bridge with `ovs-vsctl` when the guest
starts), Linux bridge VIFs a bridge NIC, tap and ethernet VIFs a tap device
libvirt creates. Nothing here imports Nova: the unit tests run without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from virt.errors import InvalidParameter
from virt.objects import NIC

SUPPORTED_TYPES = ("ovs", "bridge", "tap", "ethernet")


def nic_from_vif(vif: Mapping) -> NIC:
    """The NIC of one VIF, or InvalidParameter naming a VIF type this driver cannot plug."""
    kind = vif.get("type")
    network = vif.get("network") or {}
    mtu = (network.get("meta") or {}).get("mtu")
    mac, tap, mtu = vif.get("address") or "", vif.get("devname"), int(mtu) if mtu else None
    if kind == "ovs":
        return NIC(mac, bridge=network.get("bridge"), ovs_interface_id=vif.get("id"), tap=tap,
                   mtu=mtu)
    if kind == "bridge":
        return NIC(mac, bridge=network.get("bridge"), tap=tap, mtu=mtu)
    if kind in ("tap", "ethernet"):
        return NIC(mac, tap=tap, mtu=mtu)
    raise InvalidParameter(f"VIF {vif.get('id')} of type {kind!r}: this driver plugs "
                           f"{', '.join(SUPPORTED_TYPES)}; bind the port with one of those")


def nics_from_network_info(network_info: Iterable[Mapping] | None) -> list[NIC]:
    return [nic_from_vif(vif) for vif in network_info or ()]
