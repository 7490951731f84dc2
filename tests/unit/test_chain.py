"""Image-chain export and import with real qemu-img, qemu-io and real files.

Hostile tarballs live in test_chain_hostile.py; this file covers round trips,
old-style names, VHD conversion, progress, and what export leaves behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import threading

import pytest

from tests.support.images import (
    SIZE,
    export_to,
    import_from,
    make_chain,
    make_tarball,
    qemu_io_write,
    raw_bytes,
    run,
)
from virt import chain
from virt.errors import InvalidParameter, UnsafeImage, VirtError
from virt.imagecache import ImageCache
from virt.imagestore import LocalImageStore
from virt.units import MiB


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def store(tmp_path) -> LocalImageStore:
    return LocalImageStore(str(tmp_path / "store"))


# -- round trip ---------------------------------------------------------------

def test_three_level_round_trip_reads_the_same_bytes(tmp_path, store):
    leaf = make_chain(str(tmp_path / "src"))
    tarball = str(tmp_path / "chain.tar.gz")

    assert export_to(leaf, tarball) == ["0.qcow2", "1.qcow2", "2.qcow2"]
    result = import_from(tarball, store)

    image = store.get("imported")
    assert result == {"root": {"uuid": os.path.basename(image.path).removesuffix(".qcow2")}}
    assert image.format == "qcow2" and image.virtual_size == SIZE
    original = raw_bytes(leaf)
    assert raw_bytes(image.path) == original
    # every level really contributes: the patterns are all visible
    assert original[0:1] == b"\x11" and original[3 * MiB:3 * MiB + 1] == b"\x22"
    assert original[5 * MiB:5 * MiB + 1] == b"\x33" and original[-1:] == b"\0"


def test_imported_chain_reads_only_its_store_files(tmp_path, store):
    tarball = str(tmp_path / "chain.tar.gz")
    export_to(make_chain(str(tmp_path / "src")), tarball)
    import_from(tarball, store)

    image = store.get("imported")
    entries = json.loads(run("qemu-img", "info", "-f", "qcow2", "--backing-chain",
                             "--output=json", image.path))
    assert [os.path.realpath(e["filename"]) for e in entries] == [image.path,
                                                                  *image.backing_chain]
    assert all(os.path.dirname(p) == store.directory for p in image.backing_chain)
    assert "backing-filename" not in entries[-1]
    # nothing but the three images and the record; no staging directory
    assert sorted(os.listdir(store.directory)) == sorted(
        [os.path.basename(p) for p in (image.path, *image.backing_chain)] + ["imported.json"])


def test_imported_chain_flattens_through_the_image_cache(tmp_path, store):
    leaf = make_chain(str(tmp_path / "src"))
    tarball = str(tmp_path / "chain.tar.gz")
    export_to(leaf, tarball)
    import_from(tarball, store)

    cache = ImageCache(str(tmp_path / "base"), str(tmp_path / "locks"), store)
    base = cache.fetch_base("imported")
    with open(base, "rb") as f:
        assert f.read() == raw_bytes(leaf)


def test_chain_with_a_raw_base_round_trips(tmp_path, store):
    leaf = make_chain(str(tmp_path / "src"), base_fmt="raw")
    tarball = str(tmp_path / "chain.tar.gz")
    assert export_to(leaf, tarball) == ["0.qcow2", "1.qcow2", "2.raw"]
    import_from(tarball, store)
    image = store.get("imported")
    assert image.backing_chain[-1].endswith(".raw")
    assert raw_bytes(image.path) == raw_bytes(leaf)


def test_single_image_round_trips(tmp_path, store):
    src = str(tmp_path / "single.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", src, str(SIZE))
    qemu_io_write(src, 0x44, MiB, MiB)
    tarball = str(tmp_path / "single.tar.gz")
    assert export_to(src, tarball) == ["0.qcow2"]
    import_from(tarball, store, "single")
    image = store.get("single")
    assert image.backing_chain == ()
    assert raw_bytes(image.path) == raw_bytes(src)


def test_export_image_exports_a_store_image_by_name(tmp_path, store):
    leaf = make_chain(str(tmp_path / "src"))
    first = str(tmp_path / "first.tar.gz")
    export_to(leaf, first)
    import_from(first, store, "first")

    again = io.BytesIO()
    assert chain.export_image(store, "first", again) == ["0.qcow2", "1.qcow2", "2.qcow2"]
    other = LocalImageStore(str(tmp_path / "other"))
    chain.import_chain(io.BytesIO(again.getvalue()), other, "second")
    assert raw_bytes(other.get("second").path) == raw_bytes(leaf)


def test_two_imports_of_one_tarball_share_no_file(tmp_path, store):
    tarball = str(tmp_path / "chain.tar.gz")
    export_to(make_chain(str(tmp_path / "src")), tarball)
    one = import_from(tarball, store, "one")
    two = import_from(tarball, store, "two")
    assert one != two
    files_one = {store.get("one").path, *store.get("one").backing_chain}
    files_two = {store.get("two").path, *store.get("two").backing_chain}
    assert not files_one & files_two
    store.delete("one")
    assert raw_bytes(store.get("two").path)[5 * MiB] == 0x33
    assert sorted(os.listdir(store.directory)) == sorted(
        [os.path.basename(p) for p in files_two] + ["two.json"])


# -- names from other exporters -----------------------------------------------

def test_old_style_names_are_sequenced(tmp_path, store):
    src = str(tmp_path / "src")
    leaf = make_chain(src)
    tarball = make_tarball(str(tmp_path / "old.tar.gz"), {
        "./snap.qcow2": leaf, "./image.qcow2": os.path.join(src, "mid.qcow2"),
        "./base.qcow2": os.path.join(src, "base.qcow2")})
    import_from(tarball, store)
    assert raw_bytes(store.get("imported").path) == raw_bytes(leaf)


def test_old_style_image_and_base_without_snap(tmp_path, store):
    src = str(tmp_path / "src")
    make_chain(src)
    mid = os.path.join(src, "mid.qcow2")
    tarball = make_tarball(str(tmp_path / "old.tar.gz"), {
        "image.qcow2": mid, "base.qcow2": os.path.join(src, "base.qcow2")})
    import_from(tarball, store)
    assert raw_bytes(store.get("imported").path) == raw_bytes(mid)


def test_tar_made_by_gnu_tar_with_a_top_directory_entry(tmp_path, store):
    src = str(tmp_path / "src")
    leaf = make_chain(src)
    seq = tmp_path / "seq"
    seq.mkdir()
    for number, name in enumerate(["leaf.qcow2", "mid.qcow2", "base.qcow2"]):
        os.link(os.path.join(src, name), seq / f"{number}.qcow2")
    tarball = str(tmp_path / "gnu.tar.gz")
    run("tar", "-czf", tarball, "-C", str(seq), ".")
    import_from(tarball, store)
    assert raw_bytes(store.get("imported").path) == raw_bytes(leaf)


def test_vhd_single_image_is_converted_to_qcow2(tmp_path, store):
    vhd = str(tmp_path / "disk.vhd")
    run("qemu-img", "create", "-q", "-f", "vpc", vhd, str(SIZE))
    qemu_io_write(vhd, 0x55, 2 * MiB, MiB, fmt="vpc")
    tarball = make_tarball(str(tmp_path / "xs.tar.gz"), {"0.vhd": vhd})
    import_from(tarball, store)
    image = store.get("imported")
    assert image.format == "qcow2" and image.path.endswith(".qcow2")
    assert json.loads(run("qemu-img", "info", "-f", "qcow2", "--output=json",
                          image.path))["format"] == "qcow2"
    assert raw_bytes(image.path) == raw_bytes(vhd, "vpc")[:image.virtual_size]


def test_vhd_in_a_chain_is_refused(tmp_path, store):
    vhd = str(tmp_path / "disk.vhd")
    run("qemu-img", "create", "-q", "-f", "vpc", vhd, str(SIZE))
    tarball = make_tarball(str(tmp_path / "xs.tar.gz"), {"0.vhd": vhd, "1.vhd": vhd})
    with pytest.raises(UnsafeImage, match="VHD is accepted only as a single image"):
        import_from(tarball, store)
    assert os.listdir(store.directory) == []


# -- progress, names, what is left behind -------------------------------------

def test_progress_rises_to_one_on_export_and_import(tmp_path, store):
    tarball = str(tmp_path / "chain.tar.gz")
    exported: list[float] = []
    export_to(make_chain(str(tmp_path / "src")), tarball, progress=exported.append)
    imported: list[float] = []
    import_from(tarball, store, progress=imported.append)
    for seen in (exported, imported):
        assert len(seen) > 2
        assert seen == sorted(seen) and all(0.0 <= x <= 1.0 for x in seen)
        assert seen[-1] == 1.0


def test_import_from_a_pipe_without_a_known_size(tmp_path, store):
    tarball = str(tmp_path / "chain.tar.gz")
    leaf = make_chain(str(tmp_path / "src"))
    export_to(leaf, tarball)
    read_fd, write_fd = os.pipe()
    with open(tarball, "rb") as src:
        data = src.read()

    def feed() -> None:  # the writer end of a real pipe, like `cat x.tar.gz |`
        with os.fdopen(write_fd, "wb") as w:
            w.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    seen: list[float] = []
    with os.fdopen(read_fd, "rb") as r:
        chain.import_chain(r, store, "piped", progress=seen.append)
    writer.join()
    assert seen == [0.9, 1.0]  # unpacked, then stored: no fraction without a total
    assert raw_bytes(store.get("piped").path) == raw_bytes(leaf)


def test_existing_name_is_refused_and_leaves_the_store_alone(tmp_path, store):
    tarball = str(tmp_path / "chain.tar.gz")
    export_to(make_chain(str(tmp_path / "src")), tarball)
    import_from(tarball, store, "taken")
    before = sorted(os.listdir(store.directory))
    with pytest.raises(InvalidParameter, match="already exists"):
        import_from(tarball, store, "taken")
    assert sorted(os.listdir(store.directory)) == before


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", ""])
def test_bad_image_name_is_refused_before_anything_is_written(tmp_path, store, name):
    tarball = str(tmp_path / "chain.tar.gz")
    export_to(make_chain(str(tmp_path / "src")), tarball)
    with pytest.raises(InvalidParameter, match="image name"):
        import_from(tarball, store, name)
    assert not os.path.exists(store.directory)


def test_export_never_modifies_the_source_files(tmp_path):
    src = str(tmp_path / "src")
    leaf = make_chain(src)
    files = sorted(os.listdir(src))
    before = {n: (sha256(os.path.join(src, n)), os.stat(os.path.join(src, n)).st_mtime_ns)
              for n in files}
    export_to(leaf, str(tmp_path / "chain.tar.gz"))
    after = {n: (sha256(os.path.join(src, n)), os.stat(os.path.join(src, n)).st_mtime_ns)
             for n in files}
    assert after == before
    assert sorted(os.listdir(src)) == files  # staging directory gone
    assert all(os.stat(os.path.join(src, n)).st_nlink == 1 for n in files)


class BrokenPipeAfter(io.RawIOBase):
    def __init__(self, limit: int):
        self.limit, self.written = limit, 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.written += len(data)
        if self.written > self.limit:
            raise BrokenPipeError("the reader went away")
        return len(data)


def test_export_failure_removes_the_staging_links(tmp_path):
    src = str(tmp_path / "src")
    leaf = make_chain(src)
    files = sorted(os.listdir(src))
    with pytest.raises(BrokenPipeError):
        chain.export_chain(leaf, BrokenPipeAfter(1024))
    assert sorted(os.listdir(src)) == files
    assert all(os.stat(os.path.join(src, n)).st_nlink == 1 for n in files)


def test_export_of_a_missing_image_says_so(tmp_path):
    with pytest.raises(VirtError, match="qemu-img info failed"):
        chain.export_chain(str(tmp_path / "nope.qcow2"), io.BytesIO())
    assert os.listdir(tmp_path) == []


def test_exported_members_are_plain_files_in_sequence(tmp_path):
    tarball = str(tmp_path / "chain.tar.gz")
    export_to(make_chain(str(tmp_path / "src")), tarball)
    with tarfile.open(tarball, "r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["0.qcow2", "1.qcow2", "2.qcow2"]
    assert all(m.isreg() and m.mode == 0o644 for m in members)


def test_export_across_filesystems_says_what_to_do(tmp_path):
    shm = tempfile.mkdtemp(dir="/dev/shm")  # tmpfs: another filesystem than tmp_path
    try:
        assert os.stat(shm).st_dev != os.stat(tmp_path).st_dev
        base = os.path.join(shm, "base.qcow2")
        run("qemu-img", "create", "-q", "-f", "qcow2", base, str(SIZE))
        leaf = str(tmp_path / "leaf.qcow2")
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", leaf)
        with pytest.raises(VirtError, match="on another filesystem.*virt-driver snapshot"):
            chain.export_chain(leaf, io.BytesIO())
        assert os.listdir(tmp_path) == ["leaf.qcow2"]
        assert os.listdir(shm) == ["base.qcow2"]
    finally:
        shutil.rmtree(shm)
