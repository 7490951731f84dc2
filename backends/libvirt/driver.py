"""LibvirtDriver: the ComputeDriver contract on libvirt-python.

An instance lives in `{instances_path}/{uuid}/` (virt/instancefiles.py: the
qcow2 overlay `disk` on a raw base from the image cache, `console.log`, the
seed) and as a defined domain whose metadata element carries what is needed
to rebuild the Instance, so no database is needed. Every libvirt call goes
through the Connection, which reconnects and retries once when the daemon
went away.

A driver sees only the domains it owns. The owner recorded in each domain's
metadata is the canonical instances path: it is what the instances' files
are, so two configurations that share it would overwrite each other's disks
anyway, while two that differ (two compute services, a test beside
production) never see each other; and hosts that share the instances path
for migration own a migrated guest on either side, which a per-host identity
would not. Domains written by version 0.1 carry no owner: they are owned
when their instance directory lies in this driver's instances path. Another
owner's domain is "not found" here, whatever the call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, TypeVar

import libvirt
from lxml import etree

from backends.libvirt import guestinfo
from backends.libvirt.connection import Connection, start_event_loop, uri_for
from virt.domain import METADATA_NS, Disk, Domain, InstanceMetadata, Interface
from virt.driver import ComputeDriver
from virt.errors import (
    HypervisorError,
    InstanceExists,
    InstanceNotFound,
    InvalidParameter,
    InvalidState,
    MigrationFailed,
    NotSupported,
    SpawnError,
    Timeout,
    VirtError,
)
from virt.fileutils import filesystem_usage_gb, held_staging_dir, remove_quietly
from virt.lazymodules import built_on_first_read, lazy_modules
from virt.objects import (
    NIC,
    BlockDevice,
    GuestAddresses,
    GuestKind,
    HostInfo,
    Instance,
    InstanceInfo,
    InstanceSummary,
    PowerState,
)
from virt.units import gib_to_bytes, whole_gib
from virt.validation import check_image_name, check_instance_name, check_uuid, is_uuid

if TYPE_CHECKING:
    from backends.libvirt import (
        blockvolumes,
        hotplug,
        incoming,
        livesnapshot,
        migration,
        resize,
        usernet,
        volumes,
    )
    from virt import (
        bootfiles,
        forwards,
        guest,
        hostprograms,
        images,
        instancefiles,
        locks,
        recovery,
        rollback,
        seed,
        volumecopy,
    )
    from virt import params as params_contract
    from virt.capabilities import Capabilities
    from virt.imagecache import ImageCache
    from virt.images import Progress
    from virt.imagestore import LocalImageStore
else:  # loaded on first use: list and host-info run none of them, show only virt.guest
    (blockvolumes, hotplug, incoming, livesnapshot, migration, resize, usernet, volumes,
     bootfiles, forwards, guest, hostprograms, images, instancefiles, locks, recovery,
     rollback, seed, volumecopy, params_contract) = lazy_modules(
        *(f"backends.libvirt.{name}" for name in (
            "blockvolumes", "hotplug", "incoming", "livesnapshot", "migration", "resize",
            "usernet", "volumes")),
        *(f"virt.{name}" for name in (
            "bootfiles", "forwards", "guest", "hostprograms", "images", "instancefiles",
            "locks", "recovery", "rollback", "seed", "volumecopy", "params")))

LOG = logging.getLogger(__name__)

T = TypeVar("T")

START_TIMEOUT = 30.0
POLL_INTERVAL = 0.05
SNAPSHOT_FORMATS = ("qcow2", "raw")
DETACH_TIMEOUT = 30  # seconds a guest may take to release a detached disk

UNDEFINE_FLAGS = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                  | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                  | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.SUSPENDED,
}


_CAPS_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


def capability_arches(capabilities_xml: str) -> tuple[str, set[str]]:
    """(host arch, guest arches the host can run) from getCapabilities()."""
    root = etree.fromstring(capabilities_xml.encode(), _CAPS_PARSER)
    host_arch = root.findtext("host/cpu/arch") or ""
    return host_arch, {arch.get("name") for arch in root.iterfind("guest/arch")}


def domain_types(capabilities_xml: str) -> set[str]:
    """Domain types (kvm, qemu, xen, ...) the host's capabilities offer."""
    root = etree.fromstring(capabilities_xml.encode(), _CAPS_PARSER)
    return {d.get("type") for d in root.iterfind("guest/arch/domain")}


def power_state(state: int, has_managed_save: bool = False) -> PowerState:
    """libvirt's state code as a PowerState; a managed-saved shut-off guest is suspended."""
    if state == libvirt.VIR_DOMAIN_SHUTOFF and has_managed_save:
        return PowerState.SUSPENDED
    return _STATES.get(state, PowerState.NOSTATE)


@dataclass(frozen=True)
class _HostFacts:
    arch: str
    runnable_arches: frozenset[str]
    hypervisor_version: int


