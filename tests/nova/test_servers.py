"""Servers through Nova's API, on real guests through virt-driver."""

from __future__ import annotations

from tests.nova.base import NovaTestCase


class TestBusyboxServer(NovaTestCase):

    def test_boot_console_delete(self):
        image = self.upload_demo_guest()
        server = self._create_server(image_uuid=image, flavor_id=self.demo_flavor(),
                                     networks="none", expected_state="BUILD")
        server = self.wait_for_status(server, "ACTIVE")
        output = self.wait_for_console(server, "ready")
        self.assertIn("VIRT-DEMO cmdline=", output)
        self._delete_server(server)
        self.assert_nothing_left()
