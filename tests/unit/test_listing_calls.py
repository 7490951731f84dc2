"""What a listing costs in libvirt calls, counted where libvirt-python calls its C module.

test:///default and real spawns: a listing is O(1) calls plus at most one per
guest, connecting resyncs nothing when nobody listens, and the `list`
command makes no probe. Calls libvirt answers from the object in hand (a
domain's name, uuid, id) and those of the event loop's own thread are not
counted.
"""

import collections
import threading

import libvirt
import pytest

from backends.libvirt.driver import LibvirtDriver
from tests.support.drivers import TEST_URI, serving_driver
from virt.cli import main
from virt.conf import make_conf
from virt.objects import Flavor, Instance, PowerState

LOCAL = {"virDomainGetName", "virDomainGetUUIDString", "virDomainGetUUID", "virDomainGetID",
         "virConnectIsAlive", "virDomainFree", "virConnectClose", "virGetLastError",
         "virResetLastError"}
GUESTS = (2, 5)
BUILTIN = 1  # test:///default's own domain: listed and read too, never ours
CONSTANT = 8  # open, close callback, keepalive, event registration, listings, stats


@pytest.fixture
def calls(monkeypatch):
    """A Counter of libvirt C calls made from this test's thread, from now on."""
    counter: collections.Counter = collections.Counter()
    me = threading.get_ident()

    def counting(name, fn):
        def call(*args, **kwargs):
            if threading.get_ident() == me:
                counter[name] += 1
            return fn(*args, **kwargs)
        return call

    for name in dir(libvirt.libvirtmod):
        fn = getattr(libvirt.libvirtmod, name)
        if name.startswith("vir") and callable(fn) and name not in LOCAL \
                and not name.startswith("virEvent"):
            monkeypatch.setattr(libvirt.libvirtmod, name, counting(name, fn))
    return counter


@pytest.fixture
def conf(tmp_path):
    return make_conf(virt_type="qemu", state_path=str(tmp_path),
                     libvirt__connection_uri=TEST_URI, libvirt__reconnect_max_backoff=1)


@pytest.fixture
def guests(conf, tmp_path):
    """Spawn n guests (one of them stopped) with a driver of conf; all destroyed after."""
    from virt import images
    from virt.imagestore import LocalImageStore
    raw = tmp_path / "tiny.raw"
    images.create_image("raw", str(raw), "1M")
    LocalImageStore.from_conf(conf).import_image("tiny", str(raw), "raw")
    serving = serving_driver(conf)
    driver = next(serving)

    def spawn(n):
        for i in range(len(driver.list_instances()), n):
            instance = Instance(name=f"cl-list-{i}", image="tiny",
                                flavor=Flavor(memory_mb=64 + i, vcpus=1))
            driver.spawn(instance, "tiny")
            if i == 0:
                driver.power_off(instance, timeout=0)
        return driver
    yield spawn
    next(serving, None)


def _fresh_count(calls, fn):
    calls.clear()
    result = fn()
    return sum(calls.values()), result


@pytest.mark.parametrize("n", GUESTS)
def test_a_fresh_driver_lists_in_constant_calls_plus_one_per_guest(conf, guests, calls, n):
    guests(n)
    driver = LibvirtDriver(conf)
    try:
        count, names = _fresh_count(calls, driver.list_instances)
        assert names == [f"cl-list-{i}" for i in range(n)]
        assert count <= CONSTANT + BUILTIN + n, calls

        count, summaries = _fresh_count(calls, driver.list_summaries)
        assert [(s.name, s.state, s.memory_mb) for s in summaries[:2]] == [
            ("cl-list-0", PowerState.SHUTOFF, 64), ("cl-list-1", PowerState.RUNNING, 65)]
        assert count <= 3 + BUILTIN + n, calls
    finally:
        driver.close()


def test_the_same_summaries_as_asking_one_by_one(conf, guests):
    driver = guests(3)
    driver.suspend(driver.get_instance("cl-list-2"))
    fast = driver.list_summaries()
    slow = super(LibvirtDriver, driver).list_summaries()
    assert fast == slow
    assert fast[2].state is PowerState.SUSPENDED


