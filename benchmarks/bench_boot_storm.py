"""Boot storms: N concurrent `virt-driver boot` processes against N concurrent bare
libvirt-python define+create processes (benchmarks/bare_boot.py), in one run.

    python benchmarks/bench_boot_storm.py [ROUNDS] [--sizes 8,16] [--prefix PREFIX]

Every guest is the demo guest (direct kernel boot, 256 MiB, 2 vcpus, one
user-mode NIC) on a qcow2 overlay of one raw base: virt-driver's from its
warm base cache, bare's from a copy of the same file. Timed: from starting
the N processes to the last one's exit. Each round runs both storms of each
size, the order alternating; guests are destroyed untimed and nothing is
left behind. Printed: medians and min-max, and the median of the per-round
ratios.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

import libvirt
from bench_boot_cli import CMDLINE, GUEST, HERE, ROOT, URI, bench_dir, remove_domain

from benchmarks.common import run_as_installed


def storm(argvs: list[list[str]]) -> tuple[float, float]:
    """(wall seconds to the last exit, CPU seconds of all the processes)."""
    start = time.perf_counter()
    procs = [subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for a in argvs]
    failed, cpu = [], 0.0
    for p in procs:
        errors = p.stderr.read().decode()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        cpu += usage.ru_utime + usage.ru_stime
        if p.returncode:
            failed.append(errors)
    elapsed = time.perf_counter() - start
    if failed:
        sys.exit(f"{len(failed)} of {len(argvs)} failed: {failed[0]}")
    return elapsed, cpu


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("rounds", type=int, nargs="?", default=5)
    args.add_argument("--sizes", default="8,16")
    args.add_argument("--prefix", default="bench-storm-")
    opts = args.parse_args()
    run_as_installed()  # the warm-up run below writes the caches
    sizes = [int(n) for n in opts.sizes.split(",")]
    subprocess.run([os.path.join(ROOT, "tools", "build-demo-guest.sh"), GUEST], check=True,
                   stdout=subprocess.DEVNULL)
    work, vd = bench_dir("bench-storm-", "/tmp")
    base = os.path.join(work, "base.raw")
    results = {(n, side): [] for n in sizes for side in ("vd", "bare")}

    def ours(n: int) -> tuple[float, float]:
        return storm([[*vd, "boot", f"{opts.prefix}vd-{i}", "--image", "bench",
                       "--memory", "256", "--vcpus", "2",
                       "--kernel", os.path.join(GUEST, "vmlinuz"),
                       "--initrd", os.path.join(GUEST, "initrd.img"), "--cmdline", CMDLINE,
                       "--nic", f"user,mac=52:54:00:be:01:{i:02x}"] for i in range(n)])

    def bare(n: int) -> tuple[float, float]:
        return storm([[sys.executable, os.path.join(HERE, "bare_boot.py"),
                       f"{opts.prefix}bare-{i}", base,
                       os.path.join(work, f"bare-{i}.qcow2"),
                       os.path.join(work, f"bare-{i}.log"), GUEST] for i in range(n)])

    def clean() -> None:
        conn = libvirt.open(URI)  # a new one: a CI run may restart the shared libvirtd
        try:
            for dom in conn.listAllDomains():
                if dom.name().startswith(opts.prefix):
                    remove_domain(conn, dom.name())
        finally:
            conn.close()
        for entry in os.listdir(work):
            if entry.startswith("bare-"):
                os.unlink(os.path.join(work, entry))

    def clean_ours(n: int) -> None:
        for i in range(n):
            subprocess.run([*vd, "destroy", f"{opts.prefix}vd-{i}"], check=True,
                           stdout=subprocess.DEVNULL)

    try:
        shutil.copy(os.path.join(GUEST, "disk.raw"), base)
        subprocess.run([*vd, "image", "import", "bench", os.path.join(GUEST, "disk.raw"),
                        "--format", "raw"], check=True, stdout=subprocess.DEVNULL)
        ours(1)  # warm-up: the base cache
        clean_ours(1)
        for r in range(opts.rounds):
            for n in sizes:
                sides = [("vd", ours, clean_ours), ("bare", bare, lambda n: clean())]
                for side, run, tidy in sides if r % 2 else sides[::-1]:
                    results[n, side].append(run(n))
                    tidy(n)
    finally:
        try:
            clean()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    for n in sizes:
        vd_t, bare_t = [w for w, _ in results[n, "vd"]], [w for w, _ in results[n, "bare"]]
        vd_cpu = statistics.median(c for _, c in results[n, "vd"])
        bare_cpu = statistics.median(c for _, c in results[n, "bare"])
        ratios = [a / b for a, b in zip(vd_t, bare_t, strict=True)]
        print(f"N={n:2}: virt-driver {statistics.median(vd_t):.2f} s "
              f"({min(vd_t):.2f}-{max(vd_t):.2f}), bare {statistics.median(bare_t):.2f} s "
              f"({min(bare_t):.2f}-{max(bare_t):.2f}), ratio {statistics.median(ratios):.2f}x "
              f"({min(ratios):.2f}-{max(ratios):.2f}); CPU of the storm {vd_cpu:.2f} s "
              f"against {bare_cpu:.2f} s; {opts.rounds} rounds")


if __name__ == "__main__":
    main()
