"""Hostile chain tarballs: each is refused with a clear error, and afterwards the
store holds exactly what it held before (no file, no staging directory).

The one exception is a middle image whose recorded parent names a host file:
it is imported, and the tests prove that the imported chain never reads it.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import threading
import time

import pytest
from oslo_concurrency import processutils

from tests.support.images import (
    LEVELS,
    SIZE,
    MiB,
    export_to,
    import_from,
    make_chain,
    make_tarball,
    qemu_io_write,
    raw_bytes,
    run,
)
from virt import chain
from virt.errors import UnsafeImage
from virt.imagestore import LocalImageStore


@pytest.fixture
def store(tmp_path) -> LocalImageStore:
    """A store that already holds one image, so 'nothing left' means 'as before'."""
    store = LocalImageStore(str(tmp_path / "store"))
    victim = str(tmp_path / "victim.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", victim, str(SIZE))
    qemu_io_write(victim, 0x66, 0, MiB)
    store.import_image("victim", victim, "qcow2")
    return store


@pytest.fixture
def src(tmp_path) -> str:
    """A real three-level chain: base.qcow2 <- mid.qcow2 <- leaf.qcow2."""
    directory = str(tmp_path / "src")
    make_chain(directory)
    return directory


def qcow2(path: str, backing: str | None = None, backing_fmt: str = "raw",
          extra: tuple[str, ...] = ()) -> str:
    """A qcow2 whose recorded backing pointer is written as is (-u: never opened)."""
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", *extra]
    if backing:
        argv += ["-u", "-b", backing, "-F", backing_fmt]
    run(*argv, path, str(SIZE))
    return path


def refused(store: LocalImageStore, tarball: str, match: str, **kwargs) -> None:
    before = sorted(os.listdir(store.directory))
    with pytest.raises(UnsafeImage, match=match):
        import_from(tarball, store, **kwargs)
    assert sorted(os.listdir(store.directory)) == before
    assert [i.name for i in store.list()] == ["victim"]


def tar_with(path: str, *members: tuple[tarfile.TarInfo, bytes | None]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3  # /dev/null
    return info, None


def member(name: str, path: str) -> tuple[tarfile.TarInfo, bytes]:
    with open(path, "rb") as f:
        return tarfile.TarInfo(name), f.read()


# -- the tarball's shape ------------------------------------------------------

def test_gap_in_the_sequence(tmp_path, store, src):
    tarball = make_tarball(str(tmp_path / "t.tar.gz"), {
        "0.qcow2": os.path.join(src, "mid.qcow2"), "2.qcow2": os.path.join(src, "base.qcow2")})
    refused(store, tarball, r"numbered 0 to N-1 without gaps.*'2.qcow2'")


def test_sequence_not_starting_at_zero(tmp_path, store, src):
    tarball = make_tarball(str(tmp_path / "t.tar.gz"),
                           {"1.qcow2": os.path.join(src, "base.qcow2")})
    refused(store, tarball, "numbered 0 to N-1 without gaps")


def test_dot_dot_member(tmp_path, store, src):
    tarball = tar_with(str(tmp_path / "t.tar.gz"),
                       member("../0.qcow2", os.path.join(src, "base.qcow2")))
    refused(store, tarball, r"'\.\./0\.qcow2' refused: '\.\.' would leave the staging area")
    assert not os.path.exists(os.path.join(os.path.dirname(store.directory), "0.qcow2"))


def test_absolute_member(tmp_path, store, src):
    target = str(tmp_path / "abs" / "0.qcow2")
    tarball = tar_with(str(tmp_path / "t.tar.gz"),
                       member(target, os.path.join(src, "base.qcow2")))
    refused(store, tarball, "absolute paths are not allowed")
    assert not os.path.exists(target)


def test_symlink_member(tmp_path, store):
    tarball = tar_with(str(tmp_path / "t.tar.gz"),
                       special("0.qcow2", tarfile.SYMTYPE, "/etc/passwd"))
    refused(store, tarball, "it is a symbolic link")


def test_hardlink_member(tmp_path, store, src):
    tarball = tar_with(str(tmp_path / "t.tar.gz"),
                       member("0.qcow2", os.path.join(src, "base.qcow2")),
                       special("1.qcow2", tarfile.LNKTYPE, "0.qcow2"))
    refused(store, tarball, "it is a hard link")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_member(tmp_path, store, kind):
    tarball = tar_with(str(tmp_path / "t.tar.gz"), special("0.qcow2", kind))
    refused(store, tarball, "it is a device or fifo")


def test_directory_member(tmp_path, store):
    tarball = tar_with(str(tmp_path / "t.tar.gz"), special("0.qcow2", tarfile.DIRTYPE))
    refused(store, tarball, "it is not a regular file")


@pytest.mark.parametrize("name", ["0.qcow2.sh", "disk.qcow2", "0.vmdk", "sub/0.qcow2",
                                  "-1.qcow2", "0.QCOW2"])
def test_unexpected_member_name(tmp_path, store, src, name):
    tarball = tar_with(str(tmp_path / "t.tar.gz"),
                       member(name, os.path.join(src, "base.qcow2")))
    refused(store, tarball, "expected names like 0.qcow2")


def test_member_with_a_negative_size(tmp_path, store):
    info = tarfile.TarInfo("0.qcow2")
    info.size = -4096  # GNU base-256 encodes it; a naive total would shrink
    path = tmp_path / "t.tar.gz"
    path.write_bytes(gzip.compress(info.tobuf(tarfile.GNU_FORMAT) + bytes(8192)))
    refused(store, str(path), "has a negative size")


def test_member_twice(tmp_path, store, src):
    base = os.path.join(src, "base.qcow2")
    tarball = tar_with(str(tmp_path / "t.tar.gz"), member("0.qcow2", base),
                       member("./0.qcow2", base))
    refused(store, tarball, "appears twice")


def test_two_members_with_one_number(tmp_path, store, src):
    tarball = make_tarball(str(tmp_path / "t.tar.gz"), {
        "0.qcow2": os.path.join(src, "base.qcow2"), "00.qcow2": os.path.join(src, "base.qcow2")})
    refused(store, tarball, "numbered 0 to N-1")


def test_old_and_new_names_mixed(tmp_path, store, src):
    tarball = make_tarball(str(tmp_path / "t.tar.gz"), {
        "snap.qcow2": os.path.join(src, "leaf.qcow2"),
        "1.qcow2": os.path.join(src, "mid.qcow2")})
    refused(store, tarball, "mixes old names")


def test_empty_tarball(tmp_path, store):
    refused(store, tar_with(str(tmp_path / "t.tar.gz")), "holds no image")


@pytest.mark.parametrize("content", [b"", b"not a tarball at all", b"\x1f\x8b\x08garbage"])
def test_not_a_gzip_tarball(tmp_path, store, content):
    path = tmp_path / "t.tar.gz"
    path.write_bytes(content)
    refused(store, str(path), "the tarball cannot be read|holds no image")


def test_truncated_tarball(tmp_path, store, src):
    tarball = str(tmp_path / "t.tar.gz")
    export_to(os.path.join(src, "leaf.qcow2"), tarball)
    data = open(tarball, "rb").read()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[:len(data) * 2 // 3])
    refused(store, str(cut), "cannot be read|truncated")


def test_tarball_expanding_past_the_size_limit(tmp_path, store):
    zeros = tmp_path / "zeros.raw"
    with open(zeros, "wb") as f:
        f.truncate(64 * MiB)
    tarball = make_tarball(str(tmp_path / "bomb.tar.gz"), {"0.raw": str(zeros)})
    assert os.path.getsize(tarball) < MiB
    refused(store, tarball, r"expands past the import limit of 16777216 bytes "
                            r"\(images.max_chain_import_size\)", max_size=16 * MiB)


def test_size_limit_counts_all_members(tmp_path, store, src):
    tarball = str(tmp_path / "t.tar.gz")
    export_to(os.path.join(src, "leaf.qcow2"), tarball)
    sizes = [os.path.getsize(os.path.join(src, n)) for n in ("leaf.qcow2", "mid.qcow2")]
    # each member fits, the first two together do not
    refused(store, tarball, "expands past the import limit", max_size=sum(sizes) - 1)


def test_chain_longer_than_the_limit(tmp_path, store):
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"x")  # refused on the member count, before any content check
    files = {f"{n}.qcow2": str(tiny) for n in range(chain.MAX_CHAIN_LENGTH + 1)}
    refused(store, make_tarball(str(tmp_path / "t.tar.gz"), files), "longer than")


# -- the images' content ------------------------------------------------------

def test_base_with_a_backing_pointer_to_etc_passwd(tmp_path, store, src):
    base = qcow2(str(tmp_path / "evil-base.qcow2"), backing="/etc/passwd")
    tarball = make_tarball(str(tmp_path / "t.tar.gz"), {
        "0.qcow2": os.path.join(src, "leaf.qcow2"), "1.qcow2": base})
    refused(store, tarball, "1.qcow2 refused: it has a backing file")


def test_single_image_pointing_at_a_store_file(tmp_path, store):
    victim = store.get("victim").path
    single = qcow2(str(tmp_path / "single.qcow2"), backing=victim, backing_fmt="qcow2")
    tarball = make_tarball(str(tmp_path / "t.tar.gz"), {"0.qcow2": single})
    refused(store, tarball, "0.qcow2 refused: it has a backing file")


def test_member_declared_qcow2_that_is_raw(tmp_path, store):
    raw = tmp_path / "raw.img"
    raw.write_bytes(b"this is raw data, not qcow2\n" * 4096)
    tarball = make_tarball(str(tmp_path / "t.tar.gz"), {"0.qcow2": str(raw)})
    refused(store, tarball, "declared qcow2 but has no qcow2 header")


def test_middle_declared_qcow2_that_is_raw(tmp_path, store, src):
    raw = tmp_path / "raw.img"
    raw.write_bytes(bytes(MiB))
    tarball = make_tarball(str(tmp_path / "t.tar.gz"), {
        "0.qcow2": os.path.join(src, "leaf.qcow2"), "1.qcow2": str(raw),
        "2.qcow2": os.path.join(src, "base.qcow2")})
    refused(store, tarball, "1.qcow2 refused: it was declared qcow2 but has no qcow2 header")


def test_raw_above_an_overlay_is_refused(tmp_path, store, src):
    raw = tmp_path / "raw.img"
    raw.write_bytes(bytes(MiB))
    tarball = make_tarball(str(tmp_path / "t.tar.gz"), {
        "0.raw": str(raw), "1.qcow2": os.path.join(src, "base.qcow2")})
    refused(store, tarball, "only the base of a chain may be raw")


@pytest.mark.parametrize("position", ["single", "middle"])
def test_qcow2_with_an_external_data_file(tmp_path, store, src, position):
    victim = store.get("victim").path
    evil = qcow2(str(tmp_path / "evil.qcow2"), extra=("-o", f"data_file={victim}"),
                 **({"backing": "/etc/passwd"} if position == "middle" else {}))
    files = ({"0.qcow2": evil} if position == "single" else
             {"0.qcow2": os.path.join(src, "leaf.qcow2"), "1.qcow2": evil,
              "2.qcow2": os.path.join(src, "base.qcow2")})
    refused(store, make_tarball(str(tmp_path / "t.tar.gz"), files),
            "refused: it uses an external data file")


@pytest.mark.parametrize("position", ["base", "leaf"])
def test_truncated_qcow2(tmp_path, store, src, position):
    damaged = str(tmp_path / "damaged.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", damaged, str(SIZE))
    qemu_io_write(damaged, 0x77, 0, MiB)
    qemu_io_write(damaged, 0x78, 8 * MiB, MiB)
    if position == "leaf":
        run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "/nonexistent", "-F", "raw", damaged)
    os.truncate(damaged, 5 * 64 * 1024)  # header and tables survive, data clusters do not
    files = ({"0.qcow2": damaged} if position == "base" else
             {"0.qcow2": damaged, "1.qcow2": os.path.join(src, "base.qcow2")})
    refused(store, make_tarball(str(tmp_path / "t.tar.gz"), files),
            "qemu-img check found it damaged .*corruptions=")


def test_qcow2_with_a_cut_header(tmp_path, store, src):
    cut = tmp_path / "cut.qcow2"
    cut.write_bytes(open(os.path.join(src, "base.qcow2"), "rb").read()[:100])
    refused(store, make_tarball(str(tmp_path / "t.tar.gz"), {"0.qcow2": str(cut)}),
            "has no qcow2 header")


def test_oversized_virtual_size(tmp_path, src):
    store = LocalImageStore(str(tmp_path / "small-store"), max_virtual_size=SIZE - 1)
    tarball = str(tmp_path / "t.tar.gz")
    export_to(os.path.join(src, "leaf.qcow2"), tarball)
    with pytest.raises(UnsafeImage, match="above the limit"):
        import_from(tarball, store)
    assert os.listdir(store.directory) == []


# -- recorded pointers in the middle are replaced, never followed -------------

def tarball_with_middle_pointer(tmp_path, src: str, pointer: str) -> str:
    """The real chain, its middle's recorded parent rewritten to `pointer`."""
    mid = str(tmp_path / "mid-copy.qcow2")
    with open(os.path.join(src, "mid.qcow2"), "rb") as f, open(mid, "wb") as out:
        out.write(f.read())
    run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", pointer, "-F", "raw", mid)
    return make_tarball(str(tmp_path / "t.tar.gz"), {
        "0.qcow2": os.path.join(src, "leaf.qcow2"), "1.qcow2": mid,
        "2.qcow2": os.path.join(src, "base.qcow2")})


