"""The resolved configuration of read commands, without loading oslo.config.

Importing oslo.config (and oslo.concurrency's options, with stevedore,
netaddr, rfc3986, importlib.metadata) is most of a read command's start.
What it resolves depends only on its inputs: the command-line arguments and
overrides, the config files' bytes, the OS_* and OSLO_* environment, the
code that defines the options and the import path. After a full load the
resolved values are written here, atomically and readable by their owner
only, with those inputs; the next read command whose inputs are the same
reads them with json. Any difference, an unreadable, foreign or corrupt
record, or a value nobody stored: oslo.config is loaded as before. The
options and their defaults stay defined once, in virt/conf.py: this module
only keeps what oslo.config answered.

Files are compared by content (kept in the record, as their bytes read as
latin-1), not by their mtime: an edit within the file system's timestamp
granularity keeps the size and mtime. No hash is taken: hashlib's import
alone cost a read command 2% of its instructions.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import zlib
from collections.abc import Callable, Sequence
from typing import Any

LOG = logging.getLogger(__name__)

FORMAT = 2  # 2: config files kept as content, not as a sha256
# Environment variables oslo.config reads (OS_GROUP__OPTION) or option defaults come from
# (oslo.concurrency's OSLO_LOCK_PATH).
ENV_PREFIXES = ("OS_", "OSLO_")
# Modules whose code defines the options, their defaults or how they resolve.
CODE_MODULES = ("virt.conf", "virt.validation")
CODE_PACKAGES = ("oslo_config.", "oslo_concurrency.")
PATH_ARGS = ("--config-file", "--config-dir")


def default_cache_dir() -> str | None:
    """$XDG_CACHE_HOME/virt-driver, else ~/.cache/virt-driver; None without a home."""
    base = os.environ.get("XDG_CACHE_HOME") or (
        os.path.join(os.environ["HOME"], ".cache") if os.environ.get("HOME") else None)
    return os.path.join(base, "virt-driver") if base else None


def resolved_conf(args: Sequence[str], overrides: dict[str, Any],
                  cache_dir: str | None = None, load: Callable | None = None):
    """The configuration of `args` and `overrides`: cached values when still true, else oslo's.

    cache_dir: where records live (default_cache_dir() when None).
    load(args, **overrides): the full load (virt.conf.make_conf by default);
    its InvalidConfig propagates and nothing is written then.
    """
    load = load or _make_conf
    cache_dir = cache_dir or default_cache_dir()
    inputs = describe_inputs(args, overrides)
    if not cache_dir or inputs is None:
        return load(list(args), **overrides)
    record_path = _record_path(cache_dir, inputs)
    values = read_record(record_path, inputs)
    if values is not None:
        return CachedConf(values, lambda: load(list(args), **overrides))
    conf = load(list(args), **overrides)
    write_record(record_path, inputs, conf)
    return conf


def _make_conf(args, **overrides):
    from virt.conf import make_conf
    return make_conf(args, **overrides)


def describe_inputs(args: Sequence[str], overrides: dict[str, Any]) -> dict | None:
    """Everything oslo.config's answer depends on, or None when it cannot be told.

    None for arguments other than --config-file/--config-dir pairs, or a file
    that cannot be read (the full load then says what is wrong).
    """
    if len(args) % 2:
        return None
    files: list[list] = []
    for flag, path in zip(args[::2], args[1::2], strict=True):
        if flag not in PATH_ARGS:
            return None
        try:
            files.append([flag, os.path.abspath(path), _content_id(flag, path)])
        except OSError:
            return None
    return {"format": FORMAT, "files": files,
            "overrides": {k: overrides[k] for k in sorted(overrides)},
            "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
            "sys_path": list(sys.path)}


def _content_id(flag: str, path: str) -> str | list:
    """A config file's content; a config dir's *.conf names and contents (what oslo reads)."""
    if flag == "--config-file":
        with open(path, "rb") as f:
            return f.read().decode("latin-1")  # every byte one character: nothing lost
    return [[name, _content_id("--config-file", os.path.join(path, name))]
            for name in sorted(os.listdir(path)) if name.endswith(".conf")]


def _record_path(cache_dir: str, inputs: dict) -> str:
    """One record per config paths, overrides and import path: an edit replaces it."""
    slot = json.dumps([[f[:2] for f in inputs["files"]], inputs["overrides"],
                       inputs["sys_path"]], sort_keys=True)
    return record_path(cache_dir, "conf", slot)


def record_path(cache_dir: str, kind: str, key: str) -> str:
    """The record of `key` in cache_dir: a stable name for it, not a proof of it.

    Two keys that share a name take turns in one record (each a miss for the
    other): a record holds its whole inputs, which a reader compares.
    """
    data = key.encode("utf-8", "surrogateescape")
    return os.path.join(cache_dir, f"{kind}-{zlib.crc32(data):08x}{zlib.adler32(data):08x}.json")


def read_record(path: str, inputs: dict) -> dict | None:
    """The option values of the record at `path` if it was made from `inputs`, else None."""
    values = read_json_record(path, inputs)
    if not isinstance(values, dict) or not isinstance(values.get("DEFAULT"), dict):
        return None
    return values


def read_json_record(path: str, inputs: dict):
    """The value of the record at `path` if it was made from `inputs` by unchanged code, else None.

    A record must be a regular file owned by this user and writable by no one
    else (configuration values name directories the driver writes to);
    anything unreadable or malformed is a miss.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022 or not _private_dir(path):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            record = json.load(f)
        if record["inputs"] != inputs or not _code_unchanged(record["code"]):
            return None
        return record["value"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)


