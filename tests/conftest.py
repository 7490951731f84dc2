"""Fixtures every test directory may use.

- `golden` and the `--regen-golden` option (rewrites the golden files).
- `libvirt_daemons` (session): runs tools/start-daemons.sh once, gives the URI.
- `libvirt_system`: a live connection to qemu:///system, shared while alive:
  after restart_libvirtd() the next test gets a fresh one.
- `demo_guest` (session): builds the tiny real busybox guest once.
- `xm_env`: an XmDriver on the toolstack double, for xl and for xm.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from collections.abc import Iterator

import libvirt
import pytest

from tests.support.guests import (
    BUILD_DEMO_GUEST,
    DEMO_GUEST_DIR,
    START_DAEMONS,
    SYSTEM_URI,
    DemoGuest,
    close_connections,
    live_connection,
    run_tool,
)
from tests.support.xm import Env

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")

# tests/nova runs where Nova is installed (tox -e nova); the project's own env has no Nova.
def _nova_installed() -> bool:
    try:
        return importlib.util.find_spec("nova.tests") is not None
    except ImportError:
        return False


collect_ignore = [] if _nova_installed() else ["nova"]


@pytest.fixture(autouse=True, scope="session")
def private_config_cache(tmp_path_factory):
    """Read commands keep resolved configurations (virt/confcache.py) in the run's own cache."""
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if saved is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = saved


def pytest_addoption(parser):
    parser.addoption("--regen-golden", action="store_true",
                     help="rewrite the golden files under tests/data instead of comparing")


@pytest.fixture
def golden(request):
    """golden(relpath, text): compare text with tests/data/relpath, or rewrite it."""
    regen = request.config.getoption("--regen-golden")

    def check(relpath: str, text: str) -> None:
        path = os.path.join(DATA_DIR, relpath)
        if regen:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            return
        if not os.path.exists(path):
            pytest.fail(f"golden file {relpath} is missing: run pytest --regen-golden")
        with open(path) as f:
            expected = f.read()
        if expected != text:
            diff = "".join(difflib.unified_diff(
                expected.splitlines(True), text.splitlines(True),
                fromfile=f"tests/data/{relpath}", tofile="generated"))
            pytest.fail(f"golden file {relpath} differs (rerun with --regen-golden "
                        f"if the change is intended):\n{diff}")

    return check


@pytest.fixture(scope="session")
def libvirt_daemons() -> str:
    """Make sure virtlogd and libvirtd run (once per session); the URI to use."""
    if os.geteuid() != 0:
        pytest.fail("functional tests need root: libvirtd and QEMU guests run as root",
                    pytrace=False)
    run_tool("starting libvirtd", str(START_DAEMONS))
    return SYSTEM_URI


@pytest.fixture
def libvirt_system(libvirt_daemons: str) -> libvirt.virConnect:
    """An open, live connection to qemu:///system (shared while it stays alive)."""
    return live_connection(libvirt_daemons)


@pytest.fixture(scope="session", autouse=True)
def _close_connections() -> Iterator[None]:
    yield
    close_connections()


@pytest.fixture(scope="session")
def demo_guest() -> DemoGuest:
    """Build (or reuse) the demo guest under build/demo-guest, once per session."""
    run_tool("building the demo guest", str(BUILD_DEMO_GUEST), str(DEMO_GUEST_DIR))
    guest = DemoGuest(kernel=str(DEMO_GUEST_DIR / "vmlinuz"),
                      initrd=str(DEMO_GUEST_DIR / "initrd.img"),
                      disk=str(DEMO_GUEST_DIR / "disk.raw"))
    for path in (guest.kernel, guest.initrd, guest.disk):
        if not os.path.isfile(path):
            pytest.fail(f"build-demo-guest.sh succeeded but {path} is missing", pytrace=False)
    return guest


@pytest.fixture(params=["xl", "xm"])
def xm_env(request, tmp_path, monkeypatch) -> Env:
    """An XmDriver on the toolstack double, once with each spelling (xl, xm)."""
    return Env(tmp_path, monkeypatch, request.param)
