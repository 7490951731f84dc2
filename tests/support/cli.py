"""Running the installed `virt-driver` console script the way a user does."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(config, *args):
    """The installed console script as a user runs it: (exit code, stdout, stderr)."""
    script = os.path.join(os.path.dirname(sys.executable), "virt-driver")
    proc = subprocess.run([script, "--config-file", config, *args], capture_output=True,
                          text=True)
    return proc.returncode, proc.stdout, proc.stderr