def test_middle_pointing_at_etc_passwd_is_imported_safely(tmp_path, store, src):
    tarball = tarball_with_middle_pointer(tmp_path, src, "/etc/passwd")
    import_from(tarball, store)
    image = store.get("imported")
    chain_files = [image.path, *image.backing_chain]
    entries = run("qemu-img", "info", "-f", "qcow2", "--backing-chain", image.path)
    assert "/etc/passwd" not in entries
    for path in chain_files:
        assert "passwd" not in run("qemu-img", "info", "-f", "qcow2" if path.endswith("qcow2")
                                   else "raw", path)
    # every byte the middle does not hold comes from the real base, not from passwd
    data = raw_bytes(image.path)
    assert data == raw_bytes(os.path.join(src, "leaf.qcow2"))
    assert data[:2 * MiB] == bytes([LEVELS[0][0]]) * (2 * MiB)


def test_middle_pointer_is_never_opened(tmp_path, store, src):
    """A FIFO as the recorded parent: any reader would show up as a waiting open."""
    fifo = str(tmp_path / "trap.fifo")
    os.mkfifo(fifo)
    tarball = tarball_with_middle_pointer(tmp_path, src, fifo)
    opened = threading.Event()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:  # succeeds only while someone holds (or waits on) the read end
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.005)
                continue
            opened.set()
            os.close(fd)  # let the reader go on: it sees an empty file

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        import_from(tarball, store)
    finally:
        done.set()
        watcher.join()
    assert not opened.is_set(), "the import opened the recorded parent pointer"
    assert raw_bytes(store.get("imported").path) == raw_bytes(os.path.join(src, "leaf.qcow2"))


