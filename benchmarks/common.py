"""Timing helpers shared by the benchmarks: medians over repeated runs."""

import os
import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeat: int, setup: Callable[[], object] = None,
                   teardown: Callable[[], object] = None) -> float:
    """Median wall time of fn() over `repeat` runs; setup/teardown are not timed."""
    samples = []
    for _ in range(repeat):
        if setup:
            setup()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
        if teardown:
            teardown()
    return statistics.median(samples)


def report(title: str, ours: float, peer: float, peer_name: str, unit: str = "ms") -> None:
    scale = {"ms": 1e3, "us": 1e6, "s": 1.0}[unit]
    print(f"{title}: {ours * scale:.2f} {unit} median vs {peer_name} "
          f"{peer * scale:.2f} {unit} (ratio {ours / peer:.2f}x)")


def remove_domain(conn, name: str) -> None:
    """Destroy and undefine the domain `name` of a libvirt connection, if it exists."""
    import libvirt
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    if dom.isActive():
        dom.destroy()
    dom.undefine()


def transient_pool(conn, name: str, directory: str):
    """A storage pool for `directory` that lives until destroyed: virt-install would
    otherwise define a persistent one for every directory of a disk outside a pool."""
    from xml.sax.saxutils import escape
    return conn.storagePoolCreateXML(
        f"<pool type='dir'><name>{escape(name)}</name>"
        f"<target><path>{escape(directory)}</path></target></pool>", 0)


def run_as_installed() -> None:
    """Python commands started from now on keep bytecode caches, as an installed package
    does: a PYTHONDONTWRITEBYTECODE inherited from a development shell would make every
    run compile every module again (about a third of a boot's CPU time)."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
