"""Stand-ins that import their module on first use, once, whatever the threads."""

from __future__ import annotations

import sys
import threading

from virt.lazymodules import lazy_modules


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