class LibvirtDriver(ComputeDriver):
    """Guests as libvirt domains with qcow2 overlays on cached raw bases."""

    name = "libvirt"

    @built_on_first_read
    def capabilities() -> Capabilities:  # the seed's and the guest's tables: not for reads
        from virt.capabilities import Capabilities
        return Capabilities(
            guest_kinds=frozenset(GuestKind), snapshot_kinds=frozenset({"cold", "live"}),
            live_migration=True, cold_migration=True, volume_attach=True, nic_attach=True,
            resize=True, seed_formats=frozenset(seed.LABELS), pause=True, suspend=True,
            console_output=True, console_command=True, guest_addresses=True,
            events="hypervisor", params=guest.SUPPORT)

    def __init__(self, conf, *, event_stop_delay: float | None = None):
        super().__init__(conf)
        if event_stop_delay is None:
            event_stop_delay = conf.libvirt.event_stop_delay
        self.virt_type = conf.virt_type
        self.uri = uri_for(conf.virt_type, conf.libvirt.connection_uri)
        lv = conf.libvirt
        self._connection = Connection(
            self.uri, keepalive_interval=lv.keepalive_interval,
            keepalive_count=lv.keepalive_count, max_backoff=lv.reconnect_max_backoff,
            stop_delay=event_stop_delay, fanout=self.events)
        self._facts: _HostFacts | None = None
        self.owner = os.path.realpath(conf.instances_path)
        # Ownership when last seen, for events of domains already gone.
        self._owned_names: dict[str, bool] = {}
        self._migrations: dict[str, migration.Migration] = {}
        self.events.accept = self._hears
        self._connection.add_resync(self._on_connect)

    @functools.cached_property
    def store(self) -> LocalImageStore:
        from virt.imagestore import LocalImageStore  # made when first used: reads need none
        return LocalImageStore.from_conf(self.conf)

    @functools.cached_property
    def cache(self) -> ImageCache:
        from virt.imagecache import ImageCache
        return ImageCache.from_conf(self.conf)

    @classmethod
    def unavailable_reason(cls, conf) -> str | None:
        """None when libvirtd answers at the URI and offers conf.virt_type guests."""
        uri = uri_for(conf.virt_type, conf.libvirt.connection_uri)
        start_event_loop()  # also silences libvirt's own printing of errors
        try:
            conn = libvirt.openReadOnly(uri)
        except libvirt.libvirtError as exc:
            return f"cannot connect to {uri}: {exc.get_error_message()}"
        try:
            offered = domain_types(conn.getCapabilities())
        except libvirt.libvirtError as exc:
            return f"cannot read the capabilities of {uri}: {exc.get_error_message()}"
        finally:
            conn.close()
        if conf.virt_type not in offered:
            return (f"{uri} does not offer {conf.virt_type} guests "
                    f"(it offers: {', '.join(sorted(offered)) or 'none'})")
        return None

    # -- host ---------------------------------------------------------------

    def init_host(self, host: str) -> None:
        os.makedirs(self.conf.instances_path, exist_ok=True)
        self._connection.get()
        self.reclaim()

    def undo_handlers(self) -> dict[str, Callable[[dict], None]]:
        return {"spawn": self._undo_dead_spawn,
                livesnapshot.MARKER_KIND: self._undo_dead_live_snapshot}

    def _undo_dead_spawn(self, marker: dict) -> None:
        """A spawn killed midway: the domain it defined (same uuid) and its directory go."""
        name, uuid = check_instance_name(marker["name"]), check_uuid(marker["uuid"], "uuid")
        with contextlib.suppress(InstanceNotFound):
            if self._with_domain(name, "look up", lambda dom: dom.UUIDString()) == uuid:
                self._hard_stop(name)
                self._undefine(name)
        remove_quietly(instancefiles.InstanceFiles.of(self.conf.instances_path, uuid).directory)

    def _undo_dead_live_snapshot(self, marker: dict) -> None:
        """A live snapshot killed midway: its backup job aborted, the guest thawed."""
        name = check_instance_name(marker["name"])
        with contextlib.suppress(InstanceNotFound):
            livesnapshot.undo_dead_backup(
                lambda action, fn: self._with_domain(name, action, fn), marker)

    def close(self) -> None:
        """Close the libvirt connection; the next call would open a new one."""
        self._connection.close()

    def get_host_info(self) -> HostInfo:
        """Four small calls: the node info's model is the host's arch, as in the capabilities
        (an 11 KB document a command like host-info need not fetch and parse)."""
        def read(conn):
            return conn.getInfo(), conn.getFreeMemory(), conn.getType(), conn.getVersion()

        (arch, memory_mb, cpus, _mhz, nodes, sockets, _cores, _threads), free, hv_type, \
            hv_version = self._call("read host info of", self.uri, read)
        total_gb, free_gb, used_gb = filesystem_usage_gb(self.conf.instances_path)
        return HostInfo(
            memory_total=memory_mb, memory_free=free >> 20, memory_dom0=None,
            cpu_total=cpus, cpu_nodes=nodes, cpu_sockets=nodes * sockets,
            hypervisor_type=hv_type.lower(), hypervisor_version=hv_version,
            arch=arch, backend=self.name,
            disk_total_gb=total_gb, disk_free_gb=free_gb, disk_used_gb=used_gb)

    def list_instances(self) -> list[str]:
        """Names of the domains this driver owns."""
        def names(conn):
            return sorted(dom.name() for dom in conn.listAllDomains() if self._owns_listed(dom))
        return self._call("list the domains of", self.uri, names)

    def list_summaries(self) -> list[InstanceSummary]:
        """Two calls for the host and one (the metadata) per domain, whatever their number.

        The state statistics list every domain with its state, so they are the listing.
        """
        def read(conn):
            owned = {}
            for dom, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE):
                with _vanishing_ignored():
                    listed = _listed(dom)
                    name = dom.name()
                    self._owned_names[name] = self._owns(listed)
                    if self._owned_names[name]:
                        owned[name] = listed, stats["state.state"]
            saved = {dom.name() for dom in conn.listAllDomains(
                libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE)}
            return owned, saved
        owned, saved = self._call("list the domains of", self.uri, read)
        return [InstanceSummary(
                    name=name, uuid=listed.instance_uuid, image=listed.image,
                    state=power_state(state, name in saved),
                    vcpus=listed.vcpus, memory_mb=listed.memory_mb)
                for name, (listed, state) in sorted(owned.items())]

    def register_event_listener(self, callback: Callable[[str, str], None]) -> None:
        super().register_event_listener(callback)
        # Connecting told nobody (no listener then): the states so far, now.
        self._connection.if_connected(self._resync)

    def _on_connect(self, conn: libvirt.virConnect) -> None:
        """After a (re)connect: the host may have changed, and events were missed."""
        self._facts = None
        self._resync(conn)

    def _resync(self, conn: libvirt.virConnect) -> None:
        """Tell listeners every owned guest's state."""
        if not self.events.has_listeners():
            return  # nobody to tell: no listing (a CLI command never listens)
        for dom in conn.listAllDomains():
            if self._owns_listed(dom):
                with _vanishing_ignored():
                    state = power_state(dom.state()[0], bool(dom.hasManagedSaveImage()))
                    self._connection.events.emit(dom.name(), state)

    # -- ownership ----------------------------------------------------------

    def _owns(self, meta: _Listed | None) -> bool:
        """Recorded with our owner, or written by 0.1 with its directory in our instances path."""
        if meta is None:
            return False
        if meta.owner is not None:
            return meta.owner == self.owner
        uuid = meta.instance_uuid
        return (uuid is not None and is_uuid(uuid)
                and os.path.isdir(instancefiles.InstanceFiles.of(self.owner, uuid).directory))

    def _owns_listed(self, dom: libvirt.virDomain) -> bool:
        """_owns for a domain met in a listing, which may vanish meanwhile (then False)."""
        with _vanishing_ignored():
            owned = self._owned_names[dom.name()] = self._owns(_listed(dom))
            return owned
        return False

    def _owned_domain(self, conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
        """The domain `name` if this driver owns it."""
        dom = conn.lookupByName(name)
        if not self._owns(_listed(dom)):
            raise _not_found(name)
        return dom

    def _hears(self, name: str) -> bool:
        """Whether listeners hear of `name`: owned now, or when last seen if it is gone."""
        def owned(conn):
            return self._owns(_listed(conn.lookupByName(name)))
        try:
            self._owned_names[name] = self._connection.call(owned)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                LOG.warning("cannot tell whether %s is ours, keeping its event back: %s",
                            name, e.get_error_message())
        except VirtError as e:  # libvirtd unreachable: the resync after reconnecting tells
            LOG.warning("cannot tell whether %s is ours: %s", name, e)
        return self._owned_names.get(name, False)

    def _check_name_free(self, name: str) -> None:
        """libvirt names are global: a name another owner uses is refused too."""
        def owned(conn):
            with _vanishing_ignored():
                return self._owns(_listed(conn.lookupByName(name)))
            return None
        owner = self._call("look up", name, owned)
        if owner is True:
            raise InstanceExists(f"instance {name!r} is already defined: "
                                 "destroy it first or choose another name")
        if owner is False:
            raise InstanceExists(f"instance name {name!r} is taken on {self.uri} by a domain "
                                 "this driver does not own (libvirt names are global): "
                                 "choose another name")
    # -- spawn --------------------------------------------------------------

    def describe_spawn(self, instance: Instance, image_id: str, nics: Iterable[NIC] = (),
                       block_devices: Iterable[BlockDevice] = ()) -> str:
        files = self.instance_files(instance)
        image = self._image(image_id)
        self._check_root_size(image.virtual_size, instance)
        arch = self._guest_arch(image.properties)
        nics = list(nics) or list(instance.nics)
        return self._domain_xml(instance, files, nics, list(block_devices), arch,
                                seed_plan=seed.plan(instance, nics))

    def spawn(self, instance: Instance, image_id: str, nics: Iterable[NIC] = (),
              block_devices: Iterable[BlockDevice] = ()) -> None:
        files = self.instance_files(instance)
        self._check_name_free(instance.name)
        nics = list(nics) or list(instance.nics)
        os.makedirs(self.conf.instances_path, exist_ok=True)
        # If this process dies midway, a reclaim undoes the spawn (_undo_dead_spawn).
        marker = recovery.OperationMarker(self.conf.instances_path, "spawn", name=instance.name,
                                 uuid=os.path.basename(files.directory))
        step = "image"
        try:
            with rollback.Rollback() as undo:
                undo.push("spawn marker", marker.release)
                image = self._image(image_id)
                self._check_root_size(image.virtual_size, instance)
                arch = self._guest_arch(image.properties)
                self.cache.ensure_base(image_id)  # converted now: a failure names the image
                step = "xml"
                seed_plan = seed.plan(instance, nics)
                xml = self._domain_xml(instance, files, nics, list(block_devices), arch,
                                       seed_plan=seed_plan)
                step = "disk"
                self._make_disks(files, image_id, instance, undo)
                if seed_plan is not None:
                    seed.write(seed_plan, files.directory)
                step = "define"
                dom = self._call("define", instance.name, lambda conn: conn.defineXML(xml))
                self._owned_names[instance.name] = True
                undo.push("definition", lambda: self._undefine(instance.name))
                step = "start"
                self._call("start", instance.name, lambda conn: _defined(conn, dom).create())
                undo.push("running domain", lambda: self._hard_stop(instance.name))
                step = "wait"
                self._wait_for(instance.name, {PowerState.RUNNING}, START_TIMEOUT,
                               read=lambda: self._call("read the state of", instance.name,
                                                       lambda conn: _defined(conn, dom).state()))
                marker.release()
        except (InvalidParameter, NotSupported):
            raise  # the caller's input: said as it is, never as a failed step
        except VirtError as e:
            raise SpawnError(step, str(e)) from None
        except OSError as e:
            raise SpawnError(step, f"{e.strerror}: {e.filename}") from None

    def _image(self, image_id: str):
        check_image_name(image_id, "image")
        return self.store.get(image_id)

    @staticmethod
    def _check_root_size(virtual_size: int, instance: Instance) -> None:
        root = gib_to_bytes(instance.flavor.root_gb)
        if instance.flavor.root_gb and virtual_size > root:
            raise InvalidParameter(
                f"image is {virtual_size} bytes, larger than the flavor's root disk "
                f"({instance.flavor.root_gb} GiB): use a flavor with root_gb >= "
                f"{whole_gib(virtual_size)}")

    def _host_facts(self) -> _HostFacts:
        """Capabilities and version, read once per connection (a restart may change them)."""
        facts = self._facts
        if facts is None:
            def read(conn):
                return conn.getCapabilities(), conn.getVersion()
            caps, version = self._call("read the capabilities of", self.uri, read)
            host_arch, runnable = capability_arches(caps)
            facts = self._facts = _HostFacts(host_arch, frozenset(runnable), version)
        return facts

    def _guest_arch(self, properties: dict[str, str]) -> str:
        facts = self._host_facts()
        host_arch, runnable = facts.arch, facts.runnable_arches
        arch = properties.get("arch") or host_arch
        if arch not in runnable:
            raise InvalidParameter(
                f"architecture {arch!r} of the image cannot run on this host, which runs "
                f"{', '.join(sorted(runnable)) or 'nothing'}: use an image for one of those")
        return arch

    def _domain_xml(self, instance: Instance, files: instancefiles.InstanceFiles, nics: list[NIC],
                    block_devices: list[BlockDevice], arch: str,
                    machine: str | None = None, seed_plan: seed.SeedPlan | None = None) -> str:
        guest.read_params(instance.kind, instance.params)  # the contract, before any host file
        version = self._host_facts().hypervisor_version
        params = bootfiles.resolve_boot_files(instance.params, self.store, self.conf.boot_file_dirs)
        if seed_plan is not None:
            # Read-only virtio disk: cloud-init's ds-identify finds it (a SATA cdrom it did not).
            block_devices = [*block_devices, BlockDevice(
                path=files.seed, fmt="raw", readonly=True)]
            params = _with_kernel_hint(params, seed_plan.kernel_hint())
        instance = dataclasses.replace(instance, params=hostprograms.resolve_host_programs(
            params, hostprograms.allowed_programs(self.conf)))
        forwarded = forwards.read_param(instance.params)
        if forwarded is not None and self.virt_type == "xen":
            raise InvalidParameter(f"params[{forwards.PARAM!r}]: Xen guests have no user "
                                   "networking; use a bridge")
        backend = usernet.QEMU_USER if forwarded is None else self._user_backend(arch)
        nics = usernet.other_nics(nics, forwarded, backend)
        root = BlockDevice(path=files.disk, fmt="qcow2")
        domain = guest.build_domain(instance, [root, *block_devices], nics, self.virt_type,
                              version, arch=arch, machine=machine,
                              console_log=files.console_log, owner=self.owner)
        if forwarded is not None and backend == usernet.PASST:
            usernet.add_passt(domain, forwarded)
            return domain.to_xml()
        return usernet.add_to_domain_xml(domain.to_xml(), forwarded)

    def _user_backend(self, arch: str) -> str:
        """passt when this libvirt's domain capabilities offer it, else QEMU user networking."""
        def read(conn):
            return conn.getDomainCapabilities(None, arch, None, self.virt_type, 0)
        try:
            caps = self._call("read the domain capabilities of", self.uri, read)
        except HypervisorError as e:  # an old libvirt or driver: QEMU's own still works
            LOG.warning("user NIC through QEMU user networking: %s", e)
            caps = None
        return usernet.pick_backend(caps)

    def _make_disks(self, files: instancefiles.InstanceFiles, image_id: str, instance: Instance,
                    undo: rollback.Rollback) -> None:
        os.makedirs(self.conf.instances_path, exist_ok=True)
        os.mkdir(files.directory, 0o750)  # an existing directory is not ours to remove
        undo.push(f"directory {files.directory}", lambda: remove_quietly(files.directory))
        size = gib_to_bytes(instance.flavor.root_gb) or None
        self.cache.create_overlay(image_id, files.disk, size)
        # Created now so that it belongs to us and the guest's log appends to it.
        with open(files.console_log, "x"):
            pass

    # -- stop and remove ----------------------------------------------------

    def destroy(self, instance: Instance, destroy_disks: bool = True) -> None:
        directory = self.instance_files(instance).directory
        with contextlib.suppress(InstanceNotFound):
            self._stop(instance.name, self.conf.libvirt.shutdown_timeout)
            self._undefine(instance.name)
        if destroy_disks:
            remove_quietly(directory)

    def power_off(self, instance: Instance, timeout: int | None = None) -> None:
        self._check_name(instance)
        self._stop(instance.name,
                   self.conf.libvirt.shutdown_timeout if timeout is None else timeout)

    def _stop(self, name: str, timeout: float) -> None:
        """Graceful shutdown, re-sent every retry interval, then destroy at the deadline.

        libvirt asks the guest agent first when it is connected, else (or when
        the agent fails) presses the ACPI power button.
        """
        retry = self.conf.libvirt.shutdown_retry_interval
        deadline = time.monotonic() + timeout
        next_request = 0.0
        while True:
            state = self._state(name)
            if state not in (PowerState.RUNNING, PowerState.BLOCKED, PowerState.SHUTDOWN):
                break  # off already, or paused/crashed: ACPI cannot reach it
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_request:
                self._ignoring_not_running(name, "shut down", lambda dom: dom.shutdown())
                next_request = now + retry
            time.sleep(POLL_INTERVAL)
        self._hard_stop(name)

    def _hard_stop(self, name: str) -> None:
        self._ignoring_not_running(name, "destroy", lambda dom: dom.destroy())

    def _ignoring_not_running(self, name: str, action: str,
                              fn: Callable[[libvirt.virDomain], object]) -> None:
        with contextlib.suppress(InvalidState):
            self._with_domain(name, action, fn)

    def _undefine(self, name: str) -> None:
        def undefine(dom):
            try:
                dom.undefineFlags(UNDEFINE_FLAGS)
            except libvirt.libvirtError as e:
                if e.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT,
                                              libvirt.VIR_ERR_INVALID_ARG):
                    raise
                # Older drivers know no NVRAM flag; the guest has no NVRAM there.
                dom.undefineFlags(UNDEFINE_FLAGS & ~libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        with contextlib.suppress(InstanceNotFound):
            self._with_domain(name, "undefine", undefine)

    # -- power --------------------------------------------------------------

    def reboot(self, instance: Instance, hard: bool = False) -> None:
        self._check_name(instance)
        if not hard and self._state(instance.name) is PowerState.RUNNING:
            if self._soft_reboot(instance.name):
                return
            LOG.warning("soft reboot of %s was not seen within %d s: rebooting hard",
                        instance.name, self.conf.libvirt.wait_soft_reboot_seconds)
        self._hard_reboot(instance.name)

    def _soft_reboot(self, name: str) -> bool:
        """Shut down, see the guest go down, start it again; False if it did not go down."""
        self._with_domain(name, "shut down", lambda dom: dom.shutdown())
        try:
            self._wait_for(name, {PowerState.SHUTOFF, PowerState.CRASHED},
                           self.conf.libvirt.wait_soft_reboot_seconds)
        except Timeout:
            return False
        self._with_domain(name, "start", lambda dom: dom.create())
        self._wait_for(name, {PowerState.RUNNING}, START_TIMEOUT)
        return True

    def _hard_reboot(self, name: str) -> None:
        """Destroy keeping the disks, define the domain again from its metadata, start."""
        self._hard_stop(name)
        domain = self._definition(name, secure=True)
        instance = guest.instance_from_domain(domain)
        honoured = params_contract.honoured_only(instance.kind, instance.params, guest.SUPPORT)
        if honoured != instance.params:
            LOG.warning("%s: params %s were never honoured; rebuilt without them", name,
                        ", ".join(sorted(set(instance.params) - set(honoured))))
            instance = dataclasses.replace(instance, params=honoured)
        disks = [BlockDevice(path=d.source, fmt=d.driver_type or "raw", bus=d.target_bus,
                             readonly=d.readonly, device_type=d.device)
                 for d in domain.devices_of(Disk) if d.source]
        files = instancefiles.InstanceFiles(os.path.dirname(disks[0].path))
        seed_plan = seed.read_record(files.directory)
        if seed_plan is not None:  # rebuilt: a guest may have been handed a damaged one
            seed.write(seed_plan, files.directory)
        xml = self._domain_xml(instance, files, list(instance.nics),
                               [d for d in disks[1:] if d.path != files.seed],
                               domain.os.arch or "x86_64", machine=domain.os.machine,
                               seed_plan=seed_plan)
        self._call("define", name, lambda conn: conn.defineXML(xml))
        self._with_domain(name, "start", lambda dom: dom.create())
        self._wait_for(name, {PowerState.RUNNING}, START_TIMEOUT)

    def power_on(self, instance: Instance) -> None:
        self._check_name(instance)
        if self._state(instance.name) in (PowerState.SHUTOFF, PowerState.SUSPENDED,
                                          PowerState.CRASHED):
            self._with_domain(instance.name, "start", lambda dom: dom.create())

    def pause(self, instance: Instance) -> None:
        self._require(instance, {PowerState.RUNNING}, "pause")
        self._with_domain(instance.name, "pause", lambda dom: dom.suspend())

    def unpause(self, instance: Instance) -> None:
        self._require(instance, {PowerState.PAUSED}, "unpause")
        self._with_domain(instance.name, "unpause", lambda dom: dom.resume())

    def suspend(self, instance: Instance) -> None:
        self._require(instance, {PowerState.RUNNING, PowerState.PAUSED}, "suspend")
        self._with_domain(instance.name, "suspend", lambda dom: dom.managedSave())

    def resume(self, instance: Instance) -> None:
        self._require(instance, {PowerState.SUSPENDED}, "resume")
        self._with_domain(instance.name, "resume", lambda dom: dom.create())

    def _require(self, instance: Instance, states: set[PowerState], action: str) -> None:
        self._check_name(instance)
        state = self._state(instance.name)
        if state not in states:
            raise InvalidState(
                f"cannot {action} instance {instance.name!r} while it is {state.value}: "
                f"it must be {' or '.join(sorted(s.value for s in states))}")

    # -- information --------------------------------------------------------

    def get_info(self, instance: Instance) -> InstanceInfo:
        self._check_name(instance)

        def read(dom):
            return dom.info(), dom.ID(), bool(dom.hasManagedSaveImage())

        (state, max_mem, mem, vcpus, cpu_time), dom_id, saved = self._with_domain(
            instance.name, "read the state of", read)
        return InstanceInfo(state=power_state(state, saved), max_mem_kb=max_mem, mem_kb=mem,
                            num_cpu=vcpus, cpu_time_ns=cpu_time,
                            id=dom_id if dom_id >= 0 else None)

    def instance_exists(self, instance: Instance) -> bool:
        self._check_name(instance)
        try:
            self._with_domain(instance.name, "look up", lambda dom: dom.name())
        except InstanceNotFound:
            return False
        return True

    def get_instance(self, name: str) -> Instance:
        """Rebuild the Instance of a defined domain from its metadata (for the CLI)."""
        check_instance_name(name, "instance name")
        return guest.instance_from_domain(self._definition(name))

    def get_console_output(self, instance: Instance) -> str:
        path = self.instance_files(instance).console_log
        limit = self.conf.libvirt.console_log_max_bytes
        try:
            with open(path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
                return f.read(limit).decode("utf-8", errors="replace")
        except FileNotFoundError:
            if not self.instance_exists(instance):
                raise InstanceNotFound(f"instance {instance.name!r} is not on this host: "
                                       "see list_instances") from None
            return ""

    def get_console_command(self, instance: Instance) -> list[str]:
        self._check_name(instance)
        return ["virsh", "-c", self.uri, "console", instance.name]

    def get_addresses(self, instance: Instance) -> GuestAddresses:
        self._check_name(instance)
        return self._with_domain(instance.name, "read the addresses of",
                                 guestinfo.read_addresses)

    # -- images and migration -----------------------------------------------

    def snapshot(self, instance: Instance, image_name: str, fmt: str = "qcow2",
                 compress: bool = False, progress: Progress | None = None) -> None:
        """Copy the root disk, with its whole chain, into the store as a new image.

        A running or paused guest is copied live and stays as it is (see
        backends/libvirt/livesnapshot.py); the image's `consistency`
        property says whether its file systems were frozen for the copy.
        """
        self._check_name(instance)
        check_image_name(image_name, "snapshot image name")
        if fmt not in SNAPSHOT_FORMATS:
            raise InvalidParameter(f"snapshot format {fmt!r}: use qcow2 or raw")
        if compress and fmt != "qcow2":
            raise InvalidParameter("compress: only qcow2 snapshots can be compressed")
        self.store.refuse_existing(image_name)
        domain = self._definition(instance.name)
        disks = [d for d in domain.devices_of(Disk) if d.target_dev]
        root = next((d for d in disks if d.device == "disk" and d.source), None)
        if root is None:
            raise InvalidState(f"instance {instance.name!r} has no root disk to snapshot")
        properties = {"arch": domain.os.arch} if domain.os.arch else {}
        if self._state(instance.name) not in (PowerState.RUNNING, PowerState.PAUSED):
            self._export(root.source, root.driver_type or "raw", image_name, fmt, compress,
                         properties, progress)
            return
        others = [d.target_dev for d in disks if d is not root]
        self._live_snapshot(instance.name, root.target_dev, others, image_name, fmt, compress,
                            properties, progress)

    def _live_snapshot(self, name: str, root: str, others: list[str], image_name: str,
                       fmt: str, compress: bool, properties: dict[str, str],
                       progress: Progress | None) -> None:
        def call(action, fn):
            return self._with_domain(name, action, fn)
        with self.store.staging("snapshot-" + image_name) as staging:
            copy = os.path.join(staging, "live-copy.qcow2")
            # If this process dies while the job may run, a reclaim aborts it.
            marker = recovery.OperationMarker(self.conf.instances_path, livesnapshot.MARKER_KIND,
                                     name=name, disk=root, target=copy)
            try:
                consistency = livesnapshot.copy_disk(call, root, copy, others, progress)
            except livesnapshot.JobStillActive:
                raise  # the marker stays: a reclaim after this process aborts the job again
            except BaseException:
                marker.release()
                raise
            marker.release()
            if consistency == livesnapshot.CRASH_CONSISTENT:
                LOG.warning("%s: no guest agent froze its file systems: snapshot %s is "
                            "crash-consistent", name, image_name)
            properties = {**properties, "consistency": consistency}
            if fmt == "qcow2" and not compress:
                self._publish(image_name, staging, copy, fmt, properties)
            else:
                self._export(copy, "qcow2", image_name, fmt, compress, properties, None)

    def _export(self, source: str, source_fmt: str, image_name: str, fmt: str, compress: bool,
                properties: dict[str, str], progress: Progress | None) -> None:
        with self.store.staging("snapshot-" + image_name) as staging:
            target = os.path.join(staging, f"{image_name}.img")
            images.extract_snapshot(source, source_fmt, target, fmt,
                                    compress=compress, progress=progress)
            self._publish(image_name, staging, target, fmt, properties)

    def _publish(self, image_name: str, staging: str, path: str, fmt: str,
                 properties: dict[str, str]) -> None:
        filename = f"{image_name}.img"
        if os.path.basename(path) != filename:
            os.rename(path, os.path.join(staging, filename))
        self.store.publish(image_name, staging, fmt,
                           images.get_disk_size(os.path.join(staging, filename), fmt),
                           properties, [filename])

    # -- volumes (see backends/libvirt/volumes.py) ---------------------------

    def attach_volume(self, instance: Instance, volume: str, device: str | None = None,
                      fmt: str | None = None) -> str:
        """Attach a copy of `volume` (store image name, or file path with fmt); its target."""
        self._check_name(instance)
        domain = self._definition(instance.name)
        files = instancefiles.InstanceFiles.of(self.owner, domain.metadata.instance_uuid)
        target = volumes.free_target(domain, "virtio", device)
        live = self._state(instance.name) in (PowerState.RUNNING, PowerState.PAUSED)
        if blockvolumes.is_device_path(volume):
            self._attach_block_volume(instance.name, volume, fmt, target, live)
            return target
        path = files.new_volume()
        with held_staging_dir(files.directory, "volume-" + target) as staging:
            try:
                copy = volumecopy.make_copy(self.store, volume, fmt, staging)
            except OSError as e:
                raise VirtError(f"cannot copy volume {volume}: {e.strerror}") from None
            try:
                os.link(copy, path)  # never over another attach's copy
            except FileExistsError:
                raise VirtError(f"{path} exists: name collision, try again") from None
        try:
            volumes.attach(lambda action, fn: self._with_domain(instance.name, action, fn),
                           volumes.disk_for(path, target, "virtio"), live)
        except BaseException:
            remove_quietly(path)
            raise
        return target

    def detach_volume(self, instance: Instance, device: str,
                      timeout: int = DETACH_TIMEOUT) -> None:
        """Detach the volume at `device`, waiting up to `timeout` s for the guest to let go."""
        self._check_name(instance)
        domain = self._definition(instance.name)
        files = instancefiles.InstanceFiles.of(self.owner, domain.metadata.instance_uuid)
        allowed = self.conf.volume_block_devices
        disk = next((d for d in domain.devices_of(Disk) if d.target_dev == device
                     and blockvolumes.is_block_volume(d, allowed)), None) \
            or volumes.attached_volume(domain, files, device)
        live = self._state(instance.name) in (PowerState.RUNNING, PowerState.PAUSED)
        volumes.detach(lambda action, fn: self._with_domain(instance.name, action, fn),
                       lambda fn: self._call("watch", instance.name, fn),
                       instance.name, disk, live, timeout)
        if disk.type == "file":  # the guest's own copy; a host device stays as it is
            remove_quietly(disk.source)

    def _attach_block_volume(self, name: str, volume: str, fmt: str | None, target: str,
                             live: bool) -> None:
        """Give the guest an allowed host block device that no one else uses."""
        device = blockvolumes.allowed_device(volume, self.conf.volume_block_devices, fmt)
        # one check and attach at a time on this host: two guests never get one device
        with locks.external_lock(self.conf.oslo_concurrency.lock_path or self.conf.lock_path,
                           "virt-driver-block-volumes"):
            self._call("check the users of", volume,
                       lambda conn: blockvolumes.refuse_if_in_use(conn, device))
            volumes.attach(lambda action, fn: self._with_domain(name, action, fn),
                           blockvolumes.disk_for(device, target, "virtio"), live)

    def attach_interface(self, instance: Instance, nic: NIC) -> None:
        self._check_name(instance)
        domain = self._definition(instance.name)
        mac = nic.mac.lower()
        if any((i.mac or "").lower() == mac for i in domain.devices_of(Interface)):
            raise InvalidParameter(f"NIC {nic.mac}: the guest has a NIC with this MAC already")
        xml = guest.interface_for(nic, self.conf.virt_type).to_xml()
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (
            libvirt.VIR_DOMAIN_AFFECT_LIVE if self._is_live(instance.name) else 0)
        self._with_domain(instance.name, "attach a NIC to",
                          lambda dom: dom.attachDeviceFlags(xml, flags))

    def detach_interface(self, instance: Instance, mac: str,
                         timeout: int = DETACH_TIMEOUT) -> None:
        """Remove the NIC with `mac`; a running guest must release it within `timeout` s."""
        self._check_name(instance)
        domain = self._definition(instance.name)
        mac = mac.lower()
        iface = next((i for i in domain.devices_of(Interface) if (i.mac or "").lower() == mac),
                     None)
        if iface is None:
            raise InvalidParameter(f"NIC {mac}: the guest has no NIC with this MAC")
        xml = iface.to_xml()

        def call(action, fn):
            return self._with_domain(instance.name, action, fn)
        if self._is_live(instance.name):
            hotplug.detach_live(call, lambda fn: self._call("watch", instance.name, fn),
                                instance.name, xml, lambda live: all(
                                    (i.mac or "").lower() != mac
                                    for i in live.devices_of(Interface)),
                                f"NIC {mac}", timeout)
        call("detach a NIC from",
             lambda dom: dom.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG))

    # -- resize (see backends/libvirt/resize.py) ----------------------------

    def resize(self, instance: Instance, root_gb: int | None = None, vcpus: int | None = None,
               memory_mb: int | None = None) -> None:
        """Grow the root disk, set vCPUs and memory: a running guest within the maximums
        it booted with, a shut-off one within the host."""
        self._check_name(instance)
        name = instance.name
        if self._state(name) is PowerState.SUSPENDED:
            raise InvalidState(f"cannot resize instance {name!r} while it is suspended (its "
                               "saved memory has the old size): resume or power it off first")
        domain = self._definition(name, secure=True)
        root = resize.root_disk(domain)
        live = self._is_live(name)

        def call(action, fn):
            return self._with_domain(name, action, fn)
        disk_bytes = resize.live_disk_bytes(call, root) if live else \
            images.get_disk_size(root.source, root.driver_type or "raw")
        request = resize.Request(root_gb, vcpus, memory_mb)
        old = domain.metadata.flavor
        new = resize.check(request, old, disk_bytes, resize.bounds(
            domain, self.get_host_info(), self.store.max_virtual_size), live)
        grow = resize.grow_to(request, disk_bytes)
        xml = resize.persistent_definition(domain, new).to_xml()

        def persist():
            self._call("define", name, lambda conn: conn.defineXML(xml))
            if live:  # the live metadata too, for readers of the running definition
                meta = resize.unqualified_metadata(domain)
                call("record the size of", lambda dom: dom.setMetadata(
                    libvirt.VIR_DOMAIN_METADATA_ELEMENT, meta, "vd", METADATA_NS,
                    libvirt.VIR_DOMAIN_AFFECT_LIVE))
        if live:
            resize.resize_live(call, old, new, root, grow, persist)
            return
        if grow is not None:
            resize.grow_overlay(root.source, root.driver_type or "raw", grow, self.store.limits)
        persist()

    def _is_live(self, name: str) -> bool:
        return self._state(name) in (PowerState.RUNNING, PowerState.PAUSED)

    def migrate(self, instance: Instance, dest: str, live: bool = True,
                progress: Progress | None = None,
                dest_instances_path: str | None = None) -> migration.MigrationResult:
        """Peer-to-peer (live) migration to the libvirt URI `dest`; libvirt's figures.

        Shared storage (dest_instances_path None): the disks are reachable at
        the same paths there, so the destination's driver owns the guest too.
        Block migration: the destination's driver ran prepare_incoming(), which
        gave dest_instances_path; libvirt copies the overlay only, the domain
        arrives owned by and pointing into that path, and the overlay here is
        removed after success. The completion-timeout policy comes from
        [libvirt] migration_*; abort_migration() stops it from another thread.
        On any failure the guest keeps running here. A stopped guest migrates
        offline: only its definition moves (shared storage only).
        """
        directory = self.instance_files(instance).directory
        if not isinstance(dest, str) or "://" not in dest or any(c.isspace() for c in dest):
            raise InvalidParameter(f"destination {dest!r}: use a libvirt URI such as "
                                   "qemu+ssh://host/system")
        block = dest_instances_path is not None
        if block and not os.path.isabs(dest_instances_path or ""):
            raise InvalidParameter(f"destination instances path {dest_instances_path!r}: "
                                   "use the absolute path prepare_incoming returned there")
        offline = self._offline(instance.name, block)
        policy = migration.MigrationPolicy.from_conf(self.conf)
        flags = migration.migration_flags(live, block=block, policy=policy, offline=offline)

        def start(conn):
            dom = self._owned_domain(conn, instance.name)
            if not block:
                return migration.Migration(dom, dest, flags, policy, progress=progress)
            # the live and the persistent definition both name the destination's paths
            xmls = []
            for inactive in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
                xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE
                                  | libvirt.VIR_DOMAIN_XML_SECURE | inactive)
                for here in {self.conf.instances_path, self.owner}:
                    xml = migration.relocated_xml(xml, here, dest_instances_path)
                xmls.append(xml)
            return migration.Migration(dom, dest, flags, policy, dest_xml=xmls[0],
                                       persist_xml=xmls[1], progress=progress)
        job = self._call("migrate", instance.name, start)
        if self._migrations.setdefault(instance.name, job) is not job:
            raise InvalidState(f"instance {instance.name!r} is already migrating: "
                               "wait for it or abort_migration")
        try:
            result = job.run()
            if block:
                remove_quietly(directory)
            return result
        except migration.MigrationAborted as e:
            raise MigrationFailed(f"migration of {instance.name} to {dest} stopped: {e}; "
                                  "it keeps running here") from None
        except libvirt.libvirtError as e:
            raise MigrationFailed(f"cannot migrate {instance.name} to {dest}: "
                                  f"{e.get_error_message()}; it keeps running here: check "
                                  "that the destination is reachable from this host's "
                                  "libvirtd, runs the same hypervisor and has no guest of "
                                  "that name") from None
        finally:
            del self._migrations[instance.name]

    def _offline(self, name: str, block: bool) -> bool:
        """Whether the guest migrates offline (it is stopped); refused where that cannot be."""
        state = self._state(name)
        if state is PowerState.SUSPENDED:
            raise InvalidState(f"instance {name!r} is suspended: migration does not carry its "
                               "saved memory; resume it (or stop it) first")
        offline = state in (PowerState.SHUTOFF, PowerState.CRASHED)
        if offline and block:
            raise NotSupported(f"instance {name!r} is stopped and libvirt copies no disk of a "
                               "stopped guest: start it and block-migrate it live, or "
                               "migrate it with shared storage")
        return offline

    def seed_record(self, instance: Instance) -> str | None:
        """The instance's seed record (seed.json), for prepare_incoming at the destination."""
        try:
            with open(self.instance_files(instance).seed_record) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def prepare_incoming(self, instance: Instance, chain: BinaryIO | None = None,
                         seed_record: str | None = None, image_digest: str | None = None) -> str:
        """Destination side of a block migration: the base from this host's cache
        (fetched from its image store, into which `chain`, the source's image
        export, is imported first when the image is not there), an empty
        overlay over it, which libvirt fills, and the seed rebuilt from the
        source's seed_record. An image this store already had must carry the
        source's `image_digest`: a name alone does not prove the same bytes.
        Returns this host's instances path for migrate()."""
        files = self.instance_files(instance)
        self._check_name_free(instance.name)
        plan = None if seed_record is None else incoming.seed_plan(instance, seed_record)
        name = check_image_name(instance.image or "", "image")
        try:
            with rollback.Rollback() as undo:
                if chain is not None and incoming.import_missing_image(
                        self.store, name, chain,
                        images.parse_size(self.conf.images.max_chain_import_size)):
                    undo.push(f"imported image {name}", lambda: self.store.delete(name))
                    image = self._image(name)
                else:
                    image = self._image(name)
                    incoming.check_same_image(image, image_digest)
                self._check_root_size(image.virtual_size, instance)
                self.cache.fetch_base(image.name)
                self._make_disks(files, image.name, instance, undo)
                if plan is not None:
                    seed.write(plan, files.directory)
        except OSError as e:
            raise InvalidState(f"cannot prepare {instance.name} for migration: {e.strerror}: "
                               f"{e.filename}; migrate-abandon it, then try again") from None
        return self.conf.instances_path

    def abandon_incoming(self, instance: Instance) -> None:
        """Undo prepare_incoming after a failed migration; never touches an arrived guest."""
        directory = self.instance_files(instance).directory
        if self.instance_exists(instance):
            raise InvalidState(f"instance {instance.name!r} arrived here: destroy it "
                               "instead if it must go")
        remove_quietly(directory)

    def abort_migration(self, instance: Instance) -> None:
        """Stop a running migration of `instance`; the guest stays here."""
        self._check_name(instance)
        job = self._migrations.get(instance.name)
        if job is None:
            raise InvalidState(f"instance {instance.name!r} is not migrating from this "
                               "driver: nothing to abort")
        job.abort()

    # -- plumbing -----------------------------------------------------------

    @staticmethod
    def _check_name(instance: Instance) -> None:
        check_instance_name(instance.name, "instance name")

    def _state(self, name: str) -> PowerState:
        def read(dom):
            return power_state(dom.state()[0], bool(dom.hasManagedSaveImage()))
        return self._with_domain(name, "read the state of", read)

    def _definition(self, name: str, secure: bool = False) -> Domain:
        """The persistent definition (not the live one, which libvirt decorates).

        secure: with the VNC password, for rebuilding the domain.
        """
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE | (libvirt.VIR_DOMAIN_XML_SECURE if secure else 0)
        return Domain.from_xml(self._with_domain(
            name, "read the definition of", lambda dom: dom.XMLDesc(flags)))

    def _wait_for(self, name: str, states: set[PowerState], timeout: float,
                  read: Callable[[], list[int]] | None = None) -> PowerState:
        """read: the domain's state() without the lookup by name (a domain just defined)."""
        deadline = time.monotonic() + timeout
        while (state := self._state(name) if read is None
               else power_state(read()[0])) not in states:
            if time.monotonic() >= deadline:
                raise Timeout(f"instance {name!r} is {state.value} after {timeout:g} s, "
                              f"not {' or '.join(sorted(s.value for s in states))}")
            time.sleep(POLL_INTERVAL)
        return state

    def _call(self, action: str, name: str, fn: Callable[[libvirt.virConnect], T]) -> T:
        try:
            return self._connection.call(fn)
        except libvirt.libvirtError as e:
            raise _translate(e, action, name) from None

    def _with_domain(self, name: str, action: str,
                     fn: Callable[[libvirt.virDomain], T]) -> T:
        return self._call(action, name, lambda conn: fn(self._owned_domain(conn, name)))


