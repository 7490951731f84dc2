"""A disk-driver probe with fixed answers, for choosing the disk driver without a host."""

from __future__ import annotations


class FakeProbe:
    """Stands in for the host's Xen helpers and counts the questions asked."""

    def __init__(self, xend: bool, tap_ok: bool):
        self.xend, self.tap_ok = xend, tap_ok
        self.asked: list[str] = []

    def xend_running(self) -> bool:
        self.asked.append("xend")
        return self.xend

    def tap_ctl_ok(self) -> bool:
        self.asked.append("tap-ctl")
        return self.tap_ok
