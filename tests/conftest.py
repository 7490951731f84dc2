"""Shared pytest options: `--regen-golden` rewrites the golden files."""

import difflib
import importlib.util
import os

import pytest

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")

# tests/nova runs where Nova is installed (tox -e nova); the project's own env has no Nova.
def _nova_installed() -> bool:
    try:
        return importlib.util.find_spec("nova.tests") is not None
    except ImportError:
        return False


collect_ignore = [] if _nova_installed() else ["nova"]


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
