"""`virt-driver boot` as a whole process against `virt-install --import`.

Both boot the same demo guest (direct kernel boot, 256 MiB, 2 vcpus, one
user-mode NIC, a qcow2 overlay on the same base) on qemu:///system. Timed:
the command from exec to exit (for virt-install, plus the `qemu-img create`
of the overlay it needs; virt-driver makes its overlay itself). Measured:
wall time and the peak RSS of the process. Guests are destroyed untimed.

Run: .venv/bin/python benchmarks/bench_boot_cli.py [ROUNDS]
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import libvirt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import remove_domain  # noqa: E402

GUEST = os.path.join(ROOT, "build", "demo-guest")
CLI = os.path.join(os.path.dirname(sys.executable), "virt-driver")
CMDLINE = "console=ttyS0 panic=-1 demo.action=wait"


def run_measured(argv: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS in KiB) of one command, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"{argv[0]} failed: {proc.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    subprocess.run([os.path.join(ROOT, "tools", "build-demo-guest.sh"), GUEST], check=True,
                   stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="bench-boot-", dir="/tmp")
    config = os.path.join(work, "virt-driver.conf")
    with open(config, "w") as f:
        f.write(f"[DEFAULT]\nvirt_type = qemu\nstate_path = {work}/state\n"
                f"boot_file_dirs = {GUEST}\n[libvirt]\nshutdown_timeout = 0\n")
    vd = [CLI, "--config-file", config]
    subprocess.run([*vd, "image", "import", "bench", os.path.join(GUEST, "disk.raw"),
                    "--format", "raw"], check=True, stdout=subprocess.DEVNULL)
    base = os.path.join(work, "base.raw")
    shutil.copy(os.path.join(GUEST, "disk.raw"), base)
    conn = libvirt.open("qemu:///system")
    ours, peer = [], []
    try:
        # Warm-up: the first boot fills virt-driver's base cache.
        subprocess.run([*vd, "boot", "warm", "--image", "bench", "--kernel",
                        os.path.join(GUEST, "vmlinuz"), "--initrd",
                        os.path.join(GUEST, "initrd.img"), "--cmdline", CMDLINE],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*vd, "destroy", "warm"], check=True, stdout=subprocess.DEVNULL)
        for i in range(rounds):
            name = f"bench-vd-{i}"
            ours.append(run_measured([
                *vd, "boot", name, "--image", "bench", "--memory", "256", "--vcpus", "2",
                "--kernel", os.path.join(GUEST, "vmlinuz"),
                "--initrd", os.path.join(GUEST, "initrd.img"), "--cmdline", CMDLINE,
                "--nic", "user,mac=52:54:00:be:00:01"]))
            subprocess.run([*vd, "destroy", name], check=True, stdout=subprocess.DEVNULL)

            name = f"bench-vi-{i}"
            overlay = os.path.join(work, f"{name}.qcow2")
            t_img, _ = run_measured(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base,
                                     "-F", "raw", overlay, "1G"])
            t_vi, rss_vi = run_measured([
                "virt-install", "--connect", "qemu:///system", "--name", name,
                "--virt-type", "qemu", "--memory", "256", "--vcpus", "2", "--import",
                "--disk", f"path={overlay},format=qcow2,bus=virtio",
                "--boot", f"kernel={GUEST}/vmlinuz,initrd={GUEST}/initrd.img,"
                          f"kernel_args={CMDLINE}",
                "--network", "user,mac=52:54:00:be:00:02,model=virtio",
                "--osinfo", "detect=off,require=off,name=linux2022",
                "--graphics", "none", "--serial", f"file,path={work}/{name}.log",
                "--noautoconsole", "--noreboot"])
            peer.append((t_img + t_vi, rss_vi))
            remove_domain(conn, name)
            os.unlink(overlay)
    finally:
        for name in [d.name() for d in conn.listAllDomains() if d.name().startswith("bench-")]:
            remove_domain(conn, name)
        subprocess.run([*vd, "destroy", "warm"], capture_output=True)
        conn.close()
        shutil.rmtree(work, ignore_errors=True)

    t_ours = statistics.median(t for t, _ in ours)
    t_peer = statistics.median(t for t, _ in peer)
    rss_ours, rss_peer = max(r for _, r in ours), max(r for _, r in peer)
    for label, seconds, rss in (("virt-driver boot", t_ours, rss_ours),
                                ("virt-install --import", t_peer, rss_peer)):
        print(f"{label}: {seconds * 1e3:.0f} ms median, peak RSS {rss / 1024:.1f} MiB")
    print(f"time ratio {t_ours / t_peer:.2f}x, peak memory ratio {rss_ours / rss_peer:.2f}x "
          f"({rounds} rounds)")


if __name__ == "__main__":
    main()
