"""Modules imported on first use, so a read command skips what only operations need.

A backend module imports the helpers of every operation it offers (migration,
resize, volumes, qemu-img); `virt-driver list` runs none of them, and loading
them is a tenth of its start. lazy_modules() gives stand-ins that import the
module at their first attribute access. The import goes through
importlib.import_module, whose per-module lock makes threads that get there
together wait for one complete import (importlib's LazyLoader does not
guarantee that before Python 3.12). Only for modules whose import has no side
effect that another module relies on.

lazy_attributes() does the same for names a module imports from another
(functions and classes that are called or whose attributes are read; not
for isinstance, except clauses or constants), and built_on_first_read for a
class attribute whose value needs such a module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LazyObject:
    """Stands for what make() returns until its first attribute is read, then forwards."""

    def __init__(self, make: Callable[[], object], label: str):
        self._make = make
        self._label = label
        self._made: object | None = None

    def __getattr__(self, attr: str):
        made = self._made
        if made is None:
            made = self._made = self._make()
        return getattr(made, attr)

    def __repr__(self) -> str:
        return f"<lazy {self._label}{' (made)' if self._made is not None else ''}>"


class LazyModule(LazyObject):
    """Stands for the module `name` until its first attribute is read."""

    def __init__(self, name: str):
        super().__init__(lambda: importlib.import_module(name), f"module {name!r}")
        self._name = name


def lazy_modules(*names: str) -> tuple[LazyModule, ...]:
    return tuple(LazyModule(name) for name in names)


class LazyAttribute:
    """Stands for `module.attr` until first called or read, then forwards every use.

    Looked up in the module at each use, so a patch of the module is seen.
    """

    def __init__(self, module: LazyModule, attr: str):
        self._module = module
        self._attr = attr

    def __call__(self, *args, **kwargs):
        return getattr(self._module, self._attr)(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(getattr(self._module, self._attr), name)

    def __repr__(self) -> str:
        return f"<lazy {self._module._name}.{self._attr}>"


def lazy_attributes(module: str, *attrs: str) -> tuple[LazyAttribute, ...]:
    """Stand-ins for `from module import attrs...`, imported when one is first used."""
    stand_in = LazyModule(module)
    return tuple(LazyAttribute(stand_in, attr) for attr in attrs)


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
