"""Reclaiming what killed operations left: held temporaries, markers, store halves."""

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.support.images import export_to, make_chain
from virt import chain, images
from virt.fileutils import TEMP_PREFIX, atomic_target, held_staging_dir, held_temporary
from virt.imagestore import LocalImageStore
from virt.recovery import OperationMarker, reclaim_instances, reclaim_temporaries
from virt.units import MiB

# Writes 4 MiB into an atomic_target temporary, says so, then waits to be killed.
KILLED_WRITER = """
import sys, time
from virt.fileutils import atomic_target
with atomic_target(sys.argv[1]) as tmp:
    with open(tmp, "wb") as f:
        f.write(b"x" * (4 << 20))
        f.flush()
    print("written", flush=True)
    time.sleep(600)
"""


def killed_writer(target):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, target],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.stdout.readline() == "written\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_killed_writers_temporary_is_reclaimed_with_its_size(tmp_path):
    killed_writer(str(tmp_path / "disk"))
    [leftover] = os.listdir(tmp_path)
    assert leftover.startswith(TEMP_PREFIX + "disk.")
    [found] = reclaim_temporaries(str(tmp_path))
    assert (found.path, found.what) == (str(tmp_path / leftover), "temporary")
    assert found.bytes >= 4 * MiB
    assert os.listdir(tmp_path) == []


def test_held_temporaries_and_other_files_are_never_touched(tmp_path):
    (tmp_path / "disk").write_text("an instance's disk")
    (tmp_path / ".hidden").write_text("not ours")
    with held_temporary(str(tmp_path), "live") as tmp, \
            held_staging_dir(str(tmp_path), "staging") as staging, \
            atomic_target(str(tmp_path / "config")) as target:
        assert reclaim_temporaries(str(tmp_path)) == []
        assert all(map(os.path.exists, (tmp, staging, target)))
    # Once released they are gone, and a stray unlocked one is reclaimed.
    os.mkdir(tmp_path / (TEMP_PREFIX + "export.dead"))
    assert [r.what for r in reclaim_temporaries(str(tmp_path))] == ["staging directory"]
    assert sorted(os.listdir(tmp_path)) == [".hidden", "config", "disk"]


def test_a_dead_operations_marker_is_handed_to_its_undo_once(tmp_path):
    undone = []
    marker = OperationMarker(str(tmp_path), "spawn", name="web1", uuid="u-1")
    assert reclaim_instances(str(tmp_path), {"spawn": undone.append}) == []  # live
    dead = tmp_path / (TEMP_PREFIX + "op-spawn.dead")
    dead.write_text(json.dumps({"name": "db1", "uuid": "u-2"}))
    [found] = reclaim_instances(str(tmp_path), {"spawn": undone.append})
    assert (found.what, undone) == ("operation marker", [{"name": "db1", "uuid": "u-2"}])
    marker.release()
    assert os.listdir(tmp_path) == []


def test_a_failing_undo_keeps_the_marker_for_the_next_cleanup(tmp_path):
    dead = tmp_path / (TEMP_PREFIX + "op-spawn.dead")
    dead.write_text(json.dumps({"name": "db1", "uuid": "u-2"}))

    def unreachable(_data):
        raise RuntimeError("libvirtd is down")
    assert reclaim_instances(str(tmp_path), {"spawn": unreachable}) == []
    assert dead.exists()


def test_temporaries_inside_instance_directories_are_reclaimed(tmp_path):
    instance = tmp_path / "6f1c0c1e-0000-4000-8000-000000000001"
    instance.mkdir()
    (instance / "disk").write_text("kept")
    killed_writer(str(instance / "disk.new"))
    [found] = reclaim_instances(str(tmp_path))
    assert os.path.dirname(found.path) == str(instance)
    assert os.listdir(instance) == ["disk"]


# -- the store ------------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    return LocalImageStore(str(tmp_path / "store"), max_virtual_size=1 << 40)


def raw_source(tmp_path, name="src.raw"):
    path = str(tmp_path / name)
    images.create_image("raw", path, "2M")
    return path


def test_a_record_whose_image_never_arrived_is_reclaimed_and_the_name_reusable(store, tmp_path):
    store.import_image("kept", raw_source(tmp_path), "raw")
    store.import_image("half", raw_source(tmp_path), "raw")
    os.unlink(os.path.join(store.directory, "half.img"))  # killed between record and rename
    [found] = store.reclaim()
    assert found.path == os.path.join(store.directory, "half.json")
    assert "never arrived" in found.what
    assert [i.name for i in store.list()] == ["kept"]
    store.import_image("half", raw_source(tmp_path), "raw")


def test_image_files_no_record_names_are_reclaimed(store, tmp_path):
    store.import_image("kept", raw_source(tmp_path), "raw")
    export_to(make_chain(str(tmp_path / "src")), str(tmp_path / "c.tar.gz"))
    with open(tmp_path / "c.tar.gz", "rb") as f:
        chain.import_chain(f, store, "chain")
    chain_files = set(os.listdir(store.directory))
    os.unlink(os.path.join(store.directory, "chain.json"))  # killed in delete
    with open(os.path.join(store.directory, "other.txt"), "w") as f:
        f.write("not an image file: not ours to judge")
    found = store.reclaim()
    assert len(found) == 3 and {r.what for r in found} == {"image file no record names"}
    assert sorted(os.listdir(store.directory)) == ["kept.img", "kept.json", "other.txt"]
    assert len(chain_files) == 6  # 3 chain files, 2 of kept, the chain's record


def test_cleanup_during_a_running_import_removes_nothing_of_it(store, tmp_path):
    seen = []

    def reclaim_midway(fraction):
        if not seen:
            seen.append(store.reclaim())
            seen.append(os.listdir(store.directory))
    store.import_image("live", raw_source(tmp_path), "raw", progress=reclaim_midway)
    assert seen[0] == [] and seen[1][0].startswith(TEMP_PREFIX + "import-live.")
    assert store.get("live").virtual_size == 2 * MiB


def test_cleanup_during_a_running_chain_import_removes_nothing_of_it(store, tmp_path):
    export_to(make_chain(str(tmp_path / "src")), str(tmp_path / "c.tar.gz"))
    seen = []

    def reclaim_midway(fraction):
        if fraction < 1.0 and not seen:
            seen.append(store.reclaim())
    with open(tmp_path / "c.tar.gz", "rb") as f:
        chain.import_chain(f, store, "live", progress=reclaim_midway)
    assert seen == [[]]
    assert len(store.get("live").backing_chain) == 2
