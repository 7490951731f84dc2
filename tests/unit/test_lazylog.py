"""Logging imported when first used, and the CLI's handlers there before the first message.

Each case runs in a new process: this one imported logging long ago.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.drivers import TEST_URI

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT, **env}, check=True)


def test_a_setup_runs_right_after_logging_is_imported_by_anyone():
    out = run(
        "import json, sys\n"
        "from virt import lazylog\n"
        "seen = []\n"
        "lazylog.when_loaded(lambda: seen.append(sorted(sys.modules['logging'].root.handlers,"
        " key=str)))\n"
        "import importlib.util\n"
        "importlib.util.find_spec('logging')\n"  # a lookup imports nothing: still waiting
        "before = ['logging' in sys.modules, list(seen)]\n"
        "import logging.handlers\n"  # any importer, also of a submodule first
        "after = len(seen)\n"
        "lazylog.when_loaded(lambda: seen.append('at once'))\n"
        "print(json.dumps([before, after, seen[-1], lazylog._FINDER in sys.meta_path]))\n")
    before, after, last, finder_left = json.loads(out.stdout)
    assert before == [False, []]
    assert after == 1 and last == "at once" and not finder_left


def test_a_cancelled_setup_never_runs_and_a_lazy_logger_imports_on_first_use():
    out = run(
        "import json, sys\n"
        "from virt import lazylog\n"
        "seen = []\n"
        "setup = lambda: seen.append(1)\n"
        "log = lazylog.get_logger('vd.test')\n"
        "lazylog.when_loaded(setup)\n"
        "cancelled = lazylog.cancel(setup)\n"
        "made = 'logging' in sys.modules\n"
        "log.warning('first')\n"
        "import logging\n"
        "print(json.dumps([cancelled, made, seen, log.name, logging.getLogger('vd.test')"
        ".getEffectiveLevel() == log.getEffectiveLevel(), lazylog._FINDER in sys.meta_path]))\n")
    assert json.loads(out.stdout) == [True, False, [], "vd.test", True, False]
    assert "first" in out.stderr  # no handlers were set up: logging's last resort printed it


def test_a_read_command_that_logs_or_warns_writes_the_log_file_and_not_stderr(tmp_path):
    """list imports no logging; a message, a plain logger's and a warning still reach
    the log file, in that order, and stderr stays empty."""
    log = tmp_path / "log" / "vd.log"
    config = tmp_path / "virt-driver.conf"
    config.write_text(f"[DEFAULT]\nvirt_type = qemu\nstate_path = {tmp_path}/state\n"
                      f"log_file = {log}\n[libvirt]\nconnection_uri = {TEST_URI}\n")
    code = ("import json, sys, warnings\n"
            "from virt import cli, cli_output, confcache\n"
            "table = cli_output.print_table\n"
            "imported = []\n"
            "def logging_table(*args):\n"
            "    imported.append('logging' in sys.modules)\n"
            "    confcache.LOG.warning('vd-lazy-logger')\n"
            "    import logging\n"
            "    logging.getLogger('vd.plain').warning('vd-plain-logger')\n"
            "    warnings.warn('vd-warning')\n"
            "    table(*args)\n"
            "cli.print_table = logging_table\n"
            f"code = cli.main(['--config-file', {str(config)!r}, 'list'])\n"
            "print(json.dumps([code, imported]))\n")
    cache = str(tmp_path / "cache")
    run(code, XDG_CACHE_HOME=cache)  # writes the records (oslo.config imports logging)
    log.unlink()
    out = run(code, XDG_CACHE_HOME=cache)
    assert json.loads(out.stdout.splitlines()[-1]) == [0, [False]]
    assert out.stderr == ""
    lines = log.read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in lines if "vd-" in line][:2] == [
        "vd-lazy-logger", "vd-plain-logger"]
    assert any("UserWarning: vd-warning" in line for line in lines)
