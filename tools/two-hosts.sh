#!/usr/bin/env bash
# Two libvirt "hosts" on one machine, for real migration tests.
#
#   tools/two-hosts.sh start          start what is not running (idempotent; warm: < 1 s)
#   tools/two-hosts.sh stop           stop both hosts and the shared storage
#   tools/two-hosts.sh status         what runs
#   tools/two-hosts.sh uri A|B        the host's libvirt URI as the other host reaches it
#   tools/two-hosts.sh conf A|B [shared|local]   the host's virt-driver config file
#   tools/two-hosts.sh exec A|B CMD...  run CMD "on" the host: there qemu:///system is
#                                     its libvirtd and the shared storage is mounted
#   tools/two-hosts.sh daemon-stop A|B / daemon-start A|B   libvirtd only (guests stay)
#
# Each host is a mount+UTS namespace sharing the machine's network namespace,
# with private bind mounts over the directories libvirt keeps state in, its own
# virtlogd and libvirtd (TCP on its own loopback address, its own host UUID and
# host name) and its own virt-driver configuration. The machine's own libvirtd
# is never touched. Shared storage: $ROOT/store seen at $ROOT/shared through a
# bindfs FUSE mount typed "fuse.glusterfs", which libvirt treats as cluster
# storage (it refuses live migration off a local file system); the mount lives
# in a namespace of its own from which both hosts are cloned.
#
# Only processes proven to belong to a host (its private /run/libvirt mount in
# /proc/PID/mountinfo) or to the storage (bindfs over $ROOT/store) are ever
# signalled. Needs root, util-linux, bindfs, libvirt 9 (monolithic libvirtd).
# All traffic stays on 127.0.14.x.
set -euo pipefail

ROOT=${VD_TWO_HOSTS_ROOT:-/tmp/virt-driver-two-hosts}
STORE=$ROOT/store
SHARED=$ROOT/shared
here=$(cd "$(dirname "$0")/.." && pwd)

