"""The bare peer of `virt-driver boot`: qemu-img create, then libvirt-python define+create.

    python benchmarks/bare_boot.py NAME BASE OVERLAY SERIAL_LOG GUEST_DIR

Makes the same qcow2 overlay on the same raw base, defines the same guest
(direct kernel boot, 256 MiB, 2 vcpus, virtio disk, one user-mode NIC, the
serial console to a file) and starts it: what a boot must do, nothing more.
bench_boot_cli.py runs it as a process beside virt-driver and virt-install.
"""

import subprocess
import sys
from xml.sax.saxutils import escape

import libvirt

XML = """<domain type="qemu"><name>{name}</name><memory unit="MiB">256</memory>
<vcpu>2</vcpu><os><type arch="x86_64" machine="pc">hvm</type>
<kernel>{guest}/vmlinuz</kernel><initrd>{guest}/initrd.img</initrd>
<cmdline>console=ttyS0 panic=-1 demo.action=wait</cmdline></os>
<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
<devices><disk type="file" device="disk"><driver name="qemu" type="qcow2"/>
<source file="{overlay}"/><target dev="vda" bus="virtio"/></disk>
<interface type="user"><mac address="52:54:00:be:00:03"/><model type="virtio"/></interface>
<serial type="file"><source path="{log}"/></serial></devices></domain>"""


def main() -> None:
    name, base, overlay, log, guest = sys.argv[1:6]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw",
                    overlay, str(1 << 30)], check=True, env={"LC_ALL": "C"})
    conn = libvirt.open("qemu:///system")
    dom = conn.defineXML(XML.format(name=escape(name), guest=escape(guest),
                                    overlay=escape(overlay), log=escape(log)))
    dom.create()
    conn.close()


if __name__ == "__main__":
    main()
