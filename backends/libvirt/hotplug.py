"""Waiting for a running guest to let go of a device it was asked to release.

libvirt asks the guest (ACPI or PCIe hot unplug); the guest releases the
device when it can, and QEMU reports it gone: libvirt's device-removed
event. A paused guest, or one whose device is busy, never does. The wait is
bounded, and also reads the live definition, because the event may come
before anyone listens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import libvirt

from virt.domain import Domain
from virt.errors import Timeout

LIVE_CHECK_INTERVAL = 0.5


def detach_live(call, conn_call, name: str, xml: str, gone: Callable[[Domain], bool],
                what: str, timeout: float) -> None:
    """Detach the device `xml` from the running guest; wait until gone(live definition)."""
    removed = threading.Event()

    def on_removed(_conn, dom, _alias, _opaque):
        if dom.name() == name:
            removed.set()

    callback = conn_call(lambda conn: conn.domainEventRegisterAny(
        None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, on_removed, None))
    try:
        call(f"detach {what} from",
             lambda dom: dom.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE))
        deadline = time.monotonic() + timeout
        while not gone(_live(call)):
            if time.monotonic() >= deadline:
                raise Timeout(f"the guest {name} did not release {what} within {timeout:.0f}s "
                              "(it may be in use or the guest paused): it stays attached; "
                              "release it in the guest and detach again")
            removed.wait(LIVE_CHECK_INTERVAL)
            removed.clear()
    finally:
        conn_call(lambda conn: conn.domainEventDeregisterAny(callback))


def _live(call) -> Domain:
    return Domain.from_xml(call("read the live definition of", lambda dom: dom.XMLDesc(0)))
