"""The parameter contract (virt/params.py): its table, and how a backend's support is read."""

import re

import pytest

from backends.xm import params as xm_params
from virt import guest
from virt import params as contract
from virt.errors import InvalidParameter, NotSupported
from virt.objects import BlockDevice, GuestKind, Instance

BACKENDS = {"libvirt": guest.SUPPORT, "xm": xm_params.SUPPORT}


def test_every_row_is_one_param_with_a_default_its_own_check_accepts():
    names = [p.name for p in contract.PARAMS]
    assert len(names) == len(set(names))
    for param in contract.PARAMS:
        assert param.kinds and param.help, param.name
        if param.default is not None and param.syntax is not None:
            assert param.syntax.ok(param.default), param.name
    assert not set(contract.RETIRED) & set(names)


def test_every_param_is_honoured_somewhere_and_only_for_its_kinds():
    for backend, support in BACKENDS.items():
        for name, kinds in support.items():
            assert name in contract.BY_NAME, (backend, name)
            assert kinds <= contract.BY_NAME[name].kinds, (backend, name)
    for param in contract.PARAMS:
        honoured = frozenset().union(*(s.get(param.name, frozenset())
                                       for s in BACKENDS.values()))
        assert honoured == param.kinds, param.name


def test_unknown_retired_and_misplaced_keys_are_refused_with_what_to_do():
    support = {"boot_order": contract.HVM}
    with pytest.raises(InvalidParameter, match=re.escape(
            "params['boot_ordr'] is not a known param: use one of kernel_image, ")):
        contract.check_params(GuestKind.HVM, {"boot_ordr": "c"}, support, "test")
    with pytest.raises(InvalidParameter, match="pass use_localtime instead"):
        contract.check_params(GuestKind.HVM, {"localtime": "1"}, support, "test")
    with pytest.raises(InvalidParameter, match="not a known param for pv guests: use one of "
                                               "kernel_image"):
        contract.check_params(GuestKind.PV, {"boot_order": "c"}, support, "test")
    with pytest.raises(NotSupported, match=re.escape(
            "params['acpi']: the test backend cannot honour it for hvm guests")):
        contract.check_params(GuestKind.HVM, {"acpi": "x"}, support, "test")


def test_defaults_come_from_the_table_for_what_the_backend_honours():
    support = {"boot_order": contract.HVM, "on_crash": contract.BOTH, "acpi": contract.PV}
    assert contract.check_params(GuestKind.HVM, {"boot_order": ""}, support, "test") == {
        "boot_order": "c", "on_crash": "destroy"}
    assert contract.check_params(GuestKind.HVM, {"on_crash": "preserve"}, support, "t")[
        "on_crash"] == "preserve"


def test_both_backends_read_the_same_defaults():
    libvirt = contract.check_params(GuestKind.HVM, {}, guest.SUPPORT, "libvirt")
    xm = xm_params.check_syntax(GuestKind.HVM, {})
    shared = libvirt.keys() & xm.keys()
    assert {"boot_order", "use_localtime", "on_crash", "acpi"} <= shared
    assert {k: libvirt[k] for k in shared} == {k: xm[k] for k in shared}
    assert "vnc_bind_address" not in libvirt and "vnc_bind_address" not in xm
    assert contract.VNC_LOOPBACK == "127.0.0.1"


def test_a_user_forward_is_checked_by_its_own_parser():
    with pytest.raises(InvalidParameter, match="forwards listen on 127.0.0.1 only"):
        contract.check_value("user_forwards", "52:54:00:00:00:01=0.0.0.0:2222:22")
    assert contract.check_value("user_forwards", "52:54:00:00:00:01=2222:22")


@pytest.mark.parametrize("name, value, virt_type, refused", [
    ("on_poweroff", "preserve", "qemu", True),
    ("on_reboot", "rename-restart", "kvm", True),
    ("on_crash", "rename-restart", "qemu", True),
    ("on_crash", "preserve", "qemu", False),
    ("on_poweroff", "preserve", "xen", False),
    ("pae", "false", "kvm", True),
])
def test_what_qemu_cannot_express_is_not_supported(name, value, virt_type, refused):
    instance = Instance(name="lc", params={name: value})
    build = lambda: guest.build_domain(instance, [BlockDevice("/d", "raw")], [],  # noqa: E731
                                       virt_type, 4_017_000)
    if refused:
        with pytest.raises(NotSupported, match=rf"params\['{name}'\]"):
            build()
    else:
        assert getattr(build(), name) == value
