"""Instance state events, fanned out once for every backend to a driver's listeners.

A compute manager registers listeners on the driver (`register_event_listener`);
each backend feeds what it learns (libvirt: lifecycle events from the daemon;
xm: the state changes its own operations make) into the driver's
`EventFanout`. The fan-out filters (a driver hears only its own guests),
calls every listener in order, and keeps delivering when one of them fails.
It delivers in the thread that calls `deliver`: a backend whose events arrive
on a thread that must not stall hands them over to its own dispatcher first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

LOG = logging.getLogger(__name__)

# listener(instance_name, state) with state a PowerState value ("running", ...).
Listener = Callable[[str, str], None]


class EventFanout:
    """The listeners of one driver, and the delivery of (name, state) to each of them."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        # Which instances listeners hear of at all; the backend sets its ownership test.
        self.accept: Callable[[str], bool] = lambda _name: True

    def add_listener(self, callback: Listener) -> None:
        with self._lock:
            self._listeners.append(callback)

    def has_listeners(self) -> bool:
        """Whether anyone listens: a backend skips the work of telling nobody."""
        with self._lock:
            return bool(self._listeners)

    def deliver(self, name: str, state: str) -> None:
        """Tell every listener that instance `name` is now `state`, if it is one we hear of."""
        with self._lock:
            listeners = list(self._listeners)
        if not listeners:
            return
        try:
            if not self.accept(name):
                return
        except Exception:  # a filter's bug must not end event delivery either
            LOG.exception("event filter failed on %s %s: event dropped", name, state)
            return
        for listener in listeners:
            try:
                listener(name, state)
            except Exception:  # a listener's bug must not fail the operation or the delivery
                LOG.exception("event listener %r failed on %s %s", listener, name, state)
