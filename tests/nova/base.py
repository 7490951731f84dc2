"""Nova in process (API, conductor, scheduler, compute, Placement) on virt-driver.

Runs in the tox env `nova` only (Nova installed, OS_NOVA_DISABLE_EVENTLET_PATCHING
set by tox). Each test gets its own virt-driver state directory and a
compute service whose compute_driver is virtdriver.VirtDriverComputeDriver
over real libvirt (qemu:///system, TCG). Guests are named nv-%08x, so that a
crashed run's leftovers are reaped by name before each test (Nova refuses to
start a compute service that finds unknown guests).
"""

from __future__ import annotations

import os

os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "True")

import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

# isort: off
# Nova's tests first (they choose the threading mode before anything imports
# eventlet); libvirt before Nova's TestCase poisons `import libvirt`.
from nova.tests.functional import integrated_helpers  # noqa: E402
import pycdlib  # noqa: E402
import libvirt  # noqa: E402
import nova.virt.virtdriver  # noqa: E402,F401  (registers [virtdriver] config_file)
# isort: on

import fixtures  # noqa: E402

import backends.libvirt.driver  # noqa: E402,F401
from tests.support.guests import (  # noqa: E402
    BUILD_DEMO_GUEST,
    DEMO_GUEST_DIR,
    START_DAEMONS,
    SYSTEM_URI,
    run_tool,
)
from tests.xm_double import DoubleHost  # noqa: E402

PREFIX = "nv-"  # every guest of these tests; each test class has its own under it
COMPUTE_DRIVER = "virtdriver.VirtDriverComputeDriver"
DEMO_CMDLINE = "console=ttyS0 panic=-1 demo.action=wait"
BOOT_TIMEOUT = 300.0  # TCG on a busy two-core machine
TIMINGS = DEMO_GUEST_DIR.parent / "nova-timings.jsonl"


def reap_leftovers(prefix: str) -> None:
    """Remove every domain named `prefix`... a crashed run left (the nv- prefix is ours)."""
    assert prefix.startswith(PREFIX)
    conn = libvirt.open(SYSTEM_URI)
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(prefix):
                try:
                    if dom.isActive():
                        dom.destroy()
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                      | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                                      | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
                except libvirt.libvirtError as e:
                    if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise  # gone meanwhile (the driver's own destroy): fine
    finally:
        conn.close()


def our_domains(prefix: str) -> list[str]:
    conn = libvirt.open(SYSTEM_URI)
    try:
        return sorted(d.name() for d in conn.listAllDomains() if d.name().startswith(prefix))
    finally:
        conn.close()


# virt-driver's configuration per backend; xm's toolstack is the double (xl), whose bin
# directory the test puts first on PATH.
CONFS = {
    "libvirt": """[DEFAULT]
backend = libvirt
virt_type = qemu
state_path = {state}
[libvirt]
connection_uri = {uri}
shutdown_timeout = 30
shutdown_retry_interval = 3
wait_soft_reboot_seconds = 60
# Every boot's kernel log stays readable through the API (tests count boots in it).
console_log_max_bytes = 4194304
""",
    "xm": """[DEFAULT]
backend = xm
virt_type = xen
state_path = {state}
[xm]
toolstack = xl
config_dir = {state}/etc-xen
log_dir = {state}/log
shutdown_timeout = 1
reboot_timeout = 3
""",
}


def write_conf(state: str, backend: str = "libvirt", uri: str = SYSTEM_URI) -> str:
    path = os.path.join(state, "virt-driver.conf")
    with open(path, "w") as f:
        f.write(CONFS[backend].format(state=state, uri=uri))
    return path


def xm_on_double(test, state: str) -> tuple[DoubleHost, str]:
    """The toolstack double first on PATH for `test`, and virt-driver's xm configuration."""
    double = DoubleHost(os.path.join(state, "double"))
    test.useFixture(fixtures.EnvironmentVariable(
        "PATH", double.bin_dir + os.pathsep + os.environ["PATH"]))
    return double, write_conf(state, "xm")


def record_timing(driver: str, to_active: float, to_first_line: float) -> None:
    """Append one boot's figures to build/nova-timings.jsonl (read by the benchmark)."""
    os.makedirs(TIMINGS.parent, exist_ok=True)
    with open(TIMINGS, "a") as f:
        f.write(json.dumps({"driver": driver, "active_s": round(to_active, 3),
                            "first_line_s": round(to_first_line, 3)}) + "\n")


