"""Whatever a caller passes, a driver raises only VirtError subclasses.

Hypothesis drives every contract method of the libvirt backend (on libvirt's
test:///default) and of the xm backend (on the toolstack double) with
arbitrary strings and structures, near-valid instances among them so that
the calls also reach the backends' own code. No real guest is started.
"""

from __future__ import annotations

import inspect
import os
import uuid as uuidlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.libvirt.driver import LibvirtDriver
from backends.xm.driver import XmDriver
from tests.support.drivers import serving_driver
from tests.xm_double import DoubleHost
from virt import images
from virt.conf import make_conf
from virt.driver import ARGUMENT_CHECKS, CONTRACT_METHODS, ComputeDriver
from virt.errors import InvalidParameter, VirtError
from virt.imagecache import ImageCache
from virt.imagestore import LocalImageStore
from virt.objects import NIC, BlockDevice, Flavor, GuestKind, Instance

NAME = "hyp-1"
UUID = "0b7e5b3e-8f3a-4c1e-9a51-2d2f6c1f0a11"
FLAVOR = Flavor(memory_mb=64, vcpus=1, root_gb=1)

junk = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.binary(max_size=8), st.lists(st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.tuples(st.text(max_size=4), st.integers()), st.just(object()))
texts = st.text(max_size=24)    # control characters, surrogates, quotes, anything
hashable_junk = st.one_of(st.none(), st.integers(), texts, st.tuples(texts))

param_keys = st.one_of(st.sampled_from([
    "kernel_path", "initrd_path", "kernel_args", "cdrom_image_path", "kernel_image",
    "cdrom_image", "boot_order", "vnc_bind_address", "vnc_password", "bootloader",
    "disk_cache", "nic_type", "serial", "on_crash", "cpu_mask", "vnc_password_file"]),
    hashable_junk)
param_values = st.one_of(st.sampled_from(["/etc/shadow", "/dev/vda", "0.0.0.0", "cd", "x'\n",
                                          "a\x00b", "\ud800", "tiny", "base"]), texts, junk)
params = st.one_of(st.just({}), st.dictionaries(param_keys, param_values, max_size=3), junk)
flavors = st.one_of(st.just(FLAVOR), junk, st.builds(
    Flavor, memory_mb=st.one_of(st.integers(), junk), vcpus=st.one_of(st.integers(), junk),
    root_gb=st.one_of(st.integers(), junk), name=st.one_of(texts, junk)))
macs = st.one_of(st.just("52:54:00:00:00:01"), texts, junk)
nic = st.builds(NIC, mac=macs, bridge=st.one_of(st.none(), texts, junk),
                network=st.one_of(st.none(), texts), model=st.one_of(st.none(), texts, junk),
                ip=st.one_of(st.none(), texts))
nic_lists = st.one_of(st.just(()), st.lists(st.one_of(nic, junk), max_size=2), junk)
instances = st.one_of(
    st.builds(Instance, name=st.one_of(st.just(NAME), texts, junk), flavor=flavors,
              image=st.one_of(st.none(), st.just("tiny"), texts, junk),
              uuid=st.one_of(st.just(UUID), texts, junk),
              kind=st.one_of(st.sampled_from(GuestKind), junk), params=params,
              nics=nic_lists, network_port=st.one_of(st.none(), st.integers(), junk)),
    junk)
devices = st.one_of(st.just(()), junk, st.lists(st.one_of(junk, st.builds(
    BlockDevice, path=st.one_of(st.just("/dev/null"), texts, junk),
    fmt=st.one_of(st.just("raw"), texts, junk), bus=st.one_of(st.none(), texts, junk),
    readonly=st.one_of(st.booleans(), junk),
    device_type=st.one_of(st.just("cdrom"), texts, junk))), max_size=2))
# No "://" in a destination: a migration must never leave this host.
destinations = st.one_of(texts.filter(lambda t: "://" not in t), junk)

ARGUMENTS = {
    "instance": instances, "name": st.one_of(st.just(NAME), texts, junk),
    "image_id": st.one_of(st.just("tiny"), texts, junk),
    "image_name": st.one_of(st.just("hyp-snap"), texts, junk),
    "nics": nic_lists, "block_devices": devices, "host": st.one_of(texts, junk),
    "dest": destinations, "dest_instances_path": st.one_of(st.none(), texts, junk),
    "fmt": st.one_of(st.sampled_from(["qcow2", "raw"]), texts, junk),
    "destroy_disks": st.one_of(st.booleans(), junk), "hard": st.one_of(st.booleans(), junk),
    "live": st.one_of(st.booleans(), junk), "compress": st.one_of(st.booleans(), junk),
    "timeout": st.one_of(st.none(), st.integers(), junk),
    "progress": st.one_of(st.none(), junk), "callback": st.one_of(st.just(print), junk),
    # no host path: a volume file is copied, and the test must not read the host's files
    "volume": st.one_of(st.just("tiny"), texts.filter(lambda t: not t.startswith("/")), junk),
    "device": st.one_of(st.none(), st.just("vdb"), texts, junk),
    "nic": st.one_of(nic, junk),
    "mac": st.one_of(st.just("52:54:00:00:00:09"), texts, junk),
    "root_gb": st.one_of(st.none(), st.integers(), junk),
    "vcpus": st.one_of(st.none(), st.integers(), junk),
    "memory_mb": st.one_of(st.none(), st.integers(), junk),
}


