"""Drivers for unit tests on libvirt's test:///default."""

from __future__ import annotations

from backends.libvirt.driver import LibvirtDriver

TEST_URI = "test:///default"


def serving_driver(conf):
    """A LibvirtDriver with its host initialised; what it spawned is destroyed after."""
    driver = LibvirtDriver(conf, event_stop_delay=0.1)
    driver.init_host("localhost")
    yield driver
    for name in driver.list_instances():
        driver.destroy(driver.get_instance(name))
    driver.close()
