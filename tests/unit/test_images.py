"""virt.images against the real qemu-img and real files."""

import json
import os
import re
import subprocess

import pytest

from tests.support.images import (
    make_qcow2_with_backing,
    make_qcow2_with_data_file,
    make_vmdk_descriptor,
    qemu_io,
    reads_pattern,
)
from virt import images
from virt.conf import make_conf
from virt.errors import ImageError, InvalidParameter, UnsafeImage
from virt.imagestore import LocalImageStore
from virt.units import MiB


def listing(directory):
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("value, expected", [
    (0, 0), (4096, 4096), ("512", 512), ("1K", 1024), ("64M", 64 * MiB),
    ("10G", 10 << 30), ("2T", 2 << 40), ("3g", 3 << 30), ("1MB", MiB),
])
def test_parse_size_accepts_bytes_and_binary_suffixes(value, expected):
    assert images.parse_size(value) == expected


@pytest.mark.parametrize("value", ["", "ten", "1.5G", "-1", "1P", "G", None, 1.5, -4, True])
def test_parse_size_refuses_anything_else_naming_the_value(value):
    with pytest.raises(InvalidParameter, match="size"):
        images.parse_size(value)


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_create_image_has_the_requested_size_and_format(tmp_path, fmt):
    path = str(tmp_path / f"disk.{fmt}")
    images.create_image(fmt, path, "64M")
    result = images.info(path, fmt)
    assert (result.format, result.virtual_size) == (fmt, 64 * MiB)
    assert listing(tmp_path) == [f"disk.{fmt}"]


def test_failed_create_leaves_no_temporary_file(tmp_path):
    with pytest.raises(ImageError, match="Unknown file format|format") as exc:
        images.create_image("nosuchformat", str(tmp_path / "disk"), "1M")
    assert exc.value.stderr  # qemu-img's own words reach the caller
    assert listing(tmp_path) == []


def test_overlay_reports_its_base_and_reads_the_base_data(tmp_path):
    base, overlay = str(tmp_path / "base.raw"), str(tmp_path / "overlay.qcow2")
    images.create_image("raw", base, "64M")
    qemu_io(base, "raw", "write -P 0xab 1M 64k")
    images.create_cow_image(base, overlay, backing_format="raw")

    result = images.info(overlay, "qcow2")
    assert result.backing_file == base
    assert result.backing_format == "raw"  # passed explicitly, never probed
    assert result.virtual_size == 64 * MiB
    assert images.get_disk_backing_file(overlay) == "base.raw"
    assert images.get_disk_backing_file(overlay, basename=False) == base
    assert reads_pattern(overlay, "qcow2", 0xab, MiB, 65536)


def test_overlay_can_be_larger_than_its_base_and_writes_stay_in_it(tmp_path):
    base, overlay = str(tmp_path / "base.raw"), str(tmp_path / "overlay.qcow2")
    images.create_image("raw", base, "16M")
    images.create_cow_image(base, overlay, size="1G", backing_format="raw")
    qemu_io(overlay, "qcow2", "write -P 0x5a 0 64k")
    assert images.get_disk_size(overlay, "qcow2") == 1 << 30
    assert reads_pattern(base, "raw", 0x00, 0, 65536)


def test_overlay_on_a_missing_base_fails_cleanly(tmp_path):
    with pytest.raises(ImageError):
        images.create_cow_image(str(tmp_path / "missing"), str(tmp_path / "o.qcow2"))
    assert listing(tmp_path) == []


def test_get_disk_type_from_path():
    assert images.get_disk_type_from_path("/dev/sda") == "raw"
    assert images.get_disk_type_from_path("rbd:pool/volume") == "rbd"
    assert images.get_disk_type_from_path("/var/lib/disk.qcow2") is None


def test_resize_grows(tmp_path):
    path = str(tmp_path / "d.qcow2")
    images.create_image("qcow2", path, "16M")
    images.resize(path, "qcow2", "32M")
    assert images.get_disk_size(path, "qcow2") == 32 * MiB


def test_resize_refuses_to_shrink_and_leaves_the_image_alone(tmp_path):
    path = str(tmp_path / "d.qcow2")
    images.create_image("qcow2", path, "32M")
    with pytest.raises(InvalidParameter, match="shrinking is refused"):
        images.resize(path, "qcow2", "16M")
    assert images.get_disk_size(path, "qcow2") == 32 * MiB


def test_info_of_a_missing_file_carries_qemu_img_stderr(tmp_path):
    with pytest.raises(ImageError) as exc:
        images.info(str(tmp_path / "nothing"), "qcow2")
    assert "No such file" in exc.value.stderr
    assert "No such file" in str(exc.value)


