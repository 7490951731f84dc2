"""Atomic writes: the result appears whole or not at all."""

import os
import stat

import pytest

from virt.fileutils import atomic_target, atomic_write, remove_quietly


def test_atomic_write_sets_content_and_mode(tmp_path):
    path = tmp_path / "secret.cfg"
    atomic_write(str(path), "vncpasswd = 'x'\n", mode=0o600)
    assert path.read_text() == "vncpasswd = 'x'\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["secret.cfg"]


def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "config"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_target(str(path)) as tmp:
        with open(tmp, "w") as f:
            f.write("half-written")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["config"]


def test_remove_quietly_takes_files_trees_and_nothing(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "f").write_text("x")
    for name in ("d", "f", "missing"):
        remove_quietly(str(tmp_path / name))
    assert os.listdir(tmp_path) == []
