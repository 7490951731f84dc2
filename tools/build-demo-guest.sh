#!/usr/bin/env bash
# Build the demo/test guest: a Debian cloud kernel and a busybox initramfs
# whose /init (tools/demo-guest/init) reports what the guest sees on ttyS0.
#
#   tools/build-demo-guest.sh [OUTDIR]      (default: build/demo-guest)
#
# Writes OUTDIR/vmlinuz, OUTDIR/initrd.img, OUTDIR/disk.raw (16 MiB of zeros)
# and OUTDIR/stamp. A second run with the same kernel package, the same
# busybox and the same guest scripts does nothing. The kernel .deb is kept in
# build/cache (DEMO_GUEST_CACHE overrides it). Nothing is installed on the host.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/build/demo-guest}
cache=${DEMO_GUEST_CACHE:-$here/build/cache}
guest_src=$here/tools/demo-guest
metapackage=linux-image-cloud-amd64
disk_size=16M

# Loaded in this order by /init; each one's dependencies come before it.
# Modules the kernel has built in are left out.
modules=(
    virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
    virtio_blk failover net_failover virtio_net
    virtio_balloon  # memory resized live within the boot's maximum
    button evdev    # ACPI power button as an input device, for acpid
)

say() { printf 'build-demo-guest: %s\n' "$*"; }
die() { printf 'build-demo-guest: error: %s\n' "$*" >&2; exit 1; }

for cmd in apt-cache apt-get dpkg-deb cpio gzip flock; do
    command -v "$cmd" >/dev/null || die "$cmd not found: run tools/bootstrap.sh"
done
busybox=/bin/busybox
[ -x "$busybox" ] || die "$busybox not found: install busybox-static (tools/bootstrap.sh)"
if ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is dynamically linked: install busybox-static, not busybox"
fi

# "PACKAGE VERSION" of the kernel the metapackage points at (one apt-cache call:
# Debian pins it, "Depends: linux-image-X (= V)")
kernel_package() {
    apt-cache show --no-all-versions "$metapackage" 2>/dev/null | awk '
        $1 == "Depends:" && $2 ~ /^linux-image-/ {
            v = ($3 == "(=") ? $4 : ""; sub(/\)$/, "", v); sub(/,$/, "", v)
            print $2, v; exit
        }'
}

mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)
exec 9>"$out/.lock"
flock 9    # one build at a time per OUTDIR

say "resolving the kernel package behind $metapackage"
resolved=$(kernel_package)
if [ -z "$resolved" ] && [ "$(id -u)" = 0 ]; then
    say "apt does not know $metapackage: running apt-get update"
    apt-get update -qq || die "apt-get update failed: check the package mirror"
    resolved=$(kernel_package)
fi
[ -n "$resolved" ] || die "cannot resolve $metapackage to a kernel package (run apt-get update)"
read -r pkg version <<<"$resolved"
if [ -z "$version" ]; then
    version=$(apt-cache show --no-all-versions "$pkg" | awk '$1 == "Version:" { print $2; exit }')
