"""Two configurations on one real libvirtd: each driver keeps to its own guests.

Two state directories stand for two compute services (or a test next to
production) on qemu:///system. Each boots one demo guest; neither may list,
read, snapshot, stop, destroy or hear the other's, a foreign domain defined
and undefined in a loop never disturbs `list`, and the base under a running
guest survives a cache cleanup (QEMU holds its disk's lock meanwhile).
"""

from __future__ import annotations

import os
import queue
import threading
import uuid

import pytest

from backends.libvirt.driver import LibvirtDriver
from tests.support.guests import DEMO_GUEST_DIR, open_when_up, remove_domain, wait_for_event
from virt.cli import main
from virt.conf import make_conf
from virt.errors import InstanceExists, InstanceNotFound
from virt.guest import build_domain
from virt.imagestore import LocalImageStore
from virt.objects import NIC, BlockDevice, Flavor, Instance, PowerState

FLAVOR = Flavor(memory_mb=128, vcpus=1, root_gb=1, name="owner")
LIST_ROUNDS = 200


def _config(state_dir, uri) -> str:
    path = os.path.join(state_dir, "virt-driver.conf")
    with open(path, "w") as f:
        f.write(f"[DEFAULT]\nstate_path = {state_dir}\nvirt_type = qemu\n"
                f"boot_file_dirs = {DEMO_GUEST_DIR}\n"
                f"[libvirt]\nconnection_uri = {uri}\nshutdown_timeout = 0\n")
    return path


@pytest.fixture
def two(tmp_path_factory, libvirt_daemons, demo_guest):
    """Two drivers of two configurations, each with the demo image in its own store."""
    drivers = []
    for side in ("a", "b"):
        state_dir = str(tmp_path_factory.mktemp(f"owner-{side}"))
        conf = make_conf(["--config-file", _config(state_dir, libvirt_daemons)])
        LocalImageStore.from_conf(conf).import_image("demo", demo_guest.disk, "raw",
                                                     {"arch": "x86_64"})
        driver = LibvirtDriver(conf, event_stop_delay=0)
        driver.init_host("localhost")
        drivers.append(driver)
    yield drivers
    for driver in drivers:
        # Only ours by name as well: other tests' guests share this libvirtd.
        for name in driver.list_instances():
            if name.startswith("owner-"):
                driver.destroy(driver.get_instance(name))
        driver.close()


def _guest(demo_guest, name: str, mac: str) -> Instance:
    return Instance(name=name, flavor=FLAVOR, image="demo", nics=(NIC(mac=mac),),
                    params={"kernel_path": demo_guest.kernel, "initrd_path": demo_guest.initrd,
                            "kernel_args": demo_guest.cmdline()})


def _listen(driver) -> queue.SimpleQueue:
    heard: queue.SimpleQueue = queue.SimpleQueue()
    driver.register_event_listener(lambda name, state: heard.put((name, state)))
    return heard


def _foreign_xml(name: str) -> str:
    """A domain another virt-driver configuration owns (never started here)."""
    instance = Instance(name=name, flavor=FLAVOR, image="demo")
    return build_domain(instance, [BlockDevice(path="/nonexistent/disk")], (), "qemu", 0,
                        owner="/elsewhere/instances").to_xml()


def _churn(uri: str, name: str, stop: threading.Event, cycles: list[int]) -> None:
    conn = open_when_up(uri)
    try:
        while not stop.is_set():
            conn.defineXML(_foreign_xml(name)).undefine()
            cycles[0] += 1
    finally:
        remove_domain(conn, name)
        conn.close()


def test_two_configurations_keep_to_their_own_guests(two, demo_guest, libvirt_daemons):
    a, b = two
    tag = uuid.uuid4().hex[:8]
    mine, theirs = (_guest(demo_guest, f"owner-a-{tag}", "52:54:00:0a:00:01"),
                    _guest(demo_guest, f"owner-b-{tag}", "52:54:00:0b:00:01"))
    heard_a, heard_b = _listen(a), _listen(b)
    a.spawn(mine, "demo")
    b.spawn(theirs, "demo")
    assert a.list_instances() == [mine.name]
    assert b.list_instances() == [theirs.name]

    # b cannot read, snapshot, stop or destroy a's guest
    with pytest.raises(InstanceNotFound):
        b.get_instance(mine.name)
    for operation in (b.get_info, b.power_off, b.pause, lambda i: b.snapshot(i, "stolen")):
        with pytest.raises(InstanceNotFound, match=mine.name):
            operation(mine)
    b.destroy(mine)
    assert a.get_info(mine).state is PowerState.RUNNING
    assert [image.name for image in b.store.list()] == ["demo"]

    # b's events never reach a's listeners (and a's events were queued before b's)
    b.pause(theirs)
    seen_b = wait_for_event(heard_b, (theirs.name, "paused"))
    assert [n for n, _ in seen_b if n != theirs.name] == []

    # a cache cleanup while the guest runs keeps its base
    base = a.cache.base_path(a.store.get("demo"))
    config_a = os.path.join(a.conf.state_path, "virt-driver.conf")
    assert main(["--config-file", config_a, "cache-cleanup", "--min-age", "0"]) == 0
    assert os.path.isfile(base)

    # list keeps working while a foreign domain comes and goes
    stop, cycles = threading.Event(), [0]
    churn = threading.Thread(target=_churn, args=(libvirt_daemons, f"owner-x-{tag}", stop,
                                                  cycles))
    churn.start()
    try:
        for _ in range(LIST_ROUNDS):
            names = a.list_instances()
            assert names == [mine.name]
            assert [a.get_info(a.get_instance(n)).state for n in names] == [PowerState.RUNNING]
        assert main(["--config-file", config_a, "--json", "list"]) == 0
    finally:
        stop.set()
        churn.join()
    assert cycles[0] > 0

    b.destroy(theirs)
    a.destroy(mine)
    seen_a = wait_for_event(heard_a, (mine.name, "shutoff"))
    assert [n for n, _ in seen_a if n != mine.name] == []
    conn = open_when_up(libvirt_daemons)
    try:
        names = [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()
    assert mine.name not in names and theirs.name not in names


def test_spawn_of_a_name_another_configuration_uses_is_refused(two, demo_guest):
    a, b = two
    name = f"owner-same-{uuid.uuid4().hex[:8]}"
    a.spawn(_guest(demo_guest, name, "52:54:00:0a:00:02"), "demo")
    with pytest.raises(InstanceExists, match="does not own"):
        b.spawn(_guest(demo_guest, name, "52:54:00:0b:00:02"), "demo")
    assert a.list_instances() == [name] and b.list_instances() == []
