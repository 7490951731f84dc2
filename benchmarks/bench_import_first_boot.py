"""`image import` and the first boot of a new image, as processes, against their floors.

    python benchmarks/bench_import_first_boot.py [ROUNDS] [--prefix PREFIX]

The image: a 1 GiB raw file holding 256 MiB of data (four 64 MiB extents of
random bytes, holes between them), in the page cache for every command.
- import: `virt-driver image import NAME FILE --format raw` against
  `qemu-img convert -f raw -O raw FILE COPY` followed by `sync COPY` (the
  same data written and made durable); the image is deleted untimed.
- first boot: `virt-driver boot` of an image imported just before (untimed),
  whose base does not exist yet, against benchmarks/bare_boot.py (qemu-img
  create of an overlay on the file, define, create). The demo guest's kernel
  boots either way; the disk is the 1 GiB image.
Rounds alternate the order of the two sides; printed: medians, min-max, and
the median of the per-round ratios. Nothing is left behind.
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

MiB = 1 << 20


def timed(*argvs: list[str]) -> float:
    """Seconds the commands take one after the other; each must succeed."""
    start = time.perf_counter()
    for argv in argvs:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def make_image(path: str) -> None:
    with open(path, "wb") as f:
        f.truncate(1 << 30)
        for i in range(4):
            f.seek(i * 256 * MiB + 32 * MiB)
            f.write(os.urandom(64 * MiB))


def summary(label: str, ours: list[float], peer: list[float], peer_label: str) -> None:
    ratios = [a / b for a, b in zip(ours, peer, strict=True)]
    print(f"{label}: virt-driver {statistics.median(ours) * 1e3:.0f} ms "
          f"({min(ours) * 1e3:.0f}-{max(ours) * 1e3:.0f}), {peer_label} "
          f"{statistics.median(peer) * 1e3:.0f} ms ({min(peer) * 1e3:.0f}-"
          f"{max(peer) * 1e3:.0f}), ratio {statistics.median(ratios):.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f}), {len(ours)} rounds")


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("rounds", type=int, nargs="?", default=5)
    args.add_argument("--prefix", default="bench-first-")
    opts = args.parse_args()
    run_as_installed()
    subprocess.run([os.path.join(ROOT, "tools", "build-demo-guest.sh"), GUEST], check=True,
                   stdout=subprocess.DEVNULL)
    work, vd = bench_dir("bench-import-", "/var/tmp")
    image = os.path.join(work, "image.raw")
    copy = os.path.join(work, "copy.raw")
    conn = libvirt.open(URI)
    imports, converts, boots, bares = [], [], [], []
    try:
        make_image(image)

        def ours_import(i: int) -> None:
            imports.append(timed([*vd, "image", "import", f"imp-{i}", image, "--format", "raw"]))
            subprocess.run([*vd, "image", "delete", f"imp-{i}"], check=True,
                           stdout=subprocess.DEVNULL)

        def peer_import(_i: int) -> None:
            converts.append(timed(["qemu-img", "convert", "-f", "raw", "-O", "raw", image,
                                   copy], ["sync", copy]))
            os.unlink(copy)

        def ours_boot(i: int) -> None:
            name = f"{opts.prefix}vd-{i}"
            subprocess.run([*vd, "image", "import", f"new-{i}", image, "--format", "raw"],
                           check=True, stdout=subprocess.DEVNULL)
            boots.append(timed([
                *vd, "boot", name, "--image", f"new-{i}", "--memory", "256", "--vcpus", "2",
                "--kernel", os.path.join(GUEST, "vmlinuz"),
                "--initrd", os.path.join(GUEST, "initrd.img"), "--cmdline", CMDLINE,
                "--nic", "user,mac=52:54:00:be:02:01"]))
            subprocess.run([*vd, "destroy", name], check=True, stdout=subprocess.DEVNULL)
            subprocess.run([*vd, "image", "delete", f"new-{i}"], check=True,
                           stdout=subprocess.DEVNULL)

        def peer_boot(i: int) -> None:
            name = f"{opts.prefix}bare-{i}"
            overlay = os.path.join(work, f"{name}.qcow2")
            bares.append(timed([sys.executable, os.path.join(HERE, "bare_boot.py"), name,
                                image, overlay, os.path.join(work, f"{name}.log"), GUEST]))
            remove_domain(conn, name)
            os.unlink(overlay)

        ours_import(999)  # warm-up of every program involved
        peer_import(999)
        imports.clear()
        converts.clear()
        for i in range(opts.rounds):
            pairs = [(ours_import, peer_import), (ours_boot, peer_boot)]
            for ours, peer in pairs:
                for side in ((ours, peer) if i % 2 else (peer, ours)):
                    side(i)
        subprocess.run([*vd, "cache-cleanup", "--min-age", "0"], capture_output=True)
    finally:
        for dom in conn.listAllDomains():
            if dom.name().startswith(opts.prefix):
                remove_domain(conn, dom.name())
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
    summary("image import (1 GiB raw, 256 MiB data)", imports, converts,
            "qemu-img convert + sync")
    summary("first boot of a new image", boots, bares, "bare define+create")


if __name__ == "__main__":
    main()
