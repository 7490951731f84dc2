"""Nova's own libvirt driver boots the demo guest in the same in-process Nova.

The peer of the boot figures (benchmarks/nova_compare.py): proves the setup
it measures is real, a guest of Nova's libvirt driver on a libvirtd of its own.
"""

from __future__ import annotations

from tests.nova.peer import PEER_HOST, PeerTestCase


class TestNovaLibvirtPeer(PeerTestCase):

    def test_nova_libvirt_driver_boots_the_demo_guest(self):
        image = self.upload_demo_guest()
        flavor = self.demo_flavor()
        server = self.boot_on(PEER_HOST, image, flavor)
        self.assertEqual(PEER_HOST, server["OS-EXT-SRV-ATTR:host"])
        name = server["OS-EXT-SRV-ATTR:instance_name"]
        self.assertEqual([name], self.libvirtd.domains())  # on its libvirtd, not the machine's
        self.assertIn("demo.action=wait", self.console(server))  # the image's os_command_line
        self._delete_server(server)
        self.assert_peer_left_nothing()
        self.assert_nothing_left()
