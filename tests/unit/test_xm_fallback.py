"""The xm backend's side of the automatic fallback: is a toolstack on this host?"""

import pytest

from backends.xm.driver import XmDriver
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
