"""The toolstack double and its test-side handle (DoubleHost)."""

from __future__ import annotations

import json
import os
import sys

DOUBLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "double.py")


class DoubleHost:
    """A directory with `xl` and `xm` executables and the state they share.

    Put `bin_dir` first on PATH; read and steer the double through the methods.
    """

    def __init__(self, root: str, spellings=("xl", "xm")):
        self.bin_dir = os.path.join(root, "bin")
        self.state_dir = os.path.join(root, "state")
        os.makedirs(self.bin_dir)
        os.makedirs(os.path.join(self.state_dir, "fail"))
        for spelling in spellings:
            path = os.path.join(self.bin_dir, spelling)
            with open(path, "w") as f:
                f.write(f'#!/bin/sh\nexec "{sys.executable}" "{DOUBLE}" '
                        f'"{self.state_dir}" {spelling} "$@"\n')
            os.chmod(path, 0o755)

    def _state(self) -> dict:
        path = os.path.join(self.state_dir, "domains.json")
        if not os.path.exists(path):
            return {"next_id": 1, "domains": {}, "migrated": {}, "behaviour": {}}
        with open(path) as f:
            return json.load(f)

    def _save(self, state: dict) -> None:
        with open(os.path.join(self.state_dir, "domains.json"), "w") as f:
            json.dump(state, f)

    def domains(self) -> dict:
        return self._state()["domains"]

    def migrated(self) -> dict:
        return self._state()["migrated"]

    def set_behaviour(self, **flags) -> None:
        """ignore_shutdown=True, reboot_noop=True, version="4.1.0", merged_notice=True, ..."""
        state = self._state()
        state["behaviour"].update(flags)
        self._save(state)

    def fail(self, command: str, message: str = "injected failure",
             times: int | None = None) -> None:
        with open(os.path.join(self.state_dir, "fail", command), "w") as f:
            json.dump({"message": message, "times": times}, f)

    def calls(self) -> list[list[str]]:
        path = os.path.join(self.state_dir, "calls.log")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f]
