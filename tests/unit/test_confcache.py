"""The light configuration path of read commands: oslo.config's values, never stale ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from virt.conf import GROUPS, make_conf
from virt.confcache import CachedConf, default_cache_dir, resolved_conf
from virt.errors import InvalidConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "virt-driver.conf"
    path.write_text(f"[DEFAULT]\nvirt_type = qemu\nstate_path = {tmp_path}/one\n")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(directory))
    return directory / "virt-driver"


def records(cache) -> list:
    return sorted(cache.glob("conf-*.json")) if cache.exists() else []


def cached(config, overrides=None, args=None):
    """The configuration twice: the second answer must come from the record."""
    args = args if args is not None else ["--config-file", str(config)]
    first = resolved_conf(args, overrides or {})
    assert not isinstance(first, CachedConf)
    second = resolved_conf(args, overrides or {})
    assert isinstance(second, CachedConf)
    return second


def test_a_cached_answer_is_oslo_configs_for_every_option(config, cache):
    conf = cached(config, {"libvirt__connection_uri": "test:///default"})
    full = make_conf(["--config-file", str(config)],
                     libvirt__connection_uri="test:///default")
    for group, opts in GROUPS:
        for opt in opts:
            ours = conf[group][opt.dest] if group else conf[opt.dest]
            theirs = full[group][opt.dest] if group else full[opt.dest]
            assert ours == theirs, (group, opt.dest)
    assert conf.instances_path == f"{config.parent}/one/instances"
    assert conf.libvirt.connection_uri == "test:///default"
    assert conf.config_file == [str(config)]
    assert len(records(cache)) == 1
    assert os.stat(records(cache)[0]).st_mode & 0o777 == 0o600


def test_an_edit_keeping_size_and_mtime_is_seen(config, cache):
    cached(config)
    before = os.stat(config)
    config.write_text(config.read_text().replace("/one", "/two"))
    os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(config).st_size == before.st_size
    assert resolved_conf(["--config-file", str(config)], {}).state_path.endswith("/two")


def test_a_file_added_to_a_config_dir_is_seen(tmp_path, cache):
    confdir = tmp_path / "virt-driver.conf.d"
    confdir.mkdir()
    (confdir / "10-base.conf").write_text("[DEFAULT]\nvirt_type = qemu\n")
    args = ["--config-dir", str(confdir)]
    assert cached(None, args=args).virt_type == "qemu"
    (confdir / "20-xen.conf").write_text("[DEFAULT]\nvirt_type = xen\n")
    assert resolved_conf(args, {}).virt_type == "xen"


def test_an_environment_variable_oslo_reads_is_seen(config, cache, monkeypatch):
    cached(config)
    monkeypatch.setenv("OS_LIBVIRT__CONNECTION_URI", "test:///default")
    conf = resolved_conf(["--config-file", str(config)], {})
    assert conf.libvirt.connection_uri == "test:///default"


def test_oslo_concurrencys_lock_path_variable_is_a_miss(config, cache, monkeypatch):
    # Its default comes from OSLO_LOCK_PATH, read when oslo.concurrency is imported.
    cached(config)
    monkeypatch.setenv("OSLO_LOCK_PATH", "/run/vd-locks")
    assert not isinstance(resolved_conf(["--config-file", str(config)], {}), CachedConf)


def test_overrides_are_part_of_the_key(config, cache):
    cached(config, {"virt_type": "kvm"})
    assert resolved_conf(["--config-file", str(config)], {"virt_type": "xen"}).virt_type == "xen"
    assert resolved_conf(["--config-file", str(config)], {}).virt_type == "qemu"


def test_changed_option_code_is_a_miss(config, cache):
    cached(config)
    record = records(cache)[0]
    data = json.loads(record.read_text())
    paths = [path for path, *_ in data["code"]]
    assert any(p.endswith("virt/conf.py") for p in paths)
    assert any("oslo_concurrency" in p for p in paths)
    data["code"][0][3] += 1  # as if the file had been replaced since
    record.write_text(json.dumps(data))
    assert not isinstance(resolved_conf(["--config-file", str(config)], {}), CachedConf)


@pytest.mark.parametrize("damage", [
    lambda r: r.write_text("{not json"),
    lambda r: r.write_text(json.dumps({"inputs": None})),
    lambda r: r.write_text(r.read_text().replace('"DEFAULT": {', '"DEFAULT": 3, "x": {')),
    lambda r: os.chmod(r, 0o666),
    lambda r: os.chown(r, 65534, 65534),
])
def test_a_corrupt_or_foreign_record_is_a_miss_then_replaced(config, cache, damage):
    cached(config)
    damage(records(cache)[0])
    assert not isinstance(resolved_conf(["--config-file", str(config)], {}), CachedConf)
    assert isinstance(resolved_conf(["--config-file", str(config)], {}), CachedConf)


def test_a_record_with_forged_values_but_other_inputs_is_not_used(config, cache):
    cached(config)
    record = records(cache)[0]
    data = json.loads(record.read_text())
    data["value"]["DEFAULT"]["state_path"] = "/etc"
    data["inputs"]["files"][0][2] = "0" * 64
    record.write_text(json.dumps(data))
    assert resolved_conf(["--config-file", str(config)], {}).state_path.endswith("/one")


def test_an_unwritable_cache_still_gives_the_values(config, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    for _ in range(2):
        conf = resolved_conf(["--config-file", str(config)], {})
        assert not isinstance(conf, CachedConf) and conf.virt_type == "qemu"


def test_a_cache_dir_others_may_write_is_not_used(config, cache):
    cache.mkdir(parents=True)
    os.chmod(cache, 0o777)
    for _ in range(2):
        assert not isinstance(resolved_conf(["--config-file", str(config)], {}), CachedConf)
    assert records(cache) == []


def test_a_bad_value_is_refused_every_time_and_never_cached(tmp_path, cache):
    path = tmp_path / "bad.conf"
    path.write_text("[DEFAULT]\nvirt_type = vmware\n")
    for _ in range(2):
        with pytest.raises(InvalidConfig, match="virt_type"):
            resolved_conf(["--config-file", str(path)], {})
    assert records(cache) == []


def test_a_missing_file_is_oslo_configs_error(tmp_path, cache):
    with pytest.raises(InvalidConfig):
        resolved_conf(["--config-file", str(tmp_path / "absent.conf")], {})


def test_anything_not_stored_is_asked_of_oslo_config(config, cache):
    conf = cached(config)
    assert conf.find_file("virt-driver.conf") == str(config)
    assert conf.config_dir == make_conf(["--config-file", str(config)]).config_dir


def test_no_home_no_cache(monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)
    assert default_cache_dir() is None


def test_a_read_command_with_a_record_imports_no_oslo(config, cache):
    """What the light path is for: list, show, image list and host-info skip oslo.config."""
    code = ("import sys\n"
            "from virt.cli import main\n"
            f"main(['--config-file', {str(config)!r}, 'image', 'list'])\n"
            "print(sorted(m.split('.')[0] for m in sys.modules if m.startswith(\n"
            "    ('oslo_', 'stevedore', 'netaddr', 'rfc3986', 'debtcollector'))))\n")
    env = {**os.environ, "PYTHONPATH": ROOT, "XDG_CACHE_HOME": str(cache.parent)}

    def loaded():
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                             capture_output=True, text=True).stdout
        return set(json.loads(out.splitlines()[-1].replace("'", '"')))
    assert "oslo_config" in loaded()  # the first run loads it and writes the record
    assert loaded() == set()
