"""kill -9 at every step of image import, export and import-chain, then cleanup."""

from __future__ import annotations

import os

import pytest

from tests.support.faults import report, sha256s
from tests.support.images import make_chain, qemu_io
from virt import images

IMPORT_STEPS = [
    "qemu-img info before",  # the private copy exists, inspection runs
    "qemu-img convert before",
    "qemu-img convert after",  # the converted image is complete in staging
    "py virt.imagestore:LocalImageStore.publish",
    "py virt.imagestore:os.rename",  # the record is linked, the image not yet moved
]
RAW_IMPORT_STEPS = [
    "qemu-img info before",  # the private copy is complete and hashed, inspection runs
    "py virt.imagestore:LocalImageStore.publish",  # inspected and synced, no record yet
    "py virt.imagestore:os.rename",  # the record is linked, the image not yet moved
]
EXPORT_STEPS = [
    "qemu-img info before",  # reading the chain
    "py virt.chain:_write_tarball",  # links staged, the output temporary open
]
CHAIN_STEPS = [
    "py virt.chain:_inspect",  # unpacked into staging
    "qemu-img info before",
    "qemu-img rebase after",
    "qemu-img check before",
    "py virt.imagestore:LocalImageStore.publish",
    "py virt.imagestore:os.rename",
]


@pytest.fixture
def kept(bed, tmp_path):
    """An image already in the store that no crash may touch; the sha256s before."""
    src = str(tmp_path / "kept.raw")
    images.create_image("raw", src, "4M")
    qemu_io(src, "raw", "write -P 0x5a 0 1M")
    bed.cli("image", "import", "kept", src, "--format", "raw")
    return sha256s(bed)


def qcow2_source(tmp_path) -> str:
    src = str(tmp_path / "upload.qcow2")
    images.create_image("qcow2", src, "64M")
    qemu_io(src, "qcow2", "write -P 0x33 0 8M")
    return src


def check_recovered(bed, step, kept):
    bed.cli("cleanup")
    leftovers = bed.leftovers()
    report(step, leftovers)
    assert leftovers == []
    assert sha256s(bed) == kept


@pytest.mark.parametrize("step", IMPORT_STEPS)
def test_import_killed_at_every_step_leaves_nothing(bed, kept, tmp_path, step):
    src = qcow2_source(tmp_path)
    bed.kill_at(step, "image", "import", "victim", src, "--format", "qcow2")
    check_recovered(bed, step, kept)
    bed.cli("image", "import", "victim", src, "--format", "qcow2")  # the name is free


@pytest.mark.parametrize("step", RAW_IMPORT_STEPS)
def test_raw_import_killed_at_every_step_leaves_nothing(bed, kept, tmp_path, step):
    src = str(tmp_path / "upload.raw")
    images.create_image("raw", src, "64M")
    qemu_io(src, "raw", "write -P 0x33 8M 8M")
    bed.kill_at(step, "image", "import", "victim", src, "--format", "raw")
    check_recovered(bed, step, kept)
    bed.cli("image", "import", "victim", src, "--format", "raw")  # the name is free


@pytest.mark.parametrize("step", EXPORT_STEPS)
def test_export_killed_at_every_step_leaves_nothing(bed, kept, tmp_path, step):
    out = tmp_path / "out"
    out.mkdir()
    bed.kill_at(step, "image", "export", "kept", str(out / "kept.tar.gz"))
    bed.cli("cleanup", "--path", str(out))
    check_recovered(bed, step, kept)
    assert os.listdir(out) == []
    bed.cli("image", "export", "kept", str(out / "kept.tar.gz"))


@pytest.mark.parametrize("step", CHAIN_STEPS)
def test_import_chain_killed_at_every_step_leaves_nothing(bed, kept, tmp_path, step):
    leaf = make_chain(str(tmp_path / "chain"))
    tarball = str(tmp_path / "chain.tar.gz")
    with open(tarball, "wb") as f:
        from virt import chain
        chain.export_chain(leaf, f)
    bed.kill_at(step, "image", "import-chain", "victim", tarball)
    check_recovered(bed, step, kept)
    bed.cli("image", "import-chain", "victim", tarball)
    assert len(bed.leftovers()) == 0
