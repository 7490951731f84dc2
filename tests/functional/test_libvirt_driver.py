"""LibvirtDriver against the real libvirtd with TCG guests (the demo guest).

Each guest boot costs about 2 s and each stop about 2 s, so the tests share a
guest between the assertions of one story: what the guest sees, its power
cycle, its disks, and what is left after destroy.
"""

from __future__ import annotations

import contextlib
import os
import queue

import libvirt
import pytest

from backends.libvirt.driver import LibvirtDriver
from tests.support.guests import (
    DEMO_GUEST_DIR,
    console_lines,
    demo_conf,
    demo_store,
    read_disk_marker,
    restart_libvirtd,
    wait_for_console,
    wait_for_event,
)
from virt.conf import make_conf
from virt.errors import HypervisorError, InvalidParameter, SpawnError, VirtError
from virt.objects import NIC, BlockDevice, Flavor, Instance, PowerState

FLAVOR = Flavor(memory_mb=192, vcpus=2, root_gb=1, name="demo")
MAC = "52:54:00:4c:56:01"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("libvirt-driver")


@pytest.fixture
def conf(state_dir, libvirt_daemons):
    return demo_conf(state_dir, libvirt_daemons, libvirt__shutdown_timeout=30,
                     libvirt__shutdown_retry_interval=3, libvirt__wait_soft_reboot_seconds=60)


@pytest.fixture
def store(conf, demo_guest):
    return demo_store(conf, demo_guest)


@pytest.fixture
def driver(conf, demo_driver):
    return demo_driver(conf, "fn-")


@pytest.fixture
def events(driver):
    got: queue.SimpleQueue = queue.SimpleQueue()
    driver.register_event_listener(lambda name, state: got.put((name, state)))
    return got


def _instance(demo_guest, name: str, action: str = "wait", **params) -> Instance:
    params = {"kernel_path": demo_guest.kernel, "initrd_path": demo_guest.initrd,
              "kernel_args": demo_guest.cmdline(action), **params}
    return Instance(name=name, flavor=FLAVOR, image="demo", params=params,
                    nics=(NIC(mac=MAC),))


def _paths(conf, instance):
    directory = os.path.join(conf.instances_path, instance.uuid)
    return directory, os.path.join(directory, "disk"), os.path.join(directory, "console.log")


