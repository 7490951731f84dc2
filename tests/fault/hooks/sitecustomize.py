"""Test-only kill points in Python (tests/fault): production code has none.

With VD_FAULT_PY="module:Name.attr" (or "module:os.rename" for a module's use
of os), the CLI process blocks at the first call of that function: it writes
its pid to VD_FAULT_REACHED and sleeps until the test kills it.
"""

import importlib
import os
import time


def _block(*_args, **_kwargs):
    with open(os.environ["VD_FAULT_REACHED"] + ".part", "w") as f:
        f.write(str(os.getpid()))
    os.rename(os.environ["VD_FAULT_REACHED"] + ".part", os.environ["VD_FAULT_REACHED"])
    time.sleep(600)


class _OsWith:
    """The os module with one function replaced, for one module's use only."""

    def __init__(self, name, fn):
        self._name, self._fn = name, fn

    def __getattr__(self, attr):
        return self._fn if attr == self._name else getattr(os, attr)


def _install(spec):
    module_name, _, path = spec.partition(":")
    module = importlib.import_module(module_name)
    owner_name, _, attr = path.rpartition(".")
    if owner_name == "os":
        module.os = _OsWith(attr, _block)
        return
    owner = module
    for part in filter(None, owner_name.split(".")):
        owner = getattr(owner, part)
    setattr(owner, attr, _block)


if os.environ.get("VD_FAULT_PY"):
    _install(os.environ["VD_FAULT_PY"])