@st.composite
def calls(draw):
    """(method name, positional arguments) of one contract call."""
    method = draw(st.sampled_from(CONTRACT_METHODS))
    names = list(inspect.signature(getattr(ComputeDriver, method)).parameters)[1:]
    return method, [draw(ARGUMENTS[name]) for name in names]


def _drive(driver, call) -> None:
    method, args = call
    try:
        getattr(driver, method)(*args)
    except VirtError:
        pass


def test_every_contract_argument_has_a_check_and_a_strategy():
    for method in CONTRACT_METHODS:
        for cls in (ComputeDriver, LibvirtDriver, XmDriver):
            names = list(inspect.signature(getattr(cls, method)).parameters)[1:]
            assert set(names) <= set(ARGUMENT_CHECKS) <= set(ARGUMENTS) | {"name"}, method


@pytest.fixture(scope="module")
def libvirt_driver(tmp_path_factory):
    root = tmp_path_factory.mktemp("boundary-libvirt")
    conf = make_conf(virt_type="qemu", state_path=str(root),
                     libvirt__connection_uri="test:///default", libvirt__shutdown_timeout=1,
                     libvirt__wait_soft_reboot_seconds=1, libvirt__reconnect_max_backoff=1)
    raw = root / "tiny.raw"
    images.create_image("raw", str(raw), "1M")
    LocalImageStore.from_conf(conf).import_image("tiny", str(raw), "raw")
    yield from serving_driver(conf)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(call=calls())
def test_libvirt_backend_raises_only_virt_errors(libvirt_driver, call):
    _drive(libvirt_driver, call)


@pytest.fixture(scope="module")
def xm_driver(tmp_path_factory):
    root = tmp_path_factory.mktemp("boundary-xm")
    double = DoubleHost(str(root / "double"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", double.bin_dir + os.pathsep + os.environ["PATH"])
        conf = make_conf(state_path=str(root / "state"), xm__config_dir=str(root / "etc-xen"),
                         xm__log_dir=str(root / "log"), xm__toolstack="xl",
                         xm__shutdown_timeout=1, xm__reboot_timeout=1)
        store = LocalImageStore(conf.images.store_path)
        raw = root / "tiny.raw"
        images.create_image("raw", str(raw), "1M")
        store.import_image("tiny", str(raw), "raw")
        cache = ImageCache(conf.images.cache_path, conf.lock_path, store)
        yield XmDriver(conf, image_cache=cache, sleep=lambda seconds: None)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(call=calls())
def test_xm_backend_raises_only_virt_errors(xm_driver, call):
    _drive(xm_driver, call)


@pytest.mark.parametrize("method, args, message", [
    ("spawn", [Instance(NAME, params={"kernel_args": "a\x00b"}), "tiny"],
     r"instance params\['kernel_args'\] 'a\\x00b'"),
    ("spawn", [Instance(NAME, params=["kernel_path"]), "tiny"], "instance params"),
    ("spawn", [Instance(NAME, params={3: "x"}), "tiny"], "instance params key 3"),
    ("spawn", [Instance(NAME, flavor={"memory_mb": 64}), "tiny"], "instance flavor {'memory_mb'"),
    ("spawn", [Instance(NAME, flavor=Flavor(root_gb="1")), "tiny"], "instance flavor root_gb"),
    ("spawn", [Instance(NAME), "tiny", [("52:54:00:00:00:01", "br0")]], r"nics\[0\]"),
    ("spawn", [Instance(NAME), "tiny", (), ["/dev/sda"]], r"block_devices\[0\]"),
    ("spawn", [Instance(NAME, uuid=uuidlib.uuid4()), "tiny"], "instance uuid UUID"),
    ("spawn", [Instance(NAME), 7], "image 7"),
    ("get_instance", [None], "instance name None"),
    ("destroy", [Instance(NAME), "yes"], "destroy_disks 'yes': use True or False"),
    ("power_off", [Instance(NAME), "10"], "timeout '10'"),
    ("register_event_listener", ["print"], "callback 'print': use a function"),
    ("reboot", [], "missing a required argument"),
])
def test_malformed_arguments_are_named(libvirt_driver, xm_driver, method, args, message):
    for driver in (libvirt_driver, xm_driver):
        with pytest.raises(InvalidParameter, match=message):
            getattr(driver, method)(*args)
