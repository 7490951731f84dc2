"""Image-chain export and import throughput against GNU tar on the same files.

The chain: a 1 GiB qcow2 base <- mid <- leaf holding 256 MiB of data (128,
64 and 64 MiB), half random bytes (incompressible, like media or encrypted
blocks) and half real text (this Python's standard library sources).

- export: virt.chain.export_chain (gzip level 1) vs `tar -czf` (gzip -6, tar's
  default) of the same three files; `tar -I 'gzip -1'` shown for information.
- import: virt.chain.import_chain (unpack, inspect, rebase, qemu-img check,
  fsync, move, register) vs `tar -xzf` of the same tarball.

Run: .venv/bin/python benchmarks/bench_chain.py [WORKDIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import glob
import itertools
import os
import subprocess
import sys
import sysconfig
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_seconds, report  # noqa: E402

from virt import chain  # noqa: E402
from virt.fileutils import remove_quietly  # noqa: E402
from virt.imagestore import LocalImageStore  # noqa: E402
from virt.units import GiB, MiB  # noqa: E402

# (bytes of data, offset) per level, base first
LEVELS = [(128 * MiB, 0), (64 * MiB, 256 * MiB), (64 * MiB, 512 * MiB)]


def text_block() -> bytes:
    """1 MiB of real text, for the compressible half of the data."""
    parts, size = [], 0
    for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
        with open(path, "rb") as f:
            parts.append(f.read())
        size += len(parts[-1])
        if size >= 8 * MiB:
            break
    return b"".join(parts)


def write_source(path: str, size: int, text: bytes, seed: int) -> None:
    with open(path, "wb") as f:
        for n in range(size // MiB):
            if n % 2:
                f.write(os.urandom(MiB))
            else:
                start = (n * 7919 + seed * 104729) % (len(text) - MiB)
                f.write(text[start:start + MiB])


def run(*argv: str) -> None:
    subprocess.run(argv, check=True)


def make_chain(work: str) -> list[str]:
    """base.qcow2 <- mid.qcow2 <- leaf.qcow2 (1 GiB virtual each); paths, leaf first."""
    text = text_block()
    paths = [os.path.join(work, n) for n in ("base.qcow2", "mid.qcow2", "leaf.qcow2")]
    run("qemu-img", "create", "-q", "-f", "qcow2", paths[0], str(GiB))
    for parent, path in itertools.pairwise(paths):
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.basename(parent),
            "-F", "qcow2", path)
    for seed, (path, (size, offset)) in enumerate(zip(paths, LEVELS, strict=True)):
        source = os.path.join(work, "source.bin")
        write_source(source, size, text, seed)
        run("qemu-io", "-f", "qcow2", "-c", f"write -q -s {source} {offset} {size}", path)
        os.unlink(source)
    return paths[::-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", nargs="?", help="scratch directory (default: a temporary one)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-chain-", dir=args.workdir)
    try:
        bench(work, args.repeat)
    finally:
        remove_quietly(work)


def bench(work: str, repeat: int) -> None:
    os.mkdir(os.path.join(work, "src"))
    chain_paths = make_chain(os.path.join(work, "src"))
    files = os.path.join(work, "files")  # the same files under their member names
    os.mkdir(files)
    members = [f"{n}.qcow2" for n in range(len(chain_paths))]
    for path, name in zip(chain_paths, members, strict=True):
        os.link(path, os.path.join(files, name))
    total = sum(os.path.getsize(p) for p in chain_paths)
    print(f"chain: 3 files, 1 GiB virtual, {total / MiB:.0f} MiB on disk, repeat {repeat}")

    ours_tar = os.path.join(work, "ours.tar.gz")
    tar_tar = os.path.join(work, "tar.tar.gz")
    tar1_tar = os.path.join(work, "tar1.tar.gz")

    def export_ours() -> None:
        with open(ours_tar, "wb") as f:
            chain.export_chain(chain_paths[0], f)

    ours = median_seconds(export_ours, repeat)
    peer = median_seconds(lambda: run("tar", "-czf", tar_tar, "-C", files, *members), repeat)
    fast = median_seconds(lambda: run("tar", "-I", "gzip -1", "-cf", tar1_tar, "-C", files,
                                      *members), repeat)
    report("export", ours, peer, "tar -czf", unit="s")
    report("export", ours, fast, "tar -I 'gzip -1' -cf", unit="s")
    print(f"  throughput: ours {total / MiB / ours:.0f} MiB/s, tar -czf {total / MiB / peer:.0f}"
          f" MiB/s; tarball sizes: ours {os.path.getsize(ours_tar) / MiB:.0f} MiB, "
          f"tar -czf {os.path.getsize(tar_tar) / MiB:.0f} MiB, "
          f"gzip -1 {os.path.getsize(tar1_tar) / MiB:.0f} MiB")

    store = LocalImageStore(os.path.join(work, "store"))
    out = os.path.join(work, "extracted")

    def import_ours() -> None:
        with open(ours_tar, "rb") as f:
            chain.import_chain(f, store, "bench")

    ours = median_seconds(import_ours, repeat, teardown=lambda: store.delete("bench"))
    peer = median_seconds(lambda: run("tar", "-xzf", ours_tar, "-C", out), repeat,
                          setup=lambda: os.makedirs(out), teardown=lambda: remove_quietly(out))
    peer6 = median_seconds(lambda: run("tar", "-xzf", tar_tar, "-C", out), repeat,
                           setup=lambda: os.makedirs(out), teardown=lambda: remove_quietly(out))
    report("import", ours, peer, "tar -xzf (same tarball)", unit="s")
    report("import", ours, peer6, "tar -xzf (tar -czf's tarball)", unit="s")
    print(f"  throughput: ours {total / MiB / ours:.0f} MiB/s, tar -xzf {total / MiB / peer:.0f}"
          " MiB/s (MiB of chain files written)")


if __name__ == "__main__":
    main()
