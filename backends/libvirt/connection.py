"""The libvirt connection: opened lazily, kept alive, reopened when it dies.

The libvirt event loop is registered once per process, before any connection,
and runs on a daemon thread. On every (re)connect the close callback, the
keepalive, the lifecycle event registration and then the resync callbacks are
set up again, because events were missed while the connection was down. The
close callback only marks the connection dead; the next call reconnects.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import libvirt

from backends.libvirt.events import EventDispatcher, Listener
from backends.libvirt.spares import SpareConnections
from virt.errors import BackendUnavailable
from virt.events import EventFanout

LOG = logging.getLogger(__name__)

T = TypeVar("T")

_loop_lock = threading.Lock()
_loop_started = False
_loop_thread: threading.Thread | None = None

_FIRST_RETRY_DELAY = 0.25

# Errors that mean "the daemon went away", as opposed to "the call was refused".
_DISCONNECT_CODES = {libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR}
_DISCONNECT_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it, once per process."""
    global _loop_started, _loop_thread
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        # libvirt prints every error on stderr by default; we raise them instead.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _loop_thread = threading.Thread(target=_run_event_loop, name="virt-libvirt-loop",
                                        daemon=True)
        _loop_thread.start()
        _loop_started = True


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def uri_for(virt_type: str, connection_uri: str = "") -> str:
    """The configured URI, or the system URI for the hypervisor type."""
    if connection_uri:
        return connection_uri
    return {"qemu": "qemu:///system", "kvm": "qemu:///system",
            "xen": "xen:///system", "lxc": "lxc:///"}[virt_type]


def is_disconnect(error: libvirt.libvirtError) -> bool:
    """True when the error says the connection to the daemon was lost."""
    return (error.get_error_code() in _DISCONNECT_CODES
            and error.get_error_domain() in _DISCONNECT_DOMAINS)


class Connection:
    """One shared libvirt connection for a driver, with reconnect and events.

    call(fn) runs fn(conn); when it fails because the connection died, the
    connection is reopened and fn runs once more, so callers never see a
    daemon restart. fn must therefore look up what it needs from the conn it
    is given (domain objects do not survive a reconnect). A call made while
    another runs on the shared connection gets a spare one (see spares.py).
    """

    def __init__(self, uri: str, keepalive_interval: int = 5, keepalive_count: int = 5,
                 max_backoff: float = 30, stop_delay: float = 2.0, max_spares: int = 4,
                 fanout: EventFanout | None = None):
        start_event_loop()
        self.uri = uri
        self.keepalive_interval = keepalive_interval
        self.keepalive_count = keepalive_count
        self.max_backoff = max_backoff
        self.events = EventDispatcher(stop_delay, fanout)  # fanout: the driver's listeners
        self._lock = threading.RLock()
        self._conn: libvirt.virConnect | None = None
        self._dead = False
        self._callback_ids: list[int] = []
        self._resync: list[Callable[[libvirt.virConnect], None]] = []
        self.connect_count = 0
        self.spares = SpareConnections(uri, max_spares)
        self._calls = 0  # calls running on the shared connection now

    def add_listener(self, callback: Listener) -> None:
        self.events.add_listener(callback)

    def add_resync(self, callback: Callable[[libvirt.virConnect], None]) -> None:
        """callback(conn) runs after every (re)connect, and now if connected."""
        with self._lock:
            self._resync.append(callback)
            conn = self._conn if self._usable() else None
        if conn is not None:
            callback(conn)

    def if_connected(self, callback: Callable[[libvirt.virConnect], None]) -> None:
        """callback(conn) now if a connection is open; else nothing (connecting resyncs)."""
        with self._lock:
            conn = self._conn if self._usable() else None
        if conn is not None:
            callback(conn)

    def get(self) -> libvirt.virConnect:
        """The open connection, (re)opened if needed."""
        with self._lock:
            if not self._usable():
                self._reconnect()
            return self._conn

    def call(self, fn: Callable[[libvirt.virConnect], T]) -> T:
        # Event handling's quick lookups neither take a spare nor count as busy:
        # a connection opened per event during a spawn would cost more than it saves.
        handling_events = (threading.current_thread() is _loop_thread
                           or self.events.is_event_thread())
        spare = self.spares.take() if self._calls and not handling_events else None
        if spare is not None:
            try:
                result = fn(spare)
            except libvirt.libvirtError as e:
                lost = is_disconnect(e) or not _alive(spare)
                self.spares.give_back(spare, healthy=not lost)
                if not lost:
                    raise
            else:
                self.spares.give_back(spare)
                return result
        with contextlib.nullcontext() if handling_events else self._counted():
            conn = self.get()
            try:
                return fn(conn)
            except libvirt.libvirtError as e:
                if not (is_disconnect(e) or not _alive(conn)):
                    raise
                LOG.warning("libvirt connection to %s lost (%s); reconnecting", self.uri, e)
                self._mark_dead(conn)
            return fn(self.get())

    @contextlib.contextmanager
    def _counted(self):
        with self._lock:
            self._calls += 1
        try:
            yield
        finally:
            with self._lock:
                self._calls -= 1

    def close(self) -> None:
        with self._lock:
            self._drop()
        self.spares.close()

    def _usable(self) -> bool:
        return self._conn is not None and not self._dead and _alive(self._conn)

    def _mark_dead(self, conn: libvirt.virConnect) -> None:
        with self._lock:
            if self._conn is conn:
                self._dead = True

    def _on_close(self, _conn, reason: int, registered: libvirt.virConnect) -> None:
        # Runs on the event loop thread: taking the lock here could wait for a
        # reconnect that itself waits for the loop, so only a flag is set.
        LOG.warning("libvirt closed the connection to %s (reason %d)", self.uri, reason)
        if registered is self._conn:  # not a late word about a connection replaced already
            self._dead = True

    def _reconnect(self) -> None:
        self._drop()
        # Only a connection that once worked is waited for (a daemon restarting);
        # the first attempt fails at once, so a CLI run against a stopped
        # libvirtd says so without a pause.
        deadline = time.monotonic() + (self.max_backoff if self.connect_count else 0)
        delay = _FIRST_RETRY_DELAY
        while True:
            try:
                conn = libvirt.open(self.uri)
                break
            except libvirt.libvirtError as e:
                wait = min(delay, self.max_backoff, deadline - time.monotonic())
                if wait <= 0:
                    raise BackendUnavailable(
                        f"cannot connect to libvirt at {self.uri}: {e.get_error_message()}; "
                        "check that libvirtd runs and the URI is right") from None
                time.sleep(wait)
                delay *= 2
        self._setup(conn)
        self._conn, self._dead = conn, False
        self.connect_count += 1
        for callback in self._resync:
            try:
                callback(conn)
            except libvirt.libvirtError as e:
                LOG.warning("resync after connecting to %s failed: %s", self.uri, e)

    def _setup(self, conn: libvirt.virConnect) -> None:
        conn.registerCloseCallback(self._on_close, conn)
        if self.keepalive_interval > 0:
            try:
                conn.setKeepAlive(self.keepalive_interval, self.keepalive_count)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                    raise
        self._callback_ids = [conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)]

    def _on_lifecycle(self, _conn, dom: libvirt.virDomain, event: int, detail: int,
                      _opaque) -> None:
        self.events.lifecycle(dom.name(), event, detail)

    def _drop(self) -> None:
        """Forget the current connection, releasing what a dead one still holds."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(libvirt.libvirtError):
            for callback_id in self._callback_ids:
                conn.domainEventDeregisterAny(callback_id)
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()
        self._callback_ids = []


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False
