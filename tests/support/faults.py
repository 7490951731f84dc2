"""Kill -9 at a chosen step, then `virt-driver cleanup`, then check nothing is left.

A step is either a qemu-img call (a qemu-img first on PATH blocks when its
subcommand matches, before or after doing the real work) or a Python
function (tests/fault/hooks/sitecustomize.py blocks at its first call).
Either way the test knows the CLI is exactly there when it sends SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.guests import DEMO_GUEST_DIR, PROJECT_DIR
from virt.fileutils import TEMP_PREFIX

HOOKS = PROJECT_DIR / "tests" / "fault" / "hooks"
CLI = os.path.join(os.path.dirname(sys.executable), "virt-driver")
DEADLINE = 60.0
QEMU_IMG = """#!/bin/sh
if [ "$1" = "$VD_FAULT_STEP" ] && [ ! -e "$VD_FAULT_REACHED" ]; then
  if [ "$VD_FAULT_WHEN" = after ]; then {real} "$@" || exit $?; fi
  echo $$ > "$VD_FAULT_REACHED.part" && mv "$VD_FAULT_REACHED.part" "$VD_FAULT_REACHED"
  exec sleep 600
fi
exec {real} "$@"
"""


@dataclass
class Killed:
    step: str
    blocked_pid: int  # the waiting qemu-img, or the CLI itself for a Python step


class FaultBed:
    """A private state directory, a CLI to run in it, and kill points."""

    def __init__(self, root: Path):
        self.root = root
        self.state = root / "state"
        self.config = root / "virt-driver.conf"
        self.config.write_text(f"[DEFAULT]\nstate_path = {self.state}\nvirt_type = qemu\n"
                               f"boot_file_dirs = {DEMO_GUEST_DIR}\n"
                               "[libvirt]\nshutdown_timeout = 0\n")
        self.bin = root / "bin"
        self.bin.mkdir()
        wrapper = self.bin / "qemu-img"
        wrapper.write_text(QEMU_IMG.format(real=shutil.which("qemu-img")))
        wrapper.chmod(0o755)
        self.reached = root / "reached"

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(PROJECT_DIR), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONPATH": path, **extra}

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([CLI, "--config-file", str(self.config), *args],
                              capture_output=True, text=True, env=self._env({}))
        assert proc.returncode == 0, f"virt-driver {' '.join(args)}: {proc.stderr}"
        return proc

    def kill_at(self, step: str, *args: str) -> Killed:
        """Run the CLI until it reaches `step`, SIGKILL it; the blocked qemu-img must die too.

        step: "qemu-img SUBCOMMAND before|after" or "py MODULE:ATTR".
        """
        if self.reached.exists():
            self.reached.unlink()
        kind, *what = step.split()
        if kind == "qemu-img":
            extra = {"PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
                     "VD_FAULT_STEP": what[0], "VD_FAULT_WHEN": what[1]}
        else:
            extra = {"PYTHONPATH": f"{HOOKS}{os.pathsep}{PROJECT_DIR}", "VD_FAULT_PY": what[0]}
        proc = subprocess.Popen([CLI, "--config-file", str(self.config), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self._env({**extra, "VD_FAULT_REACHED": str(self.reached)}))
        deadline = time.monotonic() + DEADLINE
        while not self.reached.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out, err = proc.communicate()
                pytest.fail(f"virt-driver {' '.join(args)} never reached {step}: "
                            f"exit {proc.returncode}\n{out}{err}", pytrace=False)
            time.sleep(0.02)
        blocked = int(self.reached.read_text())
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        wait_until_dead(blocked)
        return Killed(step, blocked)

    def leftovers(self) -> list[str]:
        """Temporaries, staging, markers, and store files no record names: should be []."""
        found = [str(Path(root, name)) for root, dirs, files in os.walk(self.state)
                 for name in dirs + files if name.startswith(TEMP_PREFIX)]
        store = self.state / "images"
        if store.is_dir():
            named = {"lost+found"}
            for record in store.glob("*.json"):
                data = json.loads(record.read_text())
                named |= {record.name, data["file"], *data.get("backing_chain", ())}
            found += [str(p) for p in store.iterdir() if p.name not in named
                      and not p.name.startswith(TEMP_PREFIX)]
        return sorted(found)


def wait_until_dead(pid: int) -> None:
    """The process is gone (or a zombie nobody waits for), or the test fails."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"process {pid} outlived the killed operation", pytrace=False)
        time.sleep(0.02)


def sha256s(bed: FaultBed) -> dict[str, str]:
    listed = json.loads(bed.cli("--json", "image", "list").stdout)
    return {image["name"]: image["sha256"] for image in listed}


def report(step: str, leftovers: list[str]) -> None:
    """One line per kill point for the figures: 'leftovers after kill at STEP: N'."""
    print(f"leftovers after kill at {step}: {len(leftovers)}")
