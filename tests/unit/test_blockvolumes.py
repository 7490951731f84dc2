"""Which host devices attach_volume may give a guest, before any libvirt call."""

from __future__ import annotations

import os

import pytest

from backends.libvirt import blockvolumes
from virt.errors import InvalidParameter


def test_only_a_listed_block_device_is_given(tmp_path):
    plain = tmp_path / "file"
    plain.write_bytes(b"")
    with pytest.raises(InvalidParameter, match=r"not a block device the operator allows "
                       r"\(\[DEFAULT\] volume_block_devices\)"):
        blockvolumes.allowed_device("/dev/loop7", ["/dev/loop6"], None)
    with pytest.raises(InvalidParameter, match="is not a block device"):
        blockvolumes.allowed_device(str(plain), [str(plain)], None)
    with pytest.raises(InvalidParameter, match="used raw"):
        blockvolumes.allowed_device("/dev/loop6", ["/dev/loop6"], "qcow2")
    link = tmp_path / "loop"
    os.symlink("/dev/loop6", link)  # links resolve on both sides
    with pytest.raises(InvalidParameter, match="operator allows"):
        blockvolumes.allowed_device(str(link), ["/dev/loop5"], "raw")


def test_a_device_path_is_told_from_files_and_image_names(tmp_path):
    assert blockvolumes.is_device_path("/dev/disk/by-id/x")
    assert not blockvolumes.is_device_path(str(tmp_path))
    assert not blockvolumes.is_device_path("demo")
