"""The real Debian 12 cloud guest through Nova's API, with a config drive.

Uploaded to Glance as Nova's users do: kernel (aki) and ramdisk (ari) images,
and the root disk (qcow2 of build/debian-guest/disk.raw) naming them with
kernel_id, ramdisk_id and os_command_line. The server asks for a config
drive with a key pair and user data; cloud-init inside reads them: its
runcmd writes a marker to the serial console, and it prints the key's
fingerprint in its "Authorized keys" table there. Both are read through
Nova's console output API. One boot: TCG takes about a minute here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time

# isort: off
# tests.nova.base first: it sets Nova's threading mode before Nova is imported.
from tests.nova.base import PREFIX, TIMINGS, NovaTestCase
# isort: on

from tests.support.debian import CMDLINE, GUEST_DIR
from tests.support.guests import PROJECT_DIR, run_tool

DEBIAN_TIMEOUT = 1200.0  # TCG on a loaded two-core machine
DEBIAN_TIMINGS = TIMINGS.parent / "nova-debian-timings.jsonl"
# The marker is computed by the shell, so that only running the user data prints it.
USER_DATA = "#cloud-config\nruncmd:\n  - 'echo nv-user-data-$((6*7)) > /dev/ttyS0'\n"
MARKER = "nv-user-data-42"
# A display name is Nova's record and the source of the host name Nova derives; it must
# reach no XML, config or shell unescaped.
HOSTILE_NAME = "nv <deb> & 'quote' \"$(touch /tmp/nv-pwned)\" `id`; ]]>"


def sha256_fingerprint(public_key: str) -> str:
    """The key's fingerprint as cloud-init prints it (sha256, colon-separated hex)."""
    digest = hashlib.sha256(base64.b64decode(public_key.split()[1])).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


class TestDebianServer(NovaTestCase):

    GUEST_PREFIX = PREFIX + "d-"  # its own: other classes reap theirs while it boots

    def upload_debian(self) -> str:
        run_tool("building the Debian guest",
                 str(PROJECT_DIR / "tools" / "build-debian-guest.sh"), str(GUEST_DIR))
        disk = os.path.join(self.state, "debian.qcow2")
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(GUEST_DIR / "disk.raw"),
                        disk], check=True)
        kernel = self.upload(str(GUEST_DIR / "vmlinuz"), "aki")
        ramdisk = self.upload(str(GUEST_DIR / "initrd.img"), "ari")
        try:
            return self.upload(disk, "qcow2", kernel_id=kernel, ramdisk_id=ramdisk,
                               os_command_line=CMDLINE, architecture="x86_64")
        finally:
            os.unlink(disk)  # Glance holds the bytes now

    def wait_for_text(self, server, text: str) -> str:
        deadline = time.monotonic() + DEBIAN_TIMEOUT
        while True:
            # All of it: Nova's tail (length) drops the first line, the kernel's banner.
            output = self.api.post_server_action(
                server["id"], {"os-getConsoleOutput": {}})["output"]
            if text in output:
                return output
            if time.monotonic() > deadline:
                self.fail(f"console of {server['id']} never showed {text!r}; it shows:\n"
                          f"{output[-3000:]}")
            time.sleep(1)

    def test_config_drive_key_and_user_data_seen_on_the_console(self):
        image = self.upload_debian()
        flavor = self.demo_flavor(memory_mb=1024, disk=4)
        public = self.make_keypair("nv-deb-key")
        start = time.monotonic()
        server = self.api.post_server({"server": dict(
            self._build_server(name=HOSTILE_NAME, image_uuid=image, flavor_id=flavor,
                               networks="none"),
            config_drive=True, key_name="nv-deb-key",
            user_data=base64.b64encode(USER_DATA.encode()).decode())})
        server = self.wait_for_status(server, "ACTIVE", timeout=DEBIAN_TIMEOUT)
        active = time.monotonic()
        self.wait_for_text(server, "Linux version")  # the first line
        first_line = time.monotonic()
        output = self.wait_for_text(server, MARKER)
        marker = time.monotonic()
        with open(DEBIAN_TIMINGS, "a") as f:
            f.write(json.dumps({"active_s": round(active - start, 3),
                                "first_line_s": round(first_line - start, 3),
                                "marker_s": round(marker - start, 3)}) + "\n")

        self.assertIn(CMDLINE, output)  # the image's os_command_line
        self.assertIn("Authorized keys from /home/debian/.ssh/authorized_keys", output)
        self.assertIn(sha256_fingerprint(public), output)
        drive = self.read_config_drive(server)
        meta = json.loads(drive["openstack/latest/meta_data.json"])
        self.assertEqual(HOSTILE_NAME, server["name"])
        self.assertEqual((server["OS-EXT-SRV-ATTR:hostname"], [public]),
                         (meta["hostname"], list(meta["public_keys"].values())))
        self.assertFalse(os.path.exists("/tmp/nv-pwned"))

        self._delete_server(server)
        self.assert_nothing_left()
