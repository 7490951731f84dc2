"""The destination's side of a block migration: the image from the source's chain, the seed
from the source's record (backends/libvirt/incoming.py), with real qemu-img and files."""

from __future__ import annotations

import hashlib
import io
import os

import libvirt
import pytest
from oslo_concurrency import processutils

from backends.libvirt import incoming
from backends.libvirt.migration import migration_flags
from tests.support.drivers import TEST_URI, serving_driver
from virt import chain, seed
from virt.conf import make_conf
from virt.errors import InvalidParameter, InvalidState, NotSupported, UnsafeImage
from virt.imagestore import LocalImageStore
from virt.objects import Flavor, Instance, SeedConfig

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


# -- the driver on test:///default ---------------------------------------------------

@pytest.fixture
def dest(tmp_path):
    """A destination driver whose store lacks the image, and a source store that has it."""
    conf = make_conf(virt_type="qemu", state_path=str(tmp_path / "b"),
                     libvirt__connection_uri=TEST_URI, libvirt__shutdown_timeout=1)
    source = _store_with_image(tmp_path, "img")
    for driver in serving_driver(conf):
        yield driver, source


def _incoming(name="mg-vm") -> Instance:
    return Instance(name=name, uuid=UUID, image="img", flavor=Flavor(root_gb=1))


def test_prepare_imports_the_chain_and_rebuilds_the_seed(dest):
    driver, source = dest
    path = driver.prepare_incoming(_incoming(), chain=_exported(source, "img"),
                                   seed_record=_record())
    directory = os.path.join(path, UUID)
    assert sorted(os.listdir(directory)) == ["console.log", "disk", "seed.iso", "seed.json"]
    assert seed.read_record(directory).hostname == "seeded"
    assert driver.seed_record(_incoming()) == _record()    # what a next migration sends on
    assert driver.store.get("img").sha256 == source.get("img").sha256
    driver.abandon_incoming(_incoming())
    assert not os.path.exists(directory)
    assert driver.seed_record(_incoming()) is None


def test_a_failed_prepare_removes_the_image_it_imported(dest):
    driver, source = dest
    os.makedirs(os.path.join(driver.conf.instances_path, UUID))  # not ours: the disk fails
    with pytest.raises(InvalidState, match="cannot prepare mg-vm for migration"):
        driver.prepare_incoming(_incoming(), chain=_exported(source, "img"))
    assert driver.store.list() == []
    with pytest.raises(InvalidParameter, match="seed record of other"):
        driver.prepare_incoming(_incoming(), chain=_exported(source, "img"),
                                seed_record=_record(name="other"))
    assert driver.store.list() == []


def test_an_image_already_here_must_carry_the_sources_digest(dest, tmp_path):
    driver, source = dest
    other = tmp_path / "other.raw"
    with open(source.get("img").path, "rb") as f:
        other.write_bytes(f.read().replace(b"the source's base", b"another base here"))
    driver.store.import_image("img", str(other), "raw")
    theirs = source.get("img").digest
    for digest, refusal in ((None, "give the source's image digest"),
                            (theirs, "img here is not the source's"),
                            ("md5:1234", "use KIND:HEX")):
        with pytest.raises(InvalidParameter, match=refusal):
            driver.prepare_incoming(_incoming(), image_digest=digest)
        assert not os.path.exists(os.path.join(driver.conf.instances_path, UUID))
    # the chain is not read when the store has the name: the same refusal
    with pytest.raises(InvalidParameter, match="img here is not the source's"):
        driver.prepare_incoming(_incoming(), chain=_exported(source, "img"), image_digest=theirs)

    driver.store.delete("img")
    driver.store.import_image("img", source.get("img").path, "raw")
    assert driver.prepare_incoming(_incoming(), image_digest=theirs)
    driver.abandon_incoming(_incoming())


def test_a_digest_of_the_plain_sha256_is_compared_by_reading_the_file(tmp_path):
    store = _store_with_image(tmp_path, "img")
    image = store.get("img")
    with open(image.path, "rb") as f:
        plain = hashlib.sha256(f.read()).hexdigest()
    incoming.check_same_image(image, f"sha256:{plain}")
    with pytest.raises(InvalidParameter, match="not the source's"):
        incoming.check_same_image(image, "sha256:" + "0" * 64)


def test_a_stopped_guest_is_not_block_migrated_and_a_suspended_one_not_at_all(dest):
    driver, source = dest
    instance = Instance(name="mg-stopped", image="img", flavor=Flavor(memory_mb=128))
    driver.store.import_image("img", source.get("img").path, "raw")
    driver.spawn(instance, "img")
    driver.suspend(instance)
    with pytest.raises(InvalidState, match="suspended: migration does not carry"):
        driver.migrate(instance, "test:///default")
    driver.destroy(instance)
    driver.spawn(instance, "img")
    driver.power_off(instance)
    with pytest.raises(NotSupported, match="libvirt copies no disk of a stopped guest"):
        driver.migrate(instance, "test:///default", dest_instances_path="/srv/b")
