"""Live snapshots of the demo guest: copied while it runs, never paused or restarted.

The demo guest has no guest agent, so these snapshots are crash-consistent
and must say so.
"""

from __future__ import annotations

import os
import queue

import libvirt
import pytest

from tests.support.guests import (
    console_lines,
    demo_conf,
    demo_store,
    read_disk_marker,
    wait_for_console,
)
from virt import images
from virt.objects import NIC, Flavor, Instance, PowerState

FLAVOR = Flavor(memory_mb=128, vcpus=1, root_gb=1, name="liveops")
PREFIX = "lo-snap-"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("live-snapshot")


@pytest.fixture
def conf(state_dir, libvirt_daemons):
    return demo_conf(state_dir, libvirt_daemons)


@pytest.fixture
def store(conf, demo_guest):
    return demo_store(conf, demo_guest)


@pytest.fixture
def driver(conf, demo_driver):
    return demo_driver(conf, PREFIX, init_host=False)


@pytest.fixture
def system(libvirt_daemons):
    conn = libvirt.open(libvirt_daemons)
    yield conn
    conn.close()


def _running_guest(driver, demo_guest, suffix):
    instance = Instance(name=PREFIX + suffix, flavor=FLAVOR, image="demo",
                        nics=(NIC(mac="52:54:00:10:15:01"),),
                        params={"kernel_path": demo_guest.kernel,
                                "initrd_path": demo_guest.initrd,
                                "kernel_args": demo_guest.cmdline()})
    driver.spawn(instance, "demo")
    console = os.path.join(driver.conf.instances_path, instance.uuid, "console.log")
    wait_for_console(console, "ready")
    return instance, console


def _disks(system, name):
    """The live <disk> elements: the disk chain the guest runs on."""
    xml = system.lookupByName(name).XMLDesc(0)
    return xml[xml.index("<disk"):xml.rindex("</disk>")]


def _domain_id(system, name):
    """The id of the running domain now (a virDomain object caches the one it was found with)."""
    return system.lookupByName(name).ID()


def _leftovers(driver, store):
    return [os.path.join(d, n) for d in (store.directory, driver.conf.instances_path)
            for n in os.listdir(d) if n.startswith(".vd-")]


def test_a_running_guest_is_copied_while_it_keeps_running(driver, store, system, demo_guest):
    instance, console = _running_guest(driver, demo_guest, "run")
    dom = system.lookupByName(instance.name)
    domain_id, disks = dom.ID(), _disks(system, instance.name)
    states: queue.SimpleQueue = queue.SimpleQueue()
    driver.register_event_listener(lambda name, state: states.put((name, state)))
    # A new listener is told the current states first; what comes after is the snapshot's.
    while states.get(timeout=30) != (instance.name, "running"):
        pass
    seen: list[float] = []

    driver.snapshot(instance, "lo-live", progress=seen.append)

    image = store.get("lo-live")
    assert image.format == "qcow2" and images.info(image.path, "qcow2").backing_file is None
    assert image.properties == {"arch": "x86_64", "consistency": "crash"}
    assert "boot=1 " in (read_disk_marker(image.path, "qcow2") or "")
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    # never saved, paused or restarted; the same chain; no job left
    assert _domain_id(system, instance.name) == domain_id
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert console_lines(console).count("boot") == 1
    heard = []
    while not states.empty():
        heard.append(states.get_nowait())
    assert [state for name, state in heard if name == instance.name] == []
    assert _disks(system, instance.name) == disks
    assert dom.jobStats()["type"] == libvirt.VIR_DOMAIN_JOB_NONE
    assert _leftovers(driver, store) == []
    store.delete("lo-live")


def test_a_paused_guest_stays_paused_and_a_converted_copy_is_flat(
        driver, store, system, demo_guest):
    instance, console = _running_guest(driver, demo_guest, "paused")
    driver.pause(instance)
    dom = system.lookupByName(instance.name)
    domain_id = dom.ID()

    driver.snapshot(instance, "lo-raw", fmt="raw")
    driver.snapshot(instance, "lo-small", compress=True)

    for name, fmt in (("lo-raw", "raw"), ("lo-small", "qcow2")):
        image = store.get(name)
        assert image.format == fmt and image.properties["consistency"] == "crash"
        assert "boot=1 " in (read_disk_marker(image.path, fmt) or "")
        store.delete(name)
    assert _domain_id(system, instance.name) == domain_id
    assert driver.get_info(instance).state is PowerState.PAUSED
    assert _leftovers(driver, store) == []


def test_a_failure_during_the_copy_aborts_the_job_and_leaves_nothing(
        driver, store, system, demo_guest):
    instance, _ = _running_guest(driver, demo_guest, "fail")
    dom = system.lookupByName(instance.name)
    domain_id, disks = dom.ID(), _disks(system, instance.name)

    def fail(_fraction):
        raise RuntimeError("the caller gave up")

    with pytest.raises(RuntimeError, match="gave up"):
        driver.snapshot(instance, "lo-failed", progress=fail)

    assert "lo-failed" not in [image.name for image in store.list()]
    assert _domain_id(system, instance.name) == domain_id
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert dom.jobStats()["type"] == libvirt.VIR_DOMAIN_JOB_NONE
    assert _disks(system, instance.name) == disks
    assert _leftovers(driver, store) == []
    driver.snapshot(instance, "lo-failed")  # the name and the guest are free again
    store.delete("lo-failed")
