#!/usr/bin/env bash
# Build a Debian 12 cloud guest from Debian packages: ONE raw disk that boots
# both ways, with systemd, openssh-server, cloud-init, qemu-guest-agent,
# e2fsprogs and cloud-guest-utils.
#
# - The image alone (BIOS): an MBR partition table with one ext4 partition
#   labelled rootfs (from 1 MiB), GRUB's boot.img in the MBR and its core.img in
#   the gap before the partition. GRUB comes from the image's own grub-pc-bin.
#   core.img finds the root partition by its label (not by disk number: a seed
#   disk the BIOS lists first does not matter) and reads /boot/grub/grub.cfg,
#   which boots the /vmlinuz and /initrd.img links that Debian keeps pointing at
#   the newest kernel, so a kernel upgrade in the guest still boots. The command
#   line is the direct boot's: root=LABEL=rootfs console=ttyS0 net.ifnames=0.
# - Direct boot: the same kernel and initrd beside the disk (vmlinuz,
#   initrd.img) with that command line.
# cloud-init grows the root partition (growpart, from cloud-guest-utils) and
# its file system to the flavor's disk, and sets the locale C.UTF-8, which needs
# no locales package.
#
# GRUB rather than extlinux: extlinux installs only onto a mounted file system,
# while GRUB's two images are written into the file with dd; GRUB is also what
# Debian's own cloud images boot with. Nothing is mounted and no loop device is
# used: sfdisk writes the table into the file and mkfs.ext4 -E offset -d fills
# the partition.
#
# dbus is named although systemd only recommends it (mmdebstrap installs no
# recommends): without it systemd-logind does not run, so the guest ignores the
# ACPI power button, and the guest agent's shutdown (`shutdown -h +0`, which goes
# through logind) fails with "Failed to connect to bus": every graceful stop
# waited out its whole timeout and was forced.
#
#   tools/build-debian-guest.sh [OUTDIR]      (default: build/debian-guest)
#
# Writes OUTDIR/disk.raw (3 GiB, sparse), OUTDIR/vmlinuz, OUTDIR/initrd.img and
# OUTDIR/stamp, each by rename. A second run with the same inputs (this script,
# the package list, the suite) does nothing. The work happens in a held
# OUTDIR/.vd-tmp-build.* directory (flocked while the build runs), removed on
# every exit; one a killed build left is removed by the next build. Needs root,
# mmdebstrap and sfdisk (tools/bootstrap.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/build/debian-guest}
suite=bookworm
size=3G
start_sector=2048  # the partition starts at 1 MiB; GRUB's core.img lives before it
packages=systemd-sysv,openssh-server,cloud-init,linux-image-cloud-amd64,qemu-guest-agent,ifupdown,isc-dhcp-client,udev,e2fsprogs,netbase,dbus,cloud-guest-utils,grub-pc-bin
cmdline="root=LABEL=rootfs console=ttyS0 net.ifnames=0"

