"""Servers through Nova's API, on real guests through virt-driver."""

from __future__ import annotations

from tests.nova.base import NovaTestCase


class TestBusyboxServer(NovaTestCase):

    def test_boot_console_delete(self):
        image = self.upload_demo_guest()
        server = self._create_server(image_uuid=image, flavor_id=self.demo_flavor(),
                                     networks="none", expected_state="BUILD")
        import time
        t0 = time.monotonic()
        server = self.wait_for_status(server, "ACTIVE")
        t1 = time.monotonic()
        output = self.wait_for_console(server, "ready")
        t2 = time.monotonic()
        self.assertIn("VIRT-DEMO cmdline=", output)
        self._delete_server(server)
        t3 = time.monotonic()
        print("TIMES", t1 - t0, t2 - t1, t3 - t2)
        self.assert_nothing_left()
