"""Nova's VIFs as NICs (backends/nova/vifs.py needs no Nova: plain dicts here)."""

import pytest

from backends.nova.vifs import nic_from_vif, nics_from_network_info
from virt.errors import InvalidParameter
from virt.guest import interface_for
from virt.objects import NIC

PORT = "ce531f90-199f-48c0-816c-13e38010b442"


def vif(kind, bridge="br-int", mtu=1450):
    return {"id": PORT, "address": "fa:16:3e:4c:2c:30", "type": kind,
            "devname": "tapce531f90-19",
            "network": {"bridge": bridge, "meta": {"mtu": mtu}}}


@pytest.mark.parametrize(("kind", "expected"), [
    ("ovs", NIC("fa:16:3e:4c:2c:30", bridge="br-int", tap="tapce531f90-19",
                ovs_interface_id=PORT, mtu=1450)),
    ("bridge", NIC("fa:16:3e:4c:2c:30", bridge="br-int", tap="tapce531f90-19", mtu=1450)),
    ("tap", NIC("fa:16:3e:4c:2c:30", tap="tapce531f90-19", mtu=1450)),
    ("ethernet", NIC("fa:16:3e:4c:2c:30", tap="tapce531f90-19", mtu=1450)),
])
def test_each_supported_vif_type_becomes_its_nic(kind, expected):
    assert nic_from_vif(vif(kind)) == expected


def test_the_interfaces_libvirt_gets():
    ovs, bridge, tap = (interface_for(nic_from_vif(vif(k)), "qemu")
                        for k in ("ovs", "bridge", "tap"))
    assert (ovs.type, ovs.source, ovs.virtualport.type, ovs.virtualport.interface_id,
            ovs.target_dev, ovs.mtu) == ("bridge", "br-int", "openvswitch", PORT,
                                         "tapce531f90-19", 1450)
    assert (bridge.type, bridge.virtualport) == ("bridge", None)
    assert (tap.type, tap.source, tap.target_dev) == ("ethernet", None, "tapce531f90-19")


def test_no_mtu_and_no_network_info():
    assert nic_from_vif(vif("tap", mtu=None)).mtu is None
    assert nics_from_network_info(None) == []


def test_a_vif_type_it_cannot_plug_is_refused_by_name():
    with pytest.raises(InvalidParameter, match="type 'hw_veb'.*ovs, bridge, tap, ethernet"):
        nic_from_vif(vif("hw_veb"))
