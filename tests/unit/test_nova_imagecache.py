"""The Glance images a Nova compute node keeps and removes (backends/nova/imagecache.py
needs no Nova: a real store and boot-file directory here)."""

import os

import pytest

from backends.nova.imagecache import GlanceImages
from virt.imagestore import LocalImageStore

DISK, KERNEL, OTHER = ("11111111-1111-1111-1111-111111111111",
                       "22222222-2222-2222-2222-222222222222",
                       "33333333-3333-3333-3333-333333333333")


@pytest.fixture
def kept(tmp_path):
    store = LocalImageStore(str(tmp_path / "store"))
    source = tmp_path / "disk.raw"
    source.write_bytes(b"\0" * 65536)
    for image_id in (DISK, OTHER):
        store.import_image("glance-" + image_id, str(source), "raw")
    store.import_image("local", str(source), "raw")  # not a Glance image: never touched
    images = GlanceImages(store, str(tmp_path / "boot"), str(tmp_path / "marks"))
    os.makedirs(images.boot_dir)
    with open(images.boot_file(KERNEL), "wb") as f:
        f.write(b"kernel")
    return images


def stored(images):
    return sorted(image.name for image in images.store.list())


def test_unused_images_go_used_ones_stay(kept):
    assert kept.remove_unused({DISK}, min_age=0) == [KERNEL, OTHER]
    assert stored(kept) == ["glance-" + DISK, "local"]
    assert not os.path.exists(kept.boot_file(KERNEL))


def test_an_image_being_spawned_stays(kept):
    with kept.using([OTHER, KERNEL, None]):
        assert kept.remove_unused(set(), min_age=0) == [DISK]
    assert stored(kept) == ["glance-" + OTHER, "local"]
    assert os.path.exists(kept.boot_file(KERNEL))
    assert kept.remove_unused(set(), min_age=0) == [KERNEL, OTHER]  # the spawn is over


def test_the_minimum_age_counts_from_the_last_use(kept):
    assert kept.remove_unused(set(), min_age=3600) == []  # first seen unused: marked now
    marks = os.path.join(kept.marks_dir, OTHER)
    os.utime(marks, (os.stat(marks).st_atime, os.stat(marks).st_mtime - 7200))
    assert kept.remove_unused(set(), min_age=3600) == [OTHER]
    with kept.using([DISK]):
        pass
    assert kept.remove_unused(set(), min_age=3600) == []
