#!/usr/bin/env bash
# A libvirtd (and virtlogd) of one's own, beside the machine's, reached on a Unix socket.
#
#   tools/private-libvirtd.sh start DIR   start it with its state under DIR; prints its URI
#   tools/private-libvirtd.sh uri DIR     its URI
#   tools/private-libvirtd.sh stop DIR    destroy and undefine its domains, stop its daemons
#
# For a peer that must own every domain of its libvirtd (Nova's own libvirt driver
# refuses a libvirtd that holds guests it did not make). It runs in a mount+UTS
# namespace with DIR's directories bound over the ones libvirt keeps state in, no
# TCP listener and no cgroups (the machine's libvirtd names its groups alike). Only
# processes proven to be its own (DIR's run directory bound at /run/libvirt in
# /proc/PID/mountinfo) are ever signalled. Needs root and a monolithic libvirtd.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$dir" ] || { sed -n '2,6p' "$0"; exit 2; }
dir=$(realpath -m "$dir")
uri="qemu+unix:///system?socket=$dir/run/libvirt/libvirt-sock"

ours() { grep -qF " $dir/run/libvirt /run/libvirt " "/proc/$1/mountinfo" 2>/dev/null; }
alive() { [ -e "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

stop_pid() {  # a pid proven ours: TERM, up to 10 s, then KILL
    local p=$1 _
    kill "$p" 2>/dev/null || return 0
    for _ in $(seq 100); do alive "$p" || return 0; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
}

start() {
    mkdir -p "$dir"/etc/libvirt "$dir"/run/libvirt "$dir"/lib/libvirt "$dir"/cache/libvirt \
        "$dir"/log/libvirt/qemu
    cat >"$dir/etc/libvirt/libvirtd.conf" <<EOF
listen_tls = 0
listen_tcp = 0
auth_unix_rw = "none"
unix_sock_group = "root"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
unix_sock_admin_perms = "0700"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
    printf 'user = "root"\ngroup = "root"\ncgroup_controllers = [ ]\n' >"$dir/etc/libvirt/qemu.conf"
    echo 'log_outputs = "3:file:/var/log/libvirt/virtlogd.log"' >"$dir/etc/libvirt/virtlogd.conf"
    unshare --mount --uts --propagation private -- /bin/sh -ec "
        hostname private-libvirtd
        mount --bind '$dir/etc/libvirt'   /etc/libvirt
        mount --bind '$dir/run/libvirt'   /run/libvirt
        mount --bind '$dir/lib/libvirt'   /var/lib/libvirt
        mount --bind '$dir/cache/libvirt' /var/cache/libvirt
        mount --bind '$dir/log/libvirt'   /var/log/libvirt
        virtlogd -d -p /run/libvirt/virtlogd.pid
        libvirtd -d -p /run/libvirt/libvirtd.pid"
    local _
    for _ in $(seq 240); do
        virsh -c "$uri" version >/dev/null 2>&1 && { echo "$uri"; return 0; }
        sleep 0.25
    done
    echo "private-libvirtd: no answer from $uri after 60 s: see $dir/log/libvirt/libvirtd.log" >&2
    return 1
}

stop() {
    local dom p
    if virsh -c "$uri" version >/dev/null 2>&1; then
        for dom in $(virsh -c "$uri" list --name --all); do
            virsh -c "$uri" destroy "$dom" >/dev/null 2>&1 || true
            virsh -c "$uri" undefine --nvram --managed-save --snapshots-metadata "$dom" \
                >/dev/null 2>&1 || true
        done
    fi
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        if [ "$p" != $$ ] && ours "$p" && alive "$p"; then stop_pid "$p"; fi
    done
}

case $cmd in
    start) start ;;
    stop) stop ;;
    uri) echo "$uri" ;;
    *) sed -n '2,6p' "$0"; exit 2 ;;
esac
