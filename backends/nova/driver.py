"""VirtDriverComputeDriver: Nova's ComputeDriver on the project's driver layer.

Thin on purpose: each method turns Nova's objects (instance, image meta,
flavor, network_info) into the project's Instance, NIC and SeedConfig, calls
the backend virt.driver.load_driver chose (libvirt, or xm on a Xen host),
and turns a VirtError back into the Nova exception the compute manager acts
on. Images come from Glance into the project's image store through its
untrusted-image import (inspection, then conversion); the store keeps them
under the name glance-<image id>, so each image is fetched once per host.
Whatever is not listed in `capabilities` or implemented here raises
NotImplementedError, Nova's way of saying "not supported".
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import logging
import os

import os_resource_classes as orc
from nova import exception
from nova.compute import power_state, task_states
from nova.image import glance
from nova.objects import fields as obj_fields
from nova.virt import configdrive, hardware
from nova.virt import driver as nova_driver
from nova.virt import images as nova_images
from oslo_config import cfg
from oslo_serialization import jsonutils

from backends.nova.imagecache import GlanceImages
from backends.nova.vifs import nics_from_network_info
from virt.conf import make_conf
from virt.driver import load_driver
from virt.errors import (
    ImageNotFound,
    InstanceNotFound,
    InvalidParameter,
    NotSupported,
    SpawnError,
    UnsafeImage,
    VirtError,
)
from virt.fileutils import atomic_target
from virt.imagecache import ImageCache
from virt.imagestore import LocalImageStore
from virt.objects import Flavor, GuestKind, Instance, PowerState, SeedConfig
from virt.seedinput import check_user_data
from virt.validation import check_uuid

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
CONF.register_opts([
    cfg.StrOpt("config_file", default="/etc/virt-driver/virt-driver.conf",
               help="virt-driver's own configuration (backend, virt_type, paths)."),
], group="virtdriver")

# Glance disk formats of root disks -> the store's import formats (ami: a raw disk).
DISK_FORMATS = {"qcow2": "qcow2", "raw": "raw", "vmdk": "vmdk", "vhd": "vpc", "ami": "raw"}
_IMAGE_TYPES = {"qcow2": "qcow2", "raw": "raw", "vmdk": "vmdk", "vpc": "vhd"}
POWER_STATES = {
    PowerState.NOSTATE: power_state.NOSTATE, PowerState.RUNNING: power_state.RUNNING,
    PowerState.BLOCKED: power_state.RUNNING, PowerState.PAUSED: power_state.PAUSED,
    PowerState.SHUTDOWN: power_state.SHUTDOWN, PowerState.SHUTOFF: power_state.SHUTDOWN,
    PowerState.CRASHED: power_state.CRASHED, PowerState.SUSPENDED: power_state.SUSPENDED,
}


def capabilities_for(allowed_formats) -> dict[str, bool]:
    """Nova's capabilities: the image types the store imports, and nothing else."""
    caps = dict.fromkeys(nova_driver.ComputeDriver.capabilities, False)
    for fmt in allowed_formats:
        if fmt in _IMAGE_TYPES:
            caps[f"supports_image_type_{_IMAGE_TYPES[fmt]}"] = True
    # Kernels and ramdisks are boot files (see _boot_file); machine images raw disks.
    caps.update(supports_image_type_aki=True, supports_image_type_ari=True,
                supports_image_type_ami="raw" in allowed_formats,
                has_imagecache=True)  # manage_image_cache removes unused Glance images
    return caps


