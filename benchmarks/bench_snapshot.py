"""The guest's longest pause during a snapshot: live backup job against two peers.

One demo guest (128 MiB, TCG, a qcow2 overlay on a raw base) is snapshotted
in turns, each round once by every method:

- live: `LibvirtDriver.snapshot` (libvirt's push-mode backup job);
- managed-save: what `snapshot` did before (managedSave, qemu-img convert
  of the chain, start again from the saved state);
- disk-only: `virsh snapshot-create-as --disk-only --atomic --no-metadata`,
  qemu-img convert of the now read-only chain, `virsh blockcommit --active
  --pivot --wait`.

A second connection samples the domain's state every ~2 ms during each
snapshot; the pause is the longest stretch in which it was not running.
(It sees what libvirt sees: vCPUs stopped or the domain down, not a stall
inside QEMU shorter than the sampling step.) Also reported: wall time.

Run: .venv/bin/python benchmarks/bench_snapshot.py [ROUNDS]
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import libvirt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from backends.libvirt.driver import LibvirtDriver  # noqa: E402
from virt.conf import make_conf  # noqa: E402
from virt.imagestore import LocalImageStore  # noqa: E402
from virt.objects import NIC, Flavor, Instance  # noqa: E402

GUEST = os.path.join(ROOT, "build", "demo-guest")
URI = "qemu:///system"
NAME = "bench-snap-guest"
SAMPLE = 0.002


class PauseSampler:
    """Longest time the domain was seen not running, between start() and stop()."""

    def __init__(self, name: str):
        self._conn = libvirt.open(URI)
        self._dom = self._conn.lookupByName(name)
        self._stop = threading.Event()
        self.longest = 0.0

    def _run(self) -> None:
        since = None
        while not self._stop.is_set():
            try:
                running = self._dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
            except libvirt.libvirtError:
                running = False  # between managedSave and the restore: no domain process
            now = time.perf_counter()
            if running:
                since = None
            else:
                since = since or now
                self.longest = max(self.longest, now - since)
            time.sleep(SAMPLE)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._conn.close()


def managed_save(conn, disk, out):
    dom = conn.lookupByName(NAME)
    dom.managedSave()
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", disk, out], check=True)
    dom.create()


def disk_only(conn, disk, out):
    overlay = out + ".overlay"
    subprocess.run(["virsh", "-q", "-c", URI, "snapshot-create-as", NAME, "--disk-only",
                    "--atomic", "--no-metadata", "--diskspec", f"vda,file={overlay}"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["qemu-img", "convert", "-U", "-O", "qcow2", disk, out], check=True)
    subprocess.run(["virsh", "-q", "-c", URI, "blockcommit", NAME, "vda", "--active",
                    "--pivot", "--wait"], check=True, stdout=subprocess.DEVNULL)
    os.unlink(overlay)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    subprocess.run([os.path.join(ROOT, "tools", "build-demo-guest.sh"), GUEST], check=True,
                   stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="bench-snap-", dir="/tmp")
    conf = make_conf(virt_type="qemu", state_path=work, boot_file_dirs=[GUEST],
                     libvirt__connection_uri=URI, libvirt__shutdown_timeout=0)
    store = LocalImageStore.from_conf(conf)
    store.import_image("demo", os.path.join(GUEST, "disk.raw"), "raw", {"arch": "x86_64"})
    driver = LibvirtDriver(conf)
    instance = Instance(name=NAME, flavor=Flavor(memory_mb=128, vcpus=1, root_gb=1,
                                                 name="bench"),
                        image="demo", nics=(NIC(mac="52:54:00:be:5c:01"),),
                        params={"kernel_path": os.path.join(GUEST, "vmlinuz"),
                                "initrd_path": os.path.join(GUEST, "initrd.img"),
                                "kernel_args": "console=ttyS0 panic=-1 demo.action=wait"})
    conn = libvirt.open(URI)
    results = {"live (backup job)": [], "managed-save (before)": [],
               "disk-only + blockcommit": []}
    try:
        driver.spawn(instance, "demo")
        time.sleep(3)  # booted
        disk = driver.instance_files(instance).disk
        for n in range(rounds):
            methods = {
                "live (backup job)": lambda n=n: (driver.snapshot(instance, f"live{n}"),
                                                  store.delete(f"live{n}")),
                "managed-save (before)":
                    lambda n=n: managed_save(conn, disk, f"{work}/saved{n}.qcow2"),
                "disk-only + blockcommit":
                    lambda n=n: disk_only(conn, disk, f"{work}/ext{n}.qcow2"),
            }
            for label, method in methods.items():
                with PauseSampler(NAME) as sampler:
                    start = time.perf_counter()
                    method()
                    wall = time.perf_counter() - start
                results[label].append((wall, sampler.longest))
    finally:
        driver.destroy(instance)
        driver.close()
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
    for label, samples in results.items():
        walls = [w for w, _ in samples]
        pauses = [p for _, p in samples]
        print(f"{label}: wall {statistics.median(walls):.2f} s median "
              f"({min(walls):.2f}-{max(walls):.2f}), longest pause "
              f"{statistics.median(pauses) * 1e3:.0f} ms median "
              f"({min(pauses) * 1e3:.0f}-{max(pauses) * 1e3:.0f})")


if __name__ == "__main__":
    main()
