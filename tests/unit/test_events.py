"""The driver layer's event fan-out (virt.events), and that both backends feed it."""

import queue

import pytest

from backends.libvirt.driver import LibvirtDriver
from backends.xm.driver import XmDriver
from virt.conf import make_conf
from virt.events import EventFanout


def test_listeners_hear_in_order_and_a_failing_one_stops_nothing():
    fanout = EventFanout()
    heard = []

    def broken(name, state):
        raise RuntimeError("listener bug")
    fanout.add_listener(broken)
    fanout.add_listener(lambda name, state: heard.append((name, state)))
    fanout.deliver("a", "running")
    fanout.deliver("a", "paused")
    assert heard == [("a", "running"), ("a", "paused")]


def test_the_filter_decides_who_is_heard_and_is_not_asked_when_nobody_listens():
    fanout = EventFanout()
    asked = []

    def accept(name):
        asked.append(name)
        if name == "broken":
            raise RuntimeError("filter bug")
        return name == "ours"
    fanout.accept = accept
    fanout.deliver("ours", "running")
    assert asked == [] and not fanout.has_listeners()
    heard = []
    fanout.add_listener(lambda name, state: heard.append(name))
    for name in ("ours", "theirs", "broken", "ours"):
        fanout.deliver(name, "running")
    assert heard == ["ours", "ours"]


@pytest.mark.parametrize("backend", [LibvirtDriver, XmDriver])
def test_each_backend_registers_listeners_on_the_driver_layer(backend, tmp_path):
    conf = make_conf(virt_type="xen" if backend is XmDriver else "qemu",
                     state_path=str(tmp_path), libvirt__connection_uri="test:///default")
    driver = backend(conf)
    got = queue.SimpleQueue()
    driver.register_event_listener(lambda name, state: got.put((name, state)))
    assert driver.events.has_listeners()
    # What a backend learns goes through driver.events: one filter, one delivery.
    driver.events.accept = lambda name: name == "mine"
    driver.events.deliver("other", "running")
    driver.events.deliver("mine", "paused")
    assert got.get(timeout=5) == ("mine", "paused") and got.empty()
