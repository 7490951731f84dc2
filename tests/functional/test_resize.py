"""Resize on the demo guest: what it reports after a cold resize and while it runs.

The demo guest reports its online CPUs, MemTotal and disk sizes at boot,
and while it waits reports any change of them ("cpus=N", "mem_kb=N",
"disk=vda bytes=N"; it brings a hot-added CPU online itself).
"""

from __future__ import annotations

import os
import time

import pytest

from tests.support.guests import (
    BUSY_BOOT_TIMEOUT,
    DEMO_GUEST_DIR,
    console_lines,
    demo_conf,
    spawn_demo_guest,
    wait_for_console,
)
from virt.cli import main
from virt.errors import InvalidParameter
from virt.objects import Flavor

GIB = 1 << 30
FLAVOR = Flavor(memory_mb=128, vcpus=1, root_gb=1, name="rz")
PREFIX = "rz-"


@pytest.fixture
def driver(tmp_path, libvirt_daemons, demo_driver):
    return demo_driver(demo_conf(tmp_path / "state", libvirt_daemons), PREFIX, init_host=False)


def _guest(driver, demo_guest, suffix, **params):
    return spawn_demo_guest(driver, demo_guest, PREFIX + suffix, FLAVOR, **params)


def _boot_report(lines: list[str], boot: int) -> dict[str, str]:
    """key -> value of the lines the `boot`th boot (1, 2, ...) printed up to 'ready'."""
    starts = [i for i, line in enumerate(lines) if line == "boot"]
    report = lines[starts[boot - 1]:]
    report = report[:report.index("ready")]
    return dict(line.split("=", 1) for line in report if line.startswith(("cpus=", "mem_kb=")))


def _last(lines: list[str], key: str) -> int:
    return int([line for line in lines if line.startswith(key + "=")][-1].split("=")[1])


def _wait_until(console, predicate, what: str) -> list[str]:
    deadline = time.monotonic() + 60
    while not predicate(lines := console_lines(console)):
        if time.monotonic() > deadline:
            pytest.fail(f"the guest did not report {what} within 60 s; it showed {lines}",
                        pytrace=False)
        time.sleep(0.2)
    return lines


def test_cold_resize_is_seen_at_the_next_boot_and_kept_by_a_hard_reboot(driver, demo_guest):
    instance, console = _guest(driver, demo_guest, "cold")
    host = driver.get_host_info()
    driver.power_off(instance)
    with pytest.raises(InvalidParameter, match=f"this host has {host.cpu_total} vCPUs"):
        driver.resize(instance, vcpus=host.cpu_total + 1)
    with pytest.raises(InvalidParameter, match="this host has .* MiB"):
        driver.resize(instance, memory_mb=host.memory_total + 1)
    assert driver.get_instance(instance.name).flavor == FLAVOR  # refusals changed nothing

    driver.resize(instance, root_gb=2, vcpus=2, memory_mb=256)
    assert driver.get_instance(instance.name).flavor == Flavor(
        memory_mb=256, vcpus=2, root_gb=2, name="rz")
    directory = os.path.join(driver.conf.instances_path, instance.uuid)
    assert [n for n in os.listdir(directory) if n.startswith(".vd-")] == []
    with pytest.raises(InvalidParameter, match="the root disk has 2 GiB and shrinking it"):
        driver.resize(instance, root_gb=1)
    driver.power_on(instance)
    lines = wait_for_console(console, "ready", count=2, timeout=BUSY_BOOT_TIMEOUT)
    first, second = _boot_report(lines, 1), _boot_report(lines, 2)
    assert (first["cpus"], second["cpus"]) == ("1", "2")
    assert int(second["mem_kb"]) - int(first["mem_kb"]) > 100 * 1024  # 128 MiB more
    assert lines.count(f"disk=vda bytes={2 * GIB}") == 1
    driver.reboot(instance, hard=True)  # the domain defined again from its metadata
    lines = wait_for_console(console, "ready", count=3, timeout=BUSY_BOOT_TIMEOUT)
    assert _boot_report(lines, 3) == second
    assert lines.count(f"disk=vda bytes={2 * GIB}") == 2


def test_live_resize_within_the_boot_maximums_is_seen_by_the_running_guest(
        driver, demo_guest, tmp_path, capsys):
    instance, console = _guest(driver, demo_guest, "live", max_vcpus="2",
                               max_memory_mb="384")
    # the balloon takes the guest down to its 128 MiB first
    _wait_until(console, lambda lines: _last(lines, "mem_kb") < 160 * 1024, "128 MiB")
    with pytest.raises(InvalidParameter, match="above the 384 MiB this guest booted with"):
        driver.resize(instance, memory_mb=512)
    with pytest.raises(InvalidParameter, match="this host has"):
        driver.resize(instance, vcpus=driver.get_host_info().cpu_total + 1)
    assert driver.get_instance(instance.name).flavor == FLAVOR

    config = tmp_path / "cli.conf"
    config.write_text(f"[DEFAULT]\nvirt_type = qemu\nstate_path = {driver.conf.state_path}\n"
                      f"boot_file_dirs = {DEMO_GUEST_DIR}\n")
    assert main(["--config-file", str(config), "resize", instance.name, "--root-gb", "2",
                 "--vcpus", "2", "--memory", "384"]) == 0
    assert f"resized {instance.name}: 2 vCPUs, 384 MiB, 2 GiB root disk" \
        in capsys.readouterr().out
    wait_for_console(console, f"disk=vda bytes={2 * GIB}")
    wait_for_console(console, "cpus=2")
    _wait_until(console, lambda lines: _last(lines, "mem_kb") > 300 * 1024, "384 MiB")
    info = driver.get_info(instance)
    assert (info.num_cpu, info.mem_kb) == (2, 384 * 1024)
    assert instance.name in driver.list_instances()  # the live metadata still says whose
    assert driver.get_instance(instance.name).flavor == Flavor(
        memory_mb=384, vcpus=2, root_gb=2, name="rz")
    with pytest.raises(InvalidParameter, match="shrinking"):
        driver.resize(instance, root_gb=1)
