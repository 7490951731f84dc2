"""Read commands on the real libvirtd take the cached configuration only while it is true.

A guest is defined (never started) under one configuration; `virt-driver
list --all` and `show` as processes see it. The config file is then edited
to another state path of the same length with its mtime put back, so that
only its bytes changed: the next `list` must use the new instances path
(the guest is no longer this configuration's) and `show` must say not
found; restoring the file brings the guest back.
"""

from __future__ import annotations

import os
import uuid

import pytest

from tests.support.cli import run_cli
from tests.support.guests import remove_domain
from virt import images
from virt.conf import make_conf
from virt.driver import load_driver
from virt.imagestore import LocalImageStore
from virt.objects import Flavor, Instance

PREFIX = "rf-read-"


@pytest.fixture
def defined(tmp_path, libvirt_system):
    """(config path, guest name): one shut-off guest of that configuration."""
    config = tmp_path / "virt-driver.conf"
    config.write_text(f"[DEFAULT]\nvirt_type = qemu\nstate_path = {tmp_path}/sA\n")
    conf = make_conf(["--config-file", str(config)])
    raw = tmp_path / "tiny.raw"
    images.create_image("raw", str(raw), "1M")
    LocalImageStore.from_conf(conf).import_image("tiny", str(raw), "raw")
    driver = load_driver(conf)
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    try:
        instance = Instance(name=name, image="tiny", flavor=Flavor(memory_mb=64, vcpus=1))
        libvirt_system.defineXML(driver.describe_spawn(instance, "tiny"))
        yield config, name
    finally:
        driver.close()
        remove_domain(libvirt_system, name)


def listed(config) -> list[str]:
    code, out, err = run_cli(str(config), "list", "--all")
    assert code == 0, err
    return [line.split()[0] for line in out.splitlines()[1:]]


def test_list_and_show_follow_an_edit_that_keeps_size_and_mtime(defined, tmp_path):
    config, name = defined
    assert name in listed(config)
    assert name in listed(config)  # from the record the first run wrote
    assert any(f.startswith("conf-") for f in os.listdir(
        os.path.join(os.environ["XDG_CACHE_HOME"], "virt-driver")))
    before = os.stat(config)
    original = config.read_text()
    config.write_text(original.replace("/sA", "/sB"))
    os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert name not in listed(config)
    code, _, err = run_cli(str(config), "show", name)
    assert code == 1 and "not" in err and name in err
    config.write_text(original)
    assert name in listed(config)
    code, out, _ = run_cli(str(config), "show", name)
    assert code == 0 and "shutoff" in out
