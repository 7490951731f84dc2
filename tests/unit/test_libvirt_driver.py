"""LibvirtDriver against libvirt's test:///default driver, real qemu-img and real files.

The test driver defines, starts, saves and stops domains without running
them, so everything but the guest itself is exercised here; the guest's view
is checked in tests/functional/test_libvirt_driver.py.
"""

import os
import queue

import libvirt
import pytest

from backends.libvirt.driver import (
    LibvirtDriver,
    capability_arches,
    power_state,
)
from tests.support.drivers import TEST_URI, serving_driver
from virt import images
from virt.cli import main
from virt.conf import make_conf
from virt.domain import Disk, Domain, Serial
from virt.errors import (
    HypervisorError,
    InstanceExists,
    InstanceNotFound,
    InvalidParameter,
    InvalidState,
    SpawnError,
)
from virt.guest import build_domain
from virt.imagestore import LocalImageStore
from virt.objects import NIC, BlockDevice, Flavor, GuestKind, Instance, PowerState

# The domain test:///default comes with; its uuid is taken.
BUILTIN_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"


@pytest.fixture
def conf(tmp_path):
    return make_conf(virt_type="qemu", state_path=str(tmp_path),
                     libvirt__connection_uri=TEST_URI, libvirt__shutdown_timeout=2,
                     libvirt__shutdown_retry_interval=1, libvirt__wait_soft_reboot_seconds=2,
                     libvirt__console_log_max_bytes=1024, libvirt__reconnect_max_backoff=1)


@pytest.fixture
def store(conf, tmp_path):
    store = LocalImageStore.from_conf(conf)
    raw = tmp_path / "tiny.raw"
    images.create_image("raw", str(raw), "1M")
    store.import_image("tiny", str(raw), "raw")
    return store


@pytest.fixture
def driver(conf, store):
    yield from serving_driver(conf)


def _instance(name="unit-vm", **kwargs):
    kwargs.setdefault("flavor", Flavor(memory_mb=128, vcpus=2, root_gb=1, name="small"))
    return Instance(name=name, image="tiny", nics=(NIC(mac="52:54:00:00:00:01"),), **kwargs)


def _left_behind(conf, driver, name):
    """Everything a spawn could have left: instance files and the definition."""
    files = sorted(os.listdir(conf.instances_path)) if os.path.isdir(conf.instances_path) \
        else []
    return files, name in driver.list_instances() or _defined(name)


