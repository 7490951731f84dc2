"""XmDriver: the ComputeDriver contract over the xm/xl toolstack.

Guests live as config files CONFIG_DIR/NAME plus an instance directory
{instances_path}/{uuid} holding the root disk. The instance disk is a qcow2
overlay on the cached raw base where the chosen Xen disk driver reads qcow2
(qdisk, i.e. xl on Xen >= 4.2 without xend); with phy, file (loop) or
blktap's aio only raw bytes pass through, so it is a raw copy there.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable

from backends.xm import config as xmconfig
from backends.xm import hotplug, params
from backends.xm.toolstack import (
    DomainRow,
    Toolstack,
    choose_toolstack,
    run_command,
    xm_available,
)
from virt import images, seed
from virt.bootfiles import resolve_boot_files
from virt.capabilities import Capabilities
from virt.disk import DiskProbe, is_block_device, pick_disk_driver_name
from virt.driver import ComputeDriver
from virt.errors import (
    HypervisorError,
    InstanceExists,
    InstanceNotFound,
    InvalidParameter,
    InvalidState,
    NotSupported,
    SpawnError,
    ToolstackError,
    VirtError,
)
from virt.fileutils import (
    atomic_write,
    filesystem_usage_gb,
    held_staging_dir,
    remove_quietly,
)
from virt.hostprograms import allowed_programs, resolve_host_programs
from virt.objects import (
    NIC,
    BlockDevice,
    Flavor,
    GuestKind,
    HostInfo,
    Instance,
    InstanceInfo,
    PowerState,
)
from virt.recovery import Reclaimed
from virt.rollback import Rollback
from virt.units import gib_to_bytes, whole_gib
from virt.validation import check_instance_name
from virt.volumecopy import make_copy

LOG = logging.getLogger(__name__)

REBOOT_POLL_SECONDS = 1.0
# States of a domain that is up: xl shows a running guest as blocked between slices.
RUNNING_STATES = {PowerState.RUNNING, PowerState.BLOCKED}
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]{0,252}")


class XmDriver(ComputeDriver):
    """Xen guests through `xl` or `xm`; everything external is injectable."""

    name = "xm"
    capabilities = Capabilities(
        guest_kinds=frozenset(GuestKind), live_migration=True, cold_migration=True,
        volume_attach=True, nic_attach=True, seed_formats=frozenset(seed.LABELS), pause=True,
        console_command=True,
        params=params.SUPPORT)

    def __init__(self, conf, runner: Callable | None = None, probe: DiskProbe | None = None,
                 image_cache=None, sleep: Callable[[float], None] = time.sleep):
        super().__init__(conf)
        self._runner = runner or run_command
        self._probe = probe
        self._image_cache = image_cache
        self._sleep = sleep
        self._toolstack: Toolstack | None = None
        self.config_dir = conf.xm.config_dir

    @classmethod
    def unavailable_reason(cls, conf) -> str | None:
        """Why this host cannot use the xm backend, or None when it can."""
        if conf.virt_type != "xen":
            return f"the xm backend runs Xen guests only (virt_type is {conf.virt_type})"
        if xm_available(conf) is None:
            wanted = "xl or xm" if conf.xm.toolstack == "auto" else conf.xm.toolstack
            return f"no {wanted} toolstack binary on PATH (install xen-utils)"
        return None

    # -- plumbing ---------------------------------------------------------

    @property
    def toolstack(self) -> Toolstack:
        if self._toolstack is None:
            command = choose_toolstack(self.conf.xm.toolstack, self._runner)
            LOG.info("xm backend drives guests with %s", command)
            self._toolstack = Toolstack(command, self._runner, self.conf.xm.command_retries,
                                        sleep=self._sleep)
        return self._toolstack

    def _cache(self):
        if self._image_cache is None:
            from virt.imagecache import ImageCache
            self._image_cache = ImageCache.from_conf(self.conf)
        return self._image_cache

    def config_path(self, name: str) -> str:
        return os.path.join(self.config_dir, check_instance_name(name))

    def _find(self, instance: Instance) -> DomainRow | None:
        return self.toolstack.find(check_instance_name(instance.name))

    def _require(self, instance: Instance) -> DomainRow | None:
        """The running domain; None for a stopped guest (its config kept); else not found."""
        row = self._find(instance)
        if row is None and not self._is_defined(instance.name):
            raise InstanceNotFound(f"instance {instance.name!r} is not defined on this host: "
                                   "see list_instances")
        return row

    def _require_state(self, instance: Instance, states: set[PowerState],
                       action: str) -> None:
        row = self._require(instance)
        state = PowerState.SHUTOFF if row is None else row.state
        if state not in states:
            raise InvalidState(
                f"cannot {action} instance {instance.name!r} while it is {state.value}: "
                f"it must be {' or '.join(sorted(s.value for s in states))}")

    def _is_defined(self, name: str) -> bool:
        """A config file this driver wrote: the guest exists, running or stopped."""
        try:
            with open(self.config_path(name)) as f:
                return f.read(len(xmconfig.HEADER)) == xmconfig.HEADER
        except OSError:
            return False

    def _emit(self, name: str, state: PowerState) -> None:
        """xm has no event stream: listeners hear the state changes this driver makes."""
        self.events.deliver(name, state.value)

    # -- host -------------------------------------------------------------

    def init_host(self, host: str) -> None:
        for path in (self.config_dir, self.conf.instances_path):
            os.makedirs(path, exist_ok=True)
        self.toolstack.info()
        self.reclaim()

    def reclaim(self, directories: Iterable[str] = ()) -> list[Reclaimed]:
        """Also the temporaries of config files written into the xm config directory."""
        return super().reclaim([self.config_dir, *directories])

    def get_host_info(self) -> HostInfo:
        total, free, used = filesystem_usage_gb(self.conf.instances_path)
        return dataclasses.replace(self.toolstack.host_info(), disk_total_gb=total,
                                   disk_free_gb=free, disk_used_gb=used)

    def _disk_driver(self, is_block_dev: bool = False) -> str | None:
        version = self.toolstack.host_info().hypervisor_version
        return pick_disk_driver_name("xen", version, is_block_dev, self._probe)

    # -- spawn ------------------------------------------------------------

    def _guest_config(self, instance: Instance, image_id: str, nics: Iterable[NIC],
                      block_devices: Iterable[BlockDevice]) -> tuple[xmconfig.GuestConfig, str]:
        """The config to write and the instance disk format; checks everything first."""
        check_instance_name(instance.name)
        params.check_syntax(instance.kind, instance.params)  # the contract, before any host file
        boot_params = resolve_boot_files(instance.params, self._cache().store,
                                         self.conf.boot_file_dirs)
        values = params.check_syntax(instance.kind, resolve_host_programs(
            boot_params, allowed_programs(self.conf)))
        params.check_node(values)
        toolstack = self.toolstack.command
        driver = self._disk_driver()
        disk_format = xmconfig.instance_disk_format(driver, toolstack)
        files = self.instance_files(instance)
        disks = [xmconfig.DiskLine(files.disk,
                                   xmconfig.disk_prefix(driver, toolstack, disk_format))]
        for device in block_devices:
            disks.append(self._block_device_line(device, driver, toolstack))
        nics = tuple(nics) or tuple(instance.nics)
        if seed.plan(instance, nics) is not None:  # checked now; written by spawn
            disks.append(xmconfig.DiskLine(files.seed,
                                           xmconfig.disk_prefix(driver, toolstack, "raw"),
                                           readonly=True))
        cfg = xmconfig.GuestConfig(
            toolstack=toolstack, name=instance.name, uuid=instance.uuid, kind=instance.kind,
            memory_mb=instance.flavor.memory_mb, vcpus=instance.flavor.vcpus, values=values,
            disks=tuple(disks), nics=nics,
            network_port=instance.network_port, vnc_password=values.get("vnc_password"),
            image=image_id, root_gb=instance.flavor.root_gb)
        xmconfig.render(cfg)  # every remaining check, before anything is created
        return cfg, disk_format

    @staticmethod
    def _block_device_line(device: BlockDevice, driver: str | None,
                           toolstack: str) -> xmconfig.DiskLine:
        is_block = is_block_device(device.path)
        prefix = ("phy" if is_block and device.fmt == "raw"
                  else xmconfig.disk_prefix(driver, toolstack, device.fmt))
        cdrom = device.device_type == "cdrom"
        return xmconfig.DiskLine(device.path, prefix, readonly=device.readonly or cdrom,
                                 cdrom=cdrom)

    def describe_spawn(self, instance: Instance, image_id: str, nics: Iterable[NIC] = (),
                       block_devices: Iterable[BlockDevice] = ()) -> str:
        cfg, _fmt = self._guest_config(instance, image_id, nics, block_devices)
        return xmconfig.render(cfg)

    def spawn(self, instance: Instance, image_id: str, nics: Iterable[NIC] = (),
              block_devices: Iterable[BlockDevice] = ()) -> None:
        cfg, disk_format = self._guest_config(instance, image_id, nics, block_devices)
        if self._find(instance) is not None:
            raise InstanceExists(f"instance {instance.name!r} is already running")
        config_path = self.config_path(instance.name)
        if os.path.exists(config_path):
            raise InstanceExists(f"instance {instance.name!r} is defined ({config_path} exists): "
                                 "power it on, or destroy it first")
        instance_dir = self.instance_files(instance).directory
        if os.path.exists(instance_dir):
            raise InstanceExists(f"instance directory {instance_dir} already exists: "
                                 "destroy the old instance first")
        step = "image"
        try:
            with Rollback() as undo:
                base = self._cache().fetch_base(image_id)
                step = "disk"
                os.makedirs(instance_dir)
                undo.push(f"directory {instance_dir}", lambda: remove_quietly(instance_dir))
                self._make_disk(instance, image_id, base, disk_format)
                seed_plan = seed.plan(instance, cfg.nics)
                if seed_plan is not None:
                    seed.write(seed_plan, instance_dir)
                step = "config"
                self._write_config(config_path, xmconfig.render(cfg),
                                   cfg.vnc_password is not None)
                undo.push(f"config {config_path}", lambda: remove_quietly(config_path))
                remove_quietly(os.path.join(self.config_dir, "auto", instance.name))
                step = "create"
                # Runs first: the config of a guest that would not start is kept for a look.
                undo.push("failed config", lambda: self._keep_failed_config(
                    config_path, instance.name))
                self.toolstack.run("create", config_path)
        except (VirtError, OSError) as exc:
            if isinstance(exc, (InvalidParameter, NotSupported)):
                raise  # the caller's input: said as it is, never as a failed step
            raise SpawnError(step, str(exc)) from exc
        self._emit(instance.name, PowerState.RUNNING)

    def _make_disk(self, instance: Instance, image_id: str, base: str,
                   disk_format: str) -> None:
        path = self.instance_files(instance).disk
        base_size = images.get_disk_size(base, "raw")
        # root_gb 0 means the image's own size, as under libvirt.
        size = gib_to_bytes(instance.flavor.root_gb) or base_size
        if size < base_size:
            raise InvalidParameter(
                f"flavor root_gb {instance.flavor.root_gb}: the image needs "
                f"{whole_gib(base_size)} GiB; use a larger flavor")
        if disk_format == "qcow2":
            self._cache().create_overlay(image_id, path, size)  # recorded as the base's user
        else:
            images.convert(base, "raw", path, "raw")
            if size != base_size:
                images.resize(path, "raw", size)

    def _write_config(self, path: str, text: str, secret: bool) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, text, mode=0o600 if secret else 0o644)

    def _keep_failed_config(self, config_path: str, name: str) -> None:
        """Move the config of a guest that failed to start to the log directory."""
        log_dir = self.conf.xm.log_dir
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        try:
            os.makedirs(log_dir, exist_ok=True)
            target = os.path.join(log_dir, f"{name}-{stamp}")
            os.replace(config_path, target)
            LOG.error("kept the config of %s, which failed to start, as %s", name, target)
        except OSError as exc:
            LOG.error("could not keep the failed config of %s (%s); removing it", name, exc)
            remove_quietly(config_path)

    # -- stop and start ---------------------------------------------------

    def _stop(self, instance: Instance, timeout: int) -> None:
        """`shutdown -w` bounded by timeout, then `destroy` if still there."""
        name = instance.name
        if self._find(instance) is None:
            return
        if timeout > 0:
            try:
                self._runner(["timeout", "-k", "5", str(timeout),
                              self.toolstack.command, "shutdown", "-w", name])
            except ToolstackError as exc:
                LOG.warning("graceful shutdown of %s did not finish in %ss: %s",
                            name, timeout, exc)
        if self._find(instance) is not None:
            try:
                self.toolstack.run("destroy", name)
            except ToolstackError:
                if self._find(instance) is not None:
                    raise
        if self._find(instance) is not None:
            raise HypervisorError(f"instance {name!r} is still running after destroy")

    def destroy(self, instance: Instance, destroy_disks: bool = True) -> None:
        check_instance_name(instance.name)
        self._stop(instance, self.conf.xm.shutdown_timeout)
        remove_quietly(self.config_path(instance.name))
        remove_quietly(os.path.join(self.config_dir, "auto", instance.name))
        if destroy_disks:
            remove_quietly(self.instance_files(instance).directory)
        self._emit(instance.name, PowerState.SHUTOFF)

    def power_off(self, instance: Instance, timeout: int | None = None) -> None:
        if self._require(instance) is None:
            return  # stopped already
        self._stop(instance, self.conf.xm.shutdown_timeout if timeout is None else timeout)
        self._emit(instance.name, PowerState.SHUTOFF)

    def power_on(self, instance: Instance) -> None:
        if self._find(instance) is not None:
            return
        path = self.config_path(instance.name)
        if not os.path.exists(path):
            raise InstanceNotFound(f"instance {instance.name!r} has no config file {path}: "
                                   "spawn it first")
        self.toolstack.run("create", path)
        self._emit(instance.name, PowerState.RUNNING)

    def reboot(self, instance: Instance, hard: bool = False) -> None:
        """Soft reboot, verified; a hard one when it was not seen, or the guest is not up."""
        before = self._require(instance)
        if not hard and before is not None and before.state in RUNNING_STATES:
            if self._soft_reboot(instance, before):
                return
            LOG.warning("soft reboot of %s was not seen within %ss: rebooting hard",
                        instance.name, self.conf.xm.reboot_timeout)
        self._stop(instance, 0)
        directory = self.instance_files(instance).directory
        seed_plan = seed.read_record(directory)
        if seed_plan is not None:  # rebuilt from the record, as the libvirt backend does
            seed.write(seed_plan, directory)
        self.power_on(instance)

    def _soft_reboot(self, instance: Instance, before: DomainRow) -> bool:
        """`reboot`, then watch for it; False when it was not seen in time."""
        self.toolstack.run("reboot", instance.name)
        polls = max(1, math.ceil(self.conf.xm.reboot_timeout / REBOOT_POLL_SECONDS))
        for _ in range(polls):
            now = self._find(instance)
            # A new domain id, or cpu time starting over, means it rebooted.
            if now is not None and (now.id != before.id or now.cpu_time < before.cpu_time):
                self._emit(instance.name, PowerState.RUNNING)
                return True
            self._sleep(REBOOT_POLL_SECONDS)
        return False

    def pause(self, instance: Instance) -> None:
        self._require_state(instance, RUNNING_STATES, "pause")
        self.toolstack.run("pause", instance.name)
        self._emit(instance.name, PowerState.PAUSED)

    def unpause(self, instance: Instance) -> None:
        self._require_state(instance, {PowerState.PAUSED}, "unpause")
        self.toolstack.run("unpause", instance.name)
        self._emit(instance.name, PowerState.RUNNING)

    def suspend(self, instance: Instance) -> None:
        raise NotSupported("suspend is not supported by the xm backend: "
                           "use pause, or the libvirt backend")

    def resume(self, instance: Instance) -> None:
        raise NotSupported("resume is not supported by the xm backend: "
                           "use unpause, or the libvirt backend")

    # -- queries ----------------------------------------------------------

    def get_instance(self, name: str) -> Instance:
        """The Instance of a guest, rebuilt from its config file."""
        path = self.config_path(name)
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            raise InstanceNotFound(f"instance {name!r} has no config file {path}") from None
        return instance_from_config(xmconfig.parse(text))

    def get_info(self, instance: Instance) -> InstanceInfo:
        row = self._require(instance)
        if row is None:  # stopped: what its config says it gets when it runs
            flavor = self.get_instance(instance.name).flavor
            return InstanceInfo(state=PowerState.SHUTOFF, max_mem_kb=flavor.memory_mb * 1024,
                                mem_kb=flavor.memory_mb * 1024, num_cpu=flavor.vcpus,
                                cpu_time_ns=0)
        return InstanceInfo(state=row.state, max_mem_kb=row.memory_mb * 1024,
                            mem_kb=row.memory_mb * 1024, num_cpu=row.vcpus,
                            cpu_time_ns=int(row.cpu_time * 1e9), id=row.id)

    def list_instances(self) -> list[str]:
        """Running guests and the stopped ones whose config this driver wrote."""
        running = [row.name for row in self.toolstack.list_domains()]
        try:
            names = os.listdir(self.config_dir)
        except FileNotFoundError:
            names = []
        stopped = [name for name in names if name not in running and _is_name(name)
                   and self._is_defined(name)]
        return sorted([*running, *stopped])

    def instance_exists(self, instance: Instance) -> bool:
        return self._find(instance) is not None or self._is_defined(instance.name)

    def get_console_output(self, instance: Instance) -> str:
        raise NotSupported("console output is not supported by the xm backend: "
                           f"attach with '{' '.join(self.get_console_command(instance))}'")

    def get_console_command(self, instance: Instance) -> list[str]:
        return [self.toolstack.command, "console", check_instance_name(instance.name)]

    def snapshot(self, instance: Instance, image_name: str, fmt: str = "qcow2",
                 compress: bool = False, progress=None) -> None:
        raise NotSupported("snapshot is not supported by the xm backend: "
                           "use the libvirt backend")

    # -- volumes and NICs (see backends/xm/hotplug.py) ----------------------

    def attach_volume(self, instance: Instance, volume: str, device: str | None = None,
                      fmt: str | None = None) -> str:
        """Attach a copy of `volume` (store image name, or file path with fmt); its vdev."""
        config_path, text, current = self._config_of(instance)
        specs = hotplug.disks(text)
        vdev = hotplug.free_vdev(specs, device)
        driver = self._disk_driver()
        disk_format = xmconfig.instance_disk_format(driver, self.toolstack.command)
        files = self.instance_files(current)
        directory, path = files.directory, files.new_volume(disk_format)
        try:
            with held_staging_dir(directory, "volume-" + vdev) as staging:
                copy = make_copy(self._cache().store, volume, fmt, staging, disk_format)
                os.link(copy, path)  # never over another attach's copy
        except OSError as e:
            raise VirtError(f"cannot copy volume {volume} into {directory}: {e.strerror}") \
                from None
        spec = f"{xmconfig.disk_prefix(driver, self.toolstack.command, disk_format)}:" \
               f"{path},{vdev},w"
        try:
            self._change_config(config_path, text, hotplug.with_list(text, "disk", [*specs, spec]),
                                hotplug.block_attach_args(self.toolstack.command,
                                                          instance.name, spec))
        except BaseException:
            remove_quietly(path)
            raise
        return vdev

    def detach_volume(self, instance: Instance, device: str, timeout: int = 30) -> None:
        """Detach the volume at `device` (the toolstack waits for the guest, up to
        `timeout` s), then remove the guest's copy."""
        config_path, text, current = self._config_of(instance)
        specs = hotplug.disks(text)
        spec = hotplug.attached_volume(specs, self.instance_files(current), device)
        self._change_config(config_path, text, hotplug.with_list(
            text, "disk", [s for s in specs if s != spec]),
            ["block-detach", instance.name, device], timeout)
        remove_quietly(hotplug.volume_path(spec))

    def attach_interface(self, instance: Instance, nic: NIC) -> None:
        config_path, text, current = self._config_of(instance)
        existing = hotplug.vifs(text)
        if any(f"mac={nic.mac.lower()}" in spec.lower() for spec in existing):
            raise InvalidParameter(f"NIC {nic.mac}: the guest has a NIC with this MAC already")
        values = {"nic_type": current.params["nic_type"]} if "nic_type" in current.params \
            else {}
        spec, = xmconfig.vif_specs(xmconfig.GuestConfig(
            toolstack=self.toolstack.command, name=current.name, uuid=current.uuid,
            kind=current.kind, memory_mb=current.flavor.memory_mb,
            vcpus=current.flavor.vcpus, values=values, nics=(nic,)))
        self._change_config(config_path, text, hotplug.with_list(text, "vif", [*existing, spec]),
                            hotplug.network_attach_args(instance.name, spec))

    def detach_interface(self, instance: Instance, mac: str, timeout: int = 30) -> None:
        config_path, text, _current = self._config_of(instance)
        existing = hotplug.vifs(text)
        spec = next((s for s in existing if f"mac={mac.lower()}" in s.lower()), None)
        if spec is None:
            raise InvalidParameter(f"NIC {mac}: the guest has no NIC with this MAC")
        if self.toolstack.command == "xm" and self._find(instance) is not None:
            raise NotSupported("xm network-detach takes a device id that only xm network-list "
                               "tells, which this backend does not read: power the guest off "
                               "first, or use xl")
        self._change_config(config_path, text, hotplug.with_list(
            text, "vif", [s for s in existing if s != spec]),
            ["network-detach", instance.name, mac.lower()], timeout)

    def _config_of(self, instance: Instance) -> tuple[str, str, Instance]:
        """(config path, its text, the Instance it describes) of a defined guest."""
        path = self.config_path(instance.name)
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            raise InstanceNotFound(f"instance {instance.name!r} has no config file {path}: "
                                   "spawn it first") from None
        return path, text, instance_from_config(xmconfig.parse(text))

    def _change_config(self, path: str, old: str, new: str, command: list[str],
                       timeout: int | None = None) -> None:
        """Write the new config, then run `command` (its second word: the guest) on the
        running guest; on failure the old config is back."""
        secret = "vncpasswd" in new
        try:
            self._write_config(path, new, secret)
        except OSError as e:
            raise VirtError(f"cannot write {path}: {e.strerror}") from None
        if self.toolstack.find(command[1]) is None:
            return  # the config is all a shut-off guest has
        try:
            if timeout is None:
                self.toolstack.run(*command)
            else:
                self._runner(["timeout", "-k", "5", str(timeout), self.toolstack.command,
                              *command])
        except BaseException:
            self._write_config(path, old, secret)
            raise

    # -- migration --------------------------------------------------------

    def migrate(self, instance: Instance, dest: str, live: bool = True,
                progress: Callable[[float], None] | None = None) -> None:
        """xm: `migrate [-l] NAME HOST`. xl migration is always live, so a
        non-live one pauses the guest first and its memory moves in one pass.
        The toolstack reports no progress: `progress` hears only the end."""
        self._require_state(instance, RUNNING_STATES | {PowerState.PAUSED}, "migrate")
        if not isinstance(dest, str) or not _HOST.fullmatch(dest):
            raise InvalidParameter(f"destination {dest!r}: use a host name or IP address")
        name = instance.name
        if self.toolstack.command == "xm":
            self.toolstack.run("migrate", *(["-l"] if live else []), name, dest)
        else:
            if not live:
                self.toolstack.run("pause", name)
            try:
                self.toolstack.run("migrate", "-C", self.config_path(name), name, dest)
            except ToolstackError:
                if not live and self._find(instance) is not None:
                    self.toolstack.run("unpause", name)
                raise
        remove_quietly(self.config_path(name))
        if progress:
            progress(1.0)
        self._emit(name, PowerState.SHUTOFF)

    def migration_config(self, instance: Instance) -> str:
        """Source side: the config file content to hand to the target."""
        path = self.config_path(instance.name)
        try:
            with open(path) as f:
                return f.read()
        except FileNotFoundError:
            raise InstanceNotFound(
                f"instance {instance.name!r} has no config file {path}") from None

    def accept_migration(self, instance: Instance, config_text: str) -> None:
        """Target side, before migration: nothing to prepare; the name is checked."""
        check_instance_name(instance.name)

    def finalize_migration(self, instance: Instance, config_text: str, success: bool) -> None:
        """Target side, after migration: keep the source's config when it worked."""
        values = xmconfig.parse(config_text)
        if values.get("name") != instance.name:
            raise InvalidParameter(f"migrated config names {values.get('name')!r}, "
                                   f"not {instance.name!r}: refusing to write it")
        if success:
            self._write_config(self.config_path(instance.name), config_text,
                               "vncpasswd" in config_text)


