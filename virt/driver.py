"""The contract a compute manager sees, and the choice of backend.

Backends are found through the `virt.backends` entry points, never imported
by module name here.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable

from virt.objects import NIC, BlockDevice, HostInfo, Instance, InstanceInfo


class ComputeDriver(abc.ABC):
    """One host's hypervisor, as a compute manager drives it.

    Every method raises a subclass of virt.errors.VirtError on failure.
    """

    name = "abstract"

    def __init__(self, conf):
        self.conf = conf

    @abc.abstractmethod
    def init_host(self, host: str) -> None:
        """Prepare the host: directories, connection, state resync."""

    @abc.abstractmethod
    def spawn(self, instance: Instance, image_id: str, nics: Iterable[NIC] = (),
              block_devices: Iterable[BlockDevice] = ()) -> None:
        """Create and start a guest; on failure leave nothing behind."""

    @abc.abstractmethod
    def describe_spawn(self, instance: Instance, image_id: str, nics: Iterable[NIC] = (),
                       block_devices: Iterable[BlockDevice] = ()) -> str:
        """The exact document spawn would use (domain XML, xm config); creates nothing."""

    @abc.abstractmethod
    def destroy(self, instance: Instance, destroy_disks: bool = True) -> None:
        """Graceful stop with a timeout, then forced; idempotent."""

    @abc.abstractmethod
    def reboot(self, instance: Instance, hard: bool = False) -> None:
        """Soft reboot, verified, with a hard reboot as fallback."""

    @abc.abstractmethod
    def power_off(self, instance: Instance, timeout: int | None = None) -> None: ...

    @abc.abstractmethod
    def power_on(self, instance: Instance) -> None: ...

    @abc.abstractmethod
    def pause(self, instance: Instance) -> None: ...

    @abc.abstractmethod
    def unpause(self, instance: Instance) -> None: ...

    @abc.abstractmethod
    def suspend(self, instance: Instance) -> None: ...

    @abc.abstractmethod
    def resume(self, instance: Instance) -> None: ...

    @abc.abstractmethod
    def get_info(self, instance: Instance) -> InstanceInfo: ...

    @abc.abstractmethod
    def list_instances(self) -> list[str]: ...

    @abc.abstractmethod
    def instance_exists(self, instance: Instance) -> bool: ...

    @abc.abstractmethod
    def get_host_info(self) -> HostInfo: ...

    @abc.abstractmethod
    def get_console_output(self, instance: Instance) -> str: ...

    @abc.abstractmethod
    def get_console_command(self, instance: Instance) -> list[str]: ...

    @abc.abstractmethod
    def snapshot(self, instance: Instance, image_name: str, fmt: str = "qcow2",
                 compress: bool = False) -> None: ...

    @abc.abstractmethod
    def migrate(self, instance: Instance, dest: str, live: bool = True) -> None: ...

    @abc.abstractmethod
    def register_event_listener(self, callback: Callable[[str, str], None]) -> None:
        """callback(instance_name, event) with event one of PowerState values."""