say() { printf 'build-debian-guest: %s\n' "$*"; }
die() { printf 'build-debian-guest: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap, chroot and mkfs.ext4 -d keep file owners)"
for cmd in mmdebstrap mkfs.ext4 sfdisk chroot findmnt tar flock sha256sum; do
    command -v "$cmd" >/dev/null || die "$cmd not found: run tools/bootstrap.sh"
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
exec 9>"$out/.lock"
flock 9

stamp=$( { cat "$0"; echo "$suite $size $packages"; } | sha256sum | cut -d' ' -f1)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] \
        && [ -f "$out/disk.raw" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
    say "up to date in $out"
    exit 0
fi

# A build killed with SIGKILL may leave mmdebstrap's mounts (/proc, /sys, /dev
# binds) in its chroot: unmount them first, never delete across a mount.
remove_tree() {
    findmnt -rn -o TARGET | { grep -F "$1/" || true; } | sort -r | while read -r target; do
        umount -l "$target" || true
    done
    rm -rf --one-file-system "$1"
}
# Under the lock nobody else builds here: what a killed build left is nobody's.
for stale in "$out"/.vd-tmp-build.*; do
    if [ -d "$stale" ]; then remove_tree "$stale"; fi
done
work=$(mktemp -d "$out/.vd-tmp-build.XXXXXX")
trap 'remove_tree "$work"' EXIT
trap 'exit 143' TERM HUP
trap 'exit 130' INT
exec 8<"$work"
flock 8  # held while in use, like the driver's .vd-tmp- temporaries

say "mmdebstrap $suite (packages: $packages)"
# The hooks run later, in mmdebstrap's shell, where $1 is the root: single quotes on purpose.
# shellcheck disable=SC2016
# TMPDIR: mmdebstrap's own temporaries go in the held directory too.
TMPDIR=$work mmdebstrap --quiet --variant=apt --include="$packages" \
    --customize-hook='echo "LABEL=rootfs / ext4 defaults 0 1" > "$1/etc/fstab"' \
    --customize-hook='echo debian-guest > "$1/etc/hostname"' \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*_key*' \
    --customize-hook='printf "locale: C.UTF-8\n" > "$1/etc/cloud/cloud.cfg.d/90-virt-driver.cfg"' \
    "$suite" "$work/rootfs.tar"
mkdir "$work/root"
tar -C "$work/root" --numeric-owner -xpf "$work/rootfs.tar"
rm "$work/rootfs.tar"
root=$work/root
newest() { printf '%s\n' "$@" | sort -V | tail -1; }
cp "$(newest "$root"/boot/vmlinuz-*)" "$work/vmlinuz"
cp "$(newest "$root"/boot/initrd.img-*)" "$work/initrd.img"

say "GRUB for BIOS (from the image's grub-pc-bin)"
grub_lib=/usr/lib/grub/i386-pc
mkdir -p "$root/boot/grub/i386-pc"
cp "$root$grub_lib"/*.mod "$root$grub_lib"/*.lst "$root/boot/grub/i386-pc/"
cat > "$root/boot/grub/grub.cfg" <<CFG
# Written by virt-driver's tools/build-debian-guest.sh (not by update-grub):
# /vmlinuz and /initrd.img follow the newest kernel.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
menuentry 'Debian GNU/Linux 12' {
    search --no-floppy --label rootfs --set root
    linux /vmlinuz $cmdline
    initrd /initrd.img
}
CFG
cat > "$root/tmp/early.cfg" <<'CFG'
search --no-floppy --label rootfs --set root
set prefix=($root)/boot/grub
CFG
chroot "$root" grub-mkimage -O i386-pc -o /tmp/core.img -c /tmp/early.cfg \
    -p /boot/grub biosdisk part_msdos ext2 search
mv "$root/tmp/core.img" "$work/core.img"
cp "$root$grub_lib/boot.img" "$work/boot.img"
rm "$root/tmp/early.cfg"
core_size=$(stat -c %s "$work/core.img")
[ "$core_size" -le $(( (start_sector - 1) * 512 )) ] \
    || die "GRUB's core.img ($core_size bytes) does not fit before the partition at sector $start_sector"

say "disk: MBR, ext4 partition rootfs from sector $start_sector"
truncate -s "$size" "$work/disk.raw"
printf 'label: dos\nstart=%s, type=83, bootable\n' "$start_sector" \
    | sfdisk --quiet "$work/disk.raw" >/dev/null
disk_bytes=$(stat -c %s "$work/disk.raw")
part_kib=$(( (disk_bytes - start_sector * 512) / 1024 ))
mkfs.ext4 -q -F -L rootfs -E offset=$((start_sector * 512)) -d "$root" "$work/disk.raw" "${part_kib}k"
# boot.img's code only (440 bytes): the disk signature and partition table stay.
dd if="$work/boot.img" of="$work/disk.raw" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$work/disk.raw" bs=512 seek=1 conv=notrunc status=none

echo "$stamp" > "$work/stamp"
for f in disk.raw vmlinuz initrd.img stamp; do mv "$work/$f" "$out/$f"; done
say "built $out (disk.raw, vmlinuz, initrd.img)"
