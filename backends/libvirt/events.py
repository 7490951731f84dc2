"""Domain lifecycle events: libvirt's codes to PowerState, delivered off the loop.

The driver's EventFanout (virt.events) is called on one dispatcher thread, never
on the libvirt event loop thread, so a slow listener or one that calls back into
libvirt cannot stall the loop.
A STOPPED event is held back for `stop_delay` seconds and dropped if the same
domain starts again meanwhile: a hard reboot (destroy + start) is not a stop.
The fan-out's `accept(name)` filter, asked on the dispatcher thread, decides
which domains listeners hear of at all (a driver hears only the guests it owns).
"""

from __future__ import annotations

import queue
import threading

import libvirt

from virt.events import EventFanout, Listener
from virt.objects import PowerState

__all__ = ["EventDispatcher", "Listener", "power_state_for_event"]

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
    """Turns lifecycle callbacks into (name, state value) deliveries to a fan-out."""

    def __init__(self, stop_delay: float = 2.0, fanout: EventFanout | None = None):
        self.stop_delay = stop_delay
        self.fanout = fanout if fanout is not None else EventFanout()
        self._pending_stops: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def is_event_thread(self) -> bool:
        """Whether the caller is this dispatcher's delivery thread (a listener)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def add_listener(self, callback: Listener) -> None:
        self.fanout.add_listener(callback)

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
                timer = threading.Timer(self.stop_delay, self._release_stop)
                timer.args = (name, timer)  # its own token: a later event replaces it
                timer.daemon = True
                self._pending_stops[name] = timer
                timer.start()
                return
        self.emit(name, state)

    def emit(self, name: str, state: PowerState) -> None:
        """Queue a state for the listeners (also used for resync after a reconnect)."""
        with self._lock:
            if self._thread is None:  # started by the first event: most processes hear none
                self._thread = threading.Thread(target=self._run, name="virt-libvirt-events",
                                                daemon=True)
                self._thread.start()
        self._queue.put((name, state.value))

    def _release_stop(self, name: str, timer: threading.Timer) -> None:
        with self._lock:
            # A later event may have replaced or cancelled this timer already.
            if self._pending_stops.get(name) is not timer:
                return
            del self._pending_stops[name]
        self.emit(name, PowerState.SHUTOFF)

    def _run(self) -> None:
        while True:
            self.fanout.deliver(*self._queue.get())
