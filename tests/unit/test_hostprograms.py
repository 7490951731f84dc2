"""Bootloaders, device models and HVM firmware come only from the operator's lists.

Real files and links: the hostile cases are the ones a tenant reached before,
a shell as the bootloader (run in dom0 as root), a link or '..' to one.
"""

import os

import pytest

from virt.conf import make_conf
from virt.errors import InvalidParameter
from virt.hostprograms import allowed_programs, resolve_host_programs


@pytest.fixture
def host(tmp_path):
    """The allowed lists: a pygrub reached through a link, a device model, a firmware file."""
    tools = tmp_path / "xen"
    tools.mkdir()
    for name, mode in (("pygrub", 0o755), ("qemu-dm", 0o755), ("hvmloader", 0o644),
                       ("plain", 0o644)):
        (tools / name).write_bytes(b"#!/bin/true\n")
        (tools / name).chmod(mode)
    os.symlink(tools / "pygrub", tmp_path / "pygrub-link")
    os.symlink("/bin/sh", tools / "sh-link")
    (tools / "dir").mkdir()
    allowed = {"bootloader": [str(tmp_path / "pygrub-link"), str(tools / "plain"),
                              str(tools / "dir"), str(tools / "gone")],
               "device_model": [str(tools / "qemu-dm")],
               "hvmloader_path": [str(tools / "hvmloader")]}
    return str(tools), allowed


@pytest.mark.parametrize("params, message", [
    ({"bootloader": "/bin/sh"}, "'/bin/sh': not a bootloader this host allows"),
    ({"bootloader": "TOOLS/sh-link"}, "sh-link': not a bootloader this host allows"),
    ({"bootloader": "TOOLS/../../../../../../bin/sh"}, "not a bootloader"),
    ({"bootloader": "TOOLS/qemu-dm"}, "not a bootloader"),
    ({"bootloader": "pygrub"}, "use an absolute path"),
    ({"bootloader": "TOOLS/plain"}, "plain': not an executable regular file"),
    ({"bootloader": "TOOLS/dir"}, "dir': not an executable regular file"),
    ({"bootloader": "TOOLS/gone"}, "gone': cannot use it (No such file"),
    ({"device_model": "/usr/bin/python3"}, "not a device model this host allows"),
    ({"hvmloader_path": "/etc/shadow"}, "'/etc/shadow': not a HVM firmware this host allows"),
])
def test_programs_the_operator_did_not_list_are_refused(host, params, message):
    tools, allowed = host
    params = {k: v.replace("TOOLS", tools) for k, v in params.items()}
    with pytest.raises(InvalidParameter) as err:
        resolve_host_programs(params, allowed)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_listed_programs_resolve_to_their_canonical_path(host):
    tools, allowed = host
    params = {"bootloader": os.path.join(tools, "..", "pygrub-link"),
              "device_model": f"{tools}//qemu-dm", "hvmloader_path": f"{tools}/hvmloader",
              "kernel_args": "ro"}
    assert resolve_host_programs(params, allowed) == {
        "bootloader": f"{tools}/pygrub", "device_model": f"{tools}/qemu-dm",
        "hvmloader_path": f"{tools}/hvmloader", "kernel_args": "ro"}


def test_the_defaults_allow_pygrub_and_the_stock_hvmloader_only(tmp_path):
    allowed = allowed_programs(make_conf(state_path=str(tmp_path)))
    assert allowed == {"bootloader": ["/usr/bin/pygrub", "/usr/lib/xen/bin/pygrub"],
                       "device_model": [], "hvmloader_path": ["/usr/lib/xen/boot/hvmloader"]}
    with pytest.raises(InvalidParameter, match=r"\(none configured\).*\[xm\] device_models"):
        resolve_host_programs({"device_model": "/usr/lib/xen/bin/qemu-dm"}, allowed)


@pytest.mark.parametrize("args", [
    "--output-directory=/etc", "--output=/etc/shadow", "--isconfig", "/etc/shadow",
    "-q /dev/sda", "--entry=1 --output-format=simple", "--entry",
])
def test_bootloader_args_naming_host_files_are_refused(host, args):
    _tools, allowed = host
    with pytest.raises(InvalidParameter, match="bootloader_args.*is not allowed"):
        resolve_host_programs({"bootloader_args": args}, allowed)


def test_bootloader_args_that_choose_from_the_guest_disk_pass(host):
    _tools, allowed = host
    args = "-q --entry=1 --kernel=/boot/vmlinuz --ramdisk=/boot/initrd.img --args=quiet"
    assert resolve_host_programs({"bootloader_args": args}, allowed)["bootloader_args"] == args
