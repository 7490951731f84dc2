"""The xm backend's side of the automatic fallback: is a toolstack on this host?"""

import json
import os
import re
import subprocess
import sys

import pytest

from backends.libvirt.driver import LibvirtDriver
from backends.xm.driver import XmDriver
from tests.xm_double import DoubleHost
from virt.conf import make_conf
from virt.driver import load_driver
from virt.errors import BackendUnavailable


def _bin(directory, name):
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)


def test_unavailable_without_toolstack_or_for_other_virt_types(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = XmDriver.unavailable_reason(make_conf(virt_type="xen"))
    assert reason == "no xl or xm toolstack binary on PATH (install xen-utils)"
    assert "Xen guests only" in XmDriver.unavailable_reason(make_conf(virt_type="kvm"))
    _bin(tmp_path, "xm")
    assert XmDriver.unavailable_reason(make_conf(virt_type="xen")) is None
    assert "no xl toolstack" in XmDriver.unavailable_reason(
        make_conf(virt_type="xen", xm__toolstack="xl"))


def test_load_driver_falls_back_to_xm_when_a_toolstack_is_present(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    conf = make_conf(virt_type="xen")
    with pytest.raises(BackendUnavailable) as err:
        load_driver(conf, backends={"xm": XmDriver})
    assert "libvirt: not installed" in str(err.value)
    assert "no xl or xm toolstack binary on PATH" in str(err.value)
    _bin(tmp_path, "xl")
    driver = load_driver(conf, backends={"xm": XmDriver})
    assert isinstance(driver, XmDriver)
    assert "xm serves" in driver.selection_reason


# With the installed backends (entry points), as a compute manager gets them.

NO_LIBVIRTD = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"


def test_no_libvirtd_and_a_toolstack_gives_the_xm_backend(tmp_path, monkeypatch):
    double = DoubleHost(str(tmp_path / "double"))
    monkeypatch.setenv("PATH", double.bin_dir)
    driver = load_driver(make_conf(virt_type="xen", libvirt__connection_uri=NO_LIBVIRTD))
    assert isinstance(driver, XmDriver)
    assert f"libvirt: cannot connect to {NO_LIBVIRTD}" in driver.selection_reason
    assert driver.selection_reason.endswith("xm serves")


def test_a_libvirtd_without_xen_also_falls_back(tmp_path, monkeypatch):
    _bin(tmp_path, "xl")
    monkeypatch.setenv("PATH", str(tmp_path))
    driver = load_driver(make_conf(virt_type="xen", libvirt__connection_uri="test:///default"))
    assert isinstance(driver, XmDriver)
    assert "test:///default does not offer xen guests (it offers: test)" in \
        driver.selection_reason


def test_neither_libvirtd_nor_a_toolstack_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackendUnavailable) as err:
        load_driver(make_conf(virt_type="xen", libvirt__connection_uri=NO_LIBVIRTD))
    message = str(err.value)
    assert message.startswith("no backend can run xen guests on this host")
    assert f"libvirt: cannot connect to {NO_LIBVIRTD}" in message
    assert "xm: no xl or xm toolstack binary on PATH (install xen-utils)" in message


def test_kvm_never_falls_back_to_xm(tmp_path, monkeypatch):
    _bin(tmp_path, "xl")
    monkeypatch.setenv("PATH", str(tmp_path))
    driver = load_driver(make_conf(virt_type="kvm", libvirt__connection_uri=NO_LIBVIRTD,
                                   libvirt__reconnect_max_backoff=1))
    assert isinstance(driver, LibvirtDriver)
    assert driver.selection_reason == "auto: libvirt, the only backend for virt_type kvm"
    refusal = re.escape(f"cannot connect to libvirt at {NO_LIBVIRTD}:")
    with pytest.raises(BackendUnavailable, match=refusal):
        driver.list_instances()


def test_an_explicit_backend_is_used_as_asked_or_refused():
    assert isinstance(load_driver(make_conf(backend="libvirt")), LibvirtDriver)
    with pytest.raises(BackendUnavailable, match="'xm' is not installed: use one of libvirt"):
        load_driver(make_conf(backend="xm"), backends={"libvirt": LibvirtDriver})


def test_host_info_shows_which_backend_serves(tmp_path):
    double = DoubleHost(str(tmp_path / "double"))
    env = {**os.environ, "PATH": f"{double.bin_dir}:/usr/bin:/bin"}
    cli = f"{sys.prefix}/bin/virt-driver"
    proc = subprocess.run([cli, "--json", "--virt-type", "xen", "--connection-uri", NO_LIBVIRTD,
                           "host-info"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["backend"] == "xm" and info["hypervisor_type"] == "xen"
    assert "libvirt: cannot connect" in info["backend_choice"]
