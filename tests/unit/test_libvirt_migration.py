"""Migration flags, policy, destination XML and progress: pure parts of migration.py."""

import libvirt
import pytest
from lxml import etree

from backends.libvirt.migration import (
    MigrationPolicy,
    TimeoutAction,
    migration_flags,
    progress_of,
    relocated_xml,
)
from virt.conf import make_conf
from virt.domain import METADATA_NS

SRC, DEST = "/srv/a/instances", "/srv/b/instances"
UUID = "0d6c4a52-0f5e-4c1a-9a55-3c2b8f1e7d10"


def test_every_migration_is_peer_to_peer_and_moves_the_definition():
    for live in (True, False):
        flags = migration_flags(live=live)
        for flag in (libvirt.VIR_MIGRATE_PEER2PEER, libvirt.VIR_MIGRATE_PERSIST_DEST,
                     libvirt.VIR_MIGRATE_UNDEFINE_SOURCE):
            assert flags & flag
        assert bool(flags & libvirt.VIR_MIGRATE_LIVE) is live


def test_policy_flags():
    plain = migration_flags(policy=MigrationPolicy(auto_converge=False))
    assert not plain & (libvirt.VIR_MIGRATE_AUTO_CONVERGE | libvirt.VIR_MIGRATE_POSTCOPY)
    steered = migration_flags(policy=MigrationPolicy(timeout_action=TimeoutAction.POSTCOPY))
    assert steered & libvirt.VIR_MIGRATE_AUTO_CONVERGE and steered & libvirt.VIR_MIGRATE_POSTCOPY
    assert not migration_flags() & libvirt.VIR_MIGRATE_NON_SHARED_INC
    assert migration_flags(block=True) & libvirt.VIR_MIGRATE_NON_SHARED_INC


def test_policy_from_conf():
    conf = make_conf(libvirt__migration_completion_timeout=30,
                     libvirt__migration_timeout_action="postcopy",
                     libvirt__migration_auto_converge=False,
                     libvirt__migration_max_bandwidth=5)
    assert MigrationPolicy.from_conf(conf) == MigrationPolicy(30.0, TimeoutAction.POSTCOPY,
                                                              False, 5)
    assert MigrationPolicy.from_conf(make_conf()).timeout_action is TimeoutAction.ABORT


def _domain_xml() -> str:
    return f"""<domain type='qemu'><name>g</name>
  <metadata><vd:instance xmlns:vd='{METADATA_NS}'><vd:owner>{SRC}</vd:owner>
    <vd:uuid>{UUID}</vd:uuid></vd:instance></metadata>
  <os><kernel>/boot/allowed/vmlinuz</kernel></os>
  <devices>
    <disk type='file' device='disk'><source file='{SRC}/{UUID}/disk'/>
      <backingStore type='file'><source file='/var/cache/base'/></backingStore></disk>
    <serial type='pty'><log file='{SRC}/{UUID}/console.log'/></serial>
    <disk type='file' device='cdrom'><source file='{SRC}-other/x.iso'/></disk>
  </devices></domain>"""


def test_relocated_xml_moves_owner_disks_and_console_only():
    root = etree.fromstring(relocated_xml(_domain_xml(), SRC + "/", DEST).encode())
    assert root.findtext(f".//{{{METADATA_NS}}}owner") == DEST
    sources = [e.get("file") for e in root.iter("source")]
    assert sources == [f"{DEST}/{UUID}/disk", "/var/cache/base", f"{SRC}-other/x.iso"]
    assert root.find(".//log").get("file") == f"{DEST}/{UUID}/console.log"
    assert root.findtext("os/kernel") == "/boot/allowed/vmlinuz"


@pytest.mark.parametrize("info, expected", [
    ([], None),
    ([libvirt.VIR_DOMAIN_JOB_NONE, 0, 0, 0, 0, 0], None),
    ([libvirt.VIR_DOMAIN_JOB_UNBOUNDED, 10, 0, 100, 0, 0], None),
    ([libvirt.VIR_DOMAIN_JOB_UNBOUNDED, 10, 0, 100, 30, 90], 0.25),
])
def test_progress_of_job_info(info, expected):
    assert progress_of(info) == expected
