"""Volumes and NICs on the xm backend, for both spellings, against the toolstack double.

The running guest gets them through block-attach / network-attach (and
detach), the config file keeps them for the next create, and Xen's own
libxlutil reads both the config and the disk spec handed to block-attach.
"""

from __future__ import annotations

import os

import pytest

from tests import libxlutil
from virt import images
from virt.errors import InvalidParameter, NotSupported, ToolstackError


def _disks(xm_env) -> list:
    with libxlutil.XlConfig(xm_env.config_path()) as xl:
        return [xl.parse_disk(spec) for spec in xl.get_list("disk")]


def _vifs(xm_env) -> list[str]:
    with libxlutil.XlConfig(xm_env.config_path()) as xl:
        return xl.get_list("vif")


def _volumes(xm_env, inst) -> list[str]:
    return sorted(n for n in os.listdir(xm_env.driver.instance_files(inst).directory)
                  if n.startswith("volume-"))


def test_a_volume_attached_to_a_running_guest_is_in_its_config_and_detached_again(
        xm_env, tmp_path):
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    data = tmp_path / "data.raw"
    data.write_bytes(b"DATA" + bytes(65532))
    assert xm_env.driver.attach_volume(inst, "base") == "xvdb"
    assert xm_env.driver.attach_volume(inst, str(data), fmt="raw") == "xvdc"

    fmt = "qcow2" if xm_env.spelling == "xl" else "raw"  # what this host's disk driver reads
    disks = _disks(xm_env)
    assert [(d.vdev, d.format, d.readwrite) for d in disks[1:]] == [
        ("xvdb", fmt, True), ("xvdc", fmt, True)]
    assert images.get_disk_size(disks[2].target, fmt) == 65536
    attach = xm_env.commands()[-1]
    assert attach[:2] == ["block-attach", inst.name]
    spec = attach[2] if xm_env.spelling == "xl" else ",".join(attach[2:])
    with libxlutil.XlConfig(xm_env.config_path()) as xl:
        parsed = xl.parse_disk(spec)  # Xen's parser reads what block-attach got
    assert (parsed.target, parsed.vdev) == (disks[2].target, "xvdc")
    assert set(xm_env.double.domains()[inst.name]["disks"]) == {"xvda", "xvdb", "xvdc"}
    with pytest.raises(InvalidParameter, match="in use by the guest"):
        xm_env.driver.attach_volume(inst, "base", device="xvdb")

    xm_env.driver.detach_volume(inst, "xvdb")
    assert xm_env.commands()[-1][-3:] == ["block-detach", inst.name, "xvdb"]
    assert [d.vdev for d in _disks(xm_env)] == ["xvda", "xvdc"]
    assert not os.path.exists(disks[1].target)
    with pytest.raises(InvalidParameter, match="root disk"):
        xm_env.driver.detach_volume(inst, "xvda")


def test_a_guest_that_does_not_release_a_disk_keeps_it(xm_env):
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    xm_env.driver.attach_volume(inst, "base")
    xm_env.double.set_behaviour(disk_busy=True)
    with pytest.raises(ToolstackError):
        xm_env.driver.detach_volume(inst, "xvdb", timeout=1)
    assert [d.vdev for d in _disks(xm_env)] == ["xvda", "xvdb"]  # the config still has it
    assert len(_volumes(xm_env, inst)) == 1


def test_a_failed_attach_leaves_the_config_and_no_copy(xm_env):
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    with open(xm_env.config_path()) as f:
        before = f.read()
    xm_env.double.fail("block-attach", "libxl: error: backend not ready")
    with pytest.raises(ToolstackError, match="backend not ready"):
        xm_env.driver.attach_volume(inst, "base")
    with open(xm_env.config_path()) as f:
        assert f.read() == before
    assert _volumes(xm_env, inst) == []


def test_a_shut_off_guest_gets_the_volume_at_its_next_create(xm_env):
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    xm_env.driver.power_off(inst)
    calls = len(xm_env.commands())
    assert xm_env.driver.attach_volume(inst, "base") == "xvdb"
    assert "block-attach" not in [c[0] for c in xm_env.commands()[calls:]]
    xm_env.driver.power_on(inst)
    assert set(xm_env.double.domains()[inst.name]["disks"]) == {"xvda", "xvdb"}


def test_nics_attached_and_detached(xm_env):
    inst = xm_env.instance()
    xm_env.driver.spawn(inst, "base")
    nic = type(inst.nics[0])(mac="aa:00:00:00:00:02", bridge="xenbr1")
    xm_env.driver.attach_interface(inst, nic)
    assert xm_env.commands()[-1] == ["network-attach", inst.name, "mac=aa:00:00:00:00:02",
                                  "bridge=xenbr1"]
    assert _vifs(xm_env) == ["mac=aa:00:00:00:00:01,bridge=xenbr0",
                          "mac=aa:00:00:00:00:02,bridge=xenbr1"]
    assert xm_env.double.domains()[inst.name]["vifs"] == ["aa:00:00:00:00:01",
                                                       "aa:00:00:00:00:02"]
    with pytest.raises(InvalidParameter, match="already"):
        xm_env.driver.attach_interface(inst, nic)
    if xm_env.spelling == "xm":
        with pytest.raises(NotSupported, match="device id"):
            xm_env.driver.detach_interface(inst, nic.mac)
        xm_env.driver.power_off(inst)
    xm_env.driver.detach_interface(inst, nic.mac)
    assert _vifs(xm_env) == ["mac=aa:00:00:00:00:01,bridge=xenbr0"]
    if xm_env.spelling == "xl":
        assert xm_env.commands()[-1][-3:] == ["network-detach", inst.name, nic.mac]
        assert xm_env.double.domains()[inst.name]["vifs"] == ["aa:00:00:00:00:01"]
