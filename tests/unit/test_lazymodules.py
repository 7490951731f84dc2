"""Stand-ins that import their module on first use, once, whatever the threads."""

from __future__ import annotations

import sys
import threading

from virt.lazymodules import built_on_first_read, lazy_modules


def test_imported_at_first_use_only_and_once_across_threads(tmp_path, monkeypatch):
    (tmp_path / "vd_slow_module.py").write_text(
        "import time\nLOADS = globals().get('LOADS', 0) + 1\ntime.sleep(0.2)\nVALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "vd_slow_module", raising=False)
    (module,) = lazy_modules("vd_slow_module")
    assert "vd_slow_module" not in sys.modules
    seen, go = [], threading.Barrier(8)

    def read():
        go.wait()
        seen.append(module.VALUE)
    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [42] * 8
    assert sys.modules["vd_slow_module"].LOADS == 1


def test_a_patch_on_the_real_module_is_what_the_stand_in_gives(monkeypatch):
    from virt import images
    (stand_in,) = lazy_modules("virt.images")
    monkeypatch.setattr(images, "parse_size", lambda text: 7)
    assert stand_in.parse_size("1G") == 7


def test_a_class_value_is_built_at_its_first_read_once():
    builds = []

    class Owner:
        @built_on_first_read
        def value() -> list:
            builds.append(1)
            return ["built"]

    class Child(Owner):
        pass
    assert builds == []
    assert Owner().value is Owner.value is Child.value
    assert builds == [1] and Owner.__dict__["value"] == ["built"]


def test_the_libvirt_capabilities_built_late_are_the_ones_declared_before():
    from backends.libvirt.driver import LibvirtDriver
    from virt import seed
    from virt.capabilities import Capabilities
    from virt.guest import SUPPORT
    from virt.objects import GuestKind
    assert LibvirtDriver.capabilities == Capabilities(
        guest_kinds=frozenset(GuestKind), snapshot_kinds=frozenset({"cold", "live"}),
        live_migration=True, cold_migration=True, volume_attach=True, nic_attach=True,
        resize=True, seed_formats=frozenset(seed.LABELS), pause=True, suspend=True,
        console_output=True, console_command=True, guest_addresses=True, events="hypervisor",
        params=SUPPORT)
