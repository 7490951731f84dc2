"""Live migration (shared storage) of a 256 MiB guest: `virt-driver migrate` vs `virsh migrate`.

The two-host bed (tools/two-hosts.sh) runs one demo guest booted by the
driver; it ping-pongs between hosts A and B, each round once by each tool,
with the same flags (peer-to-peer, live, persistent on the destination,
undefined at the source, auto-converge). Each migration leaves from the host
the other tool's migration arrived at, so both go in both directions.
Measured per migration: wall time of the command (process start to exit),
libvirt's time_elapsed and downtime of the completed job (read on the
destination). Also: the bed's cold start (hosts stopped, caches kept) and
warm start (already running).

Run: .venv/bin/python benchmarks/bench_migration.py [ROUNDS]
"""

import json
import os
import statistics
import subprocess
import sys
import time

import libvirt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BED = os.path.join(ROOT, "tools", "two-hosts.sh")
GUEST = os.path.join(ROOT, "build", "demo-guest")
NAME, IMAGE = "mig-bench", "mig-demo"
VIRSH_FLAGS = ["--live", "--p2p", "--persistent", "--undefinesource", "--auto-converge"]


def bed(*argv: str) -> str:
    return subprocess.run([BED, *argv], check=True, capture_output=True, text=True).stdout.strip()


def cli(host: str, *argv: str) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run([BED, "exec", host, sys.executable, "-m", "virt.cli", "--config-file",
                           bed("conf", host), "--json", *argv],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"virt-driver {' '.join(argv)} on {host}: {done.stderr}")
    return json.loads(done.stdout) if done.stdout.strip().startswith(("{", "[")) else {}


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def completed_stats(host: str) -> dict:
    conn = libvirt.open(bed("uri", host))
    try:
        return conn.lookupByName(NAME).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    finally:
        conn.close()


def by_driver(src: str, dst: str) -> dict:
    wall, out = timed(lambda: cli(src, "migrate", NAME, bed("uri", dst)))
    return {"wall": wall, "elapsed_ms": out["time_elapsed_ms"], "downtime_ms": out["downtime_ms"]}


def by_virsh(src: str, dst: str) -> dict:
    wall, _ = timed(lambda: subprocess.run(
        ["virsh", "-c", bed("uri", src), "migrate", *VIRSH_FLAGS, NAME, bed("uri", dst)],
        check=True, capture_output=True))
    stats = completed_stats(dst)
    return {"wall": wall, "elapsed_ms": stats.get("time_elapsed"),
            "downtime_ms": stats.get("downtime")}


def summary(name: str, runs: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]} | {"tool": name}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    started = subprocess.run([BED, "running"]).returncode != 0
    bed("start")
    cold_samples = []
    if started:   # only a bed this run started may be stopped to time its cold start
        for _ in range(2):
            bed("stop")
            cold_samples.append(timed(lambda: bed("start"))[0])
    warm = statistics.median(timed(lambda: bed("start"))[0] for _ in range(5))

    if IMAGE not in {i["name"] for i in cli("A", "image", "list")}:
        cli("A", "image", "import", IMAGE, os.path.join(GUEST, "disk.raw"), "--format", "raw")
    cli("A", "boot", NAME, "--image", IMAGE, "--memory", "256", "--kernel",
        os.path.join(GUEST, "vmlinuz"), "--initrd", os.path.join(GUEST, "initrd.img"),
        "--cmdline", "console=ttyS0 panic=-1 demo.action=wait")
    time.sleep(5)  # let it boot: a guest still booting dirties memory differently
    ours, theirs, here = [], [], "A"
    try:
        for i in range(rounds):
            there = "B" if here == "A" else "A"
            first, second = (by_driver, by_virsh) if i % 2 == 0 else (by_virsh, by_driver)
            (ours if first is by_driver else theirs).append(first(here, there))
            (ours if second is by_driver else theirs).append(second(there, here))
    finally:
        for host in ("A", "B"):
            if any(r["name"] == NAME for r in cli(host, "list", "--all")):
                cli(host, "destroy", NAME)
        if started:
            bed("stop")
    a, b = summary("virt-driver migrate", ours), summary("virsh migrate", theirs)
    for s in (a, b):
        print(f"{s['tool']:20s} wall {s['wall']:.2f} s  libvirt time_elapsed "
              f"{s['elapsed_ms']:.0f} ms  downtime {s['downtime_ms']:.0f} ms  "
              f"(medians of {len(ours)})")
    print(f"ratio virt-driver/virsh: wall {a['wall'] / b['wall']:.2f}x, time_elapsed "
          f"{a['elapsed_ms'] / b['elapsed_ms']:.2f}x, downtime "
          f"{a['downtime_ms'] / b['downtime_ms']:.2f}x")
    if cold_samples:
        print(f"two-host bed cold start {statistics.median(cold_samples):.1f} s "
              f"(median of {len(cold_samples)}, caches kept), warm start {warm:.2f} s")
    else:
        print(f"two-host bed warm start {warm:.2f} s (cold start not timed: the bed was "
              "already running and is not this run's to stop)")


if __name__ == "__main__":
    main()