def _private_dir(path: str) -> bool:
    st = os.stat(os.path.dirname(path))
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def file_identity(path: str) -> list | None:
    """[inode, size, mtime_ns] of `path`, which any rewrite changes; None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _code_unchanged(code: list) -> bool:
    return all(identity is not None and file_identity(path) == identity
               for path, *identity in code)


def _code_identity() -> list[list]:
    """(path, inode, size, mtime_ns) of every loaded module that shapes the values."""
    files = sorted({str(module.__file__) for name, module in list(sys.modules.items())
                    if (name in CODE_MODULES or name.startswith(CODE_PACKAGES))
                    and getattr(module, "__file__", None)})
    return [[path, *(file_identity(path) or [])] for path in files]


def resolved_values(conf) -> dict[str, dict[str, Any]] | None:
    """Every option's value as oslo.config resolved it, by group; None if not cacheable.

    Not cacheable: values from a remote source ([DEFAULT] config_source), which
    the inputs do not describe.
    """
    from virt.conf import GROUPS
    if conf.config_source:
        return None
    values: dict[str, dict[str, Any]] = {"DEFAULT": {"config_file": list(conf.config_file),
                                                     "config_dir": conf.config_dir}}
    for group, opts in GROUPS:
        section = conf[group] if group else conf
        values.setdefault(group or "DEFAULT", {}).update(
            {opt.dest: section[opt.dest] for opt in opts})
    return values


def write_record(path: str, inputs: dict, conf) -> None:
    """Keep conf's values for the next read command; a failure only costs that speed."""
    values = resolved_values(conf)
    if values is not None:
        write_json_record(path, inputs, values, code=_code_identity())


def write_json_record(path: str, inputs: dict, value, code: list | None = None) -> None:
    """Write a record atomically, mode 0600, in a directory only this user may write.

    code: (path, inode, size, mtime_ns) of files whose change makes the record stale.
    A failure is logged and only costs the next command its speed.
    """
    from virt.fileutils import atomic_write
    try:
        data = json.dumps({"inputs": inputs, "code": code or [], "value": value})
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not _private_dir(path):
            LOG.warning("cache directory %s is writable by others: not used", directory)
            return
        atomic_write(path, data, mode=0o600)
    except (OSError, TypeError, ValueError) as exc:
        LOG.info("cache record %s not written: %s", path, exc)


class CachedGroup:
    """One option group's cached values, read as attributes or items."""

    def __init__(self, values: dict[str, Any], full: Callable[[], Any]):
        self._values = values
        self._full = full

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            return getattr(self._full(), name)

    def __getitem__(self, name: str):
        return self.__getattr__(name)


class CachedConf(CachedGroup):
    """The cached values as ConfigOpts shows them: conf.log_file, conf.libvirt.connection_uri.

    Anything else (a method, an option that was not stored) loads oslo.config
    once and asks it.
    """

    def __init__(self, values: dict[str, dict[str, Any]], load: Callable[[], Any]):
        self._loaded = None
        self._load = load
        self._groups = {name: CachedGroup(group, self._oslo_group(name))
                        for name, group in values.items() if name != "DEFAULT"}
        super().__init__(values["DEFAULT"], self._oslo)

    def _oslo_group(self, name: str) -> Callable[[], Any]:
        return lambda: self._oslo()[name]

    def _oslo(self):
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def __getattr__(self, name: str):
        if name in self.__dict__.get("_groups", ()):
            return self._groups[name]
        return super().__getattr__(name)

    def __getitem__(self, name: str):
        return self.__getattr__(name)
