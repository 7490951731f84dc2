"""Spawn through LibvirtDriver against the same steps done by hand, in one run.

    python benchmarks/bench_spawn.py [ROUNDS]

Both sides start the demo guest (tools/build-demo-guest.sh) on qemu:///system
with TCG. The hand-made side does what a spawn must do: inspect the cached raw
base (qemu-img info, as the image cache does on every use), create the
instance directory, the qcow2 overlay (qemu-img create) and the console log,
define a prepared domain XML, start it and wait until it runs. Teardown is
outside the timed region; the two sides alternate so that drift hits both.
Prints the medians and the driver's overhead; the target is under 10 ms.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time

import libvirt
from oslo_concurrency import processutils

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from backends.libvirt.driver import LibvirtDriver  # noqa: E402
from virt.conf import make_conf  # noqa: E402
from virt.imagestore import LocalImageStore  # noqa: E402
from virt.objects import NIC, Flavor, Instance  # noqa: E402
from virt.units import GiB  # noqa: E402

GUEST_DIR = os.path.join(os.path.dirname(HERE), "build", "demo-guest")
URI = "qemu:///system"
# As virt.images runs qemu-img: the C locale spares it loading locale data (~10 ms).
C_LOCALE = {**os.environ, "LC_ALL": "C"}


def _instance(name: str) -> Instance:
    return Instance(name=name, flavor=Flavor(memory_mb=128, vcpus=1, root_gb=1), image="demo",
                    params={"kernel_path": os.path.join(GUEST_DIR, "vmlinuz"),
                            "initrd_path": os.path.join(GUEST_DIR, "initrd.img"),
                            "kernel_args": "console=ttyS0 panic=-1 demo.action=wait"},
                    nics=(NIC(mac="52:54:00:be:00:01"),))


def _driver_spawn(driver: LibvirtDriver, round_: int) -> float:
    instance = _instance(f"bench-drv-{round_}")
    start = time.perf_counter()
    driver.spawn(instance, "demo")
    elapsed = time.perf_counter() - start
    driver.destroy(instance)
    return elapsed


def _direct_spawn(driver: LibvirtDriver, conns: list, base: str, round_: int) -> float:
    if not conns or not conns[0].isAlive():  # others may restart the shared libvirtd
        conns[:] = [libvirt.open(URI)]
    conn = conns[0]
    instance = _instance(f"bench-raw-{round_}")
    files = driver.instance_files(instance)
    xml = driver.describe_spawn(instance, "demo")  # prepared outside the timed region
    start = time.perf_counter()
    processutils.execute("qemu-img", "info", "-f", "raw", "--output=json", base,
                         env_variables=C_LOCALE)
    os.mkdir(files.directory)
    processutils.execute("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw",
                         files.disk, str(GiB), env_variables=C_LOCALE)
    open(files.console_log, "x").close()
    dom = conn.defineXML(xml)
    dom.create()
    while dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    dom.destroy()
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
    shutil.rmtree(files.directory)
    return elapsed


def _measure(side, round_: int, attempts: int = 3) -> float:
    """One timed spawn; redone when the shared libvirtd was restarted under it."""
    for attempt in range(attempts):
        try:
            return side(round_ * attempts + attempt)
        except libvirt.libvirtError as e:
            if attempt == attempts - 1:
                raise
            print(f"round {round_}: libvirt failed ({e}); redoing it", file=sys.stderr)
            time.sleep(2)
            _remove_leftovers()
    raise AssertionError("unreachable")


def _remove_leftovers() -> None:
    conn = libvirt.open(URI)
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith("bench-"):
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
    finally:
        conn.close()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    if not os.path.exists(os.path.join(GUEST_DIR, "vmlinuz")):
        sys.exit("build the demo guest first: tools/build-demo-guest.sh")
    state = tempfile.mkdtemp(prefix="bench-spawn-", dir="/tmp")
    try:
        conf = make_conf(virt_type="qemu", state_path=state, boot_file_dirs=[GUEST_DIR],
                         libvirt__connection_uri=URI,
                         libvirt__shutdown_timeout=0)
        LocalImageStore.from_conf(conf).import_image(
            "demo", os.path.join(GUEST_DIR, "disk.raw"), "raw", {"arch": "x86_64"})
        driver = LibvirtDriver(conf)
        driver.init_host("localhost")
        base = driver.cache.fetch_base("demo")  # the one-time conversion is not timed
        drv, raw, conns = [], [], []
        for round_ in range(rounds):
            sides = [(drv, lambda r: _driver_spawn(driver, r)),
                     (raw, lambda r: _direct_spawn(driver, conns, base, r))]
            for results, side in sides[::-1] if round_ % 2 else sides:
                results.append(_measure(side, round_))
        driver.close()
    finally:
        shutil.rmtree(state, ignore_errors=True)
    d_ms, r_ms = statistics.median(drv) * 1e3, statistics.median(raw) * 1e3
    # Starting QEMU varies by tens of ms; the per-round difference is steadier.
    paired = statistics.median(d - r for d, r in zip(drv, raw, strict=True)) * 1e3
    print(f"spawn, {rounds} rounds (median): driver {d_ms:.1f} ms, "
          f"direct libvirt-python + qemu-img {r_ms:.1f} ms, ratio {d_ms / r_ms:.3f}")
    print(f"driver overhead: {d_ms - r_ms:+.1f} ms (difference of medians), "
          f"{paired:+.1f} ms (median of per-round differences); target < 10 ms")


if __name__ == "__main__":
    main()
