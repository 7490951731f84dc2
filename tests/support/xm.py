"""An XmDriver on the toolstack double, with a store holding a marked base image."""

from __future__ import annotations

import os

from backends.xm.driver import XmDriver
from tests.xm_double import DoubleHost
from virt.conf import make_conf
from virt.imagecache import ImageCache
from virt.imagestore import LocalImageStore
from virt.objects import NIC, Flavor, GuestKind, Instance

MARKER = b"VIRT-XM-BASE"


class FixedProbe:
    def __init__(self, xend: bool, tap: bool):
        self.xend, self.tap = xend, tap

    def xend_running(self) -> bool:
        return self.xend

    def tap_ctl_ok(self) -> bool:
        return self.tap


class Env:
    def __init__(self, tmp_path, monkeypatch, spelling: str):
        self.spelling = spelling
        self.double = DoubleHost(str(tmp_path / "double"))
        monkeypatch.setenv("PATH", self.double.bin_dir + os.pathsep + os.environ["PATH"])
        self.conf = make_conf(state_path=str(tmp_path / "state"), boot_file_dirs=[str(tmp_path)],
                              xm__config_dir=str(tmp_path / "etc-xen"),
                              xm__log_dir=str(tmp_path / "log"), xm__toolstack=spelling,
                              xm__shutdown_timeout=1, xm__reboot_timeout=3)
        store = LocalImageStore(self.conf.images.store_path)
        source = tmp_path / "base.raw"
        source.write_bytes(MARKER + b"\0" * (1024 * 1024 - len(MARKER)))
        store.import_image("base", str(source), "raw")
        self.cache = ImageCache(self.conf.images.cache_path, self.conf.lock_path, store)
        self.kernel = tmp_path / "vmlinuz"
        self.kernel.write_bytes(b"kernel")
        self.driver = self.make_driver(self.conf)

    def make_driver(self, conf) -> XmDriver:
        # xl on 4.17 without xend gets qdisk (qcow2 overlay); xm on 4.0.1 gets blktap (raw).
        return XmDriver(conf, probe=FixedProbe(xend=self.spelling == "xm", tap=True),
                        image_cache=self.cache, sleep=lambda s: None)

    def instance(self, name="web-01", **kw) -> Instance:
        kw.setdefault("params", {"kernel_path": str(self.kernel)})
        kw.setdefault("kind", GuestKind.PV)
        return Instance(name=name, flavor=Flavor(memory_mb=256, vcpus=2, root_gb=1),
                        image="base", nics=(NIC("aa:00:00:00:00:01", bridge="xenbr0"),), **kw)

    def config_path(self, name="web-01") -> str:
        return os.path.join(self.conf.xm.config_dir, name)

    def commands(self) -> list[list[str]]:
        return [call[1:] for call in self.double.calls()]

    def leftovers(self, instance: Instance) -> list[str]:
        paths = [self.config_path(instance.name), self.driver.instance_files(instance).directory]
        return [p for p in paths if os.path.exists(p)]
