"""Read commands as processes against their peers, and a full listing in process.

Process pairs, alternated round by round (the order flips every round) so
that both sides see the same load: `virt-driver list --all` / `virsh list
--all`, `show` / `virsh dominfo`, `host-info` / `virsh nodeinfo`, `image
list` / a bare Python reading the store's records. The libvirt commands also
run against the floor of any Python command: a bare libvirt-python process
making the same libvirt calls and printing their answers (the three commands
of a case rotate their order every round). Timed from exec to exit
(os.wait4), with the peak RSS of each process. In process: the driver's
list_summaries against bare libvirt-python (listAllDomains and one info()
per domain) on one open connection, alternated too.

GUESTS shut-off domains built from describe_spawn (the driver's own XML and
metadata) are defined for the run and undefined after; nothing is started.

The commands run with bytecode caches, as from an installed package: the
environment's PYTHONDONTWRITEBYTECODE is dropped for them and one untimed
run of each writes the caches first (without them, compiling the project's
modules costs virt-driver 100-400 ms a run).

Under load (other TCG guests on the host) wall times move with the
scheduler; with --instructions each command also runs once under
valgrind's callgrind, whose instruction count (Ir) does not. Read commands
keep their resolved configuration and the backends' entry points in
$XDG_CACHE_HOME/virt-driver (virt/confcache.py): the untimed first run
writes them, as a user's first command would.

Run: .venv/bin/python benchmarks/bench_read_cli.py [ROUNDS] [GUESTS] [--instructions]
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import libvirt

from virt import images
from virt.conf import make_conf
from virt.domain import METADATA_NS
from virt.driver import load_driver
from virt.imagestore import LocalImageStore
from virt.objects import Flavor, Instance

CLI = os.path.join(os.path.dirname(sys.executable), "virt-driver")
URI = "qemu:///system"
PREFIX = f"cl-bench-{os.getpid()}-"  # removed after: only this run's guests
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
BARE_IMAGE_LIST = ("import json, os, sys\n"
                   "d = sys.argv[1]\n"
                   "for n in sorted(os.listdir(d)):\n"
                   "    if n.endswith('.json'):\n"
                   "        with open(os.path.join(d, n)) as f:\n"
                   "            r = json.load(f)\n"
                   "        print(n[:-5], r.get('format'), r.get('virtual_size'))\n")
# The floor: Python with libvirt-python alone, making the calls each command makes.
BARE_CONNECT = "import sys, libvirt\nc = libvirt.open(sys.argv[1])\n"
BARE_LIST = (BARE_CONNECT
             + "for d, s in c.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE):\n"
               "    m = d.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, sys.argv[2], 0)\n"
               "    print(d.name(), s['state.state'], m)\n")
BARE_SHOW = (BARE_CONNECT + "d = c.lookupByName(sys.argv[2])\n"
             "print(d.info(), d.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, sys.argv[3], 0),\n"
             "      len(d.XMLDesc(0)))\n")
BARE_HOST_INFO = (BARE_CONNECT
                  + "print(c.getInfo(), c.getFreeMemory(), c.getType(), c.getVersion())\n")


def run_measured(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak RSS in KiB) of one command, which must succeed.

    Started through GNU time, which reports the peak RSS: a child of this
    process would inherit this process's own peak in its ru_maxrss. Its
    cost (one small exec) is the same for both sides of a pair.
    """
    with tempfile.NamedTemporaryFile("r") as report:
        start = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/time", "-o", report.name, "-f", "%M", *argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status):
            sys.exit(f"{argv} failed: {proc.stderr.read().decode()}")
        proc.stderr.close()
        return elapsed, usage.ru_utime + usage.ru_stime, int(report.read().split()[-1])


def instructions(argv: list[str]) -> int | None:
    """Instructions one run of argv executes (callgrind's Ir); None without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    proc = subprocess.run([valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null",
                           *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env=ENV, check=True)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    return int(found.group(1)) if found else None


def paired(ours, peer, rounds: int) -> tuple[list, list]:
    """Both callables run once per round, the order flipped every round."""
    a, b = rotated([ours, peer], rounds)
    return a, b


def rotated(fns: list, rounds: int) -> list[list]:
    """Each callable runs once per round; the round's order rotates (two: flips)."""
    results: list[list] = [[] for _ in fns]
    for i in range(rounds):
        for k in range(len(fns)):
            j = (i + k) % len(fns)
            results[j].append(fns[j]())
    return results


def figures(label: str, peer_label: str, ours: list[float], peer: list[float]) -> None:
    mo, mp = statistics.median(ours), statistics.median(peer)
    print(f"{label}: {mo * 1e3:.1f} ms median ({min(ours) * 1e3:.1f}-{max(ours) * 1e3:.1f})"
          f" vs {peer_label} {mp * 1e3:.1f} ms ({min(peer) * 1e3:.1f}-{max(peer) * 1e3:.1f})"
          f": ratio {mo / mp:.2f}x")