def _translate(error: libvirt.libvirtError, action: str, name: str) -> VirtError:
    code, message = error.get_error_code(), error.get_error_message()
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return _not_found(name)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return InvalidState(f"cannot {action} {name}: {message}")
    return HypervisorError(f"cannot {action} {name}: {message}")


def _defined(conn: libvirt.virConnect, dom: libvirt.virDomain) -> libvirt.virDomain:
    """The domain this spawn defined, on `conn`: the object defineXML returned, or its
    UUID looked up on a new connection (after a reconnect). Bound to that UUID, a
    domain someone else defined under the same name meanwhile is never touched, and
    no lookup by name or ownership check costs two calls each time."""
    return dom if dom.connect() is conn else conn.lookupByUUIDString(dom.UUIDString())


def _with_kernel_hint(params: dict[str, str], hint: str | None) -> dict[str, str]:
    """Params with the seed's kernel argument added to a direct boot's command line."""
    if hint is None or "kernel_path" not in params:
        return params
    args = params.get("kernel_args", "")
    if any(arg.startswith("ds=") for arg in args.split()):
        return params  # the caller's choice, or ours from the spawn (kept in the metadata)
    return {**params, "kernel_args": f"{args} {hint}".strip()}


def _not_found(name: str) -> InstanceNotFound:
    return InstanceNotFound(f"instance {name!r} is not defined on this host: "
                            "see list_instances")


