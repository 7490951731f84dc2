"""What a read command loads: no oslo.config, no importlib.metadata, no operation's code.

Each module below is imported where it is used, not at the top of a module a
read command loads: one imported at the top again shows here.
"""

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
                 "backends.libvirt.livesnapshot", "backends.libvirt.usernet",
                 # boot's and resize's options, and what only a spawn uses
                 "virt.cli_seed", "virt.cli_resize", "virt.seedinput", "virt.seed",
                 "virt.guest", "virt.params", "virt.forwards", "virt.disk", "virt.bootfiles",
                 "virt.hostprograms", "virt.instancefiles", "virt.locks", "virt.recovery",
                 "virt.rollback", "virt.capabilities", "virt.contenthash", "virt.objects",
                 # the standard library's slow starters
                 "hashlib", "_hashlib", "uuid", "platform", "ipaddress", "tempfile",
                 "random", "subprocess", "ctypes")
INSTANCES = {"virt.objects"}  # what list, show and host-info return; image list needs none
SHOW_ALSO = {"virt.guest", "virt.params", "virt.forwards", "virt.disk"}


def loaded_by(tmp_path, *argv: str, before: str = "") -> set[str]:
    """The modules of NOT_FOR_READS that `virt-driver ARGV` (run in a new process) imported.

    before: Python run first in that process (its own imports are not counted).
    """
    config = tmp_path / "virt-driver.conf"
    if not config.exists():
        config.write_text(f"[DEFAULT]\nvirt_type = qemu\nstate_path = {tmp_path}/state\n"
                          f"[libvirt]\nconnection_uri = {TEST_URI}\n")
    code = (f"{before}\n"
            "import json, sys\n"
            "already = set(sys.modules)\n"
            "from virt.cli import main\n"
            f"code = main(['--config-file', {str(config)!r}, *{list(argv)!r}])\n"
            f"print(json.dumps([code, sorted(m for m in set(sys.modules) - already "
            f"if m.startswith({NOT_FOR_READS!r}))]))\n")
    env = {**os.environ, "PYTHONPATH": ROOT, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    code, modules = json.loads(out.splitlines()[-1])
    assert code == 0
    return {m for m in modules if m in NOT_FOR_READS or m.split(".")[0] in NOT_FOR_READS
            or m.startswith(("oslo_", "importlib.metadata"))}


def defined_instance(tmp_path) -> str:
    """Python that defines an instance of this test's configuration on test:///default
    (shared by the connections of one process), with libvirt alone."""
    from virt import images
    from virt.conf import make_conf
    from virt.driver import load_driver
    from virt.imagestore import LocalImageStore
    from virt.objects import Flavor, Instance
    loaded_by(tmp_path, "list")  # writes the configuration file
    conf = make_conf(["--config-file", str(tmp_path / "virt-driver.conf")])
    disk = tmp_path / "disk.raw"
    images.create_image("raw", str(disk), "1M")
    LocalImageStore.from_conf(conf).import_image("img", str(disk), "raw")
    driver = load_driver(conf)
    xml = driver.describe_spawn(Instance(name="ri-show", image="img", flavor=Flavor(64, 1, 1)),
                                "img")
    driver.close()
    return (f"import libvirt\nkept = libvirt.open({TEST_URI!r})\n"
            f"kept.defineXML({xml!r})\n")


def test_a_second_list_loads_none_of_it(tmp_path):
    first = loaded_by(tmp_path, "list", "--all")
    assert {"oslo_config", "importlib.metadata"} <= first  # it wrote the records
    assert loaded_by(tmp_path, "list", "--all") == INSTANCES
    assert loaded_by(tmp_path, "host-info") == INSTANCES
    assert loaded_by(tmp_path, "image", "list") == {"virt.imagestore", "virt.images",
                                                    "virt.contenthash", "virt.recovery"}


def test_show_loads_the_guest_reading_only(tmp_path):
    """show rebuilds the Instance from the domain (virt.guest and its tables), nothing more."""
    assert loaded_by(tmp_path, "show", "ri-show", before=defined_instance(tmp_path)) \
        == INSTANCES | SHOW_ALSO


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
