#!/usr/bin/env bash
# Install what virt-driver needs on a Debian 12 host, idempotently:
# the Debian packages (only those missing) and a virtualenv in .venv with
# the project installed in editable mode.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv="${VENV:-$here/.venv}"

packages=(
    qemu-utils qemu-system-x86 libvirt-dev pkg-config libvirt-daemon
    libvirt-daemon-driver-qemu libvirt-clients busybox-static cpio util-linux
    bindfs
    virtinst libxenmisc4.17 cloud-image-utils mmdebstrap
    openssh-client openssl iproute2 e2fsprogs fdisk
    shellcheck
)

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$pkg")
done

if ((${#missing[@]})); then
    [ "$(id -u)" = 0 ] || die "missing Debian packages (${missing[*]}); run as root or install them"
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed: check the package mirror"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install failed for: ${missing[*]}"
else
    say "Debian packages already present"
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$python is older than 3.11; set PYTHON=/path/to/python3.11"

stamp="$venv/.installed"
if [ -f "$stamp" ] && [ "$stamp" -nt "$here/setup.cfg" ] && [ "$stamp" -nt "$0" ]; then
    say "virtualenv $venv is up to date"
    exit 0
fi
say "creating virtualenv $venv"
"$python" -m venv "$venv" || die "could not create $venv (is python3-venv installed?)"
"$venv/bin/pip" install -q --upgrade pip setuptools wheel
say "installing virt-driver and its test tools into $venv"
# The checkout goes on sys.path by a plain .pth line ("compat" mode): setuptools' default
# for this layout is an import finder that costs every virt-driver run 15 ms of pathlib
# and importlib before its first line. Without compat mode (a future setuptools), the default.
"$venv/bin/pip" install -q -e "${here}[test]" --config-settings editable_mode=compat 2>/dev/null \
    || "$venv/bin/pip" install -q -e "${here}[test]" || die "pip install failed (see above)"
touch "$stamp"
say "done"