fi
[ -n "$version" ] || die "apt-cache show $pkg gives no version"
kver=${pkg#linux-image-}

stamp_key=$(
    printf 'kernel=%s_%s\n' "$pkg" "$version"
    printf 'busybox=%s\n' "$("$busybox" 2>&1 | head -n 1)"
    printf 'modules=%s\n' "${modules[*]}"
    printf 'disk=%s\n' "$disk_size"
    cat "$guest_src/init" "$guest_src/power-button" "$0" | sha256sum | sed 's/ .*//; s/^/scripts=/'
)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp_key" ] \
    && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] && [ -f "$out/disk.raw" ]; then
    say "up to date in $out ($pkg $version)"
    exit 0
fi

deb=$cache/${pkg}_${version/:/%3a}_amd64.deb
want_sha=$(apt-cache show "$pkg=$version" | awk '$1 == "SHA256:" { print $2; exit }')
deb_ok() { [ -s "$deb" ] && [ "$(sha256sum <"$deb" | cut -d' ' -f1)" = "$want_sha" ]; }
if deb_ok; then
    say "using cached $(basename "$deb")"
else
    rm -f "$deb"   # missing, truncated or not the one apt knows
    say "downloading $pkg $version into $cache"
    (cd "$cache" && apt-get download -q "$pkg=$version" 2>&1 \
        | grep -v '^W: Download is performed unsandboxed' >&2) || true
    deb_ok || die "apt-get download $pkg=$version did not produce $deb with SHA256 $want_sha"
fi

work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

say "unpacking the kernel"
dpkg-deb -x "$deb" "$work/kernel"
moddir=$work/kernel/lib/modules/$kver
[ -f "$work/kernel/boot/vmlinuz-$kver" ] || die "$deb has no boot/vmlinuz-$kver"
[ -d "$moddir" ] || die "$deb has no lib/modules/$kver"

root=$work/initramfs
mkdir -p "$root"/{bin,dev,proc,sys,run,tmp,etc/acpi/PWRF,lib/modules/demo}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
install -m 0755 "$guest_src/init" "$root/init"
# busybox acpid runs /etc/acpi/PWRF/00000080 for the power button
install -m 0755 "$guest_src/power-button" "$root/etc/acpi/PWRF/00000080"
# the kernel's built-in initramfs has /dev/console; add it when we may
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true

# copy one module, uncompressed (busybox insmod may lack xz/zstd support)
copy_module() {
    local name=$1 src
    src=$(find "$moddir" -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" \
        -o -name "$name.ko.gz" | head -n 1)
    if [ -z "$src" ]; then
        grep -q "/$name\.ko" "$moddir/modules.builtin" 2>/dev/null && return 1
        die "module $name is neither in $pkg nor built in"
    fi
    case "$src" in
        *.ko) cp "$src" "$root/lib/modules/demo/$name.ko" ;;
        *.xz) xz -dc "$src" >"$root/lib/modules/demo/$name.ko" ;;
        *.zst) zstd -qdc "$src" >"$root/lib/modules/demo/$name.ko" ;;
        *.gz) gzip -dc "$src" >"$root/lib/modules/demo/$name.ko" ;;
    esac
}

loaded=" "
: >"$root/lib/modules/demo/load-order"
for name in "${modules[@]}"; do
    if ! copy_module "$name"; then
        say "module $name is built in"
        continue
    fi
    deps=$(grep -ao 'depends=[A-Za-z0-9_,-]*' "$root/lib/modules/demo/$name.ko" | head -n 1)
    for dep in $(tr ',' ' ' <<<"${deps#depends=}"); do
        case "$loaded" in
            *" ${dep//-/_} "*) ;;
            *) grep -q "/${dep}\.ko" "$moddir/modules.builtin" \
                   || die "module $name needs $dep, which is not loaded before it: fix the list" ;;
        esac
    done
    echo "$name" >>"$root/lib/modules/demo/load-order"
    loaded+="$name "
done
say "modules, in load order:$loaded"

say "packing the initramfs"
find "$root" -exec touch -h -d @0 {} +    # same inputs, same bytes
(cd "$root" && find . -print0 | LC_ALL=C sort -z \
    | cpio --null -o -H newc --owner 0:0 --reproducible --quiet) | gzip -9n >"$work/initrd.img"
cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"
truncate -s "$disk_size" "$work/disk.raw"

# rename into place, stamp last: an interrupted build is rebuilt next time
rm -f "$out/stamp"
for f in vmlinuz initrd.img disk.raw; do
    mv -f "$work/$f" "$out/$f"
done
printf '%s\n' "$stamp_key" >"$work/stamp"
mv -f "$work/stamp" "$out/stamp"
say "built $out (kernel $kver from $pkg $version)"
