"""User-mode NIC with host ports forwarded on 127.0.0.1 only, with the real QEMU: the
guest sees the NIC, QEMU listens on 127.0.0.1 and nowhere else, a hard reboot keeps
the forward, `virt-driver ssh --print` names it; other addresses are refused first.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from tests.support.cli import run_cli
from tests.support.guests import cli_config, demo_conf, wait_for_console
from virt.errors import InvalidParameter
from virt.forwards import parse_forward
from virt.objects import NIC, Flavor, Instance

MAC = "52:54:00:5e:ed:41"


@pytest.fixture
def driver(tmp_path, libvirt_daemons, demo_driver):
    conf = demo_conf(tmp_path, libvirt_daemons, libvirt__shutdown_timeout=20,
                     libvirt__shutdown_retry_interval=3)
    return demo_driver(conf, "seeds-")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listeners(port: int) -> list[str]:
    """Local addresses of the TCP sockets listening on `port`."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    return sorted(line.split()[3] for line in out.splitlines())


def _instance(demo_guest, forward: str) -> Instance:
    return Instance(name="seeds-fwd", image="demo", nics=(NIC(mac=MAC),),
                    flavor=Flavor(memory_mb=192, vcpus=1, root_gb=1),
                    params={"kernel_path": demo_guest.kernel, "initrd_path": demo_guest.initrd,
                            "kernel_args": demo_guest.cmdline("wait"),
                            "user_forwards": f"{MAC}={forward}"})


def test_forward_listens_on_loopback_only_and_survives_a_hard_reboot(driver, demo_guest):  # noqa: F811
    port = _free_port()
    instance = _instance(demo_guest, f"{port}:22")
    driver.spawn(instance, "demo")
    console = os.path.join(driver.conf.instances_path, instance.uuid, "console.log")
    lines = wait_for_console(console, "ready")
    assert f"mac={MAC}" in lines
    assert _listeners(port) == [f"127.0.0.1:{port}"]

    code, out, err = run_cli(cli_config(driver), "ssh", instance.name, "--print")
    assert (code, err, out) == (0, "", f"ssh -p {port} debian@127.0.0.1\n")
    code, out, _err = run_cli(cli_config(driver), "--json", "show", instance.name)
    assert json.loads(out)["ssh"] == f"ssh -p {port} debian@127.0.0.1"
    assert json.loads(out)["nics"] == f"{MAC} (user, 127.0.0.1:{port}->22)"

    driver.reboot(instance, hard=True)
    lines = wait_for_console(console, "ready", count=2)
    assert lines.count(f"mac={MAC}") == 2
    assert _listeners(port) == [f"127.0.0.1:{port}"]
    driver.destroy(instance)
    assert _listeners(port) == []


@pytest.mark.parametrize("forward", ["0.0.0.0:2222:22", "192.0.2.1:2222:22", ":2222:22"])
def test_a_forward_on_another_address_is_refused_before_anything(driver, demo_guest,  # noqa: F811
                                                                 forward):
    with pytest.raises(InvalidParameter, match="forwards listen on 127.0.0.1 only"):
        driver.spawn(_instance(demo_guest, forward), "demo")
    assert os.listdir(driver.conf.instances_path) == []
    with pytest.raises(InvalidParameter, match="use a port number"):
        parse_forward("2222:99999")
