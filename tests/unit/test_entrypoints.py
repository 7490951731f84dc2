"""Backends' entry points from a record, seen anew whenever a distribution changes."""

from __future__ import annotations

import os

import pytest

from virt import entrypoints
from virt.driver import BACKEND_GROUP, installed_backends

GROUP = "virt.test_entrypoints"


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A directory on sys.path where distributions appear: add(name, entry points)."""
    directory = tmp_path / "site"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))

    def add(dist: str, points: str) -> None:
        info = directory / f"{dist}-1.0.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[{GROUP}]\n{points}\n")
    return directory, add


def test_the_record_gives_importlib_metadatas_answer(tmp_path):
    from importlib.metadata import entry_points
    expected = {ep.name: ep.value for ep in entry_points(group=BACKEND_GROUP)}
    for _ in range(2):
        assert entrypoints.group_entry_points(BACKEND_GROUP, str(tmp_path)) == expected
    assert len(list(tmp_path.glob("entry-points-*.json"))) == 1


def test_a_new_distribution_is_seen(site, tmp_path):
    site, add = site
    add("one", "a = mod_a:A")
    assert entrypoints.group_entry_points(GROUP, str(tmp_path)) == {"a": "mod_a:A"}
    add("two", "b = mod_b:B")
    assert entrypoints.group_entry_points(GROUP, str(tmp_path)) == {"a": "mod_a:A",
                                                                   "b": "mod_b:B"}


def test_entry_points_rewritten_in_place_are_seen(site, tmp_path):
    site, add = site
    add("one", "a = mod_a:A")
    entrypoints.group_entry_points(GROUP, str(tmp_path))
    points = site / "one-1.0.dist-info" / "entry_points.txt"
    before = os.stat(points)
    points.write_text(f"[{GROUP}]\na = mod_a:Z\n")
    os.utime(points, ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    assert entrypoints.group_entry_points(GROUP, str(tmp_path)) == {"a": "mod_a:Z"}


def test_a_removed_distribution_is_gone(site, tmp_path):
    site, add = site
    add("one", "a = mod_a:A")
    entrypoints.group_entry_points(GROUP, str(tmp_path))
    for path in (site / "one-1.0.dist-info").iterdir():
        path.unlink()
    (site / "one-1.0.dist-info").rmdir()
    assert entrypoints.group_entry_points(GROUP, str(tmp_path)) == {}


def test_a_forged_record_for_other_distributions_is_not_used(site, tmp_path):
    site, add = site
    add("one", "a = mod_a:A")
    entrypoints.group_entry_points(GROUP, str(tmp_path))
    record = next(tmp_path.glob("entry-points-*.json"))
    record.write_text(record.read_text().replace('"mod_a:A"', '"os:system"')
                      .replace("one-1.0", "one-9.9"))
    assert entrypoints.group_entry_points(GROUP, str(tmp_path)) == {"a": "mod_a:A"}


def test_load_names_what_importlib_metadata_would():
    assert entrypoints.load("os.path:join") is os.path.join
    assert entrypoints.load("os:path.join [extra]") is os.path.join


def test_installed_backends_load_the_driver_classes(tmp_path):
    from backends.libvirt.driver import LibvirtDriver
    for cache_dir in (None, str(tmp_path), str(tmp_path)):
        backends = installed_backends(cache_dir)
        assert "libvirt" in backends and backends["libvirt"] is LibvirtDriver
