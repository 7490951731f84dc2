"""Boot to SSH of the real Debian 12 guest: `virt-driver boot` with a seed against
`virt-install --import --cloud-init` of the same image, paired in one run.

Both boot tools/build-debian-guest.sh's image the same way: a qcow2 overlay
grown to 4 GiB on the same raw base, direct kernel boot with the image's
kernel, initrd and command line (with the `ds=nocloud` hint virt-driver adds),
or with --image-alone the image alone (BIOS, the GRUB on the disk, no kernel
and no hint: cloud-init finds the seed by its label), 1 GiB, 2 vcpus, the
same machine type (pc: virt-install would pick q35; its cdrom is then IDE,
which the cloud kernel reads, not SATA), QEMU user networking with
127.0.0.1:PORT forwarded to the guest's port 22, the same host name and SSH
key in a NoCloud seed. virt-driver builds its seed itself; virt-install builds
its own from --cloud-init meta-data and user-data files and attaches it as a
cdrom (in /var/lib/libvirt/boot, which it needs and which is made if missing).
Timed: from the exec of the boot command (for virt-install, including the `qemu-img create` of its
overlay) until `ssh -i KEY debian@127.0.0.1` with the seeded key succeeds.
Rounds alternate which tool goes first. virt-driver's guest is then destroyed
with `virt-driver destroy` (graceful, forced after 60 s), timed apart;
virt-install's guest is removed untimed.

Under TCG a boot takes minutes, so the default is 3 rounds.

Run: .venv/bin/python benchmarks/bench_boot_ssh.py [--image-alone] [ROUNDS]
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import libvirt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import remove_domain, transient_pool  # noqa: E402

GUEST = os.path.join(ROOT, "build", "debian-guest")
CLI = os.path.join(os.path.dirname(sys.executable), "virt-driver")
CMDLINE = "root=LABEL=rootfs console=ttyS0 net.ifnames=0"
PREFIX = "gu-bench-ssh-"
SSH_TIMEOUT = 1800.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_ssh(key: str, port: int, started: float) -> float:
    """Seconds from `started` until ssh with `key` gets in."""
    argv = ["ssh", "-i", key, "-p", str(port), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "debian@127.0.0.1", "true"]
    while time.monotonic() < started + SSH_TIMEOUT:
        try:
            if subprocess.run(argv, capture_output=True, timeout=20).returncode == 0:
                return time.monotonic() - started
        except subprocess.TimeoutExpired:
            pass
        time.sleep(1)
    sys.exit(f"no SSH on 127.0.0.1:{port} within {SSH_TIMEOUT:.0f} s")


class Bench:
    def __init__(self, work: str, image_alone: bool):
        self.work = work
        # Direct boot: our kernel params, and virt-install's --boot with the hint ours adds.
        self.kernel = [] if image_alone else [
            "--kernel", os.path.join(GUEST, "vmlinuz"),
            "--initrd", os.path.join(GUEST, "initrd.img"), "--cmdline", CMDLINE]
        self.peer_boot = [] if image_alone else [
            "--boot", f"kernel={GUEST}/vmlinuz,initrd={GUEST}/initrd.img,"
                      f"kernel_args={CMDLINE} ds=nocloud"]
        self.key = os.path.join(work, "id")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key],
                       check=True)
        with open(self.key + ".pub") as f:
            self.public = f.read().strip()
        config = os.path.join(work, "virt-driver.conf")
        with open(config, "w") as f:
            f.write(f"[DEFAULT]\nvirt_type = qemu\nstate_path = {work}/state\n"
                    f"boot_file_dirs = {GUEST}\n[libvirt]\nshutdown_timeout = 60\n")
        self.vd = [CLI, "--config-file", config]
        subprocess.run([*self.vd, "image", "import", "bench-deb",
                        os.path.join(GUEST, "disk.raw"), "--format", "raw",
                        "--property", "arch=x86_64"], check=True, stdout=subprocess.DEVNULL)
        self.base = os.path.join(work, "base.raw")
        subprocess.run(["cp", "--sparse=always", os.path.join(GUEST, "disk.raw"), self.base],
                       check=True)

    def ours(self, name: str) -> tuple[float, float]:
        """(boot to SSH, destroy) in seconds."""
        port = free_port()
        started = time.monotonic()
        subprocess.run([
            *self.vd, "boot", name, "--image", "bench-deb", "--memory", "1024",
            "--vcpus", "2", "--disk-gb", "4", *self.kernel,
            "--nic", f"user,mac=52:54:00:be:55:01,forward={port}:22",
            "--ssh-key", self.key + ".pub", "--hostname", name], check=True,
            stdout=subprocess.DEVNULL)
        seconds = wait_for_ssh(self.key, port, started)
        started = time.monotonic()
        subprocess.run([*self.vd, "destroy", name], check=True, stdout=subprocess.DEVNULL)
        return seconds, time.monotonic() - started

    def peer(self, conn: libvirt.virConnect, name: str) -> float:
        port = free_port()
        meta, user = (os.path.join(self.work, f"{name}.{kind}") for kind in ("meta", "user"))
        with open(meta, "w") as f:
            f.write(f"instance-id: {name}\nlocal-hostname: {name}\n")
        with open(user, "w") as f:
            f.write(f"#cloud-config\nssh_authorized_keys:\n  - {self.public}\n")
        overlay = os.path.join(self.work, f"{name}.qcow2")
        netdev = f"user,id=vi0,hostfwd=tcp:127.0.0.1:{port}-:22"
        started = time.monotonic()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", self.base, "-F", "raw",
                        overlay, "4G"], check=True)
        subprocess.run([
            "virt-install", "--connect", "qemu:///system", "--name", name,
            "--virt-type", "qemu", "--memory", "1024", "--vcpus", "2", "--import",
            "--machine", "pc", "--disk", f"path={overlay},format=qcow2,bus=virtio",
            *self.peer_boot,
            "--cloud-init", f"meta-data={meta},user-data={user}",
            "--network", "none",  # '=' keeps argparse from reading -netdev as an option
            f"--qemu-commandline=-netdev {netdev} "
            "-device virtio-net-pci,netdev=vi0,mac=52:54:00:be:55:02,addr=0x1e",
            "--osinfo", "detect=off,require=off,name=debian11",
            "--graphics", "none", "--serial", f"file,path={self.work}/{name}.log",
            "--noautoconsole"], check=True, stdout=subprocess.DEVNULL)
        seconds = wait_for_ssh(self.key, port, started)
        remove_domain(conn, name)
        os.unlink(overlay)
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description="Boot to SSH of the Debian guest, paired "
                                     "against virt-install --import --cloud-init")
    parser.add_argument("rounds", nargs="?", type=int, default=3)
    parser.add_argument("--image-alone", action="store_true",
                        help="boot the disk's own GRUB, no kernel params (default: direct boot)")
    args = parser.parse_args()
    rounds = args.rounds
    subprocess.run([os.path.join(ROOT, "tools", "build-debian-guest.sh"), GUEST], check=True,
                   stdout=subprocess.DEVNULL)
    seeds = "/var/lib/libvirt/boot"  # where virt-install writes its seed ISOs
    made_seeds = not os.path.isdir(seeds)
    os.makedirs(seeds, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-boot-ssh-", dir="/var/tmp")
    os.chmod(work, 0o755)  # QEMU runs as another user where libvirt is configured so
    conn = libvirt.open("qemu:///system")
    bench = Bench(work, args.image_alone)
    ours, peer, destroys = [], [], []
    # Transient pools for virt-install's directories: it leaves no persistent one behind.
    pools = []
    for i, directory in enumerate((work, seeds)):
        try:
            pools.append(transient_pool(conn, f"{PREFIX}pool-{i}", directory))
        except libvirt.libvirtError:
            pass  # a pool has the directory already: virt-install uses that one
    try:
        for i in range(rounds):
            def run_ours(i=i):
                boot, destroy = bench.ours(f"{PREFIX}vd-{i}")
                ours.append(boot)
                destroys.append(destroy)
            runs = [run_ours, lambda i=i: peer.append(bench.peer(conn, f"{PREFIX}vi-{i}"))]
            for run in runs if i % 2 == 0 else reversed(runs):
                run()
            print(f"round {i}: virt-driver {ours[-1]:.1f} s (destroy {destroys[-1]:.1f} s), "
                  f"virt-install {peer[-1]:.1f} s", flush=True)
    finally:
        for dom in conn.listAllDomains():
            if dom.name().startswith(PREFIX + "vi-"):
                remove_domain(conn, dom.name())
        for i in range(rounds):
            subprocess.run([*bench.vd, "destroy", f"{PREFIX}vd-{i}"], capture_output=True)
        for pool in pools:
            pool.destroy()
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
        if made_seeds:
            shutil.rmtree(seeds, ignore_errors=True)
    t_ours, t_peer = statistics.median(ours), statistics.median(peer)
    way = "image alone" if args.image_alone else "direct boot"
    print(f"boot to SSH ({way}): virt-driver {t_ours:.1f} s median vs virt-install --cloud-init "
          f"{t_peer:.1f} s median (ratio {t_ours / t_peer:.2f}x, {rounds} paired rounds)")
    print(f"virt-driver destroy (graceful): {statistics.median(destroys):.1f} s median")


if __name__ == "__main__":
    main()
