"""Entry points of a group, read without importlib.metadata while nothing was installed since.

Importing importlib.metadata and scanning every distribution costs a read
command about a sixth of its instructions, to learn the same two backend
names each time. The answer depends on the distributions on sys.path and
their entry_points.txt: installing, upgrading or removing one writes a new
*.dist-info (or *.egg-info) directory or file. So a record keeps the answer
with that listing (each distribution directory and the inode, size and
mtime_ns of its entry_points.txt), and is used only while a fresh listing is
equal; otherwise importlib.metadata answers and the record is rewritten.
Records live beside the configuration records (virt/confcache.py), with
the same ownership checks.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from virt.confcache import file_identity, read_json_record, record_path, write_json_record

FORMAT = 1
DIST_SUFFIXES = (".dist-info", ".egg-info")


def group_entry_points(group: str, cache_dir: str | None = None) -> dict[str, str]:
    """name -> 'module:attribute' of the entry points in `group`.

    cache_dir: where the record is read and written; None: importlib.metadata answers.
    """
    if not cache_dir:
        return _read_metadata(group)
    inputs = {"format": FORMAT, "group": group, "sys_path": list(sys.path),
              "distributions": distributions()}
    path = record_path(cache_dir, "entry-points", json.dumps([group, sys.path]))
    found = read_json_record(path, inputs)
    if isinstance(found, dict) and all(isinstance(v, str) for v in found.values()):
        return found
    points = _read_metadata(group)
    write_json_record(path, inputs, points)
    return points


def _read_metadata(group: str) -> dict[str, str]:
    from importlib.metadata import entry_points
    return {ep.name: ep.value for ep in entry_points(group=group)}


def distributions() -> list:
    """Each sys.path entry's distributions with the identity of their entry_points.txt."""
    listing = []
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as it:
                names = sorted(e.name for e in it if e.name.endswith(DIST_SUFFIXES))
        except OSError:  # absent, or a file (a zip): its identity is enough
            listing.append([entry, file_identity(entry)])
            continue
        listing.append([entry, [[name, file_identity(os.path.join(entry or ".", name,
                                                              "entry_points.txt"))]
                                for name in names]])
    return listing


def load(value: str):
    """The object an entry point's 'module:attribute' names, as importlib.metadata loads it."""
    module, _, attrs = value.split("[")[0].partition(":")  # "[extras]" name no code
    target = importlib.import_module(module.strip())
    for attr in filter(None, attrs.strip().split(".")):
        target = getattr(target, attr)
    return target
