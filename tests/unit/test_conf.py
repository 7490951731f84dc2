"""Options: defaults, overrides, and the committed sample staying current."""

import os
import subprocess
import sys

import pytest

from virt.conf import list_opts, make_conf
from virt.errors import InvalidConfig
from virt.imagecache import ImageCache
from virt.validation import ACCEPTED_IMAGE_FORMATS

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


@pytest.mark.parametrize("text, message", [
    ("[DEFAULT]\nvirt_type = vmware\n", "[DEFAULT] virt_type (set in CONF) 'vmware': "
                                         "Valid values are [kvm, qemu, xen, lxc]"),
    ("[libvirt]\nkeepalive_interval = -3\n",
     "[libvirt] keepalive_interval (set in CONF) '-3': Should be greater than or equal to 0"),
    ("[xm]\nreboot_timeout = soon\n", "[xm] reboot_timeout (set in CONF) 'soon': "),
    ("[DEFAULT]\nstate_path =\n", "[DEFAULT] state_path (set in CONF) '': use an absolute path"),
    ("[DEFAULT]\nstate_path = var/lib\n",
     "[DEFAULT] state_path (set in CONF) 'var/lib': use an absolute path"),
    ("[DEFAULT]\ninstances_path = ./instances\n", "[DEFAULT] instances_path (set in CONF) "
                                                 "'./instances': use an absolute path"),
    ("[DEFAULT]\nlock_path = locks\n", "[DEFAULT] lock_path (set in CONF) 'locks'"),
    ("[images]\ncache_path = $state_path\nstore_path = images\n",
     "[images] store_path (set in CONF) 'images'"),
    ("[oslo_concurrency]\nlock_path = tmp\n", "[oslo_concurrency] lock_path (set in CONF) 'tmp'"),
    ("[DEFAULT]\nboot_file_dirs = /srv/kernels,kernels\n",
     "[DEFAULT] boot_file_dirs (set in CONF) 'kernels'"),
    ("[DEFAULT]\nbootloaders = pygrub\n", "[DEFAULT] bootloaders (set in CONF) 'pygrub'"),
    ("[xm]\ndevice_models = qemu-dm\n", "[xm] device_models (set in CONF) 'qemu-dm'"),
    ("[images]\nallowed_formats = raw,file\n", "[images] allowed_formats (set in CONF) "
                                               "'raw,file': Valid values are [raw, qcow2"),
    ("[images]\nallowed_formats = blkdebug\n", "[images] allowed_formats (set in CONF) 'blkdebug'"),
    ("[images]\nallowed_formats =\n", "[images] allowed_formats (set in CONF) is empty"),
    ("[images]\nmax_virtual_size = 1X\n", "[images] max_virtual_size (set in CONF) '1X'"),
])
def test_a_bad_value_is_one_line_naming_option_and_value(tmp_path, text, message):
    path = tmp_path / "virt-driver.conf"
    path.write_text(text)
    with pytest.raises(InvalidConfig) as err:
        make_conf(["--config-file", str(path)])
    assert "configuration " + message.replace("CONF", str(path)) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override", [{"state_path": ""}, {"state_path": "state"},
                                      {"images__cache_path": "cache"}])
def test_relative_paths_are_refused_from_overrides_too(override):
    with pytest.raises(InvalidConfig, match="use an absolute path"):
        make_conf(**override)


def test_every_known_format_is_allowed(tmp_path):
    path = tmp_path / "virt-driver.conf"
    path.write_text("[images]\nallowed_formats = raw,qcow2,vmdk,vpc,vhdx\n")
    conf = make_conf(["--config-file", str(path)])
    assert conf.images.allowed_formats == list(ACCEPTED_IMAGE_FORMATS)


def test_oslo_concurrency_lock_path_holds_the_image_locks(tmp_path):
    conf = make_conf(state_path=str(tmp_path / "state"),
                     oslo_concurrency__lock_path=str(tmp_path / "locks"))
    source = tmp_path / "disk.raw"
    source.write_bytes(b"\0" * 65536)
    cache = ImageCache.from_conf(conf)
    cache.store.import_image("img", str(source), "raw")
    cache.fetch_base("img")
    assert [name.startswith("virt-driver-image-") for name in os.listdir(tmp_path / "locks")] \
        == [True]
    assert not os.path.exists(conf.lock_path)


def test_every_group_is_listed_for_the_generator():
    assert [group for group, _ in list_opts()] == [
        "DEFAULT", "libvirt", "images", "xm", "oslo_concurrency"]


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
