"""Resize without a guest: the checks, the definition it writes, the cold disk growth."""

from __future__ import annotations

import os

import pytest

from backends.libvirt import resize
from backends.xm.driver import XmDriver
from tests.xm_double import DoubleHost
from virt import images
from virt.conf import make_conf
from virt.errors import ImageError, InvalidParameter, NotSupported
from virt.guest import build_domain
from virt.objects import BlockDevice, Flavor, Instance

GIB = 1 << 30
FLAVOR = Flavor(memory_mb=512, vcpus=1, root_gb=2, name="small")
BOUNDS = resize.Bounds(host_cpus=4, host_memory_mb=8192, max_disk_bytes=100 * GIB,
                       max_vcpus=2, max_memory_mb=1024)


@pytest.mark.parametrize("request_, live, message", [
    (resize.Request(vcpus=5), False, "vcpus 5: this host has 4 vCPUs; give at most 4"),
    (resize.Request(memory_mb=9000), True, "memory_mb 9000: this host has 8192 MiB"),
    (resize.Request(vcpus=3), True, "vcpus 3: above the 2 vCPUs this guest booted with, "
     "the most a live resize reaches; power it off and resize it cold, or boot it with "
     "--max-vcpus 3"),
    (resize.Request(memory_mb=2048), True, "above the 1024 MiB this guest booted with"),
    (resize.Request(root_gb=1), False, "root_gb 1: the root disk has 2 GiB and shrinking it "
     "would cut the guest's file systems; give at least 2"),
    (resize.Request(root_gb=101), True, "above the largest disk this host accepts (100 GiB"),
])
def test_a_size_beyond_the_host_the_boot_maximum_or_below_the_disk_is_refused(
        request_, live, message):
    with pytest.raises(InvalidParameter, match=message.replace("(", r"\(")):
        resize.check(request_, FLAVOR, 2 * GIB, BOUNDS, live)


@pytest.mark.parametrize("request_, live, flavor", [
    (resize.Request(vcpus=2, memory_mb=1024, root_gb=3), True,
     Flavor(memory_mb=1024, vcpus=2, root_gb=3, name="small")),
    (resize.Request(vcpus=4, memory_mb=8192), False,  # cold: beyond the boot maximums
     Flavor(memory_mb=8192, vcpus=4, root_gb=2, name="small")),
    (resize.Request(memory_mb=256), True, Flavor(memory_mb=256, vcpus=1, root_gb=2,
                                                 name="small")),
])
def test_a_size_within_bounds_gives_the_new_flavor(request_, live, flavor):
    assert resize.check(request_, FLAVOR, 2 * GIB, BOUNDS, live) == flavor


def test_the_disk_grows_only_past_its_size():
    assert resize.grow_to(resize.Request(root_gb=2), 2 * GIB) is None
    assert resize.grow_to(resize.Request(vcpus=2), 2 * GIB) is None
    assert resize.grow_to(resize.Request(root_gb=3), 2 * GIB) == 3 * GIB


def _domain(flavor: Flavor, **params: str):
    instance = Instance(name="rz-unit", uuid="0b7e5b3e-8f3a-4c1e-9a51-2d2f6c1f0a11",
                        flavor=flavor, params=params)
    return build_domain(instance, [BlockDevice(path="/i/disk", fmt="qcow2")], [], "qemu",
                        8_000_000, owner="/i")


@pytest.mark.parametrize("params, new, new_params", [
    ({"max_vcpus": "4", "max_memory_mb": "2048"}, Flavor(1024, 3, 2, "small"),
     {"max_vcpus": "4", "max_memory_mb": "2048"}),
    # cold beyond a maximum: the maximum rises with it
    ({"max_vcpus": "2"}, Flavor(512, 3, 2, "small"), {"max_vcpus": "3"}),
    ({}, Flavor(2048, 2, 5, "small"), {}),
])
def test_the_definition_is_what_build_domain_makes_of_the_new_flavor(params, new, new_params):
    """A hard reboot rebuilds the domain from the metadata: it must come out the same."""
    resized = resize.persistent_definition(_domain(FLAVOR, **params), new)
    assert resized == _domain(new, **new_params)
    assert resized.metadata.flavor == new


