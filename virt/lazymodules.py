"""Modules imported on first use, so a read command skips what only operations need.

A backend module imports the helpers of every operation it offers (migration,
resize, volumes, qemu-img); `virt-driver list` runs none of them, and loading
them is a tenth of its start. lazy_modules() gives stand-ins that import the
module at their first attribute access. The import goes through
importlib.import_module, whose per-module lock makes threads that get there
together wait for one complete import (importlib's LazyLoader does not
guarantee that before Python 3.12). Only for modules whose import has no side
effect that another module relies on.

built_on_first_read is for a class attribute whose value needs such a module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Generic, TypeVar

T = TypeVar("T")


class LazyModule:
    """Stands for the module `name` until its first attribute is read, then forwards."""

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str):
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (loaded)' if self._module else ''}>"


def lazy_modules(*names: str) -> tuple[LazyModule, ...]:
    return tuple(LazyModule(name) for name in names)


class built_on_first_read(Generic[T]):  # noqa: N801 (a decorator, as functools.cached_property)
    """A class attribute computed by `build()` when first read, then a plain attribute.

    Building twice from two threads gives two equal values; the last one stays.
    """

    def __init__(self, build: Callable[[], T]):
        self._build = build
        self.__doc__ = build.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, instance, owner: type) -> T:
        value = self._build()
        setattr(owner, self._name, value)
        return value
