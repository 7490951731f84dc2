#!/usr/bin/env bash
# Make sure virtlogd and libvirtd run on a host without systemd, so that
# qemu:///system answers. Idempotent: starts only what is not running.
#
#   tools/start-daemons.sh                    start what is missing, wait for libvirtd
#   tools/start-daemons.sh --restart-libvirtd stop libvirtd (only it) and start it again
#   tools/start-daemons.sh --kill-libvirtd    the same with SIGKILL, as if it crashed
#
# Running guests survive a libvirtd restart (libvirtd does not own them).
#
# Needs root. QEMU guests run as root (qemu.conf user/group) so that their
# files may live in the project tree or /tmp without relabelling or chown.
set -euo pipefail

timeout_s=${VIRT_DAEMON_TIMEOUT:-30}
qemu_conf=/etc/libvirt/qemu.conf
libvirtd_log=/var/log/libvirt/libvirtd.log
virtlogd_log=/var/log/libvirt/virtlogd.log
uri=qemu:///system

say() { printf 'start-daemons: %s\n' "$*"; }
die() { printf 'start-daemons: error: %s\n' "$*" >&2; exit 1; }

show_log() {
    if [ -s "$1" ]; then
        printf 'start-daemons: last lines of %s:\n' "$1" >&2
        tail -n 20 "$1" | sed 's/^/    /' >&2
    else
        printf 'start-daemons: %s is empty or missing\n' "$1" >&2
    fi
}

# pid of the daemon named $1 whose pid file is live, or nothing
running_pid() {
    local pidfile=/var/run/$1.pid pid
    [ -r "$pidfile" ] || pidfile=/var/run/libvirt/$1.pid
    [ -r "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
    echo "$pid"
}

answers() { virsh -c "$uri" version >/dev/null 2>&1; }

wait_until() {  # wait_until SECONDS CMD...: poll CMD every 0.2 s
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

ensure_accounts() {
    # Debian's libvirt-daemon-system creates these; libvirtd refuses to start without them.
    getent group kvm >/dev/null || { say "creating group kvm"; groupadd -r kvm; }
    getent group libvirt-qemu >/dev/null || { say "creating group libvirt-qemu"; groupadd -r libvirt-qemu; }
    if ! getent passwd libvirt-qemu >/dev/null; then
        say "creating user libvirt-qemu"
        useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
    fi
    mkdir -p /var/log/libvirt /var/log/libvirt/qemu /var/run/libvirt /var/lib/libvirt /etc/libvirt
}

# set_conf KEY VALUE: make `KEY = "VALUE"` the one active setting, keep the rest
set_conf() {
    local key=$1 value=$2
    [ -f "$qemu_conf" ] || : >"$qemu_conf"
    if grep -Eq "^[[:space:]]*${key}[[:space:]]*=[[:space:]]*\"$value\"[[:space:]]*$" "$qemu_conf" \
        && [ "$(grep -Ec "^[[:space:]]*${key}[[:space:]]*=" "$qemu_conf")" = 1 ]; then
        return 1
    fi
    local tmp
    tmp=$(mktemp "$qemu_conf.XXXXXX")
    { grep -Ev "^[[:space:]]*${key}[[:space:]]*=" "$qemu_conf" || true
      printf '%s = "%s"\n' "$key" "$value"; } >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$qemu_conf"
}

ensure_qemu_conf() {
    local changed=0
    set_conf user root && changed=1
    set_conf group root && changed=1
    if ((changed)); then
        say "set user/group = root in $qemu_conf"
        conf_changed=1
    else
        say "$qemu_conf already runs guests as root"
    fi
}

start_virtlogd() {
    if pid=$(running_pid virtlogd); then
        say "virtlogd already running (pid $pid)"
        return
    fi
    say "starting virtlogd"
    virtlogd -d 8>&- || { show_log "$virtlogd_log"; die "virtlogd did not start"; }
    wait_until 10 running_pid virtlogd >/dev/null \
        || { show_log "$virtlogd_log"; die "virtlogd did not stay up"; }
}

stop_libvirtd() {
    local pid
    pid=$(running_pid libvirtd) || { say "libvirtd is not running"; return; }
    say "stopping libvirtd (pid $pid) with SIG$stop_signal"
    kill "-$stop_signal" "$pid"
    if ! wait_until 15 test ! -d "/proc/$pid"; then
        say "libvirtd (pid $pid) ignored SIGTERM, killing it"
        kill -KILL "$pid" 2>/dev/null || true
        wait_until 5 test ! -d "/proc/$pid" || die "libvirtd (pid $pid) does not die"
    fi
}

start_libvirtd() {
    if pid=$(running_pid libvirtd); then
        if ((conf_changed)); then
            say "qemu.conf changed: restarting libvirtd (pid $pid)"
            stop_libvirtd
        else
            say "libvirtd already running (pid $pid)"
            return
        fi
    elif ((!restart)) && answers; then
        say "libvirtd answers already (started without a pid file here)"
        return
    fi
    say "starting libvirtd"
    libvirtd -d 8>&- || { show_log "$libvirtd_log"; die "libvirtd did not start"; }
}

wait_for_libvirtd() {
    say "waiting up to ${timeout_s}s for $uri to answer"
    if ! wait_until "$timeout_s" answers; then
        show_log "$libvirtd_log"
        virsh -c "$uri" version >&2 || true
        die "libvirtd does not answer on $uri after ${timeout_s}s (see the log above)"
    fi
    say "$uri answers: $(virsh -c "$uri" version 2>/dev/null | sed -n 's/^Running hypervisor: //p')"
}

restart=0
stop_signal=TERM
case "${1:-}" in
    "") ;;
    --restart-libvirtd) restart=1 ;;
    --kill-libvirtd) restart=1; stop_signal=KILL ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (use --restart-libvirtd, --kill-libvirtd or nothing)" ;;
esac

[ "$(id -u)" = 0 ] || die "must run as root (libvirtd and QEMU guests run as root here)"
for cmd in libvirtd virtlogd virsh flock; do
    command -v "$cmd" >/dev/null || die "$cmd not found: run tools/bootstrap.sh"
done

# two test sessions starting at once must not both run `libvirtd -d`;
# the daemons must not inherit fd 8, or they would hold the lock forever
exec 8>/run/virt-driver-start-daemons.lock
flock -w 120 8 || die "another start-daemons.sh holds /run/virt-driver-start-daemons.lock"

conf_changed=0
ensure_accounts
ensure_qemu_conf
start_virtlogd
((restart)) && stop_libvirtd
start_libvirtd
wait_for_libvirtd
