"""livesnapshot on test:///default: the backup document, and the thaw that always follows."""

from __future__ import annotations

import libvirt
import pytest
from lxml import etree

from backends.libvirt import livesnapshot
from virt.errors import HypervisorError

TEST_URI = "test:///default"


def test_backup_document_copies_the_root_disk_alone_into_a_qcow2():
    xml = livesnapshot.backup_xml("vda", "/store/.vd-tmp-x/live-copy.qcow2", ["vdb", "hdc"])
    root = etree.fromstring(xml)
    assert root.get("mode") == "push"
    disks = {d.get("name"): d for d in root.iterfind("disks/disk")}
    assert disks["vda"].get("backup") == "yes"
    assert disks["vda"].find("target").get("file") == "/store/.vd-tmp-x/live-copy.qcow2"
    assert disks["vda"].find("driver").get("type") == "qcow2"
    assert [disks[t].get("backup") for t in ("vdb", "hdc")] == ["no", "no"]
    assert livesnapshot.backup_target(xml, "vda") == "/store/.vd-tmp-x/live-copy.qcow2"
    assert livesnapshot.backup_target(xml, "vdc") is None


@pytest.fixture
def domain():
    conn = libvirt.open(TEST_URI)
    dom = conn.lookupByName("test")
    yield dom
    conn.close()


def _recording_call(dom, actions):
    def call(action, fn):
        actions.append(action)
        try:
            return fn(dom)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"cannot {action} test: {e.get_error_message()}") from None
    return call


def test_file_systems_frozen_for_the_begin_are_thawed_when_it_fails(domain):
    """test:///default freezes file systems but has no backup job: the begin fails."""
    actions = []
    with pytest.raises(HypervisorError, match="cannot begin a backup of test"):
        livesnapshot.copy_disk(_recording_call(domain, actions), "vda", "/nowhere.qcow2", [])
    assert actions == ["freeze the file systems of", "begin a backup of",
                       "thaw the file systems of"]
    assert domain.fsThaw() == 0  # nothing is left frozen


def test_a_guest_that_cannot_be_frozen_is_copied_crash_consistent(domain):
    domain.fsFreeze()  # a second freeze freezes nothing: as good as no agent
    try:
        actions = []
        with pytest.raises(HypervisorError):
            livesnapshot.copy_disk(_recording_call(domain, actions), "vda", "/nowhere.qcow2", [])
        assert actions == ["freeze the file systems of", "begin a backup of"]
    finally:
        domain.fsThaw()