def test_convert_keeps_the_data_and_reports_progress(tmp_path):
    src, dst = str(tmp_path / "src.raw"), str(tmp_path / "dst.qcow2")
    images.create_image("raw", src, "8M")
    qemu_io(src, "raw", "write -P 0x11 0 1M")
    seen = []
    images.convert(src, "raw", dst, "qcow2", progress=seen.append)
    assert images.info(dst, "qcow2").format == "qcow2"
    assert reads_pattern(dst, "qcow2", 0x11, 0, MiB)
    assert seen[-1] == 1.0 and seen == sorted(seen)
    assert listing(tmp_path) == ["dst.qcow2", "src.raw"]


def test_compressed_convert_is_smaller(tmp_path):
    src = str(tmp_path / "src.raw")
    images.create_image("raw", src, "8M")
    qemu_io(src, "raw", "write -P 0x22 0 4M")
    images.convert(src, "raw", str(tmp_path / "plain.qcow2"), "qcow2")
    images.convert(src, "raw", str(tmp_path / "small.qcow2"), "qcow2", compress=True)
    assert os.path.getsize(tmp_path / "small.qcow2") < os.path.getsize(tmp_path / "plain.qcow2")


@pytest.mark.parametrize("progress", [None, print])
def test_failed_convert_leaves_nothing(tmp_path, progress):
    src = str(tmp_path / "src.raw")
    with open(src, "wb") as f:
        f.write(b"not qcow2" * 100)
    with pytest.raises(ImageError, match="convert failed"):
        images.convert(src, "qcow2", str(tmp_path / "dst.raw"), "raw", progress=progress)
    assert listing(tmp_path) == ["src.raw"]


def test_extract_snapshot_of_an_overlay_holds_the_overlay_data(tmp_path):
    base, overlay = str(tmp_path / "base.raw"), str(tmp_path / "overlay.qcow2")
    images.create_image("raw", base, "16M")
    qemu_io(base, "raw", "write -P 0x01 0 64k")
    images.create_cow_image(base, overlay, backing_format="raw")
    qemu_io(overlay, "qcow2", "write -P 0x02 1M 64k")
    out = str(tmp_path / "snap.qcow2")
    images.extract_snapshot(overlay, "qcow2", out, "qcow2")
    assert images.info(out, "qcow2").backing_file is None  # standalone
    assert reads_pattern(out, "qcow2", 0x01, 0, 65536)
    assert reads_pattern(out, "qcow2", 0x02, MiB, 65536)


@pytest.mark.parametrize("fmt, backing_fmt", [("qcow2", "raw"), ("vmdk", "vmdk")])
def test_untrusted_convert_never_opens_a_backing_file(tmp_path, fmt, backing_fmt):
    secret = tmp_path / "host-secret.raw"
    secret.write_bytes(b"HOST-SECRET" * 1000)
    host = str(tmp_path / f"host.{backing_fmt}")
    images.convert(str(secret), "raw", host, backing_fmt)
    hostile = str(tmp_path / f"hostile.{fmt}")
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, "-b", host, "-F", backing_fmt,
                    hostile, "1M"], check=True)
    out = str(tmp_path / "out.raw")
    images.convert(hostile, fmt, out, "raw", untrusted=True)
    with open(out, "rb") as f:
        assert b"HOST-SECRET" not in f.read()
    images.convert(hostile, fmt, str(tmp_path / "trusted.raw"), "raw")  # the control
    assert b"HOST-SECRET" in (tmp_path / "trusted.raw").read_bytes()


def test_untrusted_convert_keeps_odd_file_names_whole(tmp_path):
    src = str(tmp_path / 'a,b"c:d.qcow2')
    images.create_image("qcow2", src, "1M")
    qemu_io(src, "qcow2", "write -P 0x5a 0 64k")
    out = str(tmp_path / "out.raw")
    images.convert(src, "qcow2", out, "raw", untrusted=True)
    assert reads_pattern(out, "raw", 0x5a, 0, 65536)


# Untrusted images: a corpus made here, each refused with the reason.


def test_untrusted_qcow2_with_backing_file_is_refused(tmp_path):
    with pytest.raises(UnsafeImage, match="backing file"):
        images.inspect_untrusted(make_qcow2_with_backing(tmp_path), "qcow2")


def test_untrusted_qcow2_with_external_data_file_is_refused(tmp_path):
    with pytest.raises(UnsafeImage, match="external data file"):
        images.inspect_untrusted(make_qcow2_with_data_file(tmp_path), "qcow2")


def test_raw_declared_qcow2_is_refused(tmp_path):
    path = str(tmp_path / "plain.raw")
    images.create_image("raw", path, "1M")
    with pytest.raises(UnsafeImage, match="declared qcow2"):
        images.inspect_untrusted(path, "qcow2")


