"""Loggers that import logging when first used, and a setup that runs when it is imported.

Importing logging (with traceback, string and weakref) costs a read command
a twentieth of its instructions, and a read command that goes well logs
nothing. The modules on the read path take their logger from get_logger():
the same logger as logging.getLogger(name), made at its first use.

The CLI hands when_loaded() the setup of its handlers. It runs at once if
logging is imported already; else right after logging's import, whoever
imports it (one of these loggers, or a module that logs the usual way, such
as the xm backend's), so no message goes out before the handlers are there.
That hook is a finder at the head of sys.meta_path that only answers for
"logging": it takes the spec the other finders give and runs the waiting
setups after the module's code (a loader shared with other modules, such
as a zip's, is wrapped, never changed).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from virt.lazymodules import LazyObject

if TYPE_CHECKING:
    import logging

_pending: list[Callable[[], None]] = []
_lock = threading.RLock()  # a setup may log


def get_logger(name: str) -> logging.Logger:
    """logging.getLogger(name), imported and made when a message is first logged."""
    return cast("logging.Logger", LazyObject(lambda: _logger(name), f"logger {name!r}"))


def _logger(name: str) -> logging.Logger:
    import logging
    return logging.getLogger(name)


def when_loaded(setup: Callable[[], None]) -> None:
    """Run setup() now if logging is imported, else right after it is."""
    with _lock:
        if "logging" not in sys.modules:
            _pending.append(setup)
            if _FINDER not in sys.meta_path:
                sys.meta_path.insert(0, _FINDER)
            return
    setup()


def cancel(setup: Callable[[], None]) -> bool:
    """Forget a setup that has not run; whether it was still waiting."""
    with _lock:
        if setup not in _pending:
            return False
        _pending.remove(setup)
        if not _pending and _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
        return True


def _run_pending() -> None:
    with _lock:
        if _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
        while _pending:
            _pending.pop(0)()


class _SetupAfterImport:
    """A meta path finder for "logging" only: the usual spec, with the setups after its code."""

    def find_spec(self, name: str, path=None, target=None):
        if name != "logging":
            return None
        for finder in sys.meta_path:  # a lookup alone (importlib.util.find_spec) keeps it here
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                break
        else:
            return None
        spec.loader = _ThenSetUp(spec.loader)  # type: ignore[assignment]  # a loader by its methods
        return spec


class _ThenSetUp:
    """A loader that runs another's code, then the waiting setups; the rest it forwards."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _run_pending()

    def __getattr__(self, name: str):  # get_source, is_package, ...: for tracebacks and tools
        return getattr(self._loader, name)


_FINDER = _SetupAfterImport()