def test_watcher_sees_a_reader_of_the_fifo(tmp_path):
    """The trap above can fail: qemu-img following the pointer is caught."""
    fifo = str(tmp_path / "trap.fifo")
    os.mkfifo(fifo)
    mid = qcow2(str(tmp_path / "mid.qcow2"), backing=fifo)
    reader = threading.Thread(target=processutils.execute, daemon=True,
                              args=("qemu-img", "info", "-f", "qcow2", "--backing-chain", mid),
                              kwargs={"check_exit_code": False})
    reader.start()
    opens = 0
    deadline = time.monotonic() + 60
    # qemu-img may open the FIFO more than once: unblock it until it is done
    while reader.is_alive() and time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.005)
            continue
        opens += 1
        os.close(fd)
    reader.join(1)
    assert not reader.is_alive(), "qemu-img still waits on the FIFO"
    assert opens >= 1, "qemu-img --backing-chain never opened the FIFO"


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
def test_oversized_header_is_refused_before_it_is_read(tmp_path, store, kind):
    # tarfile reads a pax or long-name header whole into memory: 4 MiB of
    # gzip holding a 1 GiB header would cost gigabytes of memory.
    size = 32 << 20
    header = tarfile.TarInfo("././@PaxHeader" if kind == tarfile.XHDTYPE else "././@LongLink")
    header.type, header.size = kind, size
    tarball = str(tmp_path / "header-bomb.tar.gz")
    with gzip.open(tarball, "wb", compresslevel=1) as gz:
        gz.write(header.tobuf(format=tarfile.GNU_FORMAT))
        record = b"%d comment=" % size  # a pax record that claims the whole body
        gz.write(record)
        for _ in range((size - len(record)) >> 20):
            gz.write(b"a" * (1 << 20))
        gz.write(b"a" * ((size - len(record)) % (1 << 20)))
    refused(store, tarball, "a tarball header of 33554432 bytes is above the limit")
