"""The connection manager against the real libvirtd, restarted and killed under it."""

from __future__ import annotations

import queue

import libvirt
import pytest

from backends.libvirt.connection import Connection
from tests.support.guests import remove_domain, restart_libvirtd
from virt.conf import make_conf
from virt.errors import BackendUnavailable
from virt.guest import build_domain
from virt.objects import BlockDevice, Flavor, Instance

NAME = "fn-conn-probe"


def _paused_domain_xml(demo_guest) -> str:
    """A guest that starts paused: events without the cost of a boot."""
    instance = Instance(name=NAME, flavor=Flavor(memory_mb=64, vcpus=1),
                        params={"kernel_path": demo_guest.kernel,
                                "initrd_path": demo_guest.initrd})
    domain = build_domain(instance, [BlockDevice(path=demo_guest.disk, fmt="raw",
                                                 readonly=True)],
                          (), "qemu", 0)
    return domain.to_xml()


@pytest.fixture
def connection(libvirt_daemons):
    conn = Connection(libvirt_daemons, keepalive_interval=1, keepalive_count=3,
                      max_backoff=30, stop_delay=0.5)
    yield conn
    conn.close()


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
def test_calls_and_events_survive_a_daemon_restart(connection, demo_guest, hard):
    got: queue.SimpleQueue = queue.SimpleQueue()
    connection.add_listener(lambda name, state: got.put((name, state)))
    resynced = []
    connection.add_resync(lambda conn: resynced.append(conn))
    xml = _paused_domain_xml(demo_guest)
    try:
        connection.call(lambda c: c.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED))
        assert _next_for(got, NAME) == "running"  # STARTED, then SUSPENDED
        assert _next_for(got, NAME) == "paused"
        before = connection.connect_count

        restart_libvirtd(hard=hard)
        # No help from the caller: the call reconnects (and retries) by itself.
        assert connection.call(lambda c: c.lookupByName(NAME).state()[0]) \
            == libvirt.VIR_DOMAIN_PAUSED
        assert connection.connect_count == before + 1
        assert len(resynced) == before + 1

        connection.call(lambda c: c.lookupByName(NAME).resume())
        assert _next_for(got, NAME) == "running"
        connection.call(lambda c: c.lookupByName(NAME).destroy())
        assert _next_for(got, NAME) == "shutoff"
    finally:
        cleanup = libvirt.open(connection.uri)
        remove_domain(cleanup, NAME)
        cleanup.close()


def test_a_dead_daemon_is_reported_after_the_backoff(tmp_path):
    socket = tmp_path / "no-daemon.sock"
    conn = Connection(f"qemu+unix:///system?socket={socket}", max_backoff=1)
    with pytest.raises(BackendUnavailable, match="check that libvirtd runs"):
        conn.get()


def test_conf_defaults_build_a_working_connection(libvirt_daemons):
    conf = make_conf(virt_type="qemu")
    conn = Connection(libvirt_daemons, conf.libvirt.keepalive_interval,
                      conf.libvirt.keepalive_count, conf.libvirt.reconnect_max_backoff)
    try:
        assert conn.call(lambda c: c.getType()) == "QEMU"
    finally:
        conn.close()


def _next_for(got, name, timeout=30.0):
    while True:
        try:
            event_name, state = got.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no event for {name} within {timeout:.0f}s")
        if event_name == name:
            return state
