"""Concurrent spawns in one process: calls do not queue behind one connection,
and guests boot from a raw image's base that is the store file itself."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from backends.libvirt.connection import Connection
from tests.support.guests import demo_conf, read_disk_marker, wait_for_console
from virt.objects import NIC, Flavor, Instance, PowerState

FLAVOR = Flavor(memory_mb=128, vcpus=1, root_gb=1, name="sp")


def test_a_call_made_while_another_runs_gets_a_connection_of_its_own(libvirt_daemons):
    connection = Connection(libvirt_daemons)
    inside, release, first = threading.Event(), threading.Event(), []

    def slow(conn):
        first.append(conn)
        inside.set()
        release.wait(60)
        return conn.getVersion()

    worker = threading.Thread(target=connection.call, args=(slow,))
    worker.start()
    try:
        assert inside.wait(60)
        # Answered while the first call still holds the shared connection.
        second, version = connection.call(lambda conn: (conn, conn.getVersion()))
        assert second is not first[0] and version > 0
    finally:
        release.set()
        worker.join()
    # Alone again: the shared connection serves.
    assert connection.call(lambda conn: conn) is first[0]
    connection.close()


@pytest.fixture
def driver(tmp_path, libvirt_daemons, demo_driver):
    return demo_driver(demo_conf(tmp_path, libvirt_daemons), "sp-")


def test_four_spawns_from_threads_boot_from_the_store_file_itself(driver, demo_guest):
    store_file = driver.store.get("demo").path
    written = driver.store.get("demo").written
    instances = [Instance(name=f"sp-storm-{i}", flavor=FLAVOR, image="demo",
                          params={"kernel_path": demo_guest.kernel,
                                  "initrd_path": demo_guest.initrd,
                                  "kernel_args": demo_guest.cmdline("wait")},
                          nics=(NIC(mac=f"52:54:00:5b:00:0{i}"),)) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: driver.spawn(i, "demo"), instances))
    assert driver._connection.spares.opened > 0  # the spawns did not share one connection
    for instance in instances:
        assert driver.get_info(instance).state == PowerState.RUNNING
    base = driver.cache.base_path(driver.store.get("demo"))
    assert os.stat(base).st_ino == os.stat(store_file).st_ino  # no copy was made
    for instance in instances[1:]:
        driver.destroy(instance)
    # One guest (alone now: TCG is slow on a busy host) reads and writes its disk.
    directory = os.path.join(driver.conf.instances_path, instances[0].uuid)
    wait_for_console(os.path.join(directory, "console.log"), "marker written", timeout=300)
    driver.power_off(instances[0], timeout=0)
    assert read_disk_marker(os.path.join(directory, "disk"), "qcow2")
    driver.destroy(instances[0])
    # The guests wrote to their overlays only: the store file is the one imported.
    assert driver.store.get("demo").unchanged(store_file)
    assert driver.store.get("demo").written == written
