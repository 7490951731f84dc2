"""Which `virt-driver` processes end without the interpreter's teardown (exit_now)."""

import os
import subprocess
import sys

import pytest

from tests.support.drivers import TEST_URI
from virt import images

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def cli(tmp_path):
    """Run virt-driver on test:///default as a process; (exit code, stderr, whether the
    interpreter's teardown ran: an atexit hook that only a normal exit runs)."""
    config = tmp_path / "virt-driver.conf"
    config.write_text(f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\nvirt_type = qemu\n")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    witness = tmp_path / "teardown-ran"
    (hooks / "sitecustomize.py").write_text(
        f"import atexit\natexit.register(lambda: open({str(witness)!r}, 'w').close())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), ROOT])}

    def run(*args):
        witness.unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, "-m", "virt.cli", "--config-file", str(config),
                               "--connection-uri", TEST_URI, *args],
                              capture_output=True, text=True, env=env)
        return proc.returncode, proc.stderr, witness.exists()
    return run


def test_a_boot_ends_at_once_whether_it_succeeds_or_fails(cli, tmp_path):
    raw = str(tmp_path / "tiny.raw")
    images.create_image("raw", raw, "1M")
    assert cli("image", "import", "tiny", raw, "--format", "raw")[::2] == (0, True)
    assert cli("boot", "cl-exit-0", "--image", "tiny", "--memory", "64") == (0, "", False)
    code, err, teardown = cli("boot", "cl-exit-1", "--image", "missing", "--memory", "64")
    assert (code, teardown) == (1, False) and "missing" in err


@pytest.mark.parametrize("command", [["list", "--all"], ["image", "list"]])
def test_a_reader_that_went_away_ends_the_command_quietly(tmp_path, command):
    """`virt-driver list | head -1`: the exit status of SIGPIPE, and no error line."""
    config = tmp_path / "virt-driver.conf"
    config.write_text(f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\nvirt_type = qemu\n")
    read_end, write_end = os.pipe()
    os.close(read_end)  # before the command writes anything
    proc = subprocess.run([sys.executable, "-m", "virt.cli", "--config-file", str(config),
                           "--connection-uri", TEST_URI, *command],
                          stdout=write_end, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT})
    os.close(write_end)
    assert (proc.returncode, proc.stderr) == (141, "")