ip_of()    { case $1 in A) echo 127.0.14.2 ;; B) echo 127.0.14.3 ;; esac; }
port_of()  { case $1 in A) echo 16711 ;; B) echo 16712 ;; esac; }
mig_min()  { case $1 in A) echo 49511 ;; B) echo 49531 ;; esac; }
uuid_of()  { case $1 in A) echo 7d41a9c2-61e0-4f0b-8a53-0e5f3c2b14a1 ;; B) echo 7d41a9c2-61e0-4f0b-8a53-0e5f3c2b14b2 ;; esac; }
name_of()  { case $1 in A) echo hosta.vd.test ;; B) echo hostb.vd.test ;; esac; }
hdir()     { echo "$ROOT/host$1"; }
uri_of()   { echo "qemu+tcp://$(ip_of "$1"):$(port_of "$1")/system"; }
check_host() { case ${1:-} in A|B) ;; *) echo "two-hosts: host must be A or B" >&2; exit 2 ;; esac; }
say() { printf 'two-hosts: %s\n' "$*" >&2; }

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
is_zombie() { [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }
pidfile_pid() { if [ -s "$1" ]; then cat "$1"; fi; }
owned_by_host() { grep -qF " $(hdir "$2")/run/libvirt /run/libvirt " "/proc/$1/mountinfo" 2>/dev/null; }
owned_storage() {
    [ "$(cat "/proc/$1/comm" 2>/dev/null)" = bindfs ] \
        && grep -qF " $SHARED " "/proc/$1/mountinfo" 2>/dev/null \
        && grep -qF " fuse.glusterfs $STORE " "/proc/$1/mountinfo" 2>/dev/null
}

kill_wait() {  # a pid already proven ours: TERM, up to 10 s, then KILL
    local p=$1 _
    pid_alive "$p" || return 0
    kill "$p" 2>/dev/null || true
    for _ in $(seq 100); do
        pid_alive "$p" || return 0
        is_zombie "$p" && return 0   # the machine's init reaps late
        sleep 0.1
    done
    kill -9 "$p" 2>/dev/null || true
}

# -- shared storage ---------------------------------------------------------------

storage_pid() {
    local p; p=$(pidfile_pid "$ROOT/bindfs.pid")
    pid_alive "$p" && owned_storage "$p" && echo "$p"
}

shared_up() {
    mkdir -p "$STORE" "$SHARED"
    storage_pid >/dev/null && return 0
    command -v bindfs >/dev/null || { say "bindfs is missing: run tools/bootstrap.sh"; return 1; }
    # subtype=glusterfs: /proc/mounts says fuse.glusterfs, libvirt says "shared"
    unshare --mount --propagation private -- /bin/sh -ec "
        bindfs -o subtype=glusterfs '$STORE' '$SHARED'
        readlink /proc/self/ns/mnt > '$ROOT/storage.ns'"
    local p
    for p in $(pgrep -x bindfs || true); do
        [ "$(readlink "/proc/$p/ns/mnt")" = "$(cat "$ROOT/storage.ns")" ] && owned_storage "$p" \
            && echo "$p" >"$ROOT/bindfs.pid"
    done
    storage_pid >/dev/null || { say "bindfs did not start"; return 1; }
}

shared_down() {
    local p
    if p=$(storage_pid); then kill_wait "$p"; fi  # bindfs unmounts on SIGTERM
    rm -f "$ROOT/bindfs.pid" "$ROOT/storage.ns"
}

# -- hosts ------------------------------------------------------------------------

write_config() {
    local h=$1 d; d=$(hdir "$1")
    mkdir -p "$d"/etc/libvirt/qemu "$d"/run/libvirt "$d"/lib/libvirt "$d"/cache/libvirt \
        "$d"/log/libvirt/qemu "$d"/local "$d"/locks
    cat >"$d/etc/libvirt/libvirtd.conf" <<EOF
# test bed host $h: TCP on its own loopback address only, no auth
listen_tls = 0
listen_tcp = 1
listen_addr = "$(ip_of "$h")"
tcp_port = "$(port_of "$h")"
auth_tcp = "none"
auth_unix_rw = "none"
unix_sock_group = "root"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
unix_sock_admin_perms = "0700"
host_uuid = "$(uuid_of "$h")"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
    # both hosts share one kernel: no cgroups (libvirt would name both groups alike)
    cat >"$d/etc/libvirt/qemu.conf" <<EOF
user = "root"
group = "root"
migration_address = "$(ip_of "$h")"
migration_host = "$(ip_of "$h")"
migration_port_min = $(mig_min "$h")
migration_port_max = $(( $(mig_min "$h") + 9 ))
cgroup_controllers = [ ]
EOF
    echo 'log_outputs = "3:file:/var/log/libvirt/virtlogd.log"' >"$d/etc/libvirt/virtlogd.conf"
    printf '127.0.0.1 localhost\n%s %s\n%s %s\n' "$(ip_of A)" "$(name_of A)" \
        "$(ip_of B)" "$(name_of B)" >"$d/hosts"
    # shared: instances, cache and store on the shared mount (one owner on both
    # hosts); local: each host's own directories (block migration)
    local storage base
    for storage in shared local; do
        [ "$storage" = shared ] && base=$SHARED || base=$d/local
        cat >"$d/virt-driver-$storage.conf" <<EOF
[DEFAULT]
virt_type = qemu
backend = libvirt
state_path = $base/state
instances_path = $base/instances
lock_path = $d/locks
boot_file_dirs = ${VD_TWO_HOSTS_BOOT_DIR:-$here/build/demo-guest}
log_file = $d/virt-driver.log

[libvirt]
connection_uri = qemu:///system
EOF
    done
}

ns_pid() {  # a live pid inside host $1's namespace (virtlogd outlives libvirtd)
    local d p; d=$(hdir "$1")
    for p in "$(pidfile_pid "$d/run/libvirt/virtlogd.pid")" "$(pidfile_pid "$d/run/libvirt/libvirtd.pid")"; do
        if pid_alive "$p" && ! is_zombie "$p" && owned_by_host "$p" "$1" \
                && [ "$(readlink "/proc/$p/ns/mnt")" = "$(cat "$d/ns.mnt" 2>/dev/null)" ]; then
            echo "$p"; return 0
        fi
    done
    return 1
}

wait_uri() {
    local _
    for _ in $(seq 240); do
        virsh -c "$1" version >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    say "no answer from $1 after 60 s"; return 1
}

host_start() {
    local h=$1 d; d=$(hdir "$1")
    write_config "$h"
    if ns_pid "$h" >/dev/null; then daemon_start "$h"; return; fi
    rm -f "$d"/run/libvirt/*.pid
    nsenter -t "$(storage_pid)" -m -- unshare --mount --uts --propagation private -- /bin/sh -ec "
        hostname $(name_of "$h")
        mount --bind '$d/etc/libvirt'   /etc/libvirt
        mount --bind '$d/hosts'         /etc/hosts
        mount --bind '$d/run/libvirt'   /run/libvirt
        mount --bind '$d/lib/libvirt'   /var/lib/libvirt
        mount --bind '$d/cache/libvirt' /var/cache/libvirt
        mount --bind '$d/log/libvirt'   /var/log/libvirt
        readlink /proc/self/ns/mnt > '$d/ns.mnt'
        virtlogd -d -p /run/libvirt/virtlogd.pid
        libvirtd -d -l -p /run/libvirt/libvirtd.pid"
    wait_uri "$(uri_of "$h")"
}

daemon_start() {
    local h=$1 d p; d=$(hdir "$1")
    p=$(pidfile_pid "$d/run/libvirt/libvirtd.pid")
    pid_alive "$p" && ! is_zombie "$p" && owned_by_host "$p" "$h" && return 0
    p=$(ns_pid "$h") || { say "host $h is not running: use start"; return 1; }
    nsenter -t "$p" -m -u -- libvirtd -d -l -p /run/libvirt/libvirtd.pid
    wait_uri "$(uri_of "$h")"
}

daemon_stop() {
    local d p; d=$(hdir "$1"); p=$(pidfile_pid "$d/run/libvirt/libvirtd.pid")
    if pid_alive "$p" && owned_by_host "$p" "$1"; then kill_wait "$p"; fi
}

host_stop() {
    local h=$1 d uri dom p; d=$(hdir "$1"); uri=$(uri_of "$h")
    if virsh -c "$uri" version >/dev/null 2>&1; then
        for dom in $(virsh -c "$uri" list --name --all); do
            virsh -c "$uri" destroy "$dom" >/dev/null 2>&1 || true
            virsh -c "$uri" undefine --nvram "$dom" >/dev/null 2>&1 || true
        done
    fi
    for p in "$d"/run/libvirt/qemu/*.pid "$d/run/libvirt/libvirtd.pid" "$d/run/libvirt/virtlogd.pid"; do
        p=$(pidfile_pid "$p")
        if pid_alive "$p" && owned_by_host "$p" "$h"; then kill_wait "$p"; fi
    done
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        owned_by_host "$p" "$h" && ! is_zombie "$p" && kill_wait "$p"
    done
    rm -f "$d/ns.mnt"
}

status() {
    local h p
    for h in A B; do
        if p=$(ns_pid "$h"); then
            printf 'host %s %s: up (pid %s)\n' "$h" "$(uri_of "$h")" "$p"
        else
            printf 'host %s %s: down\n' "$h" "$(uri_of "$h")"
        fi
    done
    if p=$(storage_pid); then echo "shared storage: bindfs pid $p"; else echo "shared storage: down"; fi
}

running() { storage_pid >/dev/null && ns_pid A >/dev/null && ns_pid B >/dev/null; }

cmd=${1:-}; shift || true
case $cmd in
    start) shared_up; host_start A; host_start B ;;
    stop) host_stop B || true; host_stop A || true; shared_down ;;
    running) running ;;
    status) status ;;
    uri) check_host "${1:-}"; uri_of "$1" ;;
    conf) check_host "${1:-}"; echo "$(hdir "$1")/virt-driver-${2:-shared}.conf" ;;
    daemon-start) check_host "${1:-}"; daemon_start "$1" ;;
    daemon-stop) check_host "${1:-}"; daemon_stop "$1" ;;
    exec)
        check_host "${1:-}"; h=$1; shift
        p=$(ns_pid "$h") || { say "host $h is not running: use start"; exit 1; }
        exec nsenter -t "$p" -m -u --wd="$PWD" -- "$@" ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
esac
