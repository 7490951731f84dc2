"""One `backend` fixture, three real backends: the contract tests run against each.

- libvirt-test: LibvirtDriver on libvirt's own test:///default driver;
- libvirt-qemu: LibvirtDriver on the real qemu:///system daemon, booting the
  tiny demo guest (tools/demo-guest) under TCG;
- xm: XmDriver on the toolstack double (tests/xm_double), spelled `xl`.

Each gives a driver, an image in its store and instances that boot there;
the tests ask every one the same things and expect the same answers. Guests
are named ct-...; each test removes what it made.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from backends.libvirt.driver import LibvirtDriver
from backends.xm.driver import XmDriver
from tests.support.guests import DEMO_GUEST_DIR
from tests.support.xm import FixedProbe
from tests.xm_double import DoubleHost
from virt import images
from virt.conf import make_conf
from virt.driver import ComputeDriver
from virt.errors import VirtError
from virt.imagecache import ImageCache
from virt.imagestore import LocalImageStore
from virt.objects import NIC, Flavor, GuestKind, Instance, PowerState

PREFIX = "ct-"
MAC = "52:54:00:c7:00:01"
# What a guest that is up reports: xl shows a running guest as blocked between slices.
UP = {PowerState.RUNNING, PowerState.BLOCKED}

# A valid value of every param of virt/params.py, for asking a backend about it.
SAMPLES = {
    "kernel_image": "img", "initrd_image": "img", "kernel_path": "/boot/vmlinuz",
    "initrd_path": "/boot/initrd.img", "kernel_args": "quiet", "root_path": "/dev/xvda1",
    "bootloader": "/usr/bin/pygrub", "bootloader_args": "-q",
    "hvmloader_path": "/usr/lib/xen/boot/hvmloader", "device_model": "/usr/lib/xen/bin/qemu-dm",
    "boot_order": "dc", "cdrom_image": "img", "cdrom_image_path": "/srv/iso/install.iso",
    "acpi": "true", "apic": "true", "pae": "true", "nic_type": "e1000", "serial": "pty",
    "usb_tablet": "true", "vnc_bind_address": "127.0.0.1", "vnc_password": "s3cret",
    "use_localtime": "true", "disk_cache": "none", "disk_io": "native", "disk_prefix": "hd",
    "cpu_mask": "0", "max_vcpus": "2", "max_memory_mb": "256",
    "user_forwards": f"{MAC}=2222:22", "on_poweroff": "destroy",
    "on_reboot": "restart", "on_crash": "preserve",
}


@dataclass
class Backend:
    """A driver under test and what its tests need to know about its host."""

    mac = MAC
    up = UP

    name: str
    driver: ComputeDriver
    image: str
    image_size: int
    base_params: dict[str, str] = field(default_factory=dict)
    # Params that make a guest not take a soft reboot (it restarts or never hears it).
    deaf_params: dict[str, str] = field(default_factory=dict)
    make_deaf: Callable[[], None] = lambda: None
    memory_mb: int = 128

    def instance(self, name: str, root_gb: int = 1, deaf: bool = False,
                 **params: str) -> Instance:
        extra = self.deaf_params if deaf else {}
        if deaf:
            self.make_deaf()
        return Instance(name=PREFIX + name, image=self.image, kind=GuestKind.HVM,
                        flavor=Flavor(memory_mb=self.memory_mb, vcpus=1, root_gb=root_gb),
                        params={**self.base_params, **extra, **params}, nics=(NIC(MAC),))

    def remove_all(self) -> None:
        for name in self.driver.list_instances():
            if name.startswith(PREFIX):
                with contextlib.suppress(VirtError):
                    self.driver.destroy(self.driver.get_instance(name))


def _store(conf, source: str, name: str, properties=None) -> LocalImageStore:
    store = LocalImageStore.from_conf(conf)
    store.import_image(name, source, "raw", properties or {})
    return store


def _libvirt_test(tmp_path) -> Iterator[Backend]:
    conf = make_conf(virt_type="qemu", state_path=str(tmp_path / "state"),
                     libvirt__connection_uri="test:///default", libvirt__shutdown_timeout=2,
                     libvirt__shutdown_retry_interval=1, libvirt__wait_soft_reboot_seconds=2)
    raw = tmp_path / "tiny.raw"
    images.create_image("raw", str(raw), "1M")
    _store(conf, str(raw), "tiny")
    driver = LibvirtDriver(conf, event_stop_delay=0.1)
    driver.init_host("localhost")
    backend = Backend(
        "libvirt-test", driver, "tiny", 1 << 20,
        # the test driver restarts such a guest instead of shutting it off
        deaf_params={"on_poweroff": "restart"})
    yield backend
    backend.remove_all()
    driver.close()


def _libvirt_qemu(tmp_path, uri: str, guest) -> Iterator[Backend]:
    conf = make_conf(virt_type="qemu", state_path=str(tmp_path / "state"),
                     boot_file_dirs=[str(DEMO_GUEST_DIR)], libvirt__connection_uri=uri,
                     libvirt__shutdown_timeout=1, libvirt__shutdown_retry_interval=1,
                     libvirt__wait_soft_reboot_seconds=3)
    _store(conf, guest.disk, "demo", {"arch": "x86_64"})
    driver = LibvirtDriver(conf)
    driver.init_host("localhost")
    # Short timeouts and no waiting for the guest to boot keep this part near two
    # minutes; the soft reboot of a booted demo guest is tests/functional's.
    backend = Backend(
        "libvirt-qemu", driver, "demo", os.path.getsize(guest.disk),
        base_params={"kernel_path": guest.kernel, "initrd_path": guest.initrd,
                     "kernel_args": guest.cmdline("wait")},
        # the guest never hears the power button
        deaf_params={"kernel_args": guest.cmdline("wait") + " acpi=off"},
        memory_mb=192)
    try:
        yield backend
    finally:
        backend.remove_all()
        driver.close()


def _xm(tmp_path, monkeypatch) -> Iterator[Backend]:
    double = DoubleHost(str(tmp_path / "double"))
    monkeypatch.setenv("PATH", double.bin_dir + os.pathsep + os.environ["PATH"])
    conf = make_conf(state_path=str(tmp_path / "state"), virt_type="xen",
                     xm__config_dir=str(tmp_path / "etc-xen"), xm__log_dir=str(tmp_path / "log"),
                     xm__toolstack="xl", xm__shutdown_timeout=1, xm__reboot_timeout=3)
    raw = tmp_path / "base.raw"
    images.create_image("raw", str(raw), "1M")
    store = _store(conf, str(raw), "base")
    cache = ImageCache(conf.images.cache_path, conf.lock_path, store)
    # xl on Xen 4.17 without xend: the qdisk driver, qcow2 overlays
    driver = XmDriver(conf, probe=FixedProbe(xend=False, tap=True), image_cache=cache,
                      sleep=lambda s: None)
    backend = Backend(
        "xm", driver, "base", 1 << 20,
        make_deaf=lambda: double.set_behaviour(reboot_noop=True))
    yield backend
    backend.remove_all()


@pytest.fixture
def param_samples() -> dict[str, str]:
    """A valid value of every param of virt/params.py."""
    return dict(SAMPLES)


@pytest.fixture(params=["libvirt-test", "libvirt-qemu", "xm"])
def backend(request, tmp_path, monkeypatch) -> Iterator[Backend]:
    """Each backend in turn, fresh for every test."""
    if request.param == "libvirt-test":
        yield from _libvirt_test(tmp_path)
    elif request.param == "libvirt-qemu":
        uri = request.getfixturevalue("libvirt_daemons")
        yield from _libvirt_qemu(tmp_path, uri, request.getfixturevalue("demo_guest"))
    else:
        yield from _xm(tmp_path, monkeypatch)