def define_guests(conf, count: int) -> list[str]:
    driver = load_driver(conf)
    conn = libvirt.open(URI)
    names = []
    try:
        for i in range(count):
            instance = Instance(name=f"{PREFIX}{i}", image="bench",
                                flavor=Flavor(memory_mb=64, vcpus=1))
            conn.defineXML(driver.describe_spawn(instance, "bench"))
            names.append(instance.name)
    finally:
        conn.close()
        driver.close()
    return names


def remove_guests() -> None:
    conn = libvirt.open(URI)
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(PREFIX):
                dom.undefine()
    finally:
        conn.close()


def bare_listing(conn) -> list:
    """Names and info() of every domain, as list_summaries skips one undefined meanwhile."""
    rows = []
    for dom in conn.listAllDomains():
        try:
            rows.append((dom.name(), dom.info()))
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
    return rows


def in_process(conf, rounds: int) -> None:
    driver = load_driver(conf)
    conn = libvirt.open(URI)

    def timed(fn):
        """(wall, CPU of the process) seconds of fn()."""
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - start, time.process_time() - cpu

    def ours():
        return timed(driver.list_summaries)

    def bare():
        return timed(lambda: bare_listing(conn))
    ours(), bare()  # both connections open and warm
    a, b = paired(ours, bare, rounds * 4)
    figures("in process: list_summaries", "bare listAllDomains + info()",
            [w for w, _ in a], [w for w, _ in b])
    figures("  CPU", "", [c for _, c in a], [c for _, c in b])
    conn.close()
    driver.close()


def main() -> None:
    counting = "--instructions" in sys.argv
    positional = [a for a in sys.argv[1:] if not a.startswith("--")]
    rounds = int(positional[0]) if positional else 15
    count = int(positional[1]) if len(positional) > 1 else 30
    work = tempfile.mkdtemp(prefix="bench-read-", dir="/tmp")
    config = os.path.join(work, "virt-driver.conf")
    with open(config, "w") as f:
        f.write(f"[DEFAULT]\nvirt_type = qemu\nstate_path = {work}/state\n")
    conf = make_conf(["--config-file", config])
    raw = os.path.join(work, "bench.raw")
    images.create_image("raw", raw, "1M")
    store = LocalImageStore.from_conf(conf)
    store.import_image("bench", raw, "raw")
    vd = [CLI, "--config-file", config]
    try:
        names = define_guests(conf, count)
        floor = [sys.executable, "-c"]
        cases = [
            ("list --all", [*vd, "list", "--all"], "virsh list --all",
             ["virsh", "-c", URI, "list", "--all"], [*floor, BARE_LIST, URI, METADATA_NS]),
            ("show", [*vd, "show", names[0]], "virsh dominfo",
             ["virsh", "-c", URI, "dominfo", names[0]],
             [*floor, BARE_SHOW, URI, names[0], METADATA_NS]),
            ("host-info", [*vd, "host-info"], "virsh nodeinfo",
             ["virsh", "-c", URI, "nodeinfo"], [*floor, BARE_HOST_INFO, URI]),
            ("image list", [*vd, "image", "list"], "python reading the records",
             [sys.executable, "-c", BARE_IMAGE_LIST, store.directory], None),
        ]
        print(f"{count} guests defined, {rounds} rounds")
        for label, argv, peer_label, peer_argv, floor_argv in cases:
            commands = [argv, peer_argv] + ([floor_argv] if floor_argv else [])
            for command in commands:
                run_measured(command)  # untimed: caches written, pages warm
            ours, peer, *bare = rotated([lambda a=c: run_measured(a) for c in commands], rounds)
            figures(f"virt-driver {label}", peer_label, [t for t, _, _ in ours],
                    [t for t, _, _ in peer])
            figures("  CPU", "", [c for _, c, _ in ours], [c for _, c, _ in peer])
            print(f"  peak RSS {max(r for _, _, r in ours) / 1024:.1f} MiB vs "
                  f"{max(r for _, _, r in peer) / 1024:.1f} MiB")
            if bare:
                figures("  floor: bare libvirt-python, same calls", peer_label,
                        [t for t, _, _ in bare[0]], [t for t, _, _ in peer])
                figures(f"  virt-driver {label}", "the floor", [t for t, _, _ in ours],
                        [t for t, _, _ in bare[0]])
            if counting:
                for command in commands:
                    ir = instructions(command)
                    print(f"  instructions of {command[0]} ... {command[-1][:20]!r}: "
                          f"{ir / 1e6 if ir else float('nan'):.0f} M")
        in_process(conf, rounds)
    finally:
        remove_guests()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
