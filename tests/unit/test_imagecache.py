"""ImageCache: one fetch per host, under an external lock; cleanup by age."""

import contextlib
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from tests.support.images import qemu_io, reads_pattern
from virt import images
from virt.cli import main
from virt.errors import ImageError, ImageNotFound, UnsafeImage
from virt.imagecache import ImageCache, qcow2_backing_file
from virt.imagestore import LocalImageStore


@pytest.fixture
def cache(tmp_path):
    store = LocalImageStore(str(tmp_path / "store"))
    src = str(tmp_path / "src.qcow2")
    images.create_image("qcow2", src, "16M")
    qemu_io(src, "qcow2", "write -P 0x77 1M 64k")
    store.import_image("base-image", src, "qcow2")
    return ImageCache(str(tmp_path / "cache"), str(tmp_path / "locks"), store)


def test_fetch_base_gives_a_raw_copy_with_the_image_data(cache):
    base = cache.fetch_base("base-image")
    assert os.path.dirname(base) == cache.base_dir
    assert images.info(base, "raw").virtual_size == 16 << 20
    assert reads_pattern(base, "raw", 0x77, 1 << 20, 65536)


def test_second_fetch_reuses_the_base_and_touches_it(cache):
    base = cache.fetch_base("base-image")
    os.utime(base, (1, 1))
    inode = os.stat(base).st_ino
    assert cache.fetch_base("base-image") == base
    assert os.stat(base).st_ino == inode
    assert os.stat(base).st_mtime > time.time() - 60


def test_unknown_image(cache):
    with pytest.raises(ImageNotFound):
        cache.fetch_base("nothing-here")
    assert not os.path.exists(cache.base_dir) or os.listdir(cache.base_dir) == []


def test_a_store_file_modified_after_import_is_refused(cache):
    image = cache.store.get("base-image")
    with open(image.path, "r+b") as f:
        f.seek(1 << 16)
        f.write(b"tampered")
    with pytest.raises(UnsafeImage, match="sha256"):
        cache.fetch_base("base-image")
    assert os.listdir(cache.base_dir) == [] if os.path.isdir(cache.base_dir) else True


def test_a_base_swapped_for_a_bigger_file_is_refused_on_use(cache):
    base = cache.fetch_base("base-image")
    with open(base, "r+b") as f:
        f.truncate(1 << 30)
    with pytest.raises(UnsafeImage, match="is not the 16777216-byte raw file"):
        cache.fetch_base("base-image")


def test_a_disk_holding_a_qcow2_file_at_its_start_still_boots(cache, tmp_path):
    """Guest content is no format claim: the base is only ever opened as raw."""
    inner = str(tmp_path / "inner.qcow2")
    images.create_image("qcow2", inner, "1M")
    outer = str(tmp_path / "outer.qcow2")
    images.create_image("qcow2", outer, "16M")
    size = os.path.getsize(inner)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -s {inner} 0 {size}", outer],
                   check=True, capture_output=True)
    cache.store.import_image("nested", outer, "qcow2")
    with open(cache.fetch_base("nested"), "rb") as base, open(inner, "rb") as f:
        assert base.read(size) == f.read()


def test_cleanup_removes_only_old_unused_bases(cache, tmp_path):
    src = str(tmp_path / "other.raw")
    images.create_image("raw", src, "1M")
    cache.store.import_image("other", src, "raw")
    instances = tmp_path / "instances"
    used = cache.create_overlay("base-image", str(_instance_dir(instances) / "disk"))
    unused = cache.fetch_base("other")
    old = time.time() - 3600
    os.utime(used, (old, old))
    os.utime(unused, (old, old))

    disks = [str(instances / "0b7c1f4e-0000-4000-8000-000000000001" / "disk")]
    assert cache.cleanup(disks, min_age=7200) == []
    assert cache.cleanup(disks, min_age=600) == [unused]
    assert _bases(cache) == [os.path.basename(used)]
    cache.fetch_base("base-image")  # touched: now recent
    assert cache.cleanup([], min_age=600) == []


def _instance_dir(instances, uuid="0b7c1f4e-0000-4000-8000-000000000001"):
    path = instances / uuid
    path.mkdir(parents=True)
    return path


def _bases(cache):
    return sorted(n for n in os.listdir(cache.base_dir) if not n.startswith("."))


# -- bases are keyed by content and format -------------------------------------