# Config key -> hypervisor parameter, where the value is copied as it is.
_PARAM_OF_KEY = {
    "ramdisk": "initrd_path", "root": "root_path", "extra": "kernel_args",
    "bootloader": "bootloader", "bootargs": "bootloader_args", "cpus": "cpu_mask",
    "boot": "boot_order", "vnclisten": "vnc_bind_address", "device_model": "device_model",
    "device_model_override": "device_model", "firmware_override": "hvmloader_path",
    "serial": "serial", "vncpasswd": "vnc_password", "on_poweroff": "on_poweroff",
    "on_reboot": "on_reboot", "on_crash": "on_crash",
}
_FLAG_PARAMS = {"pae": "pae", "acpi": "acpi", "apic": "apic", "localtime": "use_localtime"}


def instance_from_config(values: dict) -> Instance:
    """Instance (name, uuid, flavor, kind, params, nics) from config.parse output."""
    hvm = "hvm" in (values.get("builder"), values.get("type"))
    kind = GuestKind.HVM if hvm else GuestKind.PV
    found: dict[str, str] = {}
    for key, param in _PARAM_OF_KEY.items():
        if isinstance(values.get(key), str):
            found[param] = values[key]
    if isinstance(values.get("bootloader_args"), list):
        found["bootloader_args"] = " ".join(values["bootloader_args"])
    if isinstance(values.get("kernel"), str):
        found["hvmloader_path" if hvm else "kernel_path"] = values["kernel"]
    if found.get("hvmloader_path") == params.XEN_HVMLOADER:
        del found["hvmloader_path"]  # the default is no choice, and need not be checked
    if hvm:
        for flag, param in _FLAG_PARAMS.items():
            if flag in values:
                found[param] = "true" if values[flag] else "false"
        found["usb_tablet"] = "true" if values.get("usbdevice") == "tablet" else "false"
    nics = []
    for spec in values.get("vif", []):
        fields = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
        nics.append(NIC(mac=fields["mac"], bridge=fields.get("bridge"), ip=fields.get("ip"),
                        model=fields.get("model")))
        if hvm:
            found["nic_type"] = fields.get("model", "paravirtual")
    for spec in values.get("disk", []):
        target, _, rest = spec.partition(",")
        if hvm and rest.startswith("hdc:cdrom,") and target.startswith("file:"):
            found["cdrom_image_path"] = target[len("file:"):]
    display = values.get("vncdisplay")
    root_gb = int(values.get("meta:root_gb", 0) or 0)
    image = values.get("meta:image")
    return Instance(
        name=values["name"], uuid=values["uuid"], kind=kind, params=found, nics=tuple(nics),
        flavor=Flavor(memory_mb=values["memory"], vcpus=values["vcpus"], root_gb=root_gb),
        image=None if image in (None, "-") else image,
        network_port=xmconfig.VNC_BASE_PORT + display if isinstance(display, int) else None)


def _is_name(name: str) -> bool:
    try:
        check_instance_name(name)
    except InvalidParameter:
        return False
    return True
