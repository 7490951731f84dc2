"""`make demo`: a real guest through virt-driver, step by step, with timings.

Builds the demo guest (a Debian cloud kernel and a busybox initramfs), then
drives the `virt-driver` command exactly as a person would: import the image,
boot, list, show, read the console, snapshot, destroy. State lives in
build/demo/ so that the demo never touches /var/lib/virt-driver.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST = os.path.join(ROOT, "build", "demo-guest")
WORK = os.path.join(ROOT, "build", "demo")
CONFIG = os.path.join(WORK, "virt-driver.conf")
CLI = os.path.join(os.path.dirname(sys.executable), "virt-driver")
NAME, IMAGE, SNAPSHOT, MAC = "demo", "demo-guest", "demo-snapshot", "52:54:00:de:e0:01"

timings: list[tuple[str, float]] = []


def step(title: str, *argv: str, check: bool = True) -> str:
    """Run one command, show it and its output, record how long it took."""
    print(f"\n==> {title}\n$ {' '.join(argv)}", flush=True)
    start = time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    timings.append((title, time.monotonic() - start))
    print(proc.stdout, end="", flush=True)
    if check and proc.returncode:
        sys.exit(f"demo: '{title}' failed (exit {proc.returncode}); see the message above")
    return proc.stdout


def cli(title: str, *args: str, check: bool = True) -> str:
    return step(title, CLI, "--config-file", CONFIG, *args, check=check)


def wait_for_console(line: str, timeout: float = 120) -> str:
    """Wait until the guest printed `line` on its console, like a person watching it."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        text = subprocess.run([CLI, "--config-file", CONFIG, "console", NAME],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True).stdout
        if line in text:
            timings.append((f"guest printed '{line}'", time.monotonic() - start))
            return text
        time.sleep(0.2)
    sys.exit(f"demo: the guest did not print '{line}' within {timeout:.0f} s")


def main() -> None:
    os.makedirs(WORK, exist_ok=True)
    with open(CONFIG, "w") as f:
        # The kernel and initrd are boot files: their directory must be allowed.
        f.write(f"[DEFAULT]\nvirt_type = qemu\nstate_path = {WORK}/state\n"
                f"boot_file_dirs = {GUEST}\n"
                "[libvirt]\nshutdown_timeout = 10\n")
    step("build the demo guest", os.path.join(ROOT, "tools", "build-demo-guest.sh"), GUEST)
    # Leftovers of an interrupted earlier demo: destroy is idempotent.
    for args in (("destroy", NAME), ("image", "delete", SNAPSHOT), ("image", "delete", IMAGE)):
        subprocess.run([CLI, "--config-file", CONFIG, *args], capture_output=True)

    cli("import the guest disk as an image", "image", "import", IMAGE,
        os.path.join(GUEST, "disk.raw"), "--format", "raw", "--property", "arch=x86_64")
    cli("boot it (TCG, 2 vcpus, 256 MiB, one NIC)", "boot", NAME, "--image", IMAGE,
        "--memory", "256", "--vcpus", "2", "--disk-gb", "1",
        "--kernel", os.path.join(GUEST, "vmlinuz"), "--initrd", os.path.join(GUEST, "initrd.img"),
        "--cmdline", "console=ttyS0 panic=-1 demo.action=poweroff", "--nic", f"user,mac={MAC}")
    cli("list instances", "list", "--all")
    cli("show the instance", "show", NAME)
    console = wait_for_console("VIRT-DEMO poweroff")
    print("\n==> the guest's console lines")
    print("".join(line + "\n" for line in console.splitlines() if line.startswith("VIRT-DEMO")),
          end="")
    for expected in ("VIRT-DEMO cpus=2", f"VIRT-DEMO mac={MAC}", "VIRT-DEMO marker written"):
        if expected not in console:
            sys.exit(f"demo: the guest's console lacks '{expected}'")
    cli("the guest powered itself off", "show", NAME)
    cli("snapshot its disk (it holds the guest's marker)", "snapshot", NAME, SNAPSHOT)
    cli("the snapshot is an image now", "image", "list")
    cli("destroy the instance", "destroy", NAME)
    cli("no instance is left", "list", "--all")
    leftovers = os.listdir(os.path.join(WORK, "state", "instances"))
    if leftovers:
        sys.exit(f"demo: destroy left instance files behind: {leftovers}")
    print("(and no instance directory is left in build/demo/state/instances)")
    cli("delete the snapshot image", "image", "delete", SNAPSHOT)
    cli("delete the guest image", "image", "delete", IMAGE)

    print("\n==> summary")
    for title, seconds in timings:
        print(f"  {seconds:7.2f} s  {title}")
    print(f"  {sum(s for _, s in timings):7.2f} s  in all")


if __name__ == "__main__":
    main()
