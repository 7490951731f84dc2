"""Domain lifecycle events: libvirt's codes to PowerState, delivered off the loop.

Listeners run on one dispatcher thread, never on the libvirt event loop thread,
so a slow listener or one that calls back into libvirt cannot stall the loop.
A STOPPED event is held back for `stop_delay` seconds and dropped if the same
domain starts again meanwhile: a hard reboot (destroy + start) is not a stop.
An `accept(name)` filter, asked on the dispatcher thread, decides which
domains listeners hear of at all (a driver hears only the guests it owns).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

import libvirt

from virt.objects import PowerState

LOG = logging.getLogger(__name__)

Listener = Callable[[str, str], None]

_IMMEDIATE = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: PowerState.SUSPENDED,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: PowerState.CRASHED,
}


def power_state_for_event(event: int, detail: int) -> PowerState | None:
    """The PowerState a lifecycle event announces; None for events that change none.

    DEFINED, UNDEFINED and SHUTDOWN (the guest began to stop; STOPPED follows)
    carry no new power state.
    """
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
        if detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED:
            return PowerState.SUSPENDED
        return PowerState.SHUTOFF
    return _IMMEDIATE.get(event)


class EventDispatcher:
    """Turns lifecycle callbacks into (name, state value) calls on listeners."""

    def __init__(self, stop_delay: float = 2.0):
        self.stop_delay = stop_delay
        self._listeners: list[Listener] = []
        self._pending_stops: dict[str, threading.Timer] = {}
        self.accept: Callable[[str], bool] = lambda _name: True
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="virt-libvirt-events", daemon=True)
        self.thread.start()

    def add_listener(self, callback: Listener) -> None:
        with self._lock:
            self._listeners.append(callback)

    def lifecycle(self, name: str, event: int, detail: int) -> None:
        """Handle one lifecycle event; called on the libvirt event loop thread."""
        state = power_state_for_event(event, detail)
        if state is None:
            return
        with self._lock:
            pending = self._pending_stops.pop(name, None)
            if pending is not None:
                pending.cancel()
            if state is PowerState.SHUTOFF and self.stop_delay > 0:
                token = object()
                timer = threading.Timer(self.stop_delay, self._release_stop, (name, token))
                timer.daemon = True
                timer.token = token
                self._pending_stops[name] = timer
                timer.start()
                return
        self.emit(name, state)

    def emit(self, name: str, state: PowerState) -> None:
        """Queue a state for the listeners (also used for resync after a reconnect)."""
        self._queue.put((name, state.value))

    def _release_stop(self, name: str, token: object) -> None:
        with self._lock:
            # A later event may have replaced or cancelled this timer already.
            if getattr(self._pending_stops.get(name), "token", None) is not token:
                return
            del self._pending_stops[name]
        self.emit(name, PowerState.SHUTOFF)

    def _run(self) -> None:
        while True:
            name, value = self._queue.get()
            try:
                if not self.accept(name):
                    continue
            except Exception:  # a filter's bug must not end event delivery either
                LOG.exception("event filter failed on %s %s: event dropped", name, value)
                continue
            with self._lock:
                listeners = list(self._listeners)
            for listener in listeners:
                try:
                    listener(name, value)
                except Exception:  # a listener's bug must not end event delivery
                    LOG.exception("event listener %r failed on %s %s", listener, name, value)
