"""The connection manager and event delivery, against libvirt's test:///default."""

import queue
import time

import libvirt
import pytest

from backends.libvirt.connection import Connection, is_disconnect, uri_for
from backends.libvirt.events import EventDispatcher, power_state_for_event
from virt.errors import BackendUnavailable
from virt.objects import PowerState

TEST_URI = "test:///default"


def _collector():
    got: queue.SimpleQueue = queue.SimpleQueue()
    return got, lambda name, state: got.put((name, state))


def _next(got, timeout=5.0):
    return got.get(timeout=timeout)


@pytest.mark.parametrize("virt_type, uri", [
    ("qemu", "qemu:///system"), ("kvm", "qemu:///system"),
    ("xen", "xen:///system"), ("lxc", "lxc:///"),
])
def test_uri_derived_from_virt_type(virt_type, uri):
    assert uri_for(virt_type) == uri


def test_configured_uri_wins():
    assert uri_for("qemu", "qemu+ssh://h/system") == "qemu+ssh://h/system"


@pytest.mark.parametrize("event, detail, state", [
    (libvirt.VIR_DOMAIN_EVENT_STARTED, 0, PowerState.RUNNING),
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, 0, PowerState.RUNNING),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, 0, PowerState.PAUSED),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED,
     PowerState.SHUTOFF),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED,
     PowerState.SUSPENDED),
    (libvirt.VIR_DOMAIN_EVENT_CRASHED, 0, PowerState.CRASHED),
    (libvirt.VIR_DOMAIN_EVENT_DEFINED, 0, None),
    (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, 0, None),
])
def test_event_mapping(event, detail, state):
    assert power_state_for_event(event, detail) is state


def test_disconnect_errors_are_recognised():
    conn = libvirt.open(TEST_URI)
    try:
        conn.lookupByName("no-such-domain")
    except libvirt.libvirtError as e:
        refused = e
    conn.close()
    assert not is_disconnect(refused)
    # A closed connection object is what a dead daemon leaves behind.
    with pytest.raises(libvirt.libvirtError):
        conn.isAlive()


def test_unreachable_uri_is_backend_unavailable():
    conn = Connection("test:///nonexistent/driver.xml", max_backoff=1)
    with pytest.raises(BackendUnavailable, match="test:///nonexistent/driver.xml"):
        conn.get()


def test_lifecycle_events_reach_listeners():
    conn = Connection(TEST_URI, stop_delay=0.2)
    got, listener = _collector()
    conn.add_listener(listener)
    try:
        conn.call(lambda c: c.lookupByName("test").suspend())
        assert _next(got) == ("test", "paused")
        conn.call(lambda c: c.lookupByName("test").resume())
        assert _next(got) == ("test", "running")
        conn.call(lambda c: c.lookupByName("test").destroy())
        assert _next(got) == ("test", "shutoff")
        conn.call(lambda c: c.lookupByName("test").create())
        assert _next(got) == ("test", "running")
    finally:
        conn.close()


def test_stop_followed_by_start_is_not_reported_as_stop():
    dispatcher = EventDispatcher(stop_delay=0.3)
    got, listener = _collector()
    dispatcher.add_listener(listener)
    dispatcher.lifecycle("g1", libvirt.VIR_DOMAIN_EVENT_STOPPED, 0)
    dispatcher.lifecycle("g2", libvirt.VIR_DOMAIN_EVENT_STOPPED, 0)
    dispatcher.lifecycle("g1", libvirt.VIR_DOMAIN_EVENT_STARTED, 0)
    assert _next(got) == ("g1", "running")
    assert _next(got) == ("g2", "shutoff")
    time.sleep(0.5)
    assert got.empty()


def test_failing_listener_does_not_stop_delivery():
    dispatcher = EventDispatcher(stop_delay=0)
    got, listener = _collector()

    def broken(name, state):
        raise RuntimeError("listener bug")

    dispatcher.add_listener(broken)
    dispatcher.add_listener(listener)
    dispatcher.lifecycle("g", libvirt.VIR_DOMAIN_EVENT_SUSPENDED, 0)
    dispatcher.lifecycle("g", libvirt.VIR_DOMAIN_EVENT_STOPPED, 0)
    assert [_next(got), _next(got)] == [("g", "paused"), ("g", "shutoff")]


def test_dead_connection_is_reopened_and_resynced_on_next_call():
    conn = Connection(TEST_URI)
    resyncs = []
    conn.add_resync(lambda c: resyncs.append(c))
    try:
        first = conn.get()
        assert resyncs == [first]
        first.close()  # what a daemon restart leaves behind: an unusable handle
        assert conn.call(lambda c: c.lookupByName("test").name()) == "test"
        assert conn.connect_count == 2
        assert len(resyncs) == 2 and resyncs[1] is not first
        got, listener = _collector()
        conn.add_listener(listener)
        conn.call(lambda c: c.lookupByName("test").suspend())
        assert _next(got) == ("test", "paused")
        conn.call(lambda c: c.lookupByName("test").resume())
    finally:
        conn.close()


def test_refused_call_is_not_retried():
    conn = Connection(TEST_URI)
    calls = []

    def lookup(c):
        calls.append(c)
        return c.lookupByName("no-such-domain")

    try:
        with pytest.raises(libvirt.libvirtError):
            conn.call(lookup)
        assert len(calls) == 1 and conn.connect_count == 1
    finally:
        conn.close()


def test_the_first_connection_fails_at_once_without_waiting_out_the_backoff(monkeypatch):
    """Nothing ever answered: a CLI run against a stopped libvirtd says so without a pause."""
    import backends.libvirt.connection as connection

    slept: list[float] = []
    monkeypatch.setattr(connection.time, "sleep", slept.append)
    conn = Connection("qemu+unix:///system?socket=/nonexistent/libvirt-sock", max_backoff=30)
    with pytest.raises(BackendUnavailable, match="cannot connect to libvirt at"):
        conn.get()
    assert slept == []
