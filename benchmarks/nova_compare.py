"""Nova in process: virtdriver against Nova's own libvirt driver, same run, same image.

One Nova (API, conductor, scheduler, Placement, sqlite, fake RPC) with two
computes (tests/nova/peer.py): "compute" runs virtdriver, "theirs" runs
Nova's libvirt.LibvirtDriver (virt_type qemu, QEMU's default CPU model), each
on a private libvirtd of its own (tools/private-libvirtd.sh; neither puts its
guests in a cgroup, the machine's libvirtd does: on a loaded machine its
guests would get a smaller CPU share, --ours-libvirtd system shows it). Both
boot the busybox demo guest uploaded once to Glance (kernel, initrd, disk
as raw or qcow2), with one flavor (1 vCPU, 192 MB, 1 GB) and no network,
alternately: ours, theirs, ours, theirs... Each boot is timed from the API call to ACTIVE and to the
guest's first console line read through the API (both polled alike), then
deleted. The first boot of each driver also fetches the image into its cache.
Prints medians, min-max and theirs/ours ratios; leaves no domain, disk or
libvirtd behind (the private libvirtds are stopped, their directories removed).

Needs Nova's env: `tox -e nova-bench [-- --rounds N --format raw|qcow2]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# isort: off
# tests.nova.peer first: it sets Nova's threading mode before Nova is imported.
from tests.nova.peer import OUR_HOST, PEER_DRIVER, PEER_HOST, PeerTestCase  # noqa: E402
from tests.support.guests import DEMO_GUEST_DIR  # noqa: E402
# isort: on

DRIVERS = {OUR_HOST: "virtdriver", PEER_HOST: PEER_DRIVER}


class NovaCompare(PeerTestCase):
    """Alternated boots on both computes; the timings stay in `timings` for main()."""

    rounds = 5
    disk_format = "raw"
    OURS_ON_PRIVATE_LIBVIRTD = True
    timings: dict[str, list[tuple[float, float]]] = {}

    def test_alternated_boots(self):
        with tempfile.TemporaryDirectory(prefix="nv-compare-") as tmp:
            image = self.upload_demo_guest(*self._disk(tmp))
        flavor = self.demo_flavor()
        for _ in range(self.rounds):
            for host in (OUR_HOST, PEER_HOST):
                server = self.boot_on(host, image, flavor)
                type(self).timings.setdefault(host, []).append(self.last_timing)
                self._delete_server(server)
        self.assert_peer_left_nothing()
        self.assert_nothing_left()

    def _disk(self, tmp: str) -> tuple[str, str]:
        """The demo guest's disk in the format asked for (converted by qemu-img)."""
        raw = str(DEMO_GUEST_DIR / "disk.raw")
        if self.disk_format == "raw":
            return raw, "raw"
        path = os.path.join(tmp, "disk.qcow2")
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, path],
                       check=True)
        return path, "qcow2"


def summary(timings: dict[str, list[tuple[float, float]]]) -> list[str]:
    """Lines of medians, min-max and first boots per driver, then theirs/ours ratios."""
    lines = []
    medians = {}
    for host in (OUR_HOST, PEER_HOST):
        boots = timings.get(host, [])
        if not boots:
            continue
        cols = []
        for i, what in enumerate(("ACTIVE", "first console line")):
            values = [b[i] for b in boots]
            medians[host, i] = statistics.median(values)
            cols.append(f"to {what}: median {medians[host, i]:.2f} s "
                        f"(min {min(values):.2f}, max {max(values):.2f}, first {values[0]:.2f})")
        lines.append(f"{DRIVERS[host]}: {len(boots)} boots; " + "; ".join(cols))
    if len(medians) == 4:
        ratios = [f"{what} {medians[PEER_HOST, i] / medians[OUR_HOST, i]:.2f}"
                  for i, what in enumerate(("to ACTIVE", "to first console line"))]
        lines.append("median ratio Nova libvirt / virtdriver: " + ", ".join(ratios))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=NovaCompare.rounds,
                        help="boots per driver, alternated (default %(default)s)")
    parser.add_argument("--ours-libvirtd", choices=("private", "system"), default="private",
                        help="virtdriver's libvirtd: a private one like Nova's driver's "
                             "(default), or the machine's (its guests share the cgroup "
                             "of every other guest of the machine)")
    parser.add_argument("--format", choices=("raw", "qcow2"), default="raw",
                        help="the disk image's format in Glance (default %(default)s)")
    args = parser.parse_args()
    NovaCompare.rounds = args.rounds
    NovaCompare.disk_format = args.format
    NovaCompare.OURS_ON_PRIVATE_LIBVIRTD = args.ours_libvirtd == "private"
    result = unittest.TextTestRunner(verbosity=2).run(NovaCompare("test_alternated_boots"))
    print(f"virtdriver on the {args.ours_libvirtd} libvirtd, disk image {args.format}, "
          f"flavor 1 vCPU 192 MB 1 GB, QEMU TCG, {os.cpu_count()} CPUs")
    for line in summary(NovaCompare.timings):
        print(line)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
