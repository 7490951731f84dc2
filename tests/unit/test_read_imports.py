"""What a read command loads: no oslo.config, no importlib.metadata, no operation's code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.drivers import TEST_URI

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOT_FOR_READS = ("oslo_", "stevedore", "netaddr", "rfc3986", "debtcollector",
                 "importlib.metadata", "virt.conf", "virt.images", "virt.imagestore",
                 "virt.volumecopy", "backends.libvirt.resize", "backends.libvirt.migration",
                 "backends.libvirt.incoming", "backends.libvirt.volumes",
                 "backends.libvirt.blockvolumes", "backends.libvirt.hotplug",
                 "backends.libvirt.livesnapshot", "backends.libvirt.usernet")


def loaded_by(tmp_path, *argv: str) -> set[str]:
    """The modules of NOT_FOR_READS that `virt-driver ARGV` (run in a new process) imported."""
    config = tmp_path / "virt-driver.conf"
    if not config.exists():
        config.write_text(f"[DEFAULT]\nvirt_type = qemu\nstate_path = {tmp_path}/state\n"
                          f"[libvirt]\nconnection_uri = {TEST_URI}\n")
    code = ("import json, sys\n"
            "from virt.cli import main\n"
            f"code = main(['--config-file', {str(config)!r}, *{list(argv)!r}])\n"
            f"print(json.dumps([code, sorted(m for m in sys.modules if m.startswith("
            f"{NOT_FOR_READS!r}))]))\n")
    env = {**os.environ, "PYTHONPATH": ROOT, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    code, modules = json.loads(out.splitlines()[-1])
    assert code == 0
    return {m for m in modules if m in NOT_FOR_READS or m.split(".")[0] in NOT_FOR_READS
            or m.startswith(("oslo_", "importlib.metadata"))}


def test_a_second_list_loads_none_of_it(tmp_path):
    first = loaded_by(tmp_path, "list", "--all")
    assert {"oslo_config", "importlib.metadata"} <= first  # it wrote the records
    assert loaded_by(tmp_path, "list", "--all") == set()
    assert loaded_by(tmp_path, "host-info") == set()
    assert loaded_by(tmp_path, "image", "list") == {"virt.imagestore", "virt.images"}


def test_a_write_command_loads_oslo_config_and_writes_no_record(tmp_path):
    loaded_by(tmp_path, "list")
    records = sorted(os.listdir(tmp_path / "cache" / "virt-driver"))
    assert "oslo_config" in loaded_by(tmp_path, "cache-cleanup")
    assert sorted(os.listdir(tmp_path / "cache" / "virt-driver")) == records


def test_boot_takes_the_cached_configuration_too(tmp_path):
    loaded_by(tmp_path, "list")                 # writes the records
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(1 << 20))
    loaded_by(tmp_path, "image", "import", "img", str(disk), "--format", "raw")
    loaded = loaded_by(tmp_path, "boot", "ri-boot", "--image", "img", "--memory", "64")
    assert not {m for m in loaded if m.startswith(("oslo_config", "importlib.metadata"))}
