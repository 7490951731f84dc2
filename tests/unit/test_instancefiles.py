"""An instance's files: one layout, named from the instances path and the uuid."""

import pytest

from virt.errors import InvalidParameter
from virt.instancefiles import InstanceFiles, instance_files_in
from virt.validation import is_uuid

UUID = "0b7c1f4e-0000-4000-8000-000000000001"


def test_the_layout_of_an_instance_directory():
    files = InstanceFiles.of("/srv/instances", UUID)
    assert (files.directory, files.disk, files.console_log, files.seed, files.seed_record) == (
        f"/srv/instances/{UUID}", f"/srv/instances/{UUID}/disk",
        f"/srv/instances/{UUID}/console.log", f"/srv/instances/{UUID}/seed.iso",
        f"/srv/instances/{UUID}/seed.json")


def test_the_uuid_is_canonical_in_the_path():
    assert InstanceFiles.of("/i", "{" + UUID.upper() + "}").directory == f"/i/{UUID}"


@pytest.mark.parametrize("uuid", ["../../etc", "", None, 42, UUID + "/..", "not-a-uuid"])
def test_a_uuid_that_is_no_uuid_names_no_path(uuid):
    with pytest.raises(InvalidParameter, match="instance uuid .*: use a UUID"):
        InstanceFiles.of("/i", uuid)


@pytest.mark.parametrize("value, canonical", [
    (UUID, True), (UUID.upper(), False), (UUID.replace("-", ""), False), ("x", False),
    (None, False), (7, False)])
def test_is_uuid_accepts_only_the_canonical_form(value, canonical):
    assert is_uuid(value) is canonical


def test_instance_files_in_lists_the_directories_only(tmp_path):
    (tmp_path / UUID).mkdir()
    (tmp_path / "kept").mkdir()
    (tmp_path / ".vd-tmp-op-spawn.x").write_text("{}")
    assert instance_files_in(str(tmp_path)) == [
        InstanceFiles(str(tmp_path / UUID)), InstanceFiles(str(tmp_path / "kept"))]
    assert instance_files_in(str(tmp_path / "missing")) == []


def test_a_volume_is_known_by_its_file_in_the_instance_directory():
    files = InstanceFiles.of("/i", UUID)
    first, second = files.new_volume(), files.new_volume()
    assert first != second and first.endswith(".qcow2")
    assert files.is_volume(first) and files.is_volume(second)
    other = InstanceFiles.of("/i", "0b7c1f4e-0000-4000-8000-000000000002")
    assert not other.is_volume(first)
    assert not files.is_volume(files.disk) and not files.is_volume(files.seed)
