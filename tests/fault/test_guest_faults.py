"""kill -9 at every step of boot and snapshot (real guests), then cleanup.

After the cleanup: no temporary, staging or marker on disk, no domain of a
killed boot in libvirt, the names reusable, the other images unchanged, and
the snapshotted guest running on as before (same domain, same disk chain, no
backup job left).
"""

from __future__ import annotations

import json
import os
import uuid

import libvirt
import pytest

from tests.support.faults import report, sha256s
from tests.support.guests import SYSTEM_URI

BOOT_STEPS = [
    "py virt.images:write_overlay",  # the overlay's held temporary exists, not yet renamed
    "py virt.imagecache:os.link",  # the overlay exists, the raw base is being linked
    "py virt.imagecache:ImageCache._write_users",  # base and overlay exist, user not recorded
    "py backends.libvirt.driver:LibvirtDriver._wait_for",  # defined and started
]
SNAPSHOT_STEPS = [  # (where, extra snapshot arguments)
    ("py backends.libvirt.livesnapshot:_freeze", ()),  # marker written, no job yet
    ("py backends.libvirt.livesnapshot:_wait_for_job", ()),  # the backup job has begun
    ("py virt.imagestore:LocalImageStore.publish", ()),  # the job's copy is complete
    ("qemu-img convert before", ("--compress",)),  # the compressed copy of the job's copy
    ("qemu-img convert after", ("--compress",)),
]


@pytest.fixture
def guest_bed(bed, demo_guest, libvirt_daemons):  # noqa: F811
    bed.cli("image", "import", "demo", demo_guest.disk, "--format", "raw",
            "--property", "arch=x86_64")
    name = f"fault-{uuid.uuid4().hex[:8]}"
    boot = ["boot", name, "--image", "demo", "--memory", "192", "--kernel", demo_guest.kernel,
            "--initrd", demo_guest.initrd, "--cmdline", demo_guest.cmdline("wait")]
    yield bed, name, boot
    bed.cli("destroy", name)


def domain_exists(name: str) -> bool:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # the answer, not a print
    conn = libvirt.open(SYSTEM_URI)
    try:
        conn.lookupByName(name)
        return True
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise
    finally:
        conn.close()


def state_of(bed, name: str) -> str:
    return json.loads(bed.cli("--json", "show", name).stdout)["state"]


@pytest.mark.parametrize("step", BOOT_STEPS)
def test_boot_killed_at_every_step_leaves_nothing(guest_bed, step):
    bed, name, boot = guest_bed
    kept = sha256s(bed)
    bed.kill_at(step, *boot)
    bed.cli("cleanup")
    leftovers = bed.leftovers()
    leftovers += [str(bed.state / "instances" / d) for d in os.listdir(bed.state / "instances")]
    leftovers += [f"domain {name}"] if domain_exists(name) else []
    report(f"boot {step}", leftovers)
    assert leftovers == []
    assert sha256s(bed) == kept
    bed.cli(*boot)  # the name is free again
    assert state_of(bed, name) == "running"


@pytest.mark.parametrize("step, extra", SNAPSHOT_STEPS)
def test_snapshot_killed_at_every_step_leaves_nothing(guest_bed, step, extra):
    bed, name, boot = guest_bed
    bed.cli(*boot)
    kept = sha256s(bed)
    before = running_domain(name)
    bed.kill_at(step, "snapshot", name, "saved", *extra)
    bed.cli("cleanup")
    leftovers = bed.leftovers()
    report(f"snapshot {step}", leftovers)
    assert leftovers == []
    assert sha256s(bed) == kept
    # The guest ran on throughout, on the same disk chain, with no job left.
    assert running_domain(name) == before
    assert state_of(bed, name) == "running"
    done = bed.cli("snapshot", name, "saved")  # the image name is free again
    assert "saved" in sha256s(bed)
    assert "(crash-consistent: no guest agent froze its file systems)" in done.stdout


def running_domain(name: str) -> tuple[int, str, int]:
    """(domain id, its live <disk> elements, its job type): what a snapshot must not change."""
    conn = libvirt.open(SYSTEM_URI)
    try:
        dom = conn.lookupByName(name)
        xml = dom.XMLDesc(0)
        return dom.ID(), xml[xml.index("<disk"):xml.rindex("</disk>")], dom.jobStats()["type"]
    finally:
        conn.close()