def _defined(name):
    conn = libvirt.open(TEST_URI)
    try:
        return name in [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()


# -- pure helpers --------------------------------------------------------------

@pytest.mark.parametrize("state, saved, expected", [
    (libvirt.VIR_DOMAIN_RUNNING, False, PowerState.RUNNING),
    (libvirt.VIR_DOMAIN_PAUSED, False, PowerState.PAUSED),
    (libvirt.VIR_DOMAIN_SHUTOFF, False, PowerState.SHUTOFF),
    (libvirt.VIR_DOMAIN_SHUTOFF, True, PowerState.SUSPENDED),
    (libvirt.VIR_DOMAIN_PMSUSPENDED, False, PowerState.SUSPENDED),
    (libvirt.VIR_DOMAIN_CRASHED, False, PowerState.CRASHED),
    (99, False, PowerState.NOSTATE),
])
def test_power_state(state, saved, expected):
    assert power_state(state, saved) is expected


def test_capability_arches_of_the_test_driver():
    conn = libvirt.open(TEST_URI)
    try:
        host, runnable = capability_arches(conn.getCapabilities())
    finally:
        conn.close()
    assert host == "i686" and runnable == {"i686"}


def test_uri_follows_virt_type(tmp_path):
    assert LibvirtDriver(make_conf(virt_type="qemu", state_path=str(tmp_path))).uri \
        == "qemu:///system"
    assert LibvirtDriver(make_conf(virt_type="lxc", state_path=str(tmp_path))).uri == "lxc:///"


# -- spawn -------------------------------------------------------------------

def test_spawn_builds_overlay_log_and_running_domain(driver, conf, store):
    instance = _instance()
    driver.spawn(instance, "tiny")
    directory = os.path.join(conf.instances_path, instance.uuid)
    assert sorted(os.listdir(directory)) == ["console.log", "disk"]
    overlay = images.info(os.path.join(directory, "disk"), "qcow2")
    assert overlay.virtual_size == 1 << 30
    assert overlay.backing_format == "raw"
    assert overlay.backing_file == driver.cache.base_path(store.get("tiny"))
    info = driver.get_info(instance)
    assert info.state is PowerState.RUNNING and info.num_cpu == 2
    assert info.max_mem_kb == 128 * 1024 and info.id is not None
    assert driver.list_instances() == [instance.name]
    assert driver.instance_exists(instance)
    rebuilt = driver.get_instance(instance.name)
    assert (rebuilt.uuid, rebuilt.flavor, rebuilt.image, rebuilt.nics[0].mac) == \
        (instance.uuid, instance.flavor, "tiny", "52:54:00:00:00:01")


def test_describe_spawn_creates_nothing_and_matches_spawn(driver, conf):
    instance = _instance()
    xml = driver.describe_spawn(instance, "tiny")
    assert _left_behind(conf, driver, instance.name) == ([], False)
    assert f"<vd:uuid>{instance.uuid}</vd:uuid>" in xml
    assert os.path.join(conf.instances_path, instance.uuid, "console.log") in xml
    assert 'append="on"' in xml
    driver.spawn(instance, "tiny")
    described = Domain.from_xml(xml)
    conn = libvirt.open(TEST_URI)
    try:
        defined = Domain.from_xml(conn.lookupByName(instance.name).XMLDesc(
            libvirt.VIR_DOMAIN_XML_INACTIVE))
    finally:
        conn.close()
    # libvirt adds its defaults (addresses, target names); ours must all be there.
    assert defined.metadata == described.metadata
    assert [d.source for d in defined.devices_of(Disk)] == \
        [d.source for d in described.devices_of(Disk)]
    assert defined.devices_of(Serial)[0].log_file == described.devices_of(Serial)[0].log_file


def test_spawn_of_a_defined_name_is_refused_and_keeps_the_first(driver, conf):
    first = _instance()
    driver.spawn(first, "tiny")
    with pytest.raises(InstanceExists):
        driver.spawn(_instance(), "tiny")
    assert os.listdir(conf.instances_path) == [first.uuid]
    assert driver.get_info(first).state is PowerState.RUNNING


@pytest.mark.parametrize("case, step, message", [
    ("missing image", "image", "not in the store"),
    # the caller's input: an InvalidParameter as it is, never a SpawnError wrapping it
    ("image larger than flavor", None, "root_gb >= 2"),
    ("foreign arch", None, "'aarch64'"),
    ("bad nic model", None, r"nics\[0\]\.model"),
    ("uuid taken", "define", BUILTIN_UUID),
])
def test_failed_spawn_leaves_nothing(driver, conf, store, tmp_path, case, step, message):
    instance = _instance()
    image = "tiny"
    nics = ()
    if case == "missing image":
        image = "no-such-image"
    elif case == "image larger than flavor":
        big = tmp_path / "big.raw"
        images.create_image("raw", str(big), "1536M")
        store.import_image("big", str(big), "raw")
        image = "big"
    elif case == "foreign arch":
        raw = tmp_path / "arm.raw"
        images.create_image("raw", str(raw), "1M")
        store.import_image("arm", str(raw), "raw", {"arch": "aarch64"})
        image = "arm"
    elif case == "bad nic model":
        nics = (NIC(mac="52:54:00:00:00:02", model="tulip"),)
    elif case == "uuid taken":
        instance = _instance(uuid=BUILTIN_UUID)
    with pytest.raises(InvalidParameter if step is None else SpawnError, match=message) as exc:
        driver.spawn(instance, image, nics=nics)
    assert getattr(exc.value, "step", None) == step
    assert _left_behind(conf, driver, instance.name) == ([], False)


@pytest.mark.parametrize("params, message", [
    ({"kernel_image": "tiny", "initrd_path": "/etc/shadow"},
     r"initrd_path'\] '/etc/shadow': not inside a directory allowed for boot files"),
    ({"cdrom_image_path": "/dev/vda"}, r"cdrom_image_path'\] '/dev/vda': not inside"),
    ({"kernel_image": "tiny", "initrd_path": "/proc/self/environ"}, "not inside"),
    ({"bootloader": "/bin/sh"},
     r"bootloader'\] '/bin/sh': not a bootloader this host allows .*\[DEFAULT\] bootloaders"),
    ({"bootloader": "/usr/bin/pygrub/../../../bin/sh"}, "not a bootloader this host allows"),
])
def test_host_files_never_reach_the_domain(driver, conf, params, message):
    # A bootloader is a PV param: the host program check comes before the guest kind's.
    kind = GuestKind.PV if "bootloader" in params else GuestKind.HVM
    instance = _instance(params=params, kind=kind)
    with pytest.raises(InvalidParameter, match=message):
        driver.describe_spawn(instance, "tiny")
    with pytest.raises(InvalidParameter, match=message):
        driver.spawn(instance, "tiny")
    assert _left_behind(conf, driver, instance.name) == ([], False)


def test_a_listed_bootloader_passes_on_to_the_guest_checks(conf, store, tmp_path):
    pygrub = tmp_path / "pygrub"
    pygrub.write_bytes(b"#!/bin/true\n")
    pygrub.chmod(0o755)
    allowed = LibvirtDriver(make_conf(virt_type="qemu", state_path=conf.state_path,
                                      bootloaders=[str(pygrub)],
                                      libvirt__connection_uri=TEST_URI))
    # test:///default cannot run Xen PV guests: the next check is the guest kind's.
    with pytest.raises(InvalidParameter, match="instance kind pv: qemu guests are hvm"):
        allowed.describe_spawn(_instance(params={"bootloader": str(pygrub)},
                                         kind=GuestKind.PV), "tiny")


def test_boot_files_from_the_store_or_an_allowed_directory(driver, conf, store, tmp_path):
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    (kernels / "initrd.img").write_bytes(b"initrd")
    allowed = LibvirtDriver(make_conf(virt_type="qemu", state_path=conf.state_path,
                                      boot_file_dirs=[str(kernels)],
                                      libvirt__connection_uri=TEST_URI))
    instance = _instance(params={"kernel_image": "tiny",
                                 "initrd_path": str(kernels / "x" / ".." / "initrd.img")})
    allowed.spawn(instance, "tiny")
    domain = allowed.get_instance(instance.name)
    assert (domain.params["kernel_path"], domain.params["initrd_path"]) == (
        store.get("tiny").path, str(kernels / "initrd.img"))
    allowed.reboot(domain, hard=True)    # rebuilt from its definition: still accepted
    with pytest.raises(InvalidParameter, match="not inside"):
        driver.spawn(_instance(name="other", params={"kernel_image": "tiny",
                                                     "initrd_path": str(kernels / "initrd.img")}),
                     "tiny")


def test_spawn_refuses_bad_names_before_anything(driver, conf):
    with pytest.raises(InvalidParameter, match="instance name"):
        driver.spawn(_instance(name="../evil"), "tiny")
    with pytest.raises(InvalidParameter, match="uuid"):
        driver.spawn(_instance(uuid="../../etc"), "tiny")
    assert _left_behind(conf, driver, "evil") == ([], False)


# -- destroy -----------------------------------------------------------------

def test_destroy_removes_everything_and_is_idempotent(driver, conf):
    instance = _instance()
    driver.spawn(instance, "tiny")
    driver.destroy(instance)
    assert _left_behind(conf, driver, instance.name) == ([], False)
    driver.destroy(instance)
    with pytest.raises(InstanceNotFound):
        driver.get_info(instance)


def test_destroy_can_keep_disks(driver, conf):
    instance = _instance()
    driver.spawn(instance, "tiny")
    driver.suspend(instance)  # a managed-save image must not block the undefine
    driver.destroy(instance, destroy_disks=False)
    assert not _defined(instance.name)
    assert sorted(os.listdir(os.path.join(conf.instances_path, instance.uuid))) == \
        ["console.log", "disk"]


def test_the_driver_names_the_files_spawn_made_and_destroy_kept(driver, conf):
    instance = _instance()
    files = driver.instance_files(instance)
    assert driver.all_instance_files() == []
    driver.spawn(instance, "tiny")
    xml = driver.describe_spawn(_instance(name="other", uuid=instance.uuid), "tiny")
    assert files.disk in xml and files.console_log in xml
    assert images.info(files.disk, "qcow2").virtual_size == 1 << 30
    driver.destroy(instance, destroy_disks=False)
    assert [f.disk for f in driver.all_instance_files()] == [files.disk]
    with pytest.raises(InvalidParameter, match="instance uuid"):
        driver.instance_files(_instance(uuid="../.."))


# -- power -------------------------------------------------------------------

def test_power_transitions(driver):
    instance = _instance()
    driver.spawn(instance, "tiny")

    def state():
        return driver.get_info(instance).state

    driver.pause(instance)
    assert state() is PowerState.PAUSED
    with pytest.raises(InvalidState, match="must be running"):
        driver.pause(instance)
    driver.unpause(instance)
    assert state() is PowerState.RUNNING
    driver.suspend(instance)
    assert state() is PowerState.SUSPENDED
    with pytest.raises(InvalidState, match="must be paused"):
        driver.unpause(instance)
    driver.resume(instance)
    assert state() is PowerState.RUNNING
    driver.power_off(instance, timeout=1)
    assert state() is PowerState.SHUTOFF
    driver.power_off(instance)  # already off: nothing to do
    with pytest.raises(InvalidState):
        driver.resume(instance)
    driver.power_on(instance)
    assert state() is PowerState.RUNNING


@pytest.mark.parametrize("hard", [False, True])
def test_reboot_starts_a_new_domain(driver, hard):
    instance = _instance()
    driver.spawn(instance, "tiny")
    before = driver.get_info(instance).id
    driver.reboot(instance, hard=hard)
    info = driver.get_info(instance)
    assert info.state is PowerState.RUNNING and info.id != before
    assert driver.get_instance(instance.name).flavor == instance.flavor


def test_reboot_of_a_stopped_instance_starts_it(driver):
    instance = _instance()
    driver.spawn(instance, "tiny")
    driver.power_off(instance)
    driver.reboot(instance)
    assert driver.get_info(instance).state is PowerState.RUNNING


def test_operations_on_a_missing_instance(driver):
    ghost = _instance(name="ghost")
    assert not driver.instance_exists(ghost)
    for operation in (driver.get_info, driver.pause, driver.power_on, driver.reboot,
                      driver.get_console_output):
        with pytest.raises(InstanceNotFound, match="ghost"):
            operation(ghost)


# -- events --------------------------------------------------------------------

def test_lifecycle_events_reach_the_listener(driver):
    got = queue.SimpleQueue()
    driver.register_event_listener(lambda name, state: got.put((name, state)))
    instance = _instance()
    driver.spawn(instance, "tiny")
    driver.pause(instance)
    seen = []
    while ("unit-vm", "paused") not in seen:
        seen.append(got.get(timeout=5))
    assert ("unit-vm", "running") in seen


# -- host and console ------------------------------------------------------------

def test_host_info(driver, conf):
    host = driver.get_host_info()
    assert host.backend == "libvirt" and host.hypervisor_type == "test"
    assert host.arch == "i686" and host.memory_dom0 is None
    assert host.cpu_total == 16 and host.cpu_nodes == 2 and host.cpu_sockets == 4
    assert isinstance(host.hypervisor_version, int)
    assert 0 < host.memory_free <= host.memory_total
    assert host.disk_total_gb > 0 and host.disk_free_gb <= host.disk_total_gb


def test_console_output_is_the_bounded_tail(driver, conf):
    instance = _instance()
    driver.spawn(instance, "tiny")
    assert driver.get_console_output(instance) == ""
    log = os.path.join(conf.instances_path, instance.uuid, "console.log")
    with open(log, "w") as f:
        f.write("old line\n" * 500 + "VIRT-DEMO last\n")
    out = driver.get_console_output(instance)
    assert len(out) == 1024 and out.endswith("VIRT-DEMO last\n")
    assert driver.get_console_command(instance) == \
        ["virsh", "-c", TEST_URI, "console", "unit-vm"]


# -- snapshot and migrate ---------------------------------------------------------

@pytest.mark.parametrize("fmt, compress", [("qcow2", True), ("raw", False)])
def test_snapshot_of_a_stopped_guest_goes_to_the_store(driver, store, fmt, compress):
    instance = _instance()
    driver.spawn(instance, "tiny")
    driver.power_off(instance)
    seen = []
    driver.snapshot(instance, "snap", fmt=fmt, compress=compress, progress=seen.append)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    image = store.get("snap")
    assert image.format == fmt and image.properties == {"arch": "i686"}
    assert images.info(image.path, fmt).backing_file is None
    assert image.virtual_size == 1 << 30
    assert driver.get_info(instance).state is PowerState.SHUTOFF


def test_a_live_snapshot_that_fails_leaves_the_guest_paused_and_nothing_behind(
        driver, store, conf):
    """test:///default has no backup job: the failure path of a live snapshot."""
    instance = _instance()
    driver.spawn(instance, "tiny")
    driver.pause(instance)
    with pytest.raises(HypervisorError, match="cannot begin a backup of unit-vm"):
        driver.snapshot(instance, "snap")
    assert [i.name for i in store.list()] == ["tiny"]
    assert driver.get_info(instance).state is PowerState.PAUSED
    assert [n for n in os.listdir(store.directory) if n.startswith(".vd-")] == []
    assert [n for n in os.listdir(conf.instances_path) if n.startswith(".vd-")] == []


def test_snapshot_refusals_leave_the_store_alone(driver, store):
    instance = _instance()
    driver.spawn(instance, "tiny")
    with pytest.raises(InvalidParameter, match="already exists"):
        driver.snapshot(instance, "tiny")
    with pytest.raises(InvalidParameter, match="qcow2 or raw"):
        driver.snapshot(instance, "snap", fmt="vmdk")
    with pytest.raises(InvalidParameter, match="compressed"):
        driver.snapshot(instance, "snap", fmt="raw", compress=True)
    assert [i.name for i in store.list()] == ["tiny"]
    assert driver.get_info(instance).state is PowerState.RUNNING


def test_migrate_errors_are_clear(driver):
    instance = _instance()
    driver.spawn(instance, "tiny")
    with pytest.raises(InvalidParameter, match="libvirt URI"):
        driver.migrate(instance, "elsewhere")
    with pytest.raises(HypervisorError, match="keeps running here.*reachable"):
        driver.migrate(instance, "test:///default")
    with pytest.raises(InvalidState, match="not migrating"):
        driver.abort_migration(instance)
    assert driver.get_info(instance).state is PowerState.RUNNING


# -- a driver sees only its own instances ------------------------------------------

@pytest.fixture
def other(tmp_path):
    """A second configuration on the same libvirt: another instances path."""
    conf = make_conf(virt_type="qemu", state_path=str(tmp_path / "other"),
                     libvirt__connection_uri=TEST_URI, libvirt__shutdown_timeout=1)
    raw = tmp_path / "other.raw"
    images.create_image("raw", str(raw), "1M")
    LocalImageStore.from_conf(conf).import_image("tiny", str(raw), "raw")
    driver = LibvirtDriver(conf, event_stop_delay=0.1)
    yield driver
    for name in driver.list_instances():
        driver.destroy(driver.get_instance(name))
    driver.close()


def test_two_configurations_see_only_their_own_instances(driver, other):
    mine, theirs = _instance("own-mine"), _instance("own-theirs")
    driver.spawn(mine, "tiny")
    other.spawn(theirs, "tiny")
    assert driver.list_instances() == ["own-mine"]
    assert other.list_instances() == ["own-theirs"]

    with pytest.raises(InstanceNotFound):
        driver.get_instance("own-theirs")
    assert not driver.instance_exists(theirs)
    for operation in (driver.get_info, driver.pause, driver.suspend, driver.power_off,
                      driver.reboot, lambda i: driver.snapshot(i, "stolen"),
                      lambda i: driver.migrate(i, "test:///default")):
        with pytest.raises(InstanceNotFound, match="own-theirs"):
            operation(theirs)
    driver.destroy(theirs)  # "not found" here: nothing happens to it
    assert other.get_info(theirs).state is PowerState.RUNNING
    assert [i.name for i in driver.store.list()] == ["tiny"]


def test_spawn_of_a_name_another_owner_uses_is_refused(driver, other):
    other.spawn(_instance("own-taken"), "tiny")
    with pytest.raises(InstanceExists, match="does not own"):
        driver.spawn(_instance("own-taken"), "tiny")
    assert other.list_instances() == ["own-taken"]
    assert os.listdir(driver.conf.instances_path) == []


def test_listeners_hear_only_owned_instances(driver, other):
    got = queue.SimpleQueue()
    driver.register_event_listener(lambda name, state: got.put((name, state)))
    theirs, mine = _instance("own-theirs"), _instance("own-mine")
    other.spawn(theirs, "tiny")
    other.pause(theirs)
    driver.spawn(mine, "tiny")
    driver.destroy(mine)  # heard although the domain is gone when the event is delivered
    seen = []
    while ("own-mine", "shutoff") not in seen:
        seen.append(got.get(timeout=5))
    assert ("own-mine", "running") in seen
    assert [name for name, _ in seen if name != "own-mine"] == []


def _define_as_0_1(instance, directory):
    """A domain as version 0.1 wrote it: project metadata without an owner."""
    domain = build_domain(instance, [BlockDevice(path=os.path.join(directory, "disk"))],
                          instance.nics, "qemu", 0, arch="i686")
    assert domain.metadata.owner is None
    conn = libvirt.open(TEST_URI)
    try:
        conn.defineXML(domain.to_xml())
    finally:
        conn.close()


def test_a_domain_of_version_0_1_belongs_to_the_driver_holding_its_directory(driver, other):
    old = _instance("own-old")
    directory = os.path.join(driver.conf.instances_path, old.uuid)
    os.makedirs(directory)
    _define_as_0_1(old, directory)
    stray = _instance("own-stray")
    _define_as_0_1(stray, "/nowhere")
    try:
        assert driver.list_instances() == ["own-old"]
        assert other.list_instances() == []
        assert driver.get_instance("own-old").uuid == old.uuid
        with pytest.raises(InstanceNotFound):
            other.get_instance("own-old")
        with pytest.raises(InstanceNotFound):
            driver.get_instance("own-stray")
    finally:
        driver.destroy(old)
        assert not _defined("own-old")
        conn = libvirt.open(TEST_URI)
        conn.lookupByName("own-stray").undefine()
        conn.close()


def test_cache_cleanup_of_a_second_configuration_keeps_bases_in_use(driver, conf, store,
                                                                     tmp_path):
    """Same cache, another instances path: the overlay's record keeps the base."""
    instance = _instance()
    driver.spawn(instance, "tiny")
    base = driver.cache.base_path(store.get("tiny"))
    config = tmp_path / "second.conf"
    config.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\nvirt_type = qemu\n"
                      f"instances_path = {tmp_path / 'second-instances'}\n")
    cleanup = ["--config-file", str(config), "cache-cleanup", "--min-age", "0"]
    assert main(cleanup) == 0
    assert os.path.isfile(base)
    driver.destroy(instance)
    assert main(cleanup) == 0
    assert not os.path.exists(base)


def test_resync_after_a_reconnect_tells_only_owned_states(driver, other):
    theirs, mine = _instance("own-theirs"), _instance("own-mine")
    other.spawn(theirs, "tiny")
    driver.spawn(mine, "tiny")
    driver.pause(mine)
    got = queue.SimpleQueue()
    driver.register_event_listener(lambda name, state: got.put((name, state)))
    driver.close()
    driver.list_instances()  # reconnects: the resync tells every owned guest's state
    seen = []
    while ("own-mine", "paused") not in seen:
        seen.append(got.get(timeout=5))
    assert [name for name, _ in seen if name != "own-mine"] == []
