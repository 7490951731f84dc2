"""Where an instance's files live on the host: the one description of the layout.

Each instance has a directory `{instances_path}/{uuid}/` holding its root
disk (`disk`), its serial console's log (`console.log`), and when it has a
cloud-init seed, the seed disk (`seed.iso`) and the record it is rebuilt
from (`seed.json`), and the copies of attached volumes
(`volume-<random>.qcow2`, see backends/libvirt/volumes.py). Both backends,
the image cache and the CLI (through ComputeDriver.instance_files) take
these paths from here.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from virt.validation import check_uuid

DISK_FILE = "disk"
CONSOLE_LOG_FILE = "console.log"
SEED_FILE = "seed.iso"
SEED_RECORD_FILE = "seed.json"
VOLUME_PREFIX = "volume-"


@dataclass(frozen=True)
class InstanceFiles:
    """The paths of one instance's files (nothing is created or checked on disk)."""

    directory: str

    @classmethod
    def of(cls, instances_path: str, uuid: str) -> InstanceFiles:
        """The files of instance `uuid`; a uuid that is no UUID cannot name a path."""
        return cls(os.path.join(instances_path, check_uuid(uuid, "instance uuid")))

    @property
    def disk(self) -> str:
        """The root disk: a qcow2 overlay on a cached base, or a raw copy (xm's phy/file)."""
        return os.path.join(self.directory, DISK_FILE)

    @property
    def console_log(self) -> str:
        return os.path.join(self.directory, CONSOLE_LOG_FILE)

    @property
    def seed(self) -> str:
        return os.path.join(self.directory, SEED_FILE)

    @property
    def seed_record(self) -> str:
        return os.path.join(self.directory, SEED_RECORD_FILE)

    def new_volume(self, fmt: str = "qcow2") -> str:
        """A new volume's file: named once, as a hard reboot may give its disk another target."""
        import uuid as uuidlib
        return os.path.join(self.directory, f"{VOLUME_PREFIX}{uuidlib.uuid4().hex[:12]}.{fmt}")

    def is_volume(self, path: str) -> bool:
        """Whether `path` is one of this instance's volume copies (by file, not target)."""
        return os.path.dirname(path) == self.directory \
            and os.path.basename(path).startswith(VOLUME_PREFIX)


def instance_files_in(instances_path: str) -> list[InstanceFiles]:
    """The files of every instance directory under `instances_path` (none if it is missing)."""
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in sorted(os.listdir(instances_path)):
            path = os.path.join(instances_path, entry)
            if os.path.isdir(path):
                found.append(InstanceFiles(path))
    return found