@pytest.fixture
def same_bytes_twice(cache, tmp_path):
    """One qcow2 file stored twice: once declared qcow2, once declared raw."""
    src = tmp_path / "twice.qcow2"
    # Preallocated: the file is longer than the disk it holds, so no size check tells them apart.
    images.qemu_img("create", "-q", "-f", "qcow2", "-o", "preallocation=full", str(src), "4M")
    qemu_io(str(src), "qcow2", "write -P 0x5a 0 64k")
    data = src.read_bytes()
    for name, fmt in (("as-qcow2", "qcow2"), ("as-raw", "raw")):
        with cache.store.staging(name) as staging:
            with open(os.path.join(staging, f"{name}.img"), "wb") as f:
                f.write(data)
            cache.store.publish(name, staging, fmt, len(data) if fmt == "raw" else 4 << 20,
                                None, [f"{name}.img"])
    assert cache.store.get("as-qcow2").sha256 == cache.store.get("as-raw").sha256
    return data


@pytest.mark.parametrize("order", [("as-raw", "as-qcow2"), ("as-qcow2", "as-raw")])
def test_the_same_bytes_as_raw_and_as_qcow2_get_bases_of_their_own(cache, same_bytes_twice,
                                                                 order):
    bases = {}
    for name in order:
        # A raw file that carries a qcow2 header may be refused outright; never shared.
        with contextlib.suppress(UnsafeImage):
            bases[name] = cache.fetch_base(name)
    assert reads_pattern(bases["as-qcow2"], "raw", 0x5a, 0, 65536)
    if "as-raw" in bases:
        assert bases["as-raw"] != bases["as-qcow2"]
        with open(bases["as-raw"], "rb") as f:
            assert f.read() == same_bytes_twice  # raw means the bytes as they are


# -- cleanup never removes a base an instance uses -------------------------------

def _cli_config(tmp_path, name, cache_path, instances_path=None):
    lines = ["[DEFAULT]", f"state_path = {tmp_path / 'state'}", "virt_type = qemu"]
    if instances_path:
        lines.append(f"instances_path = {instances_path}")
    lines += ["[images]", f"cache_path = {cache_path}"]
    path = tmp_path / f"{name}.conf"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _cache_cleanup(config):
    assert main(["--config-file", config, "cache-cleanup", "--min-age", "0"]) == 0


@pytest.fixture
def spellings(tmp_path):
    """The same cache directory written four ways."""
    state = tmp_path / "state"
    real = state / "_base"
    real.mkdir(parents=True)
    (state / "sub").mkdir()
    (tmp_path / "link").symlink_to(real)
    return {"real": str(real), "dotdot": str(state / "sub" / ".." / "_base"),
            "slashes": f"{state}//_base", "symlink": str(tmp_path / "link")}


@pytest.mark.parametrize("made_by", ["spawn before 0.2", "create_overlay"])
@pytest.mark.parametrize("spawn_spelling, cleanup_spelling", [
    ("dotdot", "dotdot"), ("slashes", "slashes"), ("real", "symlink"), ("symlink", "real"),
])
def test_cleanup_keeps_a_used_base_however_the_cache_path_is_written(
        tmp_path, spellings, spawn_spelling, cleanup_spelling, made_by):
    state = tmp_path / "state"
    store = LocalImageStore(str(state / "images"))
    src = str(tmp_path / "src.raw")
    images.create_image("raw", src, "1M")
    store.import_image("img", src, "raw")
    cache = ImageCache(spellings[spawn_spelling], str(state / "locks"), store)
    directory = _instance_dir(state / "instances")
    if made_by == "create_overlay":
        base = cache.create_overlay("img", str(directory / "disk"))
    else:  # what spawn did before overlays were recorded
        base = cache.fetch_base("img")
        images.create_cow_image(base, str(directory / "disk"), backing_format="raw")
    config = _cli_config(tmp_path, "cleanup", spellings[cleanup_spelling])

    _cache_cleanup(config)
    assert os.path.isfile(base)

    shutil.rmtree(directory)
    _cache_cleanup(config)
    assert not os.path.exists(base) and os.listdir(spellings["real"]) in ([], [".users"])