def test_oversized_virtual_size_is_refused(tmp_path):
    path = str(tmp_path / "huge.qcow2")
    images.create_image("qcow2", path, str(1 << 50))  # 1 PiB, a few KiB on disk
    with pytest.raises(UnsafeImage, match="above the limit"):
        images.inspect_untrusted(path, "qcow2", max_virtual_size=1 << 40)


@pytest.mark.parametrize("maker", [make_vmdk_descriptor])
def test_vmdk_descriptor_pointing_at_a_host_file_is_refused(tmp_path, maker):
    with pytest.raises(UnsafeImage, match="vmdk"):
        images.inspect_untrusted(maker(tmp_path), "vmdk")


def test_vmdk_made_by_qemu_img_with_flat_extent_is_refused(tmp_path):
    path = str(tmp_path / "flat.vmdk")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat",
                    path, "1M"], check=True)
    with pytest.raises(UnsafeImage, match="vmdk"):
        images.inspect_untrusted(path, "vmdk")


def test_sparse_vmdk_is_accepted(tmp_path):
    path = str(tmp_path / "ok.vmdk")
    images.create_image("vmdk", path, "1M")
    result = images.inspect_untrusted(path, "vmdk")
    assert (result.format, result.create_type) == ("vmdk", "monolithicSparse")


def test_raw_that_carries_a_qcow2_header_is_refused(tmp_path):
    # Nova refuses it too: whatever reads it without -f raw sees a qcow2.
    fake = make_qcow2_with_backing(tmp_path)
    with pytest.raises(UnsafeImage, match="declared raw but its content is qcow2"):
        images.inspect_untrusted(fake, "raw")


def test_a_resource_limit_hit_is_refused_as_unsafe(tmp_path):
    # Opening a 1 PiB qcow2 allocates a 16 MiB L1 table: over a tight limit
    # that a small image stays well under.
    small, huge = str(tmp_path / "small.qcow2"), str(tmp_path / "huge.qcow2")
    images.create_image("qcow2", small, "1M")
    images.create_image("qcow2", huge, str(1 << 50))
    tight = images.Limits(address_space=64 * MiB, cpu_seconds=30)
    assert images.inspect_untrusted(small, "qcow2", limits=tight).virtual_size == MiB
    with pytest.raises(UnsafeImage, match="resource limit"):
        images.inspect_untrusted(huge, "qcow2", limits=tight)


def test_clean_qcow2_passes_inspection_with_its_facts(tmp_path):
    path = str(tmp_path / "ok.qcow2")
    images.create_image("qcow2", path, "64M")
    result = images.inspect_untrusted(path, "qcow2", max_virtual_size=64 * MiB)
    assert (result.format, result.virtual_size, result.cluster_size) == ("qcow2", 64 * MiB, 65536)


def test_inspection_runs_qemu_img_with_the_declared_format_and_limits(tmp_path):
    # The argv is observable through a qemu-img on PATH that records itself.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "argv.log"
    shim = bindir / "qemu-img"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\n'
                    f'cat /proc/self/limits | grep -E "address space|cpu time" >> {log}\n'
                    'exec /usr/bin/qemu-img "$@"\n')
    shim.chmod(0o755)
    path = str(tmp_path / "ok.qcow2")
    images.create_image("qcow2", path, "1M")
    env_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bindir}:{env_path}"
    try:
        images.inspect_untrusted(path, "qcow2", limits=images.Limits(512 * MiB, 7))
    finally:
        os.environ["PATH"] = env_path
    recorded = log.read_text()
    # The file the first layer opened, never the path again.
    assert re.search(r"^info -f qcow2 --output=json /proc/\d+/fd/\d+$", recorded, re.M)
    assert "Max cpu time              7" in recorded
    assert str(512 * MiB) in recorded


def test_image_info_parses_qemu_img_json():
    data = json.loads('{"virtual-size": 10, "filename": "x", "format": "qcow2",'
                      '"actual-size": 5, "cluster-size": 512, "backing-filename": "b",'
                      '"backing-filename-format": "raw", "format-specific": {"type": "qcow2",'
                      '"data": {"data-file": "d"}}}')
    assert images.ImageInfo.from_json(data) == images.ImageInfo(
        "qcow2", 10, 5, "b", "raw", "d", 512)


def test_a_store_made_without_a_limit_has_the_configuration_default_of_one_tib(tmp_path):
    conf = make_conf(state_path=str(tmp_path))
    assert images.parse_size(conf.images.max_virtual_size) == images.DEFAULT_MAX_VIRTUAL_SIZE
    assert images.DEFAULT_MAX_VIRTUAL_SIZE == 1 << 40
    path = str(tmp_path / "big.qcow2")
    images.create_image("qcow2", path, "2T")  # a few KiB on disk
    with pytest.raises(UnsafeImage, match="above the limit of 1099511627776 bytes"):
        LocalImageStore(str(tmp_path / "store")).import_image("big", path, "qcow2")
