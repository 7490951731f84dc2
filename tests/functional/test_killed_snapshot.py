"""A snapshot killed with SIGKILL while the guest is saved: the next call restores it.

A qemu-img on PATH that stops at `convert` (the copy) makes the moment
deterministic: the snapshot process has managed-saved the guest and is
copying its disk when it is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from backends.libvirt.driver import LibvirtDriver
from tests.functional.conftest import DEMO_GUEST_DIR, console_lines, wait_for_console
from virt.conf import make_conf
from virt.imagestore import LocalImageStore
from virt.objects import NIC, Flavor, Instance, PowerState

FLAVOR = Flavor(memory_mb=128, vcpus=1, root_gb=1, name="owner")
COPY_TIMEOUT = 120.0


@pytest.fixture
def driver(tmp_path, libvirt_daemons, demo_guest):
    conf = make_conf(virt_type="qemu", state_path=str(tmp_path / "state"),
                     boot_file_dirs=[str(DEMO_GUEST_DIR)],
                     libvirt__connection_uri=libvirt_daemons, libvirt__shutdown_timeout=0)
    LocalImageStore.from_conf(conf).import_image("demo", demo_guest.disk, "raw",
                                                 {"arch": "x86_64"})
    driver = LibvirtDriver(conf)
    yield driver
    for name in driver.list_instances():
        if name.startswith("owner-"):  # other tests' guests share this libvirtd
            driver.destroy(driver.get_instance(name))
    driver.close()


def _stopping_qemu_img(bindir, flag) -> dict[str, str]:
    """An environment whose qemu-img announces `convert` in `flag` and then waits."""
    bindir.mkdir()
    shim = bindir / "qemu-img"
    shim.write_text(f'#!/bin/sh\nif [ "$1" = convert ]; then : > {flag}; exec sleep 600; fi\n'
                    'exec /usr/bin/qemu-img "$@"\n')
    shim.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join(sys.path)}


def _wait_for_file(path, process) -> None:
    deadline = time.monotonic() + COPY_TIMEOUT
    while not os.path.exists(path):
        if process.poll() is not None:
            pytest.fail(f"the snapshot ended (exit {process.returncode}) before its copy: "
                        f"{process.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"the snapshot did not reach its copy within {COPY_TIMEOUT:.0f}s")
        time.sleep(0.05)


def test_a_guest_a_killed_snapshot_left_saved_runs_again_after_the_next_call(
        driver, demo_guest, tmp_path, libvirt_system):
    name = f"owner-snap-{uuid.uuid4().hex[:8]}"
    instance = Instance(name=name, flavor=FLAVOR, image="demo",
                        nics=(NIC(mac="52:54:00:0c:00:01"),),
                        params={"kernel_path": demo_guest.kernel,
                                "initrd_path": demo_guest.initrd,
                                "kernel_args": demo_guest.cmdline()})
    driver.spawn(instance, "demo")
    directory = os.path.join(driver.conf.instances_path, instance.uuid)
    console = os.path.join(directory, "console.log")
    wait_for_console(console, "ready")

    flag = tmp_path / "copying"
    script = textwrap.dedent(f"""
        from backends.libvirt.driver import LibvirtDriver
        from virt.conf import make_conf
        conf = make_conf(virt_type="qemu", state_path={str(tmp_path / "state")!r},
                         boot_file_dirs=[{str(DEMO_GUEST_DIR)!r}],
                         libvirt__connection_uri={driver.uri!r})
        driver = LibvirtDriver(conf)
        driver.snapshot(driver.get_instance({name!r}), "killed-snap")
    """)
    snapshot = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE,
                                text=True, env=_stopping_qemu_img(tmp_path / "bin", flag))
    _wait_for_file(flag, snapshot)
    snapshot.send_signal(signal.SIGKILL)
    snapshot.wait()

    dom = libvirt_system.lookupByName(name)
    assert not dom.isActive() and dom.hasManagedSaveImage()  # what the kill left
    assert os.path.exists(os.path.join(directory, "snapshot-pending"))

    assert driver.get_info(instance).state is PowerState.RUNNING
    assert not os.path.exists(os.path.join(directory, "snapshot-pending"))
    assert name in driver.list_instances()
    assert console_lines(console).count("boot") == 1  # restored, not booted again
    driver.destroy(instance)
