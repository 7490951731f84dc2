"""Nova's own libvirt driver as a peer, in the same in-process Nova as this driver.

Two compute services in one process: host "theirs" runs Nova's own
libvirt.LibvirtDriver (virt_type qemu) on a private libvirtd
(tools/private-libvirtd.sh), host "compute" runs virtdriver on the machine's
libvirtd as in NovaTestCase. Nova's driver must own every domain of its
libvirtd (it refuses to start beside guests it did not make, and would list
other tests' guests), hence the libvirtd of its own.

Nova's test base poisons what its libvirt driver needs on a real host (its
event thread, os.uname, psutil.net_if_addrs, reads under /sys) and forbids
privsep's helper: the originals are put back for these tests only, and
privsep's entry points run in process (we are root).
"""

from __future__ import annotations

import builtins
import glob
import os
import shutil
import subprocess
import tempfile
from unittest import mock

import fixtures
import psutil

# isort: off
# tests.nova.base first: it sets Nova's threading mode before Nova is imported.
from tests.nova.base import PREFIX, NovaTestCase
from nova.tests import fixtures as nova_fixtures
import nova.virt.libvirt.host
# isort: on

import libvirt

from tests.support.guests import PROJECT_DIR

PRIVATE_LIBVIRTD = PROJECT_DIR / "tools" / "private-libvirtd.sh"
PEER_DRIVER = "libvirt.LibvirtDriver"
PEER_HOST = "theirs"
OUR_HOST = "compute"
PEER_NODE_UUID = "6f1e3c52-9d0b-4a87-b1a2-3c4d5e6f7a80"

# What Nova's TestCase poisons, as it was before any test ran.
_UNPOISONED = {
    "os.uname": os.uname,
    "psutil.net_if_addrs": psutil.net_if_addrs,
    "os.path.isdir": os.path.isdir,
    "builtins.open": builtins.open,
    "glob.iglob": glob.iglob,
    "glob.glob": glob.glob,
    "os.listdir": os.listdir,
    "nova.virt.libvirt.host.Host._init_events": nova.virt.libvirt.host.Host._init_events,
}


class PrivateLibvirtd(fixtures.Fixture):
    """tools/private-libvirtd.sh started under a temporary directory; stopped and removed after."""

    def _setUp(self):
        self.dir = tempfile.mkdtemp(prefix="nv-libvirtd-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.addCleanup(subprocess.run, [str(PRIVATE_LIBVIRTD), "stop", self.dir], check=True)
        self.uri = subprocess.run([str(PRIVATE_LIBVIRTD), "start", self.dir], check=True,
                                  capture_output=True, text=True).stdout.strip()

    def domains(self) -> list[str]:
        conn = libvirt.open(self.uri)
        try:
            return sorted(d.name() for d in conn.listAllDomains())
        finally:
            conn.close()


def _end_conn_event_thread(host: nova.virt.libvirt.host.Host) -> None:
    """Ends the thread Nova's libvirt Host runs for connection events.

    It loops for the life of the process; Nova's test base waits for every
    thread of its executors, so the test would never end. Its dispatcher stops
    only on exceptions, and lets a SystemExit through.
    """
    def leave():
        raise SystemExit

    host._conn_event_handler_queue.put(leave)


class PeerTestCase(NovaTestCase):
    """NovaTestCase with a second compute, "theirs", running Nova's own libvirt driver."""

    GUEST_PREFIX = PREFIX + "p-"
    # virtdriver on a private libvirtd too: the machine's puts guests in its
    # cgroup, where every other guest of the machine shares one CPU weight.
    OURS_ON_PRIVATE_LIBVIRTD = False

    def setUp(self):
        self.libvirtd = self.useFixture(PrivateLibvirtd())
        self.ours_libvirtd = (self.useFixture(PrivateLibvirtd())
                              if self.OURS_ON_PRIVATE_LIBVIRTD else None)
        self.peer_instances = tempfile.mkdtemp(prefix="nv-peer-instances-")
        self.addCleanup(shutil.rmtree, self.peer_instances, True)
        super().setUp()

    def virtdriver_uri(self) -> str:
        return self.ours_libvirtd.uri if self.ours_libvirtd else super().virtdriver_uri()

    def _setup_services(self):
        for name, original in _UNPOISONED.items():
            self.useFixture(fixtures.MonkeyPatch(name, original))
        self.useFixture(nova_fixtures.PrivsepFixture())
        # cpu_mode none: QEMU's default CPU model, the one virtdriver's guests get.
        self.flags(virt_type="qemu", connection_uri=self.libvirtd.uri, cpu_mode="none",
                   group="libvirt")
        self.flags(instances_path=self.peer_instances)
        super()._setup_services()

    def _setup_compute_service(self):
        # Theirs first: a compute's driver reads CONF.host, which the last start leaves.
        # Each compute its own node uuid (Nova keeps one per process): Nova's
        # libvirt Host keeps the one it reads first, virtdriver's the process's.
        self.flags(compute_driver=PEER_DRIVER)
        with mock.patch("nova.virt.node.get_local_node_uuid", return_value=PEER_NODE_UUID):
            peer = self._start_compute(PEER_HOST)
            peer.manager.driver._host.get_node_uuid()
        self.addCleanup(_end_conn_event_thread, peer.manager.driver._host)
        self.flags(compute_driver=self.compute_driver)
        return self._start_compute(OUR_HOST)

    def boot_on(self, host: str, image: str, flavor: str):
        """boot() on one host; the timing is recorded under that host's driver."""
        driver = PEER_DRIVER if host == PEER_HOST else self.compute_driver
        return self.boot(image, flavor, availability_zone=f"nova:{host}", driver=driver)

    def assert_peer_left_nothing(self):
        """No domain on the private libvirtds, no instance directory of Nova's driver."""
        self.assertEqual([], self.libvirtd.domains())
        if self.ours_libvirtd:
            self.assertEqual([], self.ours_libvirtd.domains())
        left = [n for n in os.listdir(self.peer_instances)
                if n not in ("_base", "locks", "compute_nodes", "snapshots")]
        self.assertEqual([], left, f"left in {self.peer_instances}")

