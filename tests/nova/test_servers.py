"""Servers through Nova's API on real guests: what a user does, and failed spawns."""

from __future__ import annotations

import base64
import json
import os
import subprocess

# isort: off
# tests.nova.base first: it sets Nova's threading mode before Nova is imported.
from tests.nova.base import (
    DEMO_CMDLINE,
    DEMO_GUEST_DIR,
    PREFIX,
    NovaTestCase,
    xm_on_double,
)
from nova.tests.functional.api import client
# isort: on


class TestBusyboxServer(NovaTestCase):

    def test_lifecycle_snapshot_and_delete(self):
        image = self.upload_demo_guest()
        flavor = self.demo_flavor()
        network = self.neutron.network_1["id"]
        server = self.boot(image, flavor, networks=[{"uuid": network}])
        port = self.neutron.list_ports(True, device_id=server["id"])["ports"][0]
        output = self.console(server)
        self.assertIn(f"VIRT-DEMO mac={port['mac_address']}", output)  # the tap NIC
        self.assertIn("demo.action=wait", output)  # the image's os_command_line

        self._stop_server(server)
        self._start_server(server)
        self.wait_for_console(server, "ready", count=2)
        self._reboot_server(server)
        self.wait_for_console(server, "ready", count=3)
        self._reboot_server(server, hard=True)
        self.wait_for_console(server, "ready", count=4)
        self.post_action(server, {"pause": None}, "PAUSED")
        self.post_action(server, {"unpause": None}, "ACTIVE")
        self._suspend_server(server)
        self._resume_server(server)
        self.wait_for_status(server, "ACTIVE")

        snapshot_id = self.api.post_server_action(
            server["id"], {"createImage": {"name": "nv-snap"}})["image_id"]
        self.wait_for_image(snapshot_id)
        self.assertEqual(b"QFI\xfb", self.glance._imagedata[snapshot_id][:4])  # qcow2 bytes
        # The second server also asks for a config drive with a key pair and user data.
        key = self.make_keypair("nv-key")
        user_data = "#cloud-config\nruncmd: [echo nv-user-data]\n"
        second = self.boot(snapshot_id, flavor, networks="none", config_drive=True,
                           key_name="nv-key", user_data=base64.b64encode(
                               user_data.encode()).decode())
        output = self.console(second)
        self.assertIn("VIRT-DEMO marker written", output)
        self.assertIn("VIRT-DEMO disk=vdb", output)  # the config drive, read-only virtio
        drive = self.read_config_drive(second)
        meta = json.loads(drive["openstack/latest/meta_data.json"])
        self.assertEqual((second["id"], [key]), (meta["uuid"], list(meta["public_keys"].values())))
        self.assertEqual(user_data, drive["openstack/latest/user_data"].decode())

        self._delete_server(server)
        self._delete_server(second)
        self.assert_nothing_left()


class TestFailedSpawns(NovaTestCase):
    """Each ends in ERROR with a fault that says why, and leaves nothing on the host."""

    def test_hostile_too_large_and_refused_by_libvirt(self):
        flavor = self.demo_flavor()
        work = os.path.join(self.state, "work")
        os.mkdir(work)

        hostile = os.path.join(work, "hostile.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        "/etc/passwd", hostile, "64M"], check=True)
        fault = self.failed_boot(self.upload(hostile, "qcow2"), flavor)
        self.assertIn("backing file", fault)
        self.assertIn("is unacceptable", fault)
        self.assert_nothing_left()

        large = os.path.join(work, "large.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", large, "2G"], check=True)
        fault = self.failed_boot(self.upload(large, "qcow2"), flavor)
        self.assertIn("larger than the flavor's root disk", fault)
        self.assert_nothing_left()

        # A host-side failure is rescheduled; with one host there is nowhere to go, and
        # without retries Nova records the driver's reason itself as the fault.
        self.flags(max_attempts=1, group="scheduler")
        # Neutron may ask for an MTU no tap device takes (their maximum is 65521).
        network = self.neutron.network_1["id"]
        self.neutron._networks[network]["mtu"] = 65535
        fault = self.failed_boot(self.upload_demo_guest(), flavor, [{"uuid": network}])
        self.assertIn("spawn failed at step 'start'", fault)
        self.assertIn("MTU", fault)  # libvirt's own words
        self.assert_nothing_left()


