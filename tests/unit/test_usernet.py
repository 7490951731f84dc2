"""The forwarded user NIC's backend: passt when libvirt's domain capabilities offer it,
QEMU user networking otherwise, and the passt <interface> that would be defined.

This host's libvirt 9.0 refuses <backend type='passt'/> when it parses a domain,
so the passt document is checked against libvirt's schema only, never defined.
"""

from __future__ import annotations

from backends.libvirt import usernet
from tests.support.domain import assert_valid
from virt import forwards
from virt.domain import Interface
from virt.guest import build_domain
from virt.objects import NIC, BlockDevice, Flavor, Instance

MAC = "52:54:00:5e:ed:61"


def _caps(interface: str) -> str:
    return ("<domainCapabilities><path>/usr/bin/qemu-system-x86_64</path><domain>qemu"
            f"</domain><devices>{interface}</devices></domainCapabilities>")


OFFERS_PASST = _caps("<interface supported='yes'><enum name='backendType'>"
                     "<value>default</value><value>passt</value></enum></interface>")
SLIRP_ONLY = _caps("<interface supported='yes'><enum name='backendType'>"
                   "<value>default</value></enum></interface>")
# libvirt 9.0 (this host): no <interface> at all, although it announces passt
LIBVIRT_9_0 = _caps("<disk supported='yes'><enum name='diskDevice'><value>disk</value>"
                    "</enum></disk>")
NOT_SUPPORTED = _caps("<interface supported='no'><enum name='backendType'>"
                      "<value>passt</value></enum></interface>")


def test_passt_only_when_the_domain_capabilities_list_it():
    assert usernet.pick_backend(OFFERS_PASST) == usernet.PASST
    assert usernet.pick_backend(SLIRP_ONLY) == usernet.QEMU_USER
    assert usernet.pick_backend(LIBVIRT_9_0) == usernet.QEMU_USER
    assert usernet.pick_backend(NOT_SUPPORTED) == usernet.QEMU_USER
    assert usernet.pick_backend(None) == usernet.QEMU_USER


def _domain(backend: str):
    params = {forwards.PARAM: f"{MAC}=2222:22+8080:80"}
    forwarded = forwards.read_param(params)
    instance = Instance(name="gu-passt", image="img", nics=(NIC(mac=MAC),), params=params,
                        flavor=Flavor(memory_mb=256, vcpus=1, root_gb=1))
    nics = usernet.other_nics(list(instance.nics), forwarded, backend)
    domain = build_domain(instance, [BlockDevice(path="/var/lib/x/disk", fmt="qcow2")],
                          nics, "qemu", 9_000_000)
    return domain, forwarded


def test_passt_interface_forwards_on_loopback_and_is_valid_per_libvirts_schema():
    domain, forwarded = _domain(usernet.PASST)
    usernet.add_passt(domain, forwarded)
    xml = domain.to_xml()
    assert_valid(xml)
    [iface] = domain.devices_of(Interface)
    assert (iface.type, iface.mac, iface.backend_type) == ("user", MAC, "passt")
    assert [(f.proto, f.address, [(r.start, r.to) for r in f.ranges])
            for f in iface.port_forwards] == [("tcp", "127.0.0.1", [(2222, 22)]),
                                              ("tcp", "127.0.0.1", [(8080, 80)])]
    assert "qemu:commandline" not in xml


def test_qemu_user_networking_keeps_the_nic_off_the_interfaces():
    domain, forwarded = _domain(usernet.QEMU_USER)
    assert domain.devices_of(Interface) == []
    xml = usernet.add_to_domain_xml(domain.to_xml(), forwarded)
    assert "hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:8080-:80" in xml


def test_passt_adds_the_forwarded_nic_when_the_instance_names_no_nic():
    forwarded = forwards.read_param({forwards.PARAM: f"{MAC}=2222:22"})
    assert usernet.other_nics([], forwarded, usernet.PASST) == [NIC(mac=MAC)]
    assert usernet.other_nics([], forwarded, usernet.QEMU_USER) == []


def test_the_forwarded_nic_is_part_of_the_instance_read_back(kernel_driver):
    driver = kernel_driver
    """QEMU's user NIC is no <interface>; the instance read back still has it (show lists it)."""
    other = "52:54:00:5e:ed:62"
    instance = Instance(name="gu-fwd-unit", image="tiny",
                        nics=(NIC(mac=other, network="default"), NIC(mac=MAC)),
                        flavor=Flavor(memory_mb=128, vcpus=1, root_gb=1),
                        params={forwards.PARAM: f"{MAC}=2222:22"})
    driver.spawn(instance, "tiny")
    back = driver.get_instance(instance.name)
    assert [n.mac for n in back.nics] == [other, MAC]
    assert [forwards.describe_nic(n.mac, back.params) for n in back.nics] == \
        [other, f"{MAC} (user, 127.0.0.1:2222->22)"]
    driver.reboot(back, hard=True)  # rebuilt from the metadata: still one NIC on the command line
    xml = driver.describe_spawn(back, "tiny")
    assert xml.count(f"mac={MAC}") == 1 and xml.count("<interface") == 1
    driver.destroy(back)
