"""Fixtures for tests that drive real guests through the project's drivers.

The daemons and the demo guest come from tests/conftest.py; plain helpers
from tests/support/guests.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from backends.libvirt.driver import LibvirtDriver
from tests.support.guests import DemoGuest, demo_store


@pytest.fixture
def demo_driver(libvirt_daemons: str,
                demo_guest: DemoGuest) -> Iterator[Callable[..., LibvirtDriver]]:
    """demo_driver(conf, prefix): a LibvirtDriver with the demo image in its store.

    After the test it destroys the guests whose names start with `prefix`
    (other tests' guests share this libvirtd) and closes the driver.
    """
    made: list[tuple[LibvirtDriver, str]] = []

    def make(conf, prefix: str, init_host: bool = True, **kwargs) -> LibvirtDriver:
        demo_store(conf, demo_guest)
        driver = LibvirtDriver(conf, **kwargs)
        if init_host:
            driver.init_host("localhost")
        made.append((driver, prefix))
        return driver

    yield make
    for driver, prefix in made:
        for name in driver.list_instances():
            if name.startswith(prefix):
                driver.destroy(driver.get_instance(name))
        driver.close()