class TestXmServer(NovaTestCase):
    """The xm backend under Nova, its toolstack the double (tests/xm_double) spelled xl:
    Nova's API drives the config file and the toolstack calls a Xen host would see."""

    GUEST_PREFIX = PREFIX + "x-"

    def virt_driver_conf(self) -> str:
        self.double, conf = xm_on_double(self, self.state)
        return conf

    def test_boot_stop_start_reboot_pause_and_delete(self):
        image = self.upload_demo_guest()
        server = self.wait_for_status(self.api.post_server({"server": self._build_server(
            image_uuid=image, flavor_id=self.demo_flavor(), networks="none")}), "ACTIVE")
        name = server["OS-EXT-SRV-ATTR:instance_name"]
        self.assertEqual([name], list(self.double.domains()))
        config = open(os.path.join(self.state, "etc-xen", name)).read()
        self.assertIn("extra = 'console=ttyS0 panic=-1 demo.action=wait'", config)
        self.assertIn(f"nova-boot-files/{self.glance.show(None, image)['properties']['kernel_id']}",
                      config)

        self._stop_server(server)
        self._start_server(server)
        self._reboot_server(server, hard=True)
        self.post_action(server, {"pause": None}, "PAUSED")
        self.post_action(server, {"unpause": None}, "ACTIVE")
        # xm has no console log: Nova's "not implemented" (HTTP 501), not an error.
        with self.assertRaises(client.OpenStackApiException) as raised:
            self.console(server)
        self.assertEqual(501, raised.exception.response.status_code)
        self._delete_server(server)
        self.assertEqual({}, self.double.domains())
        self.assertEqual([], os.listdir(os.path.join(self.state, "etc-xen")))
        self.assert_nothing_left()


class TestHostileTenantInput(NovaTestCase):
    """What a tenant controls through Nova's API and Glance: refused with a fault that
    names it, or carried through verbatim; never interpreted, nothing left behind."""

    def test_odd_command_line_user_data_and_kernel(self):
        flavor = self.demo_flavor()
        self.flags(max_attempts=1, group="scheduler")  # one host: the fault is the driver's
        kernel = self.upload(str(DEMO_GUEST_DIR / "vmlinuz"), "aki")
        ramdisk = self.upload(str(DEMO_GUEST_DIR / "initrd.img"), "ari")
        disk = str(DEMO_GUEST_DIR / "disk.raw")

        def image(cmdline=DEMO_CMDLINE, kernel_id=kernel):
            return self.upload(disk, "raw", kernel_id=kernel_id, ramdisk_id=ramdisk,
                               os_command_line=cmdline, architecture="x86_64")

        # A command line on two lines: refused before anything is made.
        fault = self.failed_boot(image(DEMO_CMDLINE + "\ninit=/bin/sh"), flavor)
        self.assertIn("kernel_args", fault)
        self.assertIn("printable characters", fault)
        self.assert_nothing_left()

        # A "kernel" that is a disk image: QEMU refuses it, the fault says so.
        fault = self.failed_boot(image(kernel_id=self.upload(disk, "aki")), flavor)
        self.assertIn("spawn failed at step 'start'", fault)
        self.assert_nothing_left()

        # User data that is neither cloud-config nor a script: the fault names the user
        # data, not the image.
        fault = self.failed_boot(image(), flavor, config_drive=True, user_data=base64.b64encode(
            b"<script>alert(1)</script>").decode())
        self.assertIn("user data", fault)
        self.assertIn("#cloud-config", fault)
        self.assertNotIn("Image", fault)
        self.assert_nothing_left()

        # User data over Nova's limit never reaches the driver.
        with self.assertRaises(client.OpenStackApiException) as raised:
            self.api.post_server({"server": dict(self._build_server(
                image_uuid=image(), flavor_id=flavor, networks="none"),
                user_data=base64.b64encode(b"#!/bin/sh\n" + b"#" * 65536).decode())})
        self.assertEqual(400, raised.exception.response.status_code)

        # XML and shell metacharacters in the command line reach the kernel verbatim; a
        # character beyond latin-1 comes back through the API as Nova shows any non-ASCII
        # byte (U+FFFD), not as an API error.
        odd = "nv.odd=<x/>&amp;'$(id)`;]]>"
        server = self.boot(image(f"{DEMO_CMDLINE} {odd} nv.dots=\u2026"), flavor,
                           name="<b>&'$(id)`")
        self.assertIn(odd, self.console(server))
        self.assertIn("nv.dots=\ufffd\ufffd\ufffd", self.console(server))
        self._delete_server(server)
        self.assert_nothing_left()
