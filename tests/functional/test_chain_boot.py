"""A booted guest can use an imported image chain (real libvirtd + QEMU, TCG).

The demo guest boots once on a three-level source chain and leaves its disk
marker in the leaf. The chain is exported, imported into a fresh store, and a
second guest boots on it: it must find the first boot's marker (boot=2),
which only the imported leaf holds, while the data of every level reads back.
The domain XML is a literal built here with lxml, independent of the backend.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt
import pytest
from lxml import etree
from lxml.builder import E
from oslo_concurrency import processutils

from tests.support.guests import (
    SYSTEM_URI,
    DemoGuest,
    console_lines,
    read_disk_marker,
    remove_domain,
    wait_for_shutoff,
)
from virt import chain
from virt.imagecache import ImageCache
from virt.imagestore import LocalImageStore, file_sha256
from virt.units import MiB

# (pattern, offset) of the 1 MiB written into the mid and leaf levels, clear of
# the guest's marker block at 1 MiB.
MID_DATA = (0x22, 4 * MiB)
LEAF_DATA = (0x33, 8 * MiB)


def run(*argv: str) -> str:
    out, _err = processutils.execute(*argv, env_variables={"LC_ALL": "C"})
    return out


def domain_xml(name: str, guest: DemoGuest, disk: Path, console: Path) -> str:
    root = E.domain(
        E.name(name),
        E.memory("256", unit="MiB"),
        E.vcpu("1"),
        E.os(E.type("hvm", arch="x86_64", machine="pc"), E.kernel(guest.kernel),
             E.initrd(guest.initrd), E.cmdline(guest.cmdline("poweroff"))),
        E.features(E.acpi()),
        E.devices(
            E.disk(E.driver(name="qemu", type="qcow2"), E.source(file=str(disk)),
                   E.target(dev="vda", bus="virtio"), type="file", device="disk"),
            E.serial(E.source(path=str(console)), E.target(port="0"), type="file")),
        type="qemu")
    return etree.tostring(root, encoding="unicode")


@contextmanager
def defined_guest(conn: libvirt.virConnect, xml_for) -> Iterator[libvirt.virDomain]:
    name = f"vdtest-chain-{uuid.uuid4().hex[:8]}"
    try:
        dom = conn.defineXML(xml_for(name))
        yield dom
    finally:
        # other tests may restart libvirtd meanwhile: clean up on a fresh connection
        cleanup = reconnect()
        try:
            remove_domain(cleanup, name)
        finally:
            cleanup.close()


def reconnect(timeout: float = 60.0) -> libvirt.virConnect:
    """A new connection, waiting for a libvirtd that is being restarted."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return libvirt.open(SYSTEM_URI)
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def wait_until_off(dom: libvirt.virDomain) -> None:
    """wait_for_shutoff, surviving one libvirtd restart (running guests outlive it)."""
    try:
        wait_for_shutoff(dom, timeout=180)
    except libvirt.libvirtError:
        conn = reconnect()
        try:
            wait_for_shutoff(conn.lookupByName(dom.name()), timeout=180)
        finally:
            conn.close()


def boot_until_poweroff(conn: libvirt.virConnect, guest: DemoGuest, disk: Path,
                        console: Path) -> list[str]:
    with defined_guest(conn, lambda name: domain_xml(name, guest, disk, console)) as dom:
        dom.create()
        wait_until_off(dom)
    return console_lines(console)


def source_chain(guest: DemoGuest, directory: Path) -> Path:
    """base.raw (the demo disk) <- mid.qcow2 <- leaf.qcow2, data written at each level."""
    directory.mkdir()
    base = directory / "base.raw"
    shutil.copyfile(guest.disk, base)
    mid, leaf = directory / "mid.qcow2", directory / "leaf.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.name, "-F", "raw", str(mid))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", mid.name, "-F", "qcow2", str(leaf))
    for path, (pattern, offset) in ((mid, MID_DATA), (leaf, LEAF_DATA)):
        run("qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} {offset} {MiB}", str(path))
    return leaf


def read_at(path: Path, fmt: str, offset: int) -> bytes:
    out = path.with_suffix(".read")
    run("qemu-img", "convert", "-f", fmt, "-O", "raw", str(path), str(out))
    try:
        with open(out, "rb") as f:
            f.seek(offset)
            return f.read(MiB)
    finally:
        os.unlink(out)


@pytest.mark.parametrize("how", ["cache-base", "store-chain"])
def test_booted_guest_uses_the_imported_chain(libvirt_system, demo_guest, tmp_path, how):
    leaf = source_chain(demo_guest, tmp_path / "src")
    first = boot_until_poweroff(libvirt_system, demo_guest, leaf, tmp_path / "first.log")
    assert "marker written" in first, first
    assert read_disk_marker(leaf, "qcow2").startswith("VIRT-DEMO-MARKER boot=1 ")

    tarball = tmp_path / "chain.tar.gz"
    with open(tarball, "wb") as f:
        assert chain.export_chain(str(leaf), f) == ["0.qcow2", "1.qcow2", "2.raw"]
    store = LocalImageStore(str(tmp_path / "store"))
    with open(tarball, "rb") as f:
        chain.import_chain(f, store, "demo-chain")
    image = store.get("demo-chain")

    # the instance disk, as a spawn makes it: an overlay the guest writes to
    disk = tmp_path / "instance.qcow2"
    if how == "cache-base":
        base = ImageCache(str(tmp_path / "_base"), str(tmp_path / "locks"),
                          store).fetch_base("demo-chain")
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", str(disk))
    else:
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", image.path, "-F", image.format,
            str(disk))
    store_files = sorted(os.listdir(store.directory))

    second = boot_until_poweroff(libvirt_system, demo_guest, disk, tmp_path / "second.log")
    assert second.count("boot") == 1 and "disk=vda bytes=16777216" in second
    assert second[-2:] == ["marker written", "poweroff"], second
    assert not [line for line in second if line.startswith("error")], second
    # boot=2: the guest read the marker that only the imported leaf carries
    assert read_disk_marker(disk, "qcow2").startswith("VIRT-DEMO-MARKER boot=2 ")
    for pattern, offset in (MID_DATA, LEAF_DATA):
        assert read_at(disk, "qcow2", offset) == bytes([pattern]) * MiB
    # the guest wrote into its overlay only: the imported chain is untouched
    assert read_disk_marker(Path(image.path), "qcow2").startswith("VIRT-DEMO-MARKER boot=1 ")
    assert file_sha256(image.path) == image.sha256
    assert sorted(os.listdir(store.directory)) == store_files
    assert [i.name for i in store.list()] == ["demo-chain"]