def _nothing_left(conf, instance):
    directory, _, _ = _paths(conf, instance)
    assert not os.path.exists(directory)
    # A connection of our own: the test may have restarted libvirtd under older ones.
    conn = libvirt.open(conf.libvirt.connection_uri)
    try:
        assert instance.name not in [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()


def test_guest_sees_its_flavor_and_keeps_its_disk_through_a_power_cycle(
        driver, conf, store, demo_guest, events):
    instance = _instance(demo_guest, "fn-cycle")
    directory, disk, console = _paths(conf, instance)
    driver.spawn(instance, "demo")
    lines = wait_for_console(console, "ready")
    assert "cpus=2" in lines and f"mac={MAC}" in lines and "marker written" in lines
    mem_kb = int(next(line for line in lines if line.startswith("mem_kb="))[7:])
    assert 150 * 1024 < mem_kb <= 192 * 1024
    assert "VIRT-DEMO ready" in driver.get_console_output(instance)
    wait_for_event(events, ("fn-cycle", "running"))

    driver.power_off(instance)  # the guest hears the ACPI button and powers off
    assert driver.get_info(instance).state is PowerState.SHUTOFF
    assert "power button" in console_lines(console)
    wait_for_event(events, ("fn-cycle", "shutoff"))
    assert "boot=1 " in (read_disk_marker(disk, "qcow2") or "")
    assert read_disk_marker(driver.cache.base_path(store.get("demo"))) is None

    driver.snapshot(instance, "fn-cycle-snap", fmt="qcow2", compress=True)
    snap = store.get("fn-cycle-snap")
    try:
        assert snap.properties == {"arch": "x86_64"}
        assert "boot=1 " in (read_disk_marker(snap.path, "qcow2") or "")
    finally:
        store.delete("fn-cycle-snap")

    driver.power_on(instance)
    wait_for_console(console, "ready", count=2)
    assert "boot=2 " in (_marker_when_off(driver, instance, disk) or "")

    driver.destroy(instance)
    _nothing_left(conf, instance)


def _marker_when_off(driver, instance, disk):
    driver.power_off(instance)
    return read_disk_marker(disk, "qcow2")


def test_soft_reboot_pause_and_suspend(driver, conf, store, demo_guest, events):
    instance = _instance(demo_guest, "fn-states")
    _, _, console = _paths(conf, instance)
    driver.spawn(instance, "demo")
    wait_for_console(console, "ready")
    first_id = driver.get_info(instance).id

    driver.reboot(instance)
    lines = wait_for_console(console, "ready", count=2)
    assert lines.count("boot") == 2 and "power button" in lines
    info = driver.get_info(instance)
    assert info.state is PowerState.RUNNING and info.id != first_id

    driver.pause(instance)
    assert driver.get_info(instance).state is PowerState.PAUSED
    driver.unpause(instance)
    assert driver.get_info(instance).state is PowerState.RUNNING
    driver.suspend(instance)
    assert driver.get_info(instance).state is PowerState.SUSPENDED
    driver.resume(instance)
    assert driver.get_info(instance).state is PowerState.RUNNING
    assert console_lines(console).count("boot") == 2  # resumed, not rebooted

    driver.snapshot(instance, "fn-states-snap", fmt="raw")
    try:
        assert "boot=2 " in (read_disk_marker(store.get("fn-states-snap").path, "raw") or "")
    finally:
        store.delete("fn-states-snap")
    assert driver.get_info(instance).state is PowerState.RUNNING

    driver.reboot(instance, hard=True)  # destroy, define again from the metadata, start
    wait_for_console(console, "ready", count=3)
    assert driver.get_instance("fn-states").flavor == FLAVOR

    seen = wait_for_event(events, ("fn-states", "suspended"))
    # The stop inside the soft reboot was followed by a start: never reported.
    assert ("fn-states", "shutoff") not in seen
    states = iter(s for n, s in seen if n == "fn-states")
    assert all(state in states for state in ("running", "paused", "running", "suspended")), seen

    driver.destroy(instance)
    _nothing_left(conf, instance)


@pytest.mark.parametrize("case, step", [
    ("missing image", "image"),
    ("vcpus over the machine limit", "define"),
    ("missing kernel", None),  # the caller's input: InvalidParameter, not a failed step
    ("missing bridge", "start"),
    ("disk bus qemu cannot start", "start"),
])
def test_failed_spawn_leaves_nothing(driver, conf, demo_guest, case, step):
    instance = _instance(demo_guest, "fn-fail")
    image, nics, extra = "demo", (), ()
    if case == "missing image":
        image = "no-such-image"
    elif case == "vcpus over the machine limit":
        instance.flavor = Flavor(memory_mb=128, vcpus=256, root_gb=1)
    elif case == "missing kernel":
        instance.params["kernel_path"] = str(DEMO_GUEST_DIR / "missing-vmlinuz")
    elif case == "missing bridge":
        nics = (NIC(mac=MAC, bridge="vd-nosuchbr"),)
    else:
        extra = (BlockDevice(path=demo_guest.disk, fmt="raw", bus="xen", readonly=True),)
    with pytest.raises(InvalidParameter if step is None else SpawnError) as exc:
        driver.spawn(instance, image, nics=nics, block_devices=extra)
    assert getattr(exc.value, "step", None) == step
    _nothing_left(conf, instance)
    assert os.listdir(conf.instances_path) == []


def test_next_call_after_a_libvirtd_restart_works_and_events_return(
        driver, conf, demo_guest, events):
    instance = _instance(demo_guest, "fn-restart")
    driver.spawn(instance, "demo")
    wait_for_event(events, ("fn-restart", "running"))
    restart_libvirtd()
    # The first call after the restart goes through without any help.
    assert driver.get_info(instance).state is PowerState.RUNNING
    wait_for_event(events, ("fn-restart", "running"))  # the resync after reconnecting
    driver.pause(instance)
    wait_for_event(events, ("fn-restart", "paused"))
    driver.unpause(instance)

    with pytest.raises(HypervisorError, match="reachable"):
        driver.migrate(instance, "qemu+tcp://127.0.0.1:1/system")
    assert driver.get_info(instance).state is PowerState.RUNNING

    host = driver.get_host_info()
    assert (host.hypervisor_type, host.arch, host.backend) == ("qemu", "x86_64", "libvirt")
    assert host.hypervisor_version >= 1_000_000 and host.cpu_total >= 1
    driver.destroy(instance)
    _nothing_left(conf, instance)


def test_domain_type_is_tcg(driver, demo_guest, libvirt_system):
    xml = driver.describe_spawn(_instance(demo_guest, "fn-describe"), "demo")
    assert xml.startswith('<domain type="qemu">')
    with pytest.raises(libvirt.libvirtError):
        libvirt_system.lookupByName("fn-describe")


def test_a_guest_deaf_to_acpi_is_rebooted_and_destroyed_hard(state_dir, store, demo_guest):
    """acpi=off: the guest never hears the power button, so both timeouts must act."""
    conf = make_conf(virt_type="qemu", state_path=str(state_dir),
                     boot_file_dirs=[str(DEMO_GUEST_DIR)], libvirt__shutdown_timeout=3,
                     libvirt__shutdown_retry_interval=1,
                     libvirt__wait_soft_reboot_seconds=3)
    driver = LibvirtDriver(conf)
    instance = _instance(demo_guest, "fn-deaf",
                         kernel_args=demo_guest.cmdline("wait") + " acpi=off")
    _, _, console = _paths(conf, instance)
    try:
        driver.spawn(instance, "demo")
        wait_for_console(console, "ready")
        first_id = driver.get_info(instance).id
        driver.reboot(instance)  # soft is not seen within 3 s: hard reboot
        lines = wait_for_console(console, "ready", count=2)
        assert "power button" not in lines
        assert driver.get_info(instance).id != first_id
        driver.destroy(instance)  # ACPI for 3 s, then destroy
        _nothing_left(conf, instance)
    finally:
        with contextlib.suppress(VirtError):
            driver.destroy(instance)
        driver.close()
