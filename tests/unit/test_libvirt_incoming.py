"""The destination's side of a block migration: the image from the source's chain, the seed
from the source's record (backends/libvirt/incoming.py), with real qemu-img and files."""

from __future__ import annotations

import io
import os

import libvirt
import pytest
from oslo_concurrency import processutils

from backends.libvirt import incoming
from backends.libvirt.migration import migration_flags
from virt import chain, seed
from virt.errors import InvalidParameter, UnsafeImage
from virt.imagestore import LocalImageStore
from virt.objects import Instance, SeedConfig

UUID = "0d6c4a52-0f5e-4c1a-9a55-3c2b8f1e7d10"
MAX = 1 << 30


def _store_with_image(tmp_path, name: str) -> LocalImageStore:
    raw = tmp_path / "src.raw"
    processutils.execute("qemu-img", "create", "-q", "-f", "raw", str(raw), "4M")
    with open(raw, "r+b") as f:
        f.write(b"the source's base")
    store = LocalImageStore(str(tmp_path / "a"))
    store.import_image(name, str(raw), "raw")
    return store


def _exported(store: LocalImageStore, name: str) -> io.BytesIO:
    out = io.BytesIO()
    chain.export_image(store, name, out)
    out.seek(0)
    return out


def test_the_sources_chain_lands_in_a_store_that_lacks_the_image(tmp_path):
    source = _store_with_image(tmp_path, "img")
    dest = LocalImageStore(str(tmp_path / "b"))
    assert incoming.import_missing_image(dest, "img", _exported(source, "img"), MAX) is True
    # the same bytes: the same cached base on both hosts (keyed by format and sha256)
    assert (dest.get("img").format, dest.get("img").sha256) == \
        (source.get("img").format, source.get("img").sha256)


def test_an_image_the_store_has_is_used_and_the_chain_not_read(tmp_path):
    store = _store_with_image(tmp_path, "img")
    untouched = io.BytesIO(b"not even a tarball")
    assert incoming.import_missing_image(store, "img", untouched, MAX) is False
    assert untouched.tell() == 0


def test_a_chain_that_is_not_one_is_refused_and_nothing_stored(tmp_path):
    dest = LocalImageStore(str(tmp_path / "b"))
    with pytest.raises(UnsafeImage, match="cannot be read"):
        incoming.import_missing_image(dest, "img", io.BytesIO(b"junk"), MAX)
    assert dest.list() == [] and [e for e in os.listdir(dest.directory)
                                  if not e.startswith(".")] == []


def _record(name="mg-vm", uuid=UUID) -> str:
    instance = Instance(name=name, uuid=uuid, seed=SeedConfig(hostname="seeded"))
    return seed.plan(instance, []).to_record()


def test_the_seed_record_is_taken_for_its_own_instance_only():
    instance = Instance(name="mg-vm", uuid=UUID)
    assert incoming.seed_plan(instance, _record()).hostname == "seeded"
    with pytest.raises(InvalidParameter, match="seed record of other"):
        incoming.seed_plan(instance, _record(name="other"))
    with pytest.raises(InvalidParameter, match="seed record of mg-vm"):
        incoming.seed_plan(instance, _record(uuid="7d41a9c2-61e0-4f0b-8a53-0e5f3c2b14a1"))
    with pytest.raises(InvalidParameter, match="not a seed.json written by virt-driver"):
        incoming.seed_plan(instance, "{}")


def test_a_stopped_guest_migrates_offline_and_never_by_block():
    flags = migration_flags(live=True, offline=True)
    assert flags & libvirt.VIR_MIGRATE_OFFLINE and flags & libvirt.VIR_MIGRATE_PERSIST_DEST
    assert not flags & (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_POSTCOPY
                        | libvirt.VIR_MIGRATE_NON_SHARED_INC)
    assert not migration_flags() & libvirt.VIR_MIGRATE_OFFLINE
    with pytest.raises(ValueError, match="cannot be a block one"):
        migration_flags(block=True, offline=True)