def test_the_live_metadata_is_handed_over_without_its_namespace():
    text = resize.unqualified_metadata(_domain(FLAVOR))
    assert text.startswith("<instance>") and "xmlns" not in text
    assert '<flavor name="small" memory_mb="512" vcpus="1" root_gb="2"/>' in text


@pytest.fixture
def overlay(tmp_path):
    base = tmp_path / "base.raw"
    images.create_image("raw", str(base), "1M")
    disk = tmp_path / "inst" / "disk"
    disk.parent.mkdir()
    images.create_cow_image(str(base), str(disk), "2M")
    os.chmod(disk, 0o640)
    return str(disk)


def test_a_cold_disk_grows_in_place_of_the_old_and_leaves_nothing(overlay):
    resize.grow_overlay(overlay, "qcow2", 4 << 20, images.Limits())
    assert images.get_disk_size(overlay, "qcow2") == 4 << 20
    assert images.get_disk_backing_file(overlay) == "base.raw"
    assert os.stat(overlay).st_mode & 0o777 == 0o640
    assert os.listdir(os.path.dirname(overlay)) == ["disk"]


def test_a_failed_growth_leaves_the_disk_as_it_was(overlay):
    before = open(overlay, "rb").read()
    # qemu-img cannot even start within 1 MiB of address space
    with pytest.raises(ImageError, match="qemu-img resize failed"):
        resize.grow_overlay(overlay, "qcow2", 4 << 20, images.Limits(address_space=1 << 20))
    assert open(overlay, "rb").read() == before
    assert os.listdir(os.path.dirname(overlay)) == ["disk"]


def test_the_xm_backend_says_it_cannot_resize(tmp_path, monkeypatch):
    double = DoubleHost(str(tmp_path / "double"))
    monkeypatch.setenv("PATH", double.bin_dir + os.pathsep + os.environ["PATH"])
    conf = make_conf(state_path=str(tmp_path / "state"), xm__config_dir=str(tmp_path / "xen"),
                     xm__log_dir=str(tmp_path / "log"), xm__toolstack="xl")
    with pytest.raises(NotSupported, match="backend xm: instances cannot be resized here"):
        XmDriver(conf).resize(Instance(name="rz-xm"), vcpus=2)
    with pytest.raises(InvalidParameter, match="vcpus 0: use a whole number from 1"):
        XmDriver(conf).resize(Instance(name="rz-xm"), vcpus=0)


@pytest.mark.parametrize("params, message", [
    ({"max_vcpus": "0"}, r"params\['max_vcpus'\] '0': use a whole number from 1"),
    ({"max_memory_mb": "256"}, r"params\['max_memory_mb'\] 256: below the flavor's 512 MiB"),
])
def test_a_boot_maximum_below_the_flavor_is_refused(params, message):
    with pytest.raises(InvalidParameter, match=message):
        _domain(FLAVOR, **params)


def test_the_boot_maximums_are_the_domain_sizes_and_the_flavor_its_current_ones():
    domain = _domain(FLAVOR, max_vcpus="4", max_memory_mb="2048")
    assert (domain.vcpus, domain.vcpu_current) == (4, 1)
    assert (domain.memory_kib, domain.current_memory_kib) == (2048 << 10, 512 << 10)


def test_a_boot_maximum_that_is_no_plain_number_is_refused():
    with pytest.raises(InvalidParameter, match=r"params\['max_vcpus'\] '²'"):
        _domain(FLAVOR, max_vcpus="²")  # a digit to str.isdigit, not to int()


@pytest.mark.parametrize(("cpu_list", "count"), [("", 0), ("0", 1), ("0-1", 2), ("0-1,3", 3),
                                                 ("0,2-4,7", 5)])
def test_cpu_lists_as_the_guest_agent_gives_them_are_counted(cpu_list, count):
    from backends.libvirt.resize import cpu_count
    assert cpu_count(cpu_list) == count
