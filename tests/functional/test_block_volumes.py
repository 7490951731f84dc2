"""Host block devices as volumes: loop devices the test makes over files.

The waiting demo guest reports an added disk ("disk=vdb bytes=N") and
writes its marker to it; the marker is then read from the host's file
behind the loop device.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.guests import demo_conf, read_disk_marker, spawn_demo_guest, wait_for_console
from virt.errors import InvalidParameter, InvalidState
from virt.objects import Flavor

FLAVOR = Flavor(memory_mb=128, vcpus=1, root_gb=1, name="rz")
PREFIX = "rz-blk-"


@pytest.fixture
def loops(tmp_path):
    """Two loop devices over 8 MiB files: (device, backing file) each."""
    made = []
    try:
        for index in range(2):
            backing = tmp_path / f"loop{index}.raw"
            with open(backing, "wb") as f:
                f.truncate(8 << 20)
            device = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                                    capture_output=True, text=True).stdout.strip()
            made.append((device, backing))
        yield made
    finally:
        for device, _ in made:
            subprocess.run(["losetup", "-d", device], check=False)


@pytest.fixture
def driver(tmp_path, libvirt_daemons, loops, demo_driver):
    conf = demo_conf(tmp_path / "state", libvirt_daemons, volume_block_devices=[loops[0][0]])
    return demo_driver(conf, PREFIX, init_host=False)


def _guest(driver, demo_guest, suffix, **params):
    return spawn_demo_guest(driver, demo_guest, PREFIX + suffix, FLAVOR, **params)


def test_an_allowed_device_serves_one_guest_and_stays_after_detach(
        driver, demo_guest, loops, tmp_path):
    (allowed, backing), (other, _) = loops
    first, console = _guest(driver, demo_guest, "one")
    with pytest.raises(InvalidParameter, match="not a block device the operator allows"):
        driver.attach_volume(first, other)
    link = tmp_path / "link"
    os.symlink(other, link)  # a link to a device outside the list gains nothing
    with pytest.raises(InvalidParameter, match="not a block device the operator allows"):
        driver.attach_volume(first, str(link))
    with pytest.raises(InvalidParameter, match="used raw"):
        driver.attach_volume(first, allowed, fmt="qcow2")

    assert driver.attach_volume(first, allowed) == "vdb"
    wait_for_console(console, "marker written to vdb")
    assert f"disk=vdb bytes={8 << 20}" in wait_for_console(console, "marker written to vdb")
    assert "boot=1 " in (read_disk_marker(backing) or "")  # written through the device

    second, _ = _guest(driver, demo_guest, "two")
    with pytest.raises(InvalidState, match=f"in use by the guest {first.name}: detach it"):
        driver.attach_volume(second, allowed)

    driver.detach_volume(first, "vdb")
    wait_for_console(console, "gone=vdb")
    assert os.path.exists(allowed) and "boot=1 " in (read_disk_marker(backing) or "")
    assert driver.attach_volume(second, allowed) == "vdb"  # free again
