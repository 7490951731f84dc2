"""Spare libvirt connections, lent to calls made while the main one is busy.

libvirtd serves only a few calls of one connection at a time: concurrent
spawns sharing one connection queue behind each other, a quick define
waiting for a slow create. A call that finds the main connection busy
borrows a spare (opened on demand, kept for the next such call, at most
`limit` of them) and gives it back when done. Spares are plain connections:
events, keepalive and resync stay with the main one.
"""

from __future__ import annotations

import contextlib
import threading

import libvirt


class SpareConnections:
    def __init__(self, uri: str, limit: int):
        self.uri = uri
        # Each open of a test:/// URI is a new, empty host: a spare there
        # would not see what the main connection defined.
        self.limit = 0 if uri.startswith("test:") else limit
        self._lock = threading.Lock()
        self._idle: list[libvirt.virConnect] = []
        self._opened = 0

    @property
    def opened(self) -> int:
        """Spares open now, idle or lent."""
        return self._opened

    def take(self) -> libvirt.virConnect | None:
        """An open spare, or None when the limit is reached or libvirtd refuses one
        (the caller then shares the main connection, which reports any error)."""
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if _alive(conn):
                    return conn
                self._forget(conn)
            if self._opened >= self.limit:
                return None
            self._opened += 1
        try:
            return libvirt.open(self.uri)
        except libvirt.libvirtError:
            with self._lock:
                self._opened -= 1
            return None

    def give_back(self, conn: libvirt.virConnect, healthy: bool = True) -> None:
        with self._lock:
            if healthy:
                self._idle.append(conn)
            else:
                self._forget(conn)

    def close(self) -> None:
        with self._lock:
            while self._idle:
                self._forget(self._idle.pop())

    def _forget(self, conn: libvirt.virConnect) -> None:
        self._opened -= 1
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False
