"""What `virt-driver` prints: tables and fields for people, JSON for scripts,
a progress bar on a terminal.

Kept apart from the commands so that a command says what it shows, never how.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass


class ProgressBar:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.last = -1

    def __call__(self, fraction: float) -> None:
        percent = int(max(0.0, min(fraction, 1.0)) * 100)
        if not self.enabled or percent == self.last:
            return
        self.last = percent
        filled = percent * 30 // 100
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {percent:3d}%")
        if percent == 100:
            self.stream.write("\n")
        self.stream.flush()


def plain(value):
    """JSON-ready form of results: dataclasses, enums (their value), lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def print_table(rows: Sequence[dict], columns: Sequence[str]) -> None:
    """Columns padded to their widest cell under an upper-case header; None as '-'."""
    cells = [[("-" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c.upper())] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def print_fields(data: dict) -> None:
    """One `key  value` line per field, keys aligned."""
    width = max(len(k) for k in data)
    for key, value in data.items():
        print(f"{key.ljust(width)}  {'-' if value is None else value}")


class Output:
    """Results as JSON (--json) or as the command's own table."""

    def __init__(self, as_json: bool):
        self.as_json = as_json

    def result(self, data, table: Callable[[], None] | None = None) -> None:
        if self.as_json:
            print(json.dumps(plain(data), indent=2, sort_keys=True))
        elif table is not None:
            table()

    def done(self, message: str, **data) -> None:
        if self.as_json:
            print(json.dumps({"result": "ok", **plain(data)}, sort_keys=True))
        else:
            print(message)
