"""The contract a compute manager sees, and the choice of backend.

Backends are found through the `virt.backends` entry points, never imported
by module name here. Every contract method of every backend checks its
arguments once, at this boundary (ARGUMENT_CHECKS), so bad input from a
caller is an InvalidParameter naming the argument, never a TypeError or an
lxml ValueError from deep inside.
"""

from __future__ import annotations

import abc
import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, BinaryIO

from virt.errors import BackendUnavailable, InstanceNotFound, InvalidParameter, NotSupported
from virt.events import EventFanout, Listener
from virt.lazymodules import built_on_first_read
from virt.objects import (
    NIC,
    BlockDevice,
    GuestAddresses,
    HostInfo,
    Instance,
    InstanceInfo,
    InstanceSummary,
)
from virt.validation import (
    check_block_devices,
    check_bool,
    check_callable,
    check_image_name,
    check_instance,
    check_instance_name,
    check_nic,
    check_nics,
    check_optional_callable,
    check_optional_count,
    check_optional_int,
    check_optional_text,
    check_text,
)

if TYPE_CHECKING:  # imported when used: read commands need none of them
    from virt import recovery
    from virt.capabilities import Capabilities
    from virt.instancefiles import InstanceFiles

LOG = logging.getLogger(__name__)
BACKEND_GROUP = "virt.backends"


# Each argument name of the contract, and the check its value passes first.
ARGUMENT_CHECKS: dict[str, Callable[[Any, str], object]] = {
    "instance": check_instance,
    "name": lambda value, field: check_instance_name(value, "instance name"),
    "image_id": lambda value, field: check_image_name(value, "image"),
    "image_name": check_image_name,
    "nics": check_nics,
    "block_devices": check_block_devices,
    "host": check_text,
    "dest": check_text,
    "dest_instances_path": check_optional_text,
    "fmt": check_optional_text,
    "volume": check_text,
    "nic": check_nic,
    "mac": check_text,
    "device": check_optional_text,
    "destroy_disks": check_bool,
    "hard": check_bool,
    "live": check_bool,
    "compress": check_bool,
    "timeout": check_optional_int,
    "progress": check_optional_callable,
    "callback": check_callable,
    "root_gb": check_optional_count,
    "vcpus": check_optional_count,
    "memory_mb": check_optional_count,
}


def checked_at_the_boundary(method: Callable) -> Callable:
    """The method with every argument checked by ARGUMENT_CHECKS before it runs.

    Its signature is read at the first call: reading those of some forty
    methods when a backend's class is made cost a read command 3% of its
    instructions.
    """
    signature: inspect.Signature | None = None

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        nonlocal signature
        if signature is None:
            signature = inspect.signature(method)
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as exc:
            raise InvalidParameter(f"{method.__name__}(): {exc}") from None
        for name, value in list(bound.arguments.items())[1:]:
            bound.arguments[name] = ARGUMENT_CHECKS[name](value, name)
        return method(*bound.args, **bound.kwargs)

    checked.boundary_checked = True  # type: ignore[attr-defined]  # read by __init_subclass__
    return checked


