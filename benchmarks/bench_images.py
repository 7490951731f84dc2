"""Image layer figures: overlay creation, untrusted inspection, convert.

Run: .venv/bin/python benchmarks/bench_images.py [WORKDIR]
"""

import os
import subprocess
import sys
import tempfile

from oslo_concurrency import processutils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_seconds, report  # noqa: E402

from virt import imageformat, images  # noqa: E402
from virt.fileutils import remove_quietly  # noqa: E402
from virt.units import MiB  # noqa: E402


def make_base(path: str, size: int, data: int) -> None:
    """A raw base of `size` bytes whose first `data` bytes are real (random) data."""
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["dd", "if=/dev/urandom", f"of={path}", "bs=4M", f"count={data // (4 * MiB)}",
                    "conv=notrunc", "status=none"], check=True)


def bench_overlay(work: str, label: str, size: int, data: int) -> None:
    base = os.path.join(work, f"base-{size}")
    make_base(base, size, data)
    overlay, copy = os.path.join(work, "overlay"), os.path.join(work, "copy")
    ours = median_seconds(lambda: images.create_cow_image(base, overlay, size,
                                                          backing_format="raw"),
                          repeat=21, teardown=lambda: remove_quietly(overlay))
    peer = median_seconds(lambda: subprocess.run(["cp", base, copy], check=True),
                          repeat=5, teardown=lambda: remove_quietly(copy))
    report(f"overlay on a {label} base", ours, peer, "full copy (cp)")
    remove_quietly(base)


def bench_overlays(work: str) -> None:
    for label, size, data in (("64 MiB", 64 * MiB, 64 * MiB), ("1 GiB", 1 << 30, 256 * MiB),
                              ("10 GiB", 10 << 30, 256 * MiB)):
        bench_overlay(work, label, size, data)


def bench_inspect(work: str) -> None:
    """Both layers against the bare qemu-img info they wrap: the first layer
    reads headers only (the whole file only for a streamOptimized vmdk)."""
    paths = {fmt: os.path.join(work, f"inspect.{fmt}") for fmt in ("qcow2", "raw", "vmdk", "vpc",
                                                                  "vhdx")}
    for fmt, path in paths.items():
        images.create_image(fmt, path, "1G")
    stream = os.path.join(work, "inspect-stream.vmdk")
    make_base(os.path.join(work, "stream-src"), 64 * MiB, 64 * MiB)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
                    "subformat=streamOptimized", os.path.join(work, "stream-src"), stream],
                   check=True)
    cases = [*((f"{fmt}, 1 GiB", fmt, path) for fmt, path in paths.items()),
             ("vmdk streamOptimized, 64 MiB of data", "vmdk", stream)]
    for label, fmt, path in cases:
        ours = median_seconds(lambda: images.inspect_untrusted(path, fmt), repeat=31)  # noqa: B023
        report(f"inspect_untrusted {label} (two layers)", ours, _bare_info(path, fmt),
               "bare qemu-img info (no limits)")
    first = median_seconds(lambda: _first_layer(paths["qcow2"]), repeat=51)
    report("first layer alone (format inspector), qcow2", first,
           _bare_info(paths["qcow2"], "qcow2"), "bare qemu-img info (no limits)")


def _bare_info(path: str, fmt: str) -> float:
    return median_seconds(lambda: processutils.execute(
        "qemu-img", "info", "-f", fmt, "--output=json", path), repeat=31)


def _first_layer(path: str) -> None:
    with images.open_untrusted(path) as f:
        imageformat.read_findings(f)


def bench_convert(work: str) -> None:
    src = os.path.join(work, "convert-src.raw")
    make_base(src, 512 * MiB, 256 * MiB)
    dst = os.path.join(work, "convert-dst.qcow2")
    ours = median_seconds(lambda: images.convert(src, "raw", dst, "qcow2"), repeat=7,
                          teardown=lambda: remove_quietly(dst))
    ours_p = median_seconds(lambda: images.convert(src, "raw", dst, "qcow2",
                                                   progress=lambda f: None),
                            repeat=7, teardown=lambda: remove_quietly(dst))
    bare = median_seconds(lambda: subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", src, dst], check=True),
        repeat=7, teardown=lambda: remove_quietly(dst))
    durable = median_seconds(lambda: (subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", src, dst], check=True),
        subprocess.run(["sync", dst], check=True)),
        repeat=7, teardown=lambda: remove_quietly(dst))
    report("convert 256 MiB of data", ours, bare, "bare qemu-img convert")
    report("convert 256 MiB of data", ours, durable, "bare qemu-img convert + sync of the result")
    report("convert with progress", ours_p, durable, "bare qemu-img convert + sync of the result")


def main() -> None:
    # Durability is part of our convert (fsync before the rename), so the
    # fair peer includes a sync; the bare figure is printed too.
    work = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="bench-images-",
                                                                  dir="/var/tmp")
    try:
        bench_overlays(work)
        bench_inspect(work)
        bench_convert(work)
    finally:
        remove_quietly(work)


if __name__ == "__main__":
    main()