def test_cleanup_reads_the_disks_of_running_guests_without_opening_them(cache, tmp_path):
    instances = tmp_path / "state" / "instances"
    disk = str(_instance_dir(instances) / "disk")
    base = cache.fetch_base("base-image")
    images.create_cow_image(base, disk, backing_format="raw")
    # qemu-io holds the image locks a running QEMU holds on its disk.
    guest = subprocess.Popen(["qemu-io", "-f", "qcow2", disk], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        guest.stdin.write("read 0 512\n")
        guest.stdin.flush()
        assert "read 512/512" in guest.stdout.readline()
        with pytest.raises(ImageError, match="lock"):
            images.info(disk, "qcow2")  # what a reader without -U meets
        _cache_cleanup(_cli_config(tmp_path, "cleanup", cache.base_dir, str(instances)))
        assert os.path.isfile(base)
    finally:
        guest.stdin.close()
        guest.wait()


def test_qcow2_backing_file_is_read_from_the_header(tmp_path):
    base = tmp_path / "base.raw"
    images.create_image("raw", str(base), "1M")
    images.create_cow_image(str(base), str(tmp_path / "abs.qcow2"))
    assert qcow2_backing_file(str(tmp_path / "abs.qcow2")) == str(base)
    images.qemu_img("create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw",
                    str(tmp_path / "rel.qcow2"))
    assert qcow2_backing_file(str(tmp_path / "rel.qcow2")) == str(base)
    images.create_image("qcow2", str(tmp_path / "alone.qcow2"), "1M")
    for path in ("alone.qcow2", "base.raw", "missing"):
        assert qcow2_backing_file(str(tmp_path / path)) is None


def test_a_damaged_users_record_keeps_its_base(cache, tmp_path):
    base = cache.create_overlay("base-image", str(_instance_dir(tmp_path / "i") / "disk"))
    with open(os.path.join(cache.base_dir, ".users", os.path.basename(base)), "w") as f:
        f.write("{not json")
    assert cache.cleanup([], min_age=0) == []
    assert os.path.isfile(base)


def test_eight_processes_convert_a_base_exactly_once(cache, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "qemu-img.log"
    shim = bindir / "qemu-img"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {log}\nexec /usr/bin/qemu-img "$@"\n')
    shim.chmod(0o755)
    script = textwrap.dedent(f"""
        from virt.imagecache import ImageCache
        from virt.imagestore import LocalImageStore
        store = LocalImageStore({cache.store.directory!r})
        cache = ImageCache({cache.base_dir!r}, {cache.lock_path!r}, store)
        print(cache.fetch_base("base-image"))
    """)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              text=True) for _ in range(8)]
    outputs = {p.communicate()[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outputs) == 1
    commands = log.read_text().split()
    assert commands.count("convert") == 1
    assert os.listdir(cache.base_dir) == [os.path.basename(outputs.pop())]


def test_an_image_reimported_during_a_fetch_cannot_poison_the_base(cache, tmp_path,
                                                                     monkeypatch):
    # "copy" holds the bytes of "base-image", so both share the base keyed by
    # that content. Its owner deletes and re-imports "copy" with other bytes
    # of the same size while the base is being fetched (after the sha256
    # check): the base must still hold the checked content.
    cache.store.import_image("copy", cache.store.get("base-image").path, "qcow2")
    hostile = str(tmp_path / "hostile.qcow2")
    images.create_image("qcow2", hostile, "16M")
    qemu_io(hostile, "qcow2", "write -P 0x66 1M 64k")
    real_inspect = images.inspect_untrusted

    def reimport_then_inspect(*args, **kwargs):
        monkeypatch.setattr(images, "inspect_untrusted", real_inspect)
        cache.store.delete("copy")
        cache.store.import_image("copy", hostile, "qcow2")
        return real_inspect(*args, **kwargs)

    monkeypatch.setattr(images, "inspect_untrusted", reimport_then_inspect)
    base = cache.fetch_base("copy")
    assert base == cache.fetch_base("base-image")
    with open(base, "rb") as f:
        f.seek(1 << 20)
        assert f.read(65536) == b"\x77" * 65536  # raw: the guest's bytes, as checked
    assert not [e for e in os.listdir(cache.store.directory) if e.startswith(".vd-tmp-")]


def test_ensure_base_takes_no_lock_when_the_base_is_there_and_checks_it(cache):
    base = cache.fetch_base("base-image")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import select
        import sys
        from oslo_concurrency import lockutils
        with lockutils.lock("virt-driver-image-{os.path.basename(base)}", external=True,
                            lock_path={cache.lock_path!r}):
            print("held", flush=True)
            select.select([sys.stdin], [], [], 60)  # until the test is done, or 60 s
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        cache.ensure_base("base-image")  # would wait for the holder if it took the lock
        assert holder.poll() is None
    finally:
        holder.communicate("done\n", timeout=60)
    with open(base, "r+b") as f:
        f.truncate(1 << 30)
    with pytest.raises(UnsafeImage, match="is not the 16777216-byte raw file"):
        cache.ensure_base("base-image")


def test_ensure_base_fetches_a_missing_base(cache):
    cache.ensure_base("base-image")
    base = cache.base_path(cache.store.get("base-image"))
    assert reads_pattern(base, "raw", 0x77, 1 << 20, 65536)
