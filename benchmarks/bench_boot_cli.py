"""`virt-driver boot` as a whole process against `virt-install --import` and bare
libvirt-python, each really starting the guest, in one run.

    python benchmarks/bench_boot_cli.py [ROUNDS] [--prefix PREFIX]

All three boot the same demo guest (direct kernel boot, 256 MiB, 2 vcpus, one
user-mode NIC, a qcow2 overlay on the same raw base) on qemu:///system:
- virt-driver boot: makes its overlay itself from its (warm) base cache;
- virt-install --import: timed with the `qemu-img create` of the overlay it
  needs; it starts the guest (no --noreboot) and returns;
- bare: benchmarks/bare_boot.py, qemu-img create then defineXML and create.
virt-install makes and leaves a persistent storage pool for a disk outside
every pool; the overlays' directory is therefore a transient pool for the
run's length (as on a host whose images live in a pool), destroyed at the
end: nothing is left behind, neither pools nor domains.

Each round runs the three in turn, the order rotating from round to round;
guests are destroyed untimed. The commands keep bytecode caches, as installed
(benchmarks.common.run_as_installed). Printed per command: wall time median and
min-max, CPU time (user+sys) median, peak RSS; the ratios are the medians of
the per-round ratios, so that drift of the machine hits both sides.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import libvirt

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from benchmarks.common import remove_domain, run_as_installed, transient_pool  # noqa: E402

GUEST = os.path.join(ROOT, "build", "demo-guest")
CLI = os.path.join(os.path.dirname(sys.executable), "virt-driver")
CMDLINE = "console=ttyS0 panic=-1 demo.action=wait"
URI = "qemu:///system"


def run_measured(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak RSS in KiB) of one command, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"{argv[0]} failed: {proc.stderr.read().decode()}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def bench_dir(prefix: str, parent: str = "/tmp") -> tuple[str, list[str]]:
    """A new work directory and the virt-driver command whose state lives in it."""
    work = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(work, 0o755)
    config = os.path.join(work, "virt-driver.conf")
    with open(config, "w") as f:
        f.write(f"[DEFAULT]\nvirt_type = qemu\nstate_path = {work}/state\n"
                f"boot_file_dirs = {GUEST}\n[libvirt]\nshutdown_timeout = 0\n")
    return work, [CLI, "--config-file", config]


class Sides:
    """The three commands, each with its untimed cleanup."""

    def __init__(self, work: str, vd: list[str], prefix: str, conn: libvirt.virConnect):
        self.work, self.vd, self.prefix, self.conn = work, vd, prefix, conn
        self.base = os.path.join(work, "base.raw")

    def virt_driver(self, i: int) -> tuple[float, float, int]:
        name = f"{self.prefix}vd-{i}"
        figures = run_measured([
            *self.vd, "boot", name, "--image", "bench", "--memory", "256", "--vcpus", "2",
            "--kernel", os.path.join(GUEST, "vmlinuz"),
            "--initrd", os.path.join(GUEST, "initrd.img"), "--cmdline", CMDLINE,
            "--nic", "user,mac=52:54:00:be:00:01"])
        subprocess.run([*self.vd, "destroy", name], check=True, stdout=subprocess.DEVNULL)
        return figures

    def virt_install(self, i: int) -> tuple[float, float, int]:
        name = f"{self.prefix}vi-{i}"
        overlay = os.path.join(self.work, f"{name}.qcow2")
        t_img, c_img, _ = run_measured(["qemu-img", "create", "-q", "-f", "qcow2", "-b",
                                        self.base, "-F", "raw", overlay, "1G"])
        t_vi, c_vi, rss = run_measured([
            "virt-install", "--connect", URI, "--name", name,
            "--virt-type", "qemu", "--memory", "256", "--vcpus", "2", "--import",
            "--disk", f"path={overlay},format=qcow2,bus=virtio",
            "--boot", f"kernel={GUEST}/vmlinuz,initrd={GUEST}/initrd.img,"
                      f"kernel_args={CMDLINE}",
            "--network", "user,mac=52:54:00:be:00:02,model=virtio",
            "--osinfo", "detect=off,require=off,name=linux2022",
            "--graphics", "none", "--serial", f"file,path={self.work}/{name}.log",
            "--noautoconsole"])
        self._check_running(name)
        remove_domain(self.conn, name)
        os.unlink(overlay)
        return t_img + t_vi, c_img + c_vi, rss

    def bare(self, i: int) -> tuple[float, float, int]:
        name = f"{self.prefix}bare-{i}"
        overlay = os.path.join(self.work, f"{name}.qcow2")
        figures = run_measured([sys.executable, os.path.join(HERE, "bare_boot.py"), name,
                                self.base, overlay, f"{self.work}/{name}.log", GUEST])
        self._check_running(name)
        remove_domain(self.conn, name)
        os.unlink(overlay)
        return figures

    def _check_running(self, name: str) -> None:
        if not self.conn.lookupByName(name).isActive():
            sys.exit(f"{name} was not started: the comparison would be unfair")


def summary(label: str, figures: list[tuple[float, float, int]]) -> None:
    walls = [w * 1e3 for w, _, _ in figures]
    cpu = statistics.median(c for _, c, _ in figures) * 1e3
    rss = max(r for _, _, r in figures) / 1024
    print(f"{label:24} wall {statistics.median(walls):6.0f} ms median "
          f"({min(walls):.0f}-{max(walls):.0f}), CPU {cpu:4.0f} ms, peak RSS {rss:.1f} MiB")


def ratio(label: str, ours: list, peer: list) -> None:
    ratios = [a[0] / b[0] for a, b in zip(ours, peer, strict=True)]
    print(f"{label:36} {statistics.median(ratios):.2f}x median of pairs "
          f"({min(ratios):.2f}-{max(ratios):.2f})")


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("rounds", type=int, nargs="?", default=7)
    args.add_argument("--prefix", default="bench-boot-",
                      help="name prefix of the guests and the pool (unique per user)")
    opts = args.parse_args()
    run_as_installed()  # the warm-up run below writes the caches
    subprocess.run([os.path.join(ROOT, "tools", "build-demo-guest.sh"), GUEST], check=True,
                   stdout=subprocess.DEVNULL)
    work, vd = bench_dir("bench-boot-")
    conn = libvirt.open(URI)
    sides = Sides(work, vd, opts.prefix, conn)
    pool = None
    runs = {"virt-driver boot": [], "virt-install --import": [], "bare define+create": []}
    try:
        shutil.copy(os.path.join(GUEST, "disk.raw"), sides.base)
        pool = transient_pool(conn, f"{opts.prefix}pool", work)
        subprocess.run([*sides.vd, "image", "import", "bench",
                        os.path.join(GUEST, "disk.raw"), "--format", "raw"],
                       check=True, stdout=subprocess.DEVNULL)
        # Warm-up, untimed: virt-driver's base cache, and every program's files in memory.
        for side in (sides.virt_driver, sides.virt_install, sides.bare):
            side(999)
        order = list(zip(runs.values(), (sides.virt_driver, sides.virt_install, sides.bare),
                         strict=True))
        for i in range(opts.rounds):
            for results, side in order[i % 3:] + order[:i % 3]:
                results.append(side(i))
    finally:
        for dom in conn.listAllDomains():
            if dom.name().startswith(opts.prefix):
                remove_domain(conn, dom.name())
        if pool is not None:
            pool.destroy()
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
    for label, figures in runs.items():
        summary(label, figures)
    ours, vi, bare = runs.values()
    ratio("virt-driver / virt-install", ours, vi)
    ratio("virt-driver / bare", ours, bare)
    print(f"({opts.rounds} rounds)")


if __name__ == "__main__":
    main()
