"""The real Debian 12 cloud guest (tools/build-debian-guest.sh) for functional tests:
a driver with its image, and a guest reached over SSH on a forwarded loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from backends.libvirt.driver import LibvirtDriver
from tests.support.guests import PROJECT_DIR, run_tool
from virt.conf import make_conf
from virt.imagestore import LocalImageStore
from virt.objects import Instance

GUEST_DIR = PROJECT_DIR / "build" / "debian-guest"
SSH_TIMEOUT = 1200.0  # generous: TCG boots on a loaded two-core CI machine
CMDLINE = "root=LABEL=rootfs console=ttyS0 net.ifnames=0"
IMAGE = "debian12"


def debian_driver(state, uri: str, **overrides) -> tuple[LibvirtDriver, str]:
    """(driver, private key path): the image built (cached by its inputs) and imported as
    "debian12" into a store under `state`, a fresh SSH key beside it."""
    run_tool("building the Debian guest", str(PROJECT_DIR / "tools" / "build-debian-guest.sh"),
             str(GUEST_DIR))
    conf = make_conf(virt_type="qemu", state_path=str(state), boot_file_dirs=[str(GUEST_DIR)],
                     libvirt__connection_uri=uri, **overrides)
    LocalImageStore.from_conf(conf).import_image(IMAGE, str(GUEST_DIR / "disk.raw"), "raw",
                                                 {"arch": "x86_64"})
    key = os.path.join(str(state), "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    driver = LibvirtDriver(conf)
    driver.init_host("localhost")
    return driver, key


def boot_params(port: int, mac: str, **params: str) -> dict[str, str]:
    """The params of a Debian guest booted with its own kernel, SSH forwarded to `port`."""
    return {"kernel_path": str(GUEST_DIR / "vmlinuz"),
            "initrd_path": str(GUEST_DIR / "initrd.img"), "kernel_args": CMDLINE,
            "user_forwards": f"{mac}={port}:22", **params}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Guest:
    def __init__(self, driver, name: str, key: str, port: int, askpass: str | None = None):
        self.driver, self.name, self.key, self.port = driver, name, key, port
        self.askpass = askpass

    @property
    def instance(self) -> Instance:
        return self.driver.get_instance(self.name)

    def _ssh(self, options: list[str], command: str, timeout: float, env=None):
        return subprocess.run(
            ["ssh", "-p", str(self.port), *options, "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
             "-o", "LogLevel=ERROR", "debian@127.0.0.1", command],
            capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)

    def ssh(self, command: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """With the key from the seed."""
        return self._ssh(["-i", self.key, "-o", "BatchMode=yes"], command, timeout)

    def ssh_with_password(self, command: str) -> subprocess.CompletedProcess:
        """With the password from the seed, typed by SSH_ASKPASS (no key offered)."""
        env = {**os.environ, "SSH_ASKPASS": self.askpass, "SSH_ASKPASS_REQUIRE": "force",
               "DISPLAY": ":0"}
        return self._ssh(["-o", "PubkeyAuthentication=no", "-o", "IdentitiesOnly=yes",
                          "-o", "PreferredAuthentications=password,keyboard-interactive",
                          "-o", "NumberOfPasswordPrompts=1"], command, 60, env)

    def wait_for_ssh(self, timeout: float = SSH_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.ssh("true", timeout=30).returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                console = self.driver.get_console_output(self.instance)[-3000:]
                pytest.fail(f"no SSH on 127.0.0.1:{self.port} within {timeout:.0f}s; "
                            f"console ends:\n{console}", pytrace=False)
            time.sleep(3)