def _translated(method):
    """Run a driver call, turning the project's errors into the ones Nova acts on."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except InstanceNotFound as e:
            raise exception.InstanceNotFound(instance_id=str(e)) from None
        except NotSupported as e:  # this backend cannot: Nova's "not implemented"
            raise NotImplementedError(str(e)) from None
        except VirtError as e:
            raise exception.NovaException(str(e)) from None
    return call


class VirtDriverComputeDriver(nova_driver.ComputeDriver):
    """One Nova compute node backed by virt-driver (libvirt, or xm on a Xen host)."""

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi)
        self.conf = make_conf(config_files=[CONF.virtdriver.config_file])
        # Kernels and ramdisks are loaded by QEMU, never opened as disks; their
        # directory is ours, allowed for boot files (see _boot_file).
        self.boot_dir = os.path.join(self.conf.state_path, "nova-boot-files")
        self.conf.set_override("boot_file_dirs", [*self.conf.boot_file_dirs, self.boot_dir])
        self.driver = load_driver(self.conf)
        self.store = LocalImageStore.from_conf(self.conf)  # the store every backend reads
        self.glance_images = GlanceImages(self.store, self.boot_dir,
                                          os.path.join(self.conf.state_path, "nova-image-cache"))
        self.capabilities = capabilities_for(self.conf.images.allowed_formats)
        self._image_api = glance.API()

    # -- host -----------------------------------------------------------------

    @_translated
    def init_host(self, host):
        self.driver.init_host(host)

    def cleanup_host(self, host):
        close = getattr(self.driver, "close", None)
        if close is not None:
            close()

    def get_available_nodes(self, refresh=False):
        return [CONF.host]

    def get_host_ip_addr(self):
        return CONF.my_ip

    @_translated
    def get_available_resource(self, nodename):
        host = self.driver.get_host_info()
        disk_total = int(host.disk_total_gb or 0)
        disk_free = int(host.disk_free_gb or 0)
        hv_type = _hv_type(self.conf.virt_type)
        return {
            "vcpus": host.cpu_total, "memory_mb": host.memory_total,
            "local_gb": disk_total, "vcpus_used": 0,
            "memory_mb_used": host.memory_total - host.memory_free,
            "local_gb_used": int(host.disk_used_gb or 0),
            "hypervisor_type": hv_type, "hypervisor_version": host.hypervisor_version,
            "hypervisor_hostname": nodename,
            "cpu_info": jsonutils.dumps({"arch": host.arch,
                                         "topology": {"sockets": host.cpu_sockets}}),
            "disk_available_least": disk_free,
            "supported_instances": _supported_instances(host.arch, hv_type),
            "numa_topology": None,
        }

    @_translated
    def update_provider_tree(self, provider_tree, nodename, allocations=None):
        host = self.driver.get_host_info()
        ratios = self._get_allocation_ratios(provider_tree.data(nodename).inventory)
        disk_gb = int(host.disk_total_gb or 0)
        inventory = {
            orc.VCPU: _record(host.cpu_total, ratios[orc.VCPU], CONF.reserved_host_cpus),
            orc.MEMORY_MB: _record(host.memory_total, ratios[orc.MEMORY_MB],
                                   CONF.reserved_host_memory_mb),
        }
        if disk_gb:
            inventory[orc.DISK_GB] = _record(disk_gb, ratios[orc.DISK_GB],
                                             self._get_reserved_host_disk_gb_from_config())
        provider_tree.update_inventory(nodename, inventory)
        supported = [trait for trait, yes in self.capabilities_as_traits().items() if yes]
        provider_tree.add_traits(nodename, *supported)

    # -- listing and state ----------------------------------------------------

    @_translated
    def list_instances(self):
        return self.driver.list_instances()

    @_translated
    def list_instance_uuids(self):
        uuids = []
        for name in self.driver.list_instances():
            with contextlib.suppress(InstanceNotFound):  # removed meanwhile
                uuids.append(self.driver.get_instance(name).uuid)
        return uuids

    def instance_exists(self, instance):
        try:
            return self.driver.instance_exists(_ref(instance))
        except VirtError:
            return False

    @_translated
    def get_info(self, instance, use_cache=True):
        try:
            info = self.driver.get_info(_ref(instance))
        except InstanceNotFound:
            raise exception.InstanceNotFound(instance_id=instance.uuid) from None
        return hardware.InstanceInfo(state=POWER_STATES[info.state])

    @_translated
    def get_console_output(self, context, instance):
        """The log's UTF-8 bytes, one character each: the compute manager encodes the str
        as latin-1 (getting the bytes back, as from Nova's libvirt driver), where any
        other character a guest prints (cloud-init's '…') would end the API call in an
        error; Nova's contract suite asks for a str."""
        return self.driver.get_console_output(_ref(instance)).encode("utf-8").decode("latin-1")

    # -- spawn and destroy -----------------------------------------------------

    def spawn(self, context, instance, image_meta, injected_files, admin_password,
              allocations, network_info=None, block_device_info=None, power_on=True,
              accel_info=None):
        if not power_on:
            raise NotImplementedError("spawn without power_on: this driver starts the guest")
        if block_device_info and block_device_info.get("block_device_mapping"):
            raise NotImplementedError("volumes: this driver boots from images only")
        if injected_files:
            LOG.warning("injected files are not written into guests; use user data",
                        instance=instance)
        image_id = image_meta.id
        try:
            seed = _seed(instance) if configdrive.required_by(instance) else None
        except InvalidParameter as e:  # the tenant's request, not the image
            raise exception.InvalidInput(reason=str(e)) from None
        try:
            # Until the guest's disk exists, the image cache pass must leave its images.
            with self.glance_images.using([image_id, instance.kernel_id, instance.ramdisk_id]):
                root = self._store_image(context, image_id, image_meta.disk_format)
                params = self._boot_params(context, instance, image_meta)
                nics = nics_from_network_info(network_info)
                virt_instance = _ref(instance, image=root, params=params,
                                     kind=self._guest_kind(instance, image_meta),
                                     seed=seed)
                self.driver.spawn(virt_instance, root, nics)
        except UnsafeImage as e:
            raise exception.ImageUnacceptable(image_id=image_id, reason=str(e)) from None
        except (SpawnError, InvalidParameter, ImageNotFound) as e:
            if isinstance(e, SpawnError) and e.step not in ("image", "xml"):
                raise exception.NovaException(str(e)) from None  # host side: reschedule
            raise exception.ImageUnacceptable(image_id=image_id, reason=str(e)) from None
        except VirtError as e:
            raise exception.NovaException(str(e)) from None

    def _guest_kind(self, instance, image_meta) -> GuestKind:
        """The image's hw_vm_mode (xen: paravirtualised); without one, a Xen guest booted
        from a kernel image is paravirtualised (as Nova's Xen drivers booted aki
        images), every other guest fully virtualised."""
        mode = image_meta.properties.get("hw_vm_mode")
        if mode is None:
            xen_kernel = self.conf.virt_type == "xen" and bool(instance.kernel_id)
            return GuestKind.PV if xen_kernel else GuestKind.HVM
        kinds = {obj_fields.VMMode.XEN: GuestKind.PV, obj_fields.VMMode.HVM: GuestKind.HVM}
        if mode not in kinds:
            raise InvalidParameter(f"image property hw_vm_mode={mode!r} is not supported: "
                                   "use hvm or xen")
        return kinds[mode]

    def _boot_params(self, context, instance, image_meta) -> dict[str, str]:
        """Kernel and ramdisk (aki/ari images) and the command line of a direct boot."""
        params = {}
        if instance.kernel_id:
            params["kernel_path"] = self._boot_file(context, instance.kernel_id)
        if instance.ramdisk_id:
            params["initrd_path"] = self._boot_file(context, instance.ramdisk_id)
        cmdline = image_meta.properties.get("os_command_line")
        if cmdline and instance.kernel_id:
            params["kernel_args"] = cmdline
        return params

    def _boot_file(self, context, image_id: str) -> str:
        """A kernel or ramdisk from Glance, fetched once into boot_dir.

        Not imported as a disk image: a Linux kernel starts with a boot sector
        that the disk inspection rightly calls a malformed partition table,
        and QEMU only ever loads these files, it never opens them as disks.
        """
        uuid = check_uuid(image_id, "kernel or ramdisk image id")
        path = self.glance_images.boot_file(uuid)
        os.makedirs(self.boot_dir, 0o755, exist_ok=True)
        with self.glance_images.lock(uuid):
            if not os.path.isfile(path):
                with atomic_target(path) as tmp:
                    nova_images.fetch(context, uuid, tmp)
                    os.chmod(tmp, 0o644)
        return path

    def _store_image(self, context, image_id: str, disk_format: str | None) -> str:
        """The store image of a Glance image, fetched and imported (inspected) if new."""
        name = self.glance_images.store_name(image_id)
        fmt = DISK_FORMATS.get(disk_format or "")
        if fmt is None:
            raise InvalidParameter(f"image {image_id}: disk format {disk_format!r} is not "
                                   f"supported; use one of {', '.join(DISK_FORMATS)}")
        store = self.store
        with self.glance_images.lock(image_id):
            with contextlib.suppress(ImageNotFound):
                store.get(name)
                return name
            with store.staging("glance-" + image_id) as staging:
                path = os.path.join(staging, "download")
                nova_images.fetch(context, image_id, path)
                store.import_image(name, path, fmt, _image_properties(context, image_id))
        return name

    @_translated
    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        ref = _ref(instance)
        with contextlib.suppress(InstanceNotFound):  # Nova's destroy is a hard stop
            self.driver.power_off(ref, timeout=0)
        self.driver.destroy(ref, destroy_disks=destroy_disks)

    @_translated
    def cleanup(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, migrate_data=None, destroy_vifs=True,
                destroy_secrets=True):
        self.driver.destroy(_ref(instance), destroy_disks=destroy_disks)

    # -- image cache: Nova's periodic pass -------------------------------------

    @_translated
    def manage_image_cache(self, context, all_instances):
        """Remove the Glance images (and their bases) no instance sharing this storage
        uses, as [image_cache] remove_unused_base_images and
        remove_unused_original_minimum_age_seconds say."""
        if not CONF.image_cache.remove_unused_base_images:
            return
        min_age = CONF.image_cache.remove_unused_original_minimum_age_seconds
        used = {image_id for instance in all_instances
                for image_id in (instance.image_ref, instance.kernel_id, instance.ramdisk_id)
                if image_id}
        removed = self.glance_images.remove_unused(used, min_age)
        disks = [files.disk for files in self.driver.all_instance_files()]
        bases = ImageCache.from_conf(self.conf).cleanup(disks, min_age)
        if removed or bases:
            LOG.info("image cache: removed Glance images %s and bases %s", removed, bases)

    # -- power ----------------------------------------------------------------

    @_translated
    def reboot(self, context, instance, network_info, reboot_type, block_device_info=None,
               bad_volumes_callback=None, accel_info=None, share_info=None):
        self.driver.reboot(_ref(instance), hard=reboot_type == "HARD")

    @_translated
    def power_off(self, instance, timeout=0, retry_interval=0):
        self.driver.power_off(_ref(instance), timeout=timeout)

    @_translated
    def power_on(self, context, instance, network_info, block_device_info=None,
                 accel_info=None, share_info=None):
        self.driver.power_on(_ref(instance))

    @_translated
    def pause(self, instance):
        self.driver.pause(_ref(instance))

    @_translated
    def unpause(self, instance):
        self.driver.unpause(_ref(instance))

    @_translated
    def suspend(self, context, instance):
        self.driver.suspend(_ref(instance))

    @_translated
    def resume(self, context, instance, network_info, block_device_info=None,
               share_info=None):
        self.driver.resume(_ref(instance))

    # -- networking: libvirt creates taps and OVS ports when the guest starts ---

    def plug_vifs(self, instance, network_info):
        """Nothing to do before the guest starts: every VIF type supported here is
        created by the hypervisor from the interface (checked: unsupported types fail)."""
        nics_from_network_info(network_info)

    def unplug_vifs(self, instance, network_info):
        """The hypervisor removes the taps (and OVS ports) when the guest stops."""

    # -- snapshot -------------------------------------------------------------

    @_translated
    def snapshot(self, context, instance, image_id, update_task_state):
        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        name = "nova-snapshot-" + image_id
        store = self.store
        self.driver.snapshot(_ref(instance), name, fmt="qcow2")
        try:
            update_task_state(task_state=task_states.IMAGE_UPLOADING,
                              expected_state=task_states.IMAGE_PENDING_UPLOAD)
            with store.pinned(name) as image, open(image.path, "rb") as data:
                self._image_api.update(context, image_id,
                                       {"disk_format": "qcow2", "container_format": "bare"},
                                       data, purge_props=False)
        finally:
            store.delete(name)


def _ref(instance, **fields) -> Instance:
    """The project's Instance for a Nova instance: name, uuid and flavor, plus fields."""
    flavor = instance.flavor
    return Instance(name=instance.name, uuid=instance.uuid,
                    flavor=Flavor(memory_mb=flavor.memory_mb, vcpus=flavor.vcpus,
                                  root_gb=flavor.root_gb, name=flavor.name), **fields)


def _seed(instance) -> SeedConfig:
    """The config drive of an instance: its key pair and user data (checked here, so that
    a refusal names the request rather than the image)."""
    user_data = None
    if instance.user_data:
        try:
            user_data = base64.b64decode(instance.user_data).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidParameter("user data: give text (cloud-config or a script); "
                                   "binary user data is not written to the config drive"
                                   ) from None
        user_data = check_user_data(user_data, "user data")
    return SeedConfig(format="configdrive", hostname=instance.hostname or None,
                      ssh_keys=(instance.key_data,) if instance.key_data else (),
                      user_data=user_data)


def _image_properties(context, image_id: str) -> dict[str, str]:
    meta = nova_images.get_info(context, image_id)
    arch = (meta.get("properties") or {}).get("architecture") or (
        meta.get("properties") or {}).get("hw_architecture")
    return {"arch": arch} if arch else {}


def _hv_type(virt_type: str) -> str:
    return {"kvm": obj_fields.HVType.KVM, "qemu": obj_fields.HVType.QEMU,
            "xen": obj_fields.HVType.XEN}.get(virt_type, virt_type)


def _supported_instances(arch: str, hv_type: str) -> list[tuple[str, str, str]]:
    modes = [obj_fields.VMMode.HVM]
    if hv_type == obj_fields.HVType.XEN:
        modes.append(obj_fields.VMMode.XEN)
    return [(arch, hv_type, mode) for mode in modes]


def _record(total: int, ratio: float, reserved: int) -> dict:
    return {"total": total, "min_unit": 1, "max_unit": total, "step_size": 1,
            "allocation_ratio": ratio, "reserved": reserved}

