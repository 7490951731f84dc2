"""LocalImageStore with real qemu-img and real files."""

import json
import os

import pytest

from virt import images
from virt.errors import ImageError, ImageNotFound, InvalidParameter, UnsafeImage
from virt.imagestore import DamagedRecord, LocalImageStore, file_sha256

from .test_images import (
    make_qcow2_with_backing,
    make_qcow2_with_data_file,
    make_vmdk_descriptor,
    qemu_io,
    reads_pattern,
)

MiB = 1 << 20


@pytest.fixture
def store(tmp_path):
    return LocalImageStore(str(tmp_path / "store"), max_virtual_size=1 << 40)


@pytest.fixture
def outside(tmp_path):
    path = tmp_path / "outside"
    path.mkdir()
    return path


def store_files(store):
    return sorted(os.listdir(store.directory)) if os.path.isdir(store.directory) else []


def test_import_records_format_size_sha256_and_properties(store, outside):
    src = str(outside / "disk.qcow2")
    images.create_image("qcow2", src, "32M")
    qemu_io(src, "qcow2", "write -P 0x33 0 64k")
    image = store.import_image("cirros-0.6", src, "qcow2", properties={"arch": "x86_64"})

    assert (image.name, image.format, image.virtual_size) == ("cirros-0.6", "qcow2", 32 * MiB)
    assert image.sha256 == file_sha256(image.path)
    assert image.properties == {"arch": "x86_64"}
    assert reads_pattern(image.path, "qcow2", 0x33, 0, 65536)
    assert store.get("cirros-0.6") == image
    assert [i.name for i in store.list()] == ["cirros-0.6"]
    assert store_files(store) == ["cirros-0.6.img", "cirros-0.6.json"]
    with open(os.path.join(store.directory, "cirros-0.6.json")) as f:
        assert json.load(f)["sha256"] == image.sha256


def test_raw_stays_raw_even_when_it_looks_like_qcow2(store, tmp_path):
    fake = make_qcow2_with_backing(tmp_path)  # bytes of a qcow2 pointing at /etc/passwd
    image = store.import_image("rawdisk", fake, "raw")
    assert image.format == "raw"
    assert images.info(image.path, "raw").backing_file is None


@pytest.mark.parametrize("fmt", ["vmdk", "vpc"])
def test_other_formats_are_stored_as_qcow2(store, outside, fmt):
    src = str(outside / f"disk.{fmt}")
    images.create_image(fmt, src, "8M")
    qemu_io(src, fmt, "write -P 0x44 0 64k")
    image = store.import_image("converted", src, fmt)
    assert image.format == "qcow2" == images.info(image.path, "qcow2").format
    assert reads_pattern(image.path, "qcow2", 0x44, 0, 65536)


def test_import_reports_progress(store, outside):
    src = str(outside / "disk.raw")
    images.create_image("raw", src, "8M")
    seen = []
    store.import_image("p", src, "raw", progress=seen.append)
    assert seen and seen[-1] == 1.0


@pytest.mark.parametrize("name", ["", ".hidden", "../escape", "a/b", "with space", "x" * 129,
                                  "semi;colon", "nul\0", "new\nline", None])
def test_bad_names_are_refused_before_anything_is_written(store, outside, name):
    src = str(outside / "disk.raw")
    images.create_image("raw", src, "1M")
    with pytest.raises(InvalidParameter, match="image name"):
        store.import_image(name, src, "raw")
    assert store_files(store) == []
    with pytest.raises(InvalidParameter):
        store.get(name)


@pytest.mark.parametrize("maker, fmt, reason", [
    (make_qcow2_with_backing, "qcow2", "backing file"),
    (make_qcow2_with_data_file, "qcow2", "external data file"),
    (make_vmdk_descriptor, "vmdk", "vmdk"),
])
def test_hostile_images_are_refused_and_leave_nothing(store, tmp_path, maker, fmt, reason):
    with pytest.raises(UnsafeImage, match=reason):
        store.import_image("evil", maker(tmp_path), fmt)
    assert store_files(store) == []


def test_raw_declared_qcow2_and_oversized_images_leave_nothing(store, outside):
    raw = str(outside / "disk.raw")
    images.create_image("raw", raw, "1M")
    with pytest.raises(UnsafeImage, match="declared qcow2"):
        store.import_image("liar", raw, "qcow2")
    huge = str(outside / "huge.qcow2")
    images.create_image("qcow2", huge, str(1 << 50))
    with pytest.raises(UnsafeImage, match="above the limit"):
        store.import_image("huge", huge, "qcow2")
    assert store_files(store) == []


def test_format_not_allowed_is_refused(tmp_path, outside):
    store = LocalImageStore(str(tmp_path / "s"), allowed_formats=("qcow2",))
    src = str(outside / "disk.raw")
    images.create_image("raw", src, "1M")
    with pytest.raises(InvalidParameter, match="use one of qcow2"):
        store.import_image("r", src, "raw")


def test_duplicate_name_is_refused_and_keeps_the_first(store, outside):
    src = str(outside / "disk.raw")
    images.create_image("raw", src, "1M")
    first = store.import_image("dup", src, "raw")
    with pytest.raises(InvalidParameter, match="already exists"):
        store.import_image("dup", src, "raw")
    assert store.get("dup") == first


def test_delete_removes_image_and_record(store, outside):
    src = str(outside / "disk.raw")
    images.create_image("raw", src, "1M")
    store.import_image("gone", src, "raw")
    store.delete("gone")
    assert store_files(store) == [] and store.list() == []
    with pytest.raises(ImageNotFound, match="image list"):
        store.get("gone")
    with pytest.raises(ImageNotFound):
        store.delete("gone")


def test_a_record_naming_a_file_outside_the_store_is_refused(store, outside):
    src = str(outside / "disk.raw")
    images.create_image("raw", src, "1M")
    store.import_image("victim", src, "raw")
    record_path = os.path.join(store.directory, "victim.json")
    with open(record_path) as f:
        record = json.load(f)
    record["file"] = "../../etc/passwd"
    with open(record_path, "w") as f:
        json.dump(record, f)
    with pytest.raises(DamagedRecord, match="'file' must be a file name in the store"):
        store.get("victim")


def test_missing_source_file_fails_cleanly(store, outside):
    with pytest.raises(ImageError, match="cannot read .*nothing: No such file"):
        store.import_image("missing", str(outside / "nothing"), "qcow2")
    assert store_files(store) == []


def test_from_conf_uses_the_options(tmp_path):
    from virt.conf import make_conf
    conf = make_conf(state_path=str(tmp_path), images__max_virtual_size="2G",
                     images__qemu_img_cpu_seconds=9)
    store = LocalImageStore.from_conf(conf)
    assert store.directory == str(tmp_path / "images")
    assert store.max_virtual_size == 2 << 30
    assert store.limits.cpu_seconds == 9
