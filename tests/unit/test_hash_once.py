"""Images hashed once, as they are written; raw bases that copy nothing; overlays
made outside the per-base lock. Real files, real qemu-img."""

import hashlib
import json
import os
import threading

import pytest

from tests.support.images import qemu_io, reads_pattern
from virt import contenthash, imagestore
from virt.contenthash import CHUNK, ContentHash, file_content_hash
from virt.errors import UnsafeImage
from virt.imagecache import ImageCache
from virt.imagestore import LocalImageStore, file_sha256
from virt.locks import external_lock


def by_definition(data: bytes) -> str:
    """The content hash as its docstring defines it, computed the plain way."""
    digests = b"".join(hashlib.sha256(data[i:i + CHUNK]).digest()
                       for i in range(0, len(data), CHUNK))
    return hashlib.sha256(digests).hexdigest()


@pytest.fixture
def sparse_raw(tmp_path):
    """A 9 MiB raw file with data in two places and holes around them."""
    path = tmp_path / "sparse.raw"
    with open(path, "wb") as f:
        f.truncate(9 * CHUNK + 512)
        f.seek(CHUNK + 7)
        f.write(b"\x5a" * 70000)
        f.seek(6 * CHUNK - 3)
        f.write(b"tail of a chunk and head of the next")
    return path


@pytest.fixture
def cache(tmp_path):
    store = LocalImageStore(str(tmp_path / "store"))
    return ImageCache(str(tmp_path / "cache"), str(tmp_path / "locks"), store)


def test_the_content_hash_depends_on_the_bytes_alone(sparse_raw, tmp_path):
    data = sparse_raw.read_bytes()
    dense = tmp_path / "dense.raw"
    dense.write_bytes(data)  # the same bytes with the holes written as zeros
    fed = ContentHash()
    fed.update(data[:1000])
    fed.update_zeros(0)
    fed.update(data[1000:])
    assert file_content_hash(str(sparse_raw)) == file_content_hash(str(dense)) \
        == fed.hexdigest() == by_definition(data)


def test_a_raw_file_of_part_of_a_sector_is_stored_as_the_whole_sector(cache, tmp_path):
    src = tmp_path / "odd.raw"
    src.write_bytes(b"\x01" * 1000)
    image = cache.store.import_image("odd", str(src), "raw")
    assert image.virtual_size == os.path.getsize(image.path) == 1024
    assert image.sha256 == by_definition(b"\x01" * 1000 + bytes(24)) == file_sha256(image.path)
    assert open(cache.fetch_base("odd"), "rb").read() == b"\x01" * 1000 + bytes(24)


def test_a_raw_import_is_hashed_while_copied_and_never_read_again(cache, sparse_raw,
                                                                     monkeypatch):
    def no_second_read(path):
        raise AssertionError(f"{path} was read again to hash it")

    monkeypatch.setattr(contenthash, "file_content_hash", no_second_read)
    monkeypatch.setattr(imagestore, "file_content_hash", no_second_read)
    image = cache.store.import_image("sparse", str(sparse_raw), "raw")
    assert image.sha256 == by_definition(sparse_raw.read_bytes())
    assert open(image.path, "rb").read() == sparse_raw.read_bytes()
    with open(os.path.join(cache.store.directory, "sparse.json")) as f:
        record = json.load(f)
    assert record["hash"] == contenthash.KIND
    assert record["written"]["inode"] == os.stat(image.path).st_ino
    # First use: the image is the file its record describes, so it is not hashed again.
    base = cache.fetch_base("sparse")
    assert open(base, "rb").read() == sparse_raw.read_bytes()


def test_a_raw_image_is_its_own_base_without_a_copy(cache, sparse_raw, tmp_path):
    image = cache.store.import_image("sparse", str(sparse_raw), "raw")
    overlay = str(tmp_path / "disk")
    base = cache.create_overlay("sparse", overlay)
    assert os.stat(base).st_ino == os.stat(image.path).st_ino
    # The guest writes to its overlay only; the store file and the base keep their bytes.
    qemu_io(overlay, "qcow2", f"write -P 0x11 {CHUNK} 65536")
    assert reads_pattern(overlay, "qcow2", 0x11, CHUNK, 65536)
    assert open(image.path, "rb").read() == sparse_raw.read_bytes()
    assert cache.store.get("sparse").unchanged(image.path)
    # Deleting the image leaves the base its overlay needs.
    cache.store.delete("sparse")
    assert open(base, "rb").read() == sparse_raw.read_bytes()
    assert cache.users(base) == [overlay]


def test_a_store_file_changed_in_place_is_hashed_again_and_refused(cache, sparse_raw):
    image = cache.store.import_image("sparse", str(sparse_raw), "raw")
    with open(image.path, "r+b") as f:
        f.seek(3 * CHUNK)
        f.write(b"tampered")
    assert not cache.store.get("sparse").unchanged(image.path)
    with pytest.raises(UnsafeImage, match="does not match its recorded sha256"):
        cache.fetch_base("sparse")


def test_a_record_from_before_the_content_hash_is_checked_by_plain_sha256(cache, sparse_raw):
    image = cache.store.import_image("old", str(sparse_raw), "raw")
    record_path = os.path.join(cache.store.directory, "old.json")
    with open(record_path) as f:
        record = json.load(f)
    del record["hash"], record["written"]
    record["sha256"] = hashlib.sha256(sparse_raw.read_bytes()).hexdigest()
    with open(record_path, "w") as f:
        json.dump(record, f)
    assert file_sha256(image.path, "sha256") == record["sha256"]
    base = cache.fetch_base("old")
    assert open(base, "rb").read() == sparse_raw.read_bytes()


def test_an_overlay_is_made_before_the_lock_of_its_base_is_taken(cache, sparse_raw,
                                                                   tmp_path):
    cache.store.import_image("sparse", str(sparse_raw), "raw")
    base = cache.fetch_base("sparse")
    overlay = tmp_path / "disk"
    made = []
    with external_lock(cache.lock_path, f"virt-driver-image-{os.path.basename(base)}"):
        worker = threading.Thread(target=lambda: made.append(
            cache.create_overlay("sparse", str(overlay))))
        worker.start()
        # qemu-img runs while the lock is held by someone else: the file appears.
        for _ in range(600):
            if overlay.exists() and os.path.getsize(overlay):
                break
            worker.join(0.05)
        assert overlay.exists()
        assert not made  # recording the user waits for the lock
    worker.join()
    assert made == [base]
    assert cache.users(base) == [str(overlay)]
