"""Options: defaults, overrides, and the committed sample staying current."""

import os
import subprocess
import sys

import pytest

from virt.conf import list_opts, make_conf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "etc", "virt-driver", "virt-driver.conf.sample")


def test_defaults_derive_paths_from_state_path(tmp_path):
    conf = make_conf(state_path=str(tmp_path))
    assert conf.instances_path == f"{tmp_path}/instances"
    assert conf.images.store_path == f"{tmp_path}/images"
    assert conf.images.cache_path == f"{tmp_path}/_base"
    assert conf.backend == "auto" and conf.libvirt.connection_uri == ""


def test_config_file_is_read(tmp_path):
    path = tmp_path / "virt-driver.conf"
    path.write_text("[DEFAULT]\nvirt_type = qemu\n[xm]\ntoolstack = xl\n")
    conf = make_conf(["--config-file", str(path)])
    assert (conf.virt_type, conf.xm.toolstack) == ("qemu", "xl")


def test_a_bad_choice_is_refused(tmp_path):
    path = tmp_path / "virt-driver.conf"
    path.write_text("[DEFAULT]\nvirt_type = vmware\n")
    conf = make_conf(["--config-file", str(path)])
    with pytest.raises(ValueError, match="vmware"):
        conf.virt_type  # noqa: B018 - the value is checked when read


def test_every_group_is_listed_for_the_generator():
    assert [group for group, _ in list_opts()] == ["DEFAULT", "libvirt", "images", "xm"]


def test_committed_sample_is_current(tmp_path):
    out = tmp_path / "sample"
    generator = os.path.join(os.path.dirname(sys.executable), "oslo-config-generator")
    subprocess.run([generator, "--namespace", "virt-driver", "--output-file", str(out)],
                   check=True)
    with open(SAMPLE) as f:
        committed = f.read()
    assert out.read_text() == committed, (
        "etc/virt-driver/virt-driver.conf.sample is stale: run `tox -e genconfig` "
        "(or `make genconfig`) and commit it")