def test_list_command_makes_no_probe_and_no_resync(conf, guests, calls, capsys, tmp_path):
    config = tmp_path / "cli.conf"
    config.write_text(f"[DEFAULT]\nstate_path = {conf.state_path}\nvirt_type = qemu\n")
    argv = ["--config-file", str(config), "--connection-uri", TEST_URI, "list", "--all"]
    counts = []
    for n in GUESTS:
        guests(n)
        capsys.readouterr()
        calls.clear()
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert out.count("cl-list-") == n
        counts.append(sum(calls.values()))
        assert calls["virConnectOpenReadOnly"] == 0, calls  # the auto-selection probe
        assert calls["virConnectGetCapabilities"] == 0, calls
    assert counts[1] - counts[0] <= GUESTS[1] - GUESTS[0], counts
    assert counts[0] <= CONSTANT + BUILTIN + GUESTS[0], counts


def test_host_info_reads_no_capabilities(conf, calls):
    driver = LibvirtDriver(conf)
    try:
        assert driver.get_host_info().arch == "i686"
        assert calls["virConnectGetCapabilities"] == 0, calls
    finally:
        driver.close()


def test_spawns_read_the_capabilities_once_per_connection(guests, calls):
    guests(1)
    calls.clear()
    guests(3)
    assert calls["virConnectGetCapabilities"] == 0, calls


def test_a_spawn_finds_the_domain_it_defined_without_lookups(conf, guests, calls):
    driver = guests(0)
    calls.clear()
    driver.spawn(Instance(name="cl-spawn-0", image="tiny", flavor=Flavor(memory_mb=64, vcpus=1)),
                 "tiny")
    # One lookup, before the definition (is the name free?); create and the wait for
    # RUNNING act on the object defineXML returned, with no ownership check to repeat.
    assert calls["virDomainLookupByName"] == 1, calls
    assert calls["virDomainGetMetadata"] == 0, calls
    assert (calls["virDomainDefineXML"], calls["virDomainCreate"]) == (1, 1), calls
    assert driver.get_info(driver.get_instance("cl-spawn-0")).state is PowerState.RUNNING


def test_a_listing_reads_a_changed_metadata_element_anew(conf, guests):
    """The parsed elements are kept by their text, so a change is never hidden."""
    from virt.domain import METADATA_NS, METADATA_PREFIX
    driver = guests(2)
    assert [s.memory_mb for s in driver.list_summaries()] == [64, 65]
    conn = libvirt.open(TEST_URI)
    try:
        dom = conn.lookupByName("cl-list-1")
        xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
        assert 'memory_mb="65"' in xml
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                        xml.replace('memory_mb="65"', 'memory_mb="128"'),
                        METADATA_PREFIX, METADATA_NS)
    finally:
        conn.close()
    assert [s.memory_mb for s in driver.list_summaries()] == [64, 128]


def test_a_huge_metadata_element_is_read_but_not_kept(conf, guests):
    """Anyone with libvirt access may write into our namespace: the cache stays bounded."""
    from backends.libvirt import driver as libvirt_driver
    from virt.domain import METADATA_NS, METADATA_PREFIX
    driver = guests(1)
    libvirt_driver._cached_listed.cache_clear()
    driver.list_summaries()
    assert libvirt_driver._cached_listed.cache_info().currsize == 1  # ours, a few hundred bytes
    conn = libvirt.open(TEST_URI)
    try:
        dom = conn.lookupByName("cl-list-0")
        xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
        padding = "<pad>" + "x" * libvirt_driver.CACHED_METADATA_MAX + "</pad>"
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                        xml.replace("</instance>", padding + "</instance>"),
                        METADATA_PREFIX, METADATA_NS)
    finally:
        conn.close()
    libvirt_driver._cached_listed.cache_clear()
    assert [s.name for s in driver.list_summaries()] == ["cl-list-0"]  # still ours, still read
    assert libvirt_driver._cached_listed.cache_info().currsize == 0
