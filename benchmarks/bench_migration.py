"""Live migration of a 256 MiB guest, shared storage and block: `virt-driver migrate` vs `virsh`.

The two-host bed (tools/two-hosts.sh) runs one demo guest booted by the
driver; it ping-pongs between hosts A and B, each round once by each tool,
with the same flags (peer-to-peer, live, persistent on the destination,
undefined at the source, auto-converge; block migration adds
--copy-storage-inc with the same destination XML the driver sends, after the
destination's driver prepared base and empty overlay, untimed for both). Each
migration leaves from the host
the other tool's migration arrived at, so both go in both directions.
Measured per migration: wall time of the command (process start to exit),
libvirt's time_elapsed and downtime of the completed job (read on the
destination). Also: the bed's cold start (hosts stopped, caches kept) and
warm start (already running), and what the destination's preparation for a
block migration costs when its store lacks the image (the source's `image
export`, then `migrate-prepare --chain`, which imports it as untrusted)
against preparing from its own store.

Run: .venv/bin/python benchmarks/bench_migration.py [ROUNDS]
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import libvirt

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from backends.libvirt.migration import relocated_xml  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BED = os.path.join(ROOT, "tools", "two-hosts.sh")
GUEST = os.path.join(ROOT, "build", "demo-guest")
NAME, IMAGE = "mig-bench", "mig-demo"
BED_ROOT = os.environ.get("VD_TWO_HOSTS_ROOT", "/tmp/virt-driver-two-hosts")
TMP = tempfile.mkdtemp(prefix="bench-migration-")
VIRSH_FLAGS = ["--live", "--p2p", "--persistent", "--undefinesource", "--auto-converge"]


def bed(*argv: str) -> str:
    return subprocess.run([BED, *argv], check=True, capture_output=True, text=True).stdout.strip()


def cli(host: str, *argv: str, storage: str = "shared") -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run([BED, "exec", host, sys.executable, "-m", "virt.cli", "--config-file",
                           bed("conf", host, storage), "--json", *argv],
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


def image_digest(host: str) -> str:
    """The digest by which another host proves it holds the same image."""
    return {i["name"]: i["digest"] for i in cli(host, "image", "list", storage="local")}[IMAGE]


def prepare(src: str, dst: str, instance: dict) -> str:
    """Block migration: the destination's driver makes base and empty overlay (untimed)."""
    out = cli(dst, "migrate-prepare", NAME, "--uuid", instance["uuid"], "--image", IMAGE,
              "--disk-gb", str(instance["flavor"]["root_gb"]), "--image-digest",
              image_digest(src), storage="local")
    return out["instances_path"]


def by_driver(src: str, dst: str, storage: str) -> dict:
    extra = []
    if storage == "local":
        instance = cli(src, "show", NAME, storage=storage)["instance"]
        extra = ["--dest-instances-path", prepare(src, dst, instance)]
    wall, out = timed(lambda: cli(src, "migrate", NAME, bed("uri", dst), *extra,
                                  storage=storage))
    return {"wall": wall, "elapsed_ms": out["time_elapsed_ms"], "downtime_ms": out["downtime_ms"]}


def by_virsh(src: str, dst: str, storage: str) -> dict:
    flags, cleanup = list(VIRSH_FLAGS), None
    if storage == "local":   # the same destination XML the driver sends, by hand
        instance = cli(src, "show", NAME, storage=storage)["instance"]
        dest_path, here = prepare(src, dst, instance), local_instances(src)
        xmls = []
        for extra in ([], ["--inactive"]):
            xml = subprocess.run(["virsh", "-c", bed("uri", src), "dumpxml", "--migratable",
                                  "--security-info", *extra, NAME], check=True,
                                 capture_output=True, text=True).stdout
            path = os.path.join(TMP, f"{len(xmls)}.xml")
            with open(path, "w") as f:
                f.write(relocated_xml(xml, here, dest_path))
            xmls.append(path)
        flags += ["--copy-storage-inc", "--xml", xmls[0], "--persistent-xml", xmls[1]]
        cleanup = os.path.join(here, instance["uuid"])
    wall, _ = timed(lambda: subprocess.run(
        ["virsh", "-c", bed("uri", src), "migrate", *flags, NAME, bed("uri", dst)],
        check=True, capture_output=True))
    if cleanup:
        shutil.rmtree(cleanup)
    stats = completed_stats(dst)
    return {"wall": wall, "elapsed_ms": stats.get("time_elapsed"),
            "downtime_ms": stats.get("downtime")}


