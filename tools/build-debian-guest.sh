#!/usr/bin/env bash
# Build a Debian 12 cloud guest from Debian packages: a raw ext4 root disk (no
# partition table, label rootfs) with systemd, openssh-server, cloud-init,
# qemu-guest-agent and e2fsprogs, and its own kernel and initrd for direct boot
# (root=LABEL=rootfs console=ttyS0 net.ifnames=0). cloud-init sets the locale
# C.UTF-8, which needs no locales package.
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
# OUTDIR/stamp. A second run with the same inputs (this script, the package list,
# the suite) does nothing. Needs root and mmdebstrap (tools/bootstrap.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/build/debian-guest}
suite=bookworm
size=3G
packages=systemd-sysv,openssh-server,cloud-init,linux-image-cloud-amd64,qemu-guest-agent,ifupdown,isc-dhcp-client,udev,e2fsprogs,netbase,dbus

say() { printf 'build-debian-guest: %s\n' "$*"; }
die() { printf 'build-debian-guest: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap and mkfs.ext4 -d keep file owners)"
for cmd in mmdebstrap mkfs.ext4 tar flock sha256sum; do
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

work=$(mktemp -d "$out/.vd-tmp-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
say "mmdebstrap $suite (packages: $packages)"
# The hooks run later, in mmdebstrap's shell, where $1 is the root: single quotes on purpose.
# shellcheck disable=SC2016
mmdebstrap --quiet --variant=apt --include="$packages" \
    --customize-hook='echo "LABEL=rootfs / ext4 defaults 0 1" > "$1/etc/fstab"' \
    --customize-hook='echo debian-guest > "$1/etc/hostname"' \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*_key*' \
    --customize-hook='printf "locale: C.UTF-8\n" > "$1/etc/cloud/cloud.cfg.d/90-virt-driver.cfg"' \
    "$suite" "$work/rootfs.tar"
mkdir "$work/root"
tar -C "$work/root" --numeric-owner -xpf "$work/rootfs.tar"
rm "$work/rootfs.tar"
newest() { printf '%s\n' "$@" | sort -V | tail -1; }
cp "$(newest "$work"/root/boot/vmlinuz-*)" "$work/vmlinuz"
cp "$(newest "$work"/root/boot/initrd.img-*)" "$work/initrd.img"
truncate -s "$size" "$work/disk.raw"
mkfs.ext4 -q -F -L rootfs -d "$work/root" "$work/disk.raw"
for f in disk.raw vmlinuz initrd.img; do mv "$work/$f" "$out/$f"; done
echo "$stamp" > "$out/stamp"
say "built $out (disk.raw, vmlinuz, initrd.img)"
