"""Xen's own config parser (libxlutil 4.17), called through ctypes.

Tests hand every config file the xm backend writes to the parser xl itself
uses, so "xl would read it back as intended" is checked, not assumed. No
hypervisor is needed: libxlutil only parses. The struct layout of
libxl_device_disk below is that of Xen 4.17's _libxl_types.h (libxen-dev);
the headers are not needed at run time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import tempfile
from dataclasses import dataclass

LIBXLUTIL = "libxlutil.so.4.17"
LIBXENLIGHT = "libxenlight.so.4.17"

# libxl_disk_format and libxl_disk_backend (Xen 4.17 _libxl_types.h).
DISK_FORMATS = {0: "unknown", 1: "qcow", 2: "qcow2", 3: "vhd", 4: "raw", 5: "empty", 6: "qed"}
DISK_BACKENDS = {0: "unknown", 1: "phy", 2: "tap", 3: "qdisk", 4: "standalone"}


class _Defbool(ctypes.Structure):
    _fields_ = [("val", ctypes.c_int)]


class _DeviceDisk(ctypes.Structure):
    """libxl_device_disk of Xen 4.17, field for field."""

    _fields_ = [
        ("backend_domid", ctypes.c_uint32),
        ("backend_domname", ctypes.c_char_p),
        ("pdev_path", ctypes.c_char_p),
        ("vdev", ctypes.c_char_p),
        ("backend", ctypes.c_int),
        ("format", ctypes.c_int),
        ("script", ctypes.c_char_p),
        ("removable", ctypes.c_int),
        ("readwrite", ctypes.c_int),
        ("is_cdrom", ctypes.c_int),
        ("direct_io_safe", ctypes.c_bool),
        ("discard_enable", _Defbool),
        ("specification", ctypes.c_int),
        ("transport", ctypes.c_int),
        ("irq", ctypes.c_uint32),
        ("base", ctypes.c_uint64),
        ("colo_enable", _Defbool),
        ("colo_restore_enable", _Defbool),
        ("colo_host", ctypes.c_char_p),
        ("colo_port", ctypes.c_int),
        ("colo_export", ctypes.c_char_p),
        ("active_disk", ctypes.c_char_p),
        ("hidden_disk", ctypes.c_char_p),
        ("trusted", _Defbool),
        # Slack, in case a point release grew the struct at its end.
        ("_spare", ctypes.c_char * 256),
    ]


@dataclass(frozen=True)
class Disk:
    """What xl understood of one disk spec."""

    target: str | None
    vdev: str | None
    format: str
    backend: str
    readwrite: bool
    is_cdrom: bool


class ParseError(Exception):
    """libxlutil refused the text; carries its report."""


def available() -> bool:
    try:
        _libs()
    except OSError:
        return False
    return True


_loaded: tuple[ctypes.CDLL, ctypes.CDLL, ctypes.CDLL] | None = None


def _libs() -> tuple[ctypes.CDLL, ctypes.CDLL, ctypes.CDLL]:
    global _loaded
    if _loaded is None:
        xenlight = ctypes.CDLL(LIBXENLIGHT)
        xlu = ctypes.CDLL(LIBXLUTIL)
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        xlu.xlu_cfg_init.restype = ctypes.c_void_p
        xlu.xlu_cfg_init.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        xlu.xlu_cfg_readfile.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        xlu.xlu_cfg_destroy.argtypes = [ctypes.c_void_p]
        xlu.xlu_cfg_get_string.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                           ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]
        xlu.xlu_cfg_get_long.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                         ctypes.POINTER(ctypes.c_long), ctypes.c_int]
        xlu.xlu_cfg_get_list.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                         ctypes.POINTER(ctypes.c_void_p),
                                         ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        xlu.xlu_cfg_get_listitem.restype = ctypes.c_char_p
        xlu.xlu_cfg_get_listitem.argtypes = [ctypes.c_void_p, ctypes.c_int]
        xlu.xlu_disk_parse.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                       ctypes.POINTER(ctypes.c_char_p),
                                       ctypes.POINTER(_DeviceDisk)]
        xenlight.libxl_device_disk_init.argtypes = [ctypes.POINTER(_DeviceDisk)]
        xenlight.libxl_device_disk_dispose.argtypes = [ctypes.POINTER(_DeviceDisk)]
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        _loaded = (xlu, xenlight, libc)
    return _loaded


class XlConfig:
    """One parsed config file; use as a context manager."""

    def __init__(self, path: str):
        self._xlu, self._xenlight, self._libc = _libs()
        self._report_fd, self._report_path = tempfile.mkstemp(prefix="xlu-report-")
        os.close(self._report_fd)
        self._report = self._libc.fopen(self._report_path.encode(), b"w")
        self._cfg = self._xlu.xlu_cfg_init(self._report, path.encode())
        if not self._cfg:
            self.close()
            raise MemoryError("xlu_cfg_init failed")
        rc = self._xlu.xlu_cfg_readfile(self._cfg, path.encode())
        if rc:
            report = self.report()
            self.close()
            raise ParseError(f"xlu_cfg_readfile({path}) = {rc}: {report}")

    def __enter__(self) -> XlConfig:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_cfg", None):
            self._xlu.xlu_cfg_destroy(self._cfg)
            self._cfg = None
        if getattr(self, "_report", None):
            self._libc.fclose(self._report)
            self._report = None
        if os.path.exists(self._report_path):
            os.unlink(self._report_path)

    def report(self) -> str:
        """What libxlutil printed as warnings or errors so far."""
        if self._report:
            ctypes.CDLL(None).fflush(ctypes.c_void_p(self._report))
        with open(self._report_path, errors="replace") as f:
            return f.read()

    def get_string(self, name: str) -> str | None:
        value = ctypes.c_char_p()
        rc = self._xlu.xlu_cfg_get_string(self._cfg, name.encode(), ctypes.byref(value), 1)
        return value.value.decode() if rc == 0 else None

    def get_long(self, name: str) -> int | None:
        value = ctypes.c_long()
        rc = self._xlu.xlu_cfg_get_long(self._cfg, name.encode(), ctypes.byref(value), 1)
        return value.value if rc == 0 else None

    def get_list(self, name: str) -> list[str] | None:
        handle = ctypes.c_void_p()
        count = ctypes.c_int()
        rc = self._xlu.xlu_cfg_get_list(self._cfg, name.encode(), ctypes.byref(handle),
                                        ctypes.byref(count), 1)
        if rc:
            return None
        return [self._xlu.xlu_cfg_get_listitem(handle, i).decode() for i in range(count.value)]

    def parse_disk(self, spec: str) -> Disk:
        """xlu_disk_parse of one disk spec string."""
        disk = _DeviceDisk()
        self._xenlight.libxl_device_disk_init(ctypes.byref(disk))
        specs = (ctypes.c_char_p * 1)(spec.encode())
        try:
            rc = self._xlu.xlu_disk_parse(self._cfg, 1, specs, ctypes.byref(disk))
            if rc:
                raise ParseError(f"xlu_disk_parse({spec!r}) = {rc}: {self.report()}")
            return Disk(
                target=disk.pdev_path.decode() if disk.pdev_path else None,
                vdev=disk.vdev.decode() if disk.vdev else None,
                format=DISK_FORMATS.get(disk.format, str(disk.format)),
                backend=DISK_BACKENDS.get(disk.backend, str(disk.backend)),
                readwrite=bool(disk.readwrite),
                is_cdrom=bool(disk.is_cdrom),
            )
        finally:
            self._xenlight.libxl_device_disk_dispose(ctypes.byref(disk))
