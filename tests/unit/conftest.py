"""Fixtures shared by the unit tests."""

from __future__ import annotations

import libvirt
import pytest

from backends.libvirt.driver import LibvirtDriver
from tests.support.drivers import TEST_URI
from virt import images
from virt.conf import make_conf
from virt.imagestore import LocalImageStore


@pytest.fixture
def test_conn():
    """libvirt's built-in test driver; it accepts domain types kvm, qemu and xen as given."""
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


@pytest.fixture
def kernel_driver(tmp_path):
    """A LibvirtDriver on test:///default with image "tiny" and a kernel it may boot
    (driver.kernel); what it spawned is destroyed after."""
    kernel = tmp_path / "boot" / "vmlinuz"
    kernel.parent.mkdir()
    kernel.write_bytes(b"kernel")
    conf = make_conf(virt_type="qemu", state_path=str(tmp_path),
                     boot_file_dirs=[str(kernel.parent)], libvirt__connection_uri=TEST_URI,
                     libvirt__shutdown_timeout=2, libvirt__shutdown_retry_interval=1,
                     libvirt__wait_soft_reboot_seconds=2)
    store = LocalImageStore.from_conf(conf)
    raw = tmp_path / "tiny.raw"
    images.create_image("raw", str(raw), "1M")
    store.import_image("tiny", str(raw), "raw")
    driver = LibvirtDriver(conf, event_stop_delay=0.1)
    driver.init_host("localhost")
    driver.kernel = str(kernel)
    yield driver
    for name in driver.list_instances():
        driver.destroy(driver.get_instance(name))
    driver.close()