def local_instances(host: str) -> str:
    return os.path.join(BED_ROOT, f"host{host}", "local", "instances")


def summary(name: str, runs: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]} | {"tool": name}


def ping_pong(storage: str, rounds: int) -> tuple[list[dict], list[dict]]:
    """One guest moved A<->B 2*rounds times, alternately by each tool."""
    for host in (("A",) if storage == "shared" else ("A", "B")):
        if IMAGE not in {i["name"] for i in cli(host, "image", "list", storage=storage)}:
            cli(host, "image", "import", IMAGE, os.path.join(GUEST, "disk.raw"), "--format",
                "raw", storage=storage)
    cli("A", "boot", NAME, "--image", IMAGE, "--memory", "256", "--kernel",
        os.path.join(GUEST, "vmlinuz"), "--initrd", os.path.join(GUEST, "initrd.img"),
        "--cmdline", "console=ttyS0 panic=-1 demo.action=wait", storage=storage)
    time.sleep(5)  # let it boot: a guest still booting dirties memory differently
    ours, theirs, here = [], [], "A"
    try:
        for i in range(rounds):
            there = "B" if here == "A" else "A"
            first, second = (by_driver, by_virsh) if i % 2 == 0 else (by_virsh, by_driver)
            (ours if first is by_driver else theirs).append(first(here, there, storage))
            (ours if second is by_driver else theirs).append(second(there, here, storage))
    finally:
        for host in ("A", "B"):
            if any(r["name"] == NAME for r in cli(host, "list", "--all", storage=storage)):
                cli(host, "destroy", NAME, storage=storage)
    return ours, theirs


def chain_route(rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Wall times of A's export, B's prepare with the chain, B's prepare from its store."""
    export, with_chain, from_store = [], [], []
    args = [NAME, "--uuid", "7d41a9c2-61e0-4f0b-8a53-000000000001", "--image", IMAGE]
    tarball = os.path.join(TMP, "chain.tar.gz")
    same = ["--image-digest", image_digest("A")]  # B's copy came from A's chain
    for _ in range(rounds):
        if IMAGE in {i["name"] for i in cli("B", "image", "list", storage="local")}:
            cli("B", "image", "delete", IMAGE, storage="local")
        export.append(timed(lambda: cli("A", "image", "export", IMAGE, tarball,
                                        storage="local"))[0])
        with_chain.append(timed(lambda: cli("B", "migrate-prepare", *args, "--chain", tarball,
                                            storage="local"))[0])
        cli("B", "migrate-abandon", *args[:3], storage="local")
        from_store.append(timed(lambda: cli("B", "migrate-prepare", *args, *same,
                                            storage="local"))[0])
        cli("B", "migrate-abandon", *args[:3], storage="local")
        os.remove(tarball)
    return export, with_chain, from_store


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

    try:
        results = {storage: ping_pong(storage, rounds) for storage in ("shared", "local")}
        export, with_chain, from_store = chain_route(rounds)
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
        if started:
            bed("stop")
    for storage, (ours, theirs) in results.items():
        a, b = summary("virt-driver migrate", ours), summary("virsh migrate", theirs)
        print(f"-- {'live, shared storage' if storage == 'shared' else 'live block migration'}"
              f" (medians of {len(ours)})")
        for x in (a, b):
            print(f"{x['tool']:20s} wall {x['wall']:.2f} s  libvirt time_elapsed "
                  f"{x['elapsed_ms']:.0f} ms  downtime {x['downtime_ms']:.0f} ms")
        print(f"ratio virt-driver/virsh: wall {a['wall'] / b['wall']:.2f}x, time_elapsed "
              f"{a['elapsed_ms'] / b['elapsed_ms']:.2f}x, downtime "
              f"{a['downtime_ms'] / b['downtime_ms']:.2f}x")
    med = statistics.median
    print(f"-- block migration's destination without the image (medians of {len(export)}): "
          f"export on A {med(export):.2f} s, migrate-prepare --chain on B "
          f"{med(with_chain):.2f} s, migrate-prepare from B's store {med(from_store):.2f} s")
    if cold_samples:
        print(f"two-host bed cold start {statistics.median(cold_samples):.1f} s "
              f"(median of {len(cold_samples)}, caches kept), warm start {warm:.2f} s")
    else:
        print(f"two-host bed warm start {warm:.2f} s (cold start not timed: the bed was "
              "already running and is not this run's to stop)")


if __name__ == "__main__":
    main()