class _Prepared:
    """Daemons started and the demo guest built, once per process."""

    done = False

    @classmethod
    def ensure(cls) -> None:
        if not cls.done:
            run_tool("starting libvirtd", str(START_DAEMONS))
            run_tool("building the demo guest", str(BUILD_DEMO_GUEST), str(DEMO_GUEST_DIR))
            cls.done = True


class NovaTestCase(integrated_helpers._IntegratedTestBase):
    """Nova's integrated test base with this driver underneath."""

    ADMIN_API = True
    microversion = "latest"
    compute_driver = COMPUTE_DRIVER
    GUEST_PREFIX = PREFIX + "s-"
    FLAGS: dict = {}  # more [DEFAULT] options, set before the services start

    def setUp(self):
        _Prepared.ensure()
        reap_leftovers(self.GUEST_PREFIX)
        self.state = tempfile.mkdtemp(prefix="nv-state-")
        os.chmod(self.state, 0o755)
        self.addCleanup(shutil.rmtree, self.state, True)
        self.vd_conf = self.virt_driver_conf()
        super().setUp()
        self.addCleanup(reap_leftovers, self.GUEST_PREFIX)

    def virt_driver_conf(self) -> str:
        return write_conf(self.state, uri=self.virtdriver_uri())

    def virtdriver_uri(self) -> str:
        """The libvirtd virtdriver's guests run on."""
        return SYSTEM_URI

    def _setup_services(self):
        self.flags(compute_driver=self.compute_driver,
                   instance_name_template=self.GUEST_PREFIX + "%08x", **self.FLAGS)
        self.flags(config_file=self.vd_conf, group="virtdriver")
        self.flags(api_paste_config=os.path.join(sys.prefix, "etc/nova/api-paste.ini"),
                   group="wsgi")
        # The fixture's ports are Open vSwitch ones; this host has no OVS: tap devices.
        self.neutron.default_port = dict(self.neutron.default_port,
                                         **{"binding:vif_type": "tap"})
        for port in self.neutron._ports.values():
            port["binding:vif_type"] = "tap"
        self._keep_uploaded_bytes()
        super()._setup_services()

    def _keep_uploaded_bytes(self):
        """Glance keeps the bytes an update uploads (the fixture drops them)."""
        glance = self.glance
        update = glance.update

        def update_keeping_data(context, image_id, metadata, data=None, purge_props=False):
            if data is not None:
                glance._imagedata[image_id] = data.read()
                metadata = dict(metadata, size=len(glance._imagedata[image_id]))
            return update(context, image_id, metadata, data=None, purge_props=purge_props)

        glance.update = update_keeping_data

    def _clear_attrs(self):
        """Nova deletes the test's attributes; pytest still needs its bound method."""

    # -- images and flavors ---------------------------------------------------

    def upload(self, path: str, disk_format: str, **properties) -> str:
        """A Glance image with the bytes of `path`; its id."""
        with open(path, "rb") as data:
            image = self.glance.create(None, {
                "name": os.path.basename(path), "status": "active", "visibility": "public",
                "container_format": {"aki": "aki", "ari": "ari"}.get(disk_format, "bare"),
                "disk_format": disk_format, "size": os.path.getsize(path),
                "min_ram": 0, "min_disk": 0, "properties": properties}, data=data)
        return image["id"]

    def upload_demo_guest(self, disk: str | None = None, disk_format: str = "raw") -> str:
        """The busybox demo guest: kernel (aki), initrd (ari) and disk, with its command line."""
        kernel = self.upload(str(DEMO_GUEST_DIR / "vmlinuz"), "aki")
        ramdisk = self.upload(str(DEMO_GUEST_DIR / "initrd.img"), "ari")
        return self.upload(disk or str(DEMO_GUEST_DIR / "disk.raw"), disk_format,
                           kernel_id=kernel, ramdisk_id=ramdisk, os_command_line=DEMO_CMDLINE,
                           architecture="x86_64")

    def demo_flavor(self, **changes) -> str:
        spec = {"memory_mb": 192, "vcpu": 1, "disk": 1, "ephemeral": 0}
        spec.update(changes)
        return self._create_flavor(**spec)

    # -- servers ----------------------------------------------------------------

    def boot(self, image: str, flavor: str, networks="none", name=None,
             driver: str | None = None, **body):
        """A server of the demo guest, ACTIVE and its console showing it is ready.

        driver: the compute driver the timing is recorded under (default ours);
        body: more fields of the request (config_drive, key_name, user_data).
        The seconds to ACTIVE and to the first console line are left in last_timing.
        """
        start = time.monotonic()
        server = self.api.post_server({"server": dict(self._build_server(
            name=name, image_uuid=image, flavor_id=flavor, networks=networks), **body)})
        server = self.wait_for_status(server, "ACTIVE")
        active = time.monotonic()
        self.wait_for_console(server, "boot")
        first_line = time.monotonic()
        self.last_timing = (active - start, first_line - start)
        record_timing(driver or self.compute_driver, *self.last_timing)
        self.wait_for_console(server, "ready")
        return server

    def failed_boot(self, image: str, flavor: str, networks="none", **body) -> str:
        """Boot that must end in ERROR; the fault's message."""
        server = self.api.post_server({"server": dict(self._build_server(
            image_uuid=image, flavor_id=flavor, networks=networks), **body)})
        server = self.wait_for_status(server, "ERROR")
        self.api.delete_server(server["id"])
        self._wait_until_deleted(server)
        return server["fault"]["message"]

    def post_action(self, server, action: dict, status: str):
        self.api.post_server_action(server["id"], action)
        return self.wait_for_status(server, status)

    def wait_for_image(self, image_id: str, timeout: float = BOOT_TIMEOUT) -> None:
        """Wait until the snapshot's bytes are in Glance."""
        deadline = time.monotonic() + timeout
        while image_id not in self.glance._imagedata:
            if time.monotonic() > deadline:
                self.fail(f"snapshot {image_id} never reached Glance")
            time.sleep(0.2)

    def make_keypair(self, name: str) -> str:
        """A key pair made with ssh-keygen, imported through the API; its public line."""
        path = os.path.join(self.state, name)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path],
                       check=True)
        with open(path + ".pub") as f:
            public = f.read().strip()
        self.api.post_keypair({"keypair": {"name": name, "public_key": public}})
        return public

    def read_config_drive(self, server) -> dict[str, bytes]:
        """The files of a server's config drive, read back from its ISO."""
        path = os.path.join(self.state, "instances", server["id"], "seed.iso")
        iso = pycdlib.PyCdlib()
        iso.open(path)
        files = {}
        try:
            for root, _dirs, names in iso.walk(joliet_path="/"):
                for name in names:
                    out = io.BytesIO()
                    iso.get_file_from_iso_fp(out, joliet_path=f"{root.rstrip('/')}/{name}")
                    files[f"{root.rstrip('/')}/{name}".lstrip("/")] = out.getvalue()
        finally:
            iso.close()
        return files

    # -- watching servers -----------------------------------------------------

    def console(self, server) -> str:
        return self.api.post_server_action(
            server["id"], {"os-getConsoleOutput": {"length": -1}})["output"]

    def wait_for_console(self, server, line: str, count: int = 1,
                         timeout: float = BOOT_TIMEOUT) -> str:
        """Wait until the console read through Nova's API shows `line` `count` times."""
        deadline = time.monotonic() + timeout
        while True:
            output = self.console(server)
            if output.count(f"VIRT-DEMO {line}") >= count:
                return output
            if time.monotonic() > deadline:
                self.fail(f"console of {server['id']} never showed 'VIRT-DEMO {line}' "
                          f"{count} time(s); it shows:\n{output[-2000:]}")
            time.sleep(0.2)

    def wait_for_status(self, server, status: str, timeout: float = BOOT_TIMEOUT):
        """The server once it has `status`; fails at once on an unexpected ERROR."""
        deadline = time.monotonic() + timeout
        while True:
            server = self.api.get_server(server["id"])
            if server["status"] == status and (status != "ERROR" or "fault" in server):
                return server
            if server["status"] == "ERROR" and status != "ERROR":
                self.fail(f"server {server['id']} is ERROR: {server.get('fault')}")
            if time.monotonic() > deadline:
                self.fail(f"server {server['id']} is {server['status']}, not {status}")
            time.sleep(0.1)

    def assert_nothing_left(self):
        """No nv- domain, no instance directory (disk, console log, seed)."""
        self.assertEqual([], our_domains(self.GUEST_PREFIX))
        instances = os.path.join(self.state, "instances")
        left = [name for name in os.listdir(instances) if not name.startswith(".")] \
            if os.path.isdir(instances) else []
        self.assertEqual([], left, f"left in {instances}")