class ComputeDriver(abc.ABC):
    """One host's hypervisor, as a compute manager drives it.

    Every method raises a subclass of virt.errors.VirtError on failure, and
    only InvalidParameter for malformed arguments (checked before the
    backend's code runs: see __init_subclass__).
    """

    name = "abstract"

    @built_on_first_read
    def capabilities() -> Capabilities:
        """What this backend supports; what it lacks raises NotSupported (virt/capabilities.py)."""
        from virt.capabilities import Capabilities
        return Capabilities()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in CONTRACT_METHODS:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "boundary_checked", False):
                setattr(cls, name, checked_at_the_boundary(method))

    def __init__(self, conf):
        self.conf = conf
        # The listeners of register_event_listener; the backend feeds it what it learns.
        self.events = EventFanout()
        # Why load_driver chose this backend, for `virt-driver host-info`.
        self.selection_reason = f"backend = {conf.backend}"

    @classmethod
    def unavailable_reason(cls, conf) -> str | None:
        """Why this backend cannot serve conf.virt_type on this host, or None if it can."""
        return None

    @abc.abstractmethod
    def get_instance(self, name: str) -> Instance:
        """Rebuild the Instance of a guest on this host from what the hypervisor keeps."""

    @abc.abstractmethod
    def init_host(self, host: str) -> None:
        """Prepare the host: directories, connection, state resync, reclaim()."""

    def reclaim(self, directories: Iterable[str] = ()) -> list[recovery.Reclaimed]:
        """Remove what killed operations left on this host; what was freed.

        The instances path, the image store, the base cache and `directories`;
        a live operation's files are never touched (see virt.recovery).
        """
        from virt import recovery
        from virt.imagestore import LocalImageStore
        return recovery.reclaim_host(LocalImageStore.from_conf(self.conf),
                                     self.conf.instances_path,
                                     [self.conf.images.cache_path, *directories],
                                     self.undo_handlers())

    @checked_at_the_boundary
    def instance_files(self, instance: Instance) -> InstanceFiles:
        """Where the instance's files are (or would be) on this host; creates nothing."""
        from virt.instancefiles import InstanceFiles
        return InstanceFiles.of(self.conf.instances_path, instance.uuid)

    @checked_at_the_boundary
    def all_instance_files(self) -> list[InstanceFiles]:
        """The files of every instance directory on this host, also those a destroy
        with destroy_disks=False kept (their disks still need their bases)."""
        from virt.instancefiles import instance_files_in
        return instance_files_in(self.conf.instances_path)

    def undo_handlers(self) -> recovery.Handlers:
        """Kind of operation -> how to undo what a killed one of that kind did."""
        return {}

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

    def list_summaries(self) -> list[InstanceSummary]:
        """Every instance this driver owns with its state, in name order.

        This default asks for each instance in turn; a backend that can read
        them all at once overrides it.
        """
        summaries = []
        for name in self.list_instances():
            try:
                instance = self.get_instance(name)
                info = self.get_info(instance)
            except InstanceNotFound:
                continue  # destroyed since the listing
            summaries.append(InstanceSummary(
                name=name, uuid=instance.uuid, image=instance.image, state=info.state,
                vcpus=info.num_cpu, memory_mb=info.max_mem_kb // 1024))
        return sorted(summaries, key=lambda s: s.name)

    @abc.abstractmethod
    def instance_exists(self, instance: Instance) -> bool: ...

    @abc.abstractmethod
    def get_host_info(self) -> HostInfo: ...

    @abc.abstractmethod
    def get_console_output(self, instance: Instance) -> str: ...

    @abc.abstractmethod
    def get_console_command(self, instance: Instance) -> list[str]: ...

    @checked_at_the_boundary
    def get_addresses(self, instance: Instance) -> GuestAddresses:
        """The guest's addresses and whether its agent answers; a backend that cannot
        ask the guest tells nothing rather than failing."""
        return GuestAddresses(agent_answers=False)

    @abc.abstractmethod
    def snapshot(self, instance: Instance, image_name: str, fmt: str = "qcow2",
                 compress: bool = False,
                 progress: Callable[[float], None] | None = None) -> None:
        """Copy the root disk into the image store as a new image."""

    @abc.abstractmethod
    def migrate(self, instance: Instance, dest: str, live: bool = True,
                progress: Callable[[float], None] | None = None) -> object:
        """Move the instance to `dest`; on failure it keeps running here.

        Returns what the backend knows of the finished migration (libvirt:
        its job statistics), or None.
        """

    def prepare_incoming(self, instance: Instance, chain: BinaryIO | None = None,
                         seed_record: str | None = None, image_digest: str | None = None) -> str:
        """Destination side of a block migration: the instance's disks made ready here
        (`chain`: the source's image export, `seed_record`: its seed.json,
        `image_digest`: the source's image digest, required when this host's store
        already has an image of that name); the instances path to migrate into."""
        raise NotSupported(f"the {self.name} backend has no block migration: "
                           "use shared storage")

    def abandon_incoming(self, instance: Instance) -> None:
        """Undo prepare_incoming after a failed migration."""
        raise NotSupported(f"the {self.name} backend has no block migration: "
                           "use shared storage")

    def attach_volume(self, instance: Instance, volume: str, device: str | None = None,
                      fmt: str | None = None) -> str:
        """Attach a copy of a store image or of a file (fmt given), live and persistent;
        the target name it got."""
        raise NotSupported(f"backend {self.name}: volumes cannot be attached here")

    def detach_volume(self, instance: Instance, device: str, timeout: int = 30) -> None:
        """Detach a volume attach_volume added, waiting up to `timeout` s for the guest."""
        raise NotSupported(f"backend {self.name}: volumes cannot be detached here")

    def attach_interface(self, instance: Instance, nic: NIC) -> None:
        """Add a NIC, live and persistent."""
        raise NotSupported(f"backend {self.name}: NICs cannot be attached here")

    def detach_interface(self, instance: Instance, mac: str, timeout: int = 30) -> None:
        """Remove the NIC with `mac`, waiting up to `timeout` s for the guest."""
        raise NotSupported(f"backend {self.name}: NICs cannot be detached here")

    @checked_at_the_boundary
    def resize(self, instance: Instance, root_gb: int | None = None, vcpus: int | None = None,
               memory_mb: int | None = None) -> None:
        """Grow the root disk to root_gb GiB and set vCPUs and memory (None: unchanged).

        A running guest is resized live up to the maximums it booted with
        (params max_vcpus, max_memory_mb), a shut-off one up to what the host
        has; shrinking the disk is refused.
        """
        raise NotSupported(f"backend {self.name}: instances cannot be resized here")

    @checked_at_the_boundary
    def register_event_listener(self, callback: Listener) -> None:
        """callback(instance_name, event) with event one of PowerState values.

        Called on a thread of the backend's choosing, in the order the states changed.
        """
        self.events.add_listener(callback)


# The public methods a compute manager calls; each backend's are checked.
CONTRACT_METHODS = (*(
    name for name, member in vars(ComputeDriver).items()
    if getattr(member, "__isabstractmethod__", False)),
    "attach_volume", "detach_volume", "attach_interface", "detach_interface", "get_addresses",
    "register_event_listener", "list_summaries", "instance_files", "all_instance_files",
    "resize")


class _InstalledBackends:
    """The virt.backends entry points, each imported only when asked for.

    cache_dir: keep the answer there for the next process (virt/entrypoints.py:
    importlib.metadata only when a distribution changed); None reads it each time.
    """

    def __init__(self, cache_dir: str | None = None):
        from virt import entrypoints
        self._load = entrypoints.load
        self._points = entrypoints.group_entry_points(BACKEND_GROUP, cache_dir)

    def __contains__(self, name: str) -> bool:
        return name in self._points

    def get(self, name: str) -> type[ComputeDriver] | None:
        return self._load(self._points[name]) if name in self._points else None

    def __getitem__(self, name: str) -> type[ComputeDriver]:
        return self._load(self._points[name])

    def __iter__(self):
        return iter(self._points)


def installed_backends(cache_dir: str | None = None) -> _InstalledBackends:
    """The installed backends for load_driver(); see _InstalledBackends for cache_dir."""
    return _InstalledBackends(cache_dir)


def load_driver(conf, backends=None) -> ComputeDriver:
    """The driver for this host: the configured backend, or with 'auto' the first that serves.

    auto: libvirt; for virt_type xen, the xm backend when libvirt cannot serve it.
    backends: name -> driver class (default: the installed entry points).
    """
    backends = _InstalledBackends() if backends is None else backends
    if conf.backend != "auto":
        if conf.backend not in backends:
            raise BackendUnavailable(f"backend {conf.backend!r} is not installed: "
                                     f"use one of {', '.join(sorted(backends))}")
        return backends[conf.backend](conf)
    candidates = ["libvirt", "xm"] if conf.virt_type == "xen" else ["libvirt"]
    if len(candidates) == 1 and candidates[0] in backends:
        # Nothing to choose from: no probe (a second connection); the first call says
        # what is wrong if the backend cannot serve.
        driver = backends[candidates[0]](conf)
        driver.selection_reason = (f"auto: {candidates[0]}, the only backend for "
                                   f"virt_type {conf.virt_type}")
        return driver
    refusals: list[str] = []
    for name in candidates:
        cls = backends.get(name)
        reason = "not installed" if cls is None else cls.unavailable_reason(conf)
        if reason is None:
            driver = cls(conf)
            driver.selection_reason = "auto: " + "; ".join(refusals + [f"{name} serves"])
            LOG.info("backend %s chosen (%s)", name, driver.selection_reason)
            return driver
        LOG.info("backend %s cannot serve virt_type %s: %s", name, conf.virt_type, reason)
        refusals.append(f"{name}: {reason}")
    raise BackendUnavailable(f"no backend can run {conf.virt_type} guests on this host "
                             f"({'; '.join(refusals)})")
