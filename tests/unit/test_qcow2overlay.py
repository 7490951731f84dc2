"""Overlays written without qemu-img: the same bytes as `qemu-img create -u`, usable by qemu."""

import os
import subprocess

import pytest

from tests.support.images import qemu_io, reads_pattern
from virt import images
from virt.errors import ImageError
from virt.qcow2overlay import overlay_bytes
from virt.units import GiB, MiB


def qemu_img_overlay(tmp_path, backing: str, size: int, fmt: str = "raw") -> bytes:
    path = tmp_path / "by-qemu-img.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", backing,
                    "-F", fmt, str(path), str(size)], check=True, env={"LC_ALL": "C"})
    data = path.read_bytes()
    path.unlink()
    return data


# Sizes: under one L2 table, a rounding to 512, the usual root disks, an L1 of two clusters.
@pytest.mark.parametrize("size", [1000, 16 * MiB, GiB + 1, 20 * GiB, 5 << 40])
@pytest.mark.parametrize("backing", ["/var/lib/virt-driver/_base/raw-0f", "/b/" + "n" * 1000])
def test_bytes_are_those_of_qemu_img_create_u(tmp_path, size, backing):
    assert overlay_bytes(backing, "raw", size) == qemu_img_overlay(tmp_path, backing, size)


def test_a_qcow2_backing_format_too_and_no_other(tmp_path):
    expected = qemu_img_overlay(tmp_path, "/store/leaf.qcow2", GiB, "qcow2")
    assert overlay_bytes("/store/leaf.qcow2", "qcow2", GiB) == expected
    with pytest.raises(ImageError, match="backing format 'vmdk'"):
        overlay_bytes("/store/x.vmdk", "vmdk", GiB)


def test_an_overlay_is_made_with_no_qemu_img_to_run_and_qemu_reads_the_base(
        tmp_path, monkeypatch):
    base, overlay = str(tmp_path / "base.raw"), str(tmp_path / "overlay.qcow2")
    images.create_image("raw", base, "16M")
    qemu_io(base, "raw", "write -P 0xab 1M 64k")
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    images.create_cow_image(base, overlay, 1 << 30, backing_format="raw", open_backing=False)
    monkeypatch.undo()

    assert sorted(os.listdir(tmp_path)) == ["base.raw", "overlay.qcow2"]
    subprocess.run(["qemu-img", "check", "-q", "-f", "qcow2", overlay], check=True)
    result = images.info(overlay, "qcow2")
    assert (result.backing_file, result.backing_format) == (base, "raw")
    assert result.virtual_size == 1 << 30
    assert reads_pattern(overlay, "qcow2", 0xab, MiB, 65536)
    qemu_io(overlay, "qcow2", "write -P 0x5a 0 64k")  # writes land in the overlay
    assert reads_pattern(base, "raw", 0x00, 0, 65536)


@pytest.mark.parametrize("backing, size", [("/" + "x" * 1023, MiB), ("/b", 0)])
def test_a_name_over_the_qcow2_limit_or_no_size_is_refused_and_leaves_nothing(
        tmp_path, backing, size):
    with pytest.raises(ImageError, match="backing file name|positive"):
        images.create_cow_image(backing, str(tmp_path / "o.qcow2"), size, open_backing=False)
    assert os.listdir(tmp_path) == []