class _Listed(NamedTuple):
    """What a listing and an ownership check read of a domain's metadata."""

    owner: str | None
    instance_uuid: str | None
    image: str | None
    vcpus: int | None
    memory_mb: int | None


def _listed(dom: libvirt.virDomain) -> _Listed | None:
    """The listed fields of a domain's metadata; None when the project did not build it."""
    try:
        xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return None
        raise
    if len(xml) > CACHED_METADATA_MAX:
        return _parse_listed(xml)
    return _cached_listed(xml)


def _parse_listed(xml: str) -> _Listed | None:
    try:
        root = etree.fromstring(xml.encode(), _CAPS_PARSER)
        for element in root.iter(tag=etree.Element):
            if not element.tag.startswith("{"):  # libvirt hands the element back unqualified
                element.tag = f"{{{METADATA_NS}}}{element.tag}"
        meta = InstanceMetadata.from_element(root)
    except (etree.XMLSyntaxError, InvalidParameter):
        return None  # not ours to read: someone else's element in our namespace
    flavor = meta.flavor
    return _Listed(meta.owner, meta.instance_uuid, meta.image,
                   flavor.vcpus if flavor else None, flavor.memory_mb if flavor else None)


# Parsed once per distinct text: a listing reads every domain's element every time,
# and the same text always gives the same fields (about 60 us a domain saved).
# Bounded: at most CACHED_METADATA_TEXTS texts of at most CACHED_METADATA_MAX
# characters (ours are a few hundred), whatever anyone with libvirt access writes.
CACHED_METADATA_TEXTS, CACHED_METADATA_MAX = 1024, 8192
_cached_listed = functools.lru_cache(maxsize=CACHED_METADATA_TEXTS)(_parse_listed)


@contextlib.contextmanager
def _vanishing_ignored():
    """Skip the rest of the block when the domain was undefined meanwhile."""
    try:
        yield
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
