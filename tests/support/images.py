"""Image-making helpers for tests: chains with distinct data per level, qemu-io checks, tarballs."""

from __future__ import annotations

import os
import subprocess
import tarfile

from oslo_concurrency import processutils

from virt import chain
from virt.imagestore import LocalImageStore
from virt.units import MiB

SIZE = 16 * MiB


# (pattern byte, offset, length) written at each level, base first: they overlap
# so that every level shadows part of its parent.
LEVELS = [(0x11, 0, 6 * MiB), (0x22, 2 * MiB, 6 * MiB), (0x33, 5 * MiB, 1 * MiB)]


def run(*argv: str) -> str:
    out, _err = processutils.execute(*argv, env_variables={"LC_ALL": "C"})
    return out


def qemu_io_write(path: str, pattern: int, offset: int, length: int, fmt: str = "qcow2") -> None:
    run("qemu-io", "-f", fmt, "-c", f"write -P {pattern} {offset} {length}", path)


def make_chain(directory: str, levels=LEVELS, base_fmt: str = "qcow2") -> str:
    """base <- mid <- leaf with distinct data at each level; the leaf's path."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, n) for n in (f"base.{base_fmt}", "mid.qcow2", "leaf.qcow2")]
    run("qemu-img", "create", "-q", "-f", base_fmt, paths[0], str(SIZE))
    fmts = [base_fmt, "qcow2", "qcow2"]
    for i, path in enumerate(paths[1:], start=1):
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.basename(paths[i - 1]),
            "-F", fmts[i - 1], path)
    for path, fmt, (pattern, offset, length) in zip(paths, fmts, levels, strict=True):
        qemu_io_write(path, pattern, offset, length, fmt)
    return paths[-1]


def export_to(leaf: str, tarball: str, **kwargs) -> list[str]:
    with open(tarball, "wb") as f:
        return chain.export_chain(leaf, f, **kwargs)


def qemu_io(path, fmt, command):
    """Run one qemu-io command; return its stdout (raises on failure)."""
    return subprocess.run(["qemu-io", "-f", fmt, "-c", command, path], check=True,
                          capture_output=True, text=True).stdout


def reads_pattern(path, fmt, pattern, offset, length):
    out = qemu_io(path, fmt, f"read -P {pattern:#x} {offset} {length}")
    return "Pattern verification failed" not in out


def make_qcow2_with_backing(tmp_path, target="/etc/passwd"):
    path = str(tmp_path / "evil.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", target,
                    "-F", "raw", path, "1M"], check=True)
    return path


def raw_bytes(path: str, fmt: str = "qcow2") -> bytes:
    out = path + ".compare.raw"
    run("qemu-img", "convert", "-f", fmt, "-O", "raw", path, out)
    try:
        with open(out, "rb") as f:
            return f.read()
    finally:
        os.unlink(out)


def import_from(tarball: str, store: LocalImageStore, name: str = "imported", **kwargs) -> dict:
    with open(tarball, "rb") as f:
        return chain.import_chain(f, store, name, **kwargs)


def make_tarball(path: str, files: dict[str, str]) -> str:
    """A .tar.gz of real files under chosen member names."""
    with tarfile.open(path, "w:gz") as tar:
        for member, source in files.items():
            tar.add(source, arcname=member)
    return path


def make_qcow2_with_data_file(tmp_path):
    path = str(tmp_path / "evil.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"data_file={tmp_path / 'host-data'}", path, "1M"], check=True)
    return path


def make_vmdk_descriptor(tmp_path, target="/etc/passwd"):
    path = str(tmp_path / "evil.vmdk")
    with open(path, "w") as f:
        f.write('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                'createType="monolithicFlat"\n\n'
                f'RW 2 FLAT "{target}" 0\n\n'
                'ddb.adapterType = "ide"\n')
    return path
