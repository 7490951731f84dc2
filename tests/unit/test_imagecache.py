"""ImageCache: one fetch per host, under an external lock; cleanup by age."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from virt import images
from virt.errors import ImageNotFound, UnsafeImage
from virt.imagecache import ImageCache
from virt.imagestore import LocalImageStore

from .test_images import qemu_io, reads_pattern


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
    with pytest.raises(UnsafeImage, match="above the limit"):
        cache.fetch_base("base-image")


def test_cleanup_removes_only_old_unused_bases(cache, tmp_path):
    src = str(tmp_path / "other.raw")
    images.create_image("raw", src, "1M")
    cache.store.import_image("other", src, "raw")
    used, unused = cache.fetch_base("base-image"), cache.fetch_base("other")
    old = time.time() - 3600
    os.utime(used, (old, old))
    os.utime(unused, (old, old))

    assert cache.cleanup(in_use={used}, min_age=7200) == []
    assert cache.cleanup(in_use={used}, min_age=600) == [unused]
    assert os.listdir(cache.base_dir) == [os.path.basename(used)]
    cache.fetch_base("base-image")  # touched: now recent
    assert cache.cleanup(in_use=set(), min_age=600) == []


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
    assert commands.count("info") >= 8  # each process still inspected the base it uses
    assert os.listdir(cache.base_dir) == [os.path.basename(outputs.pop())]
