#!/usr/bin/env bash
# The deb under a real systemd: a Debian 12 system container (debootstrap +
# systemd-nspawn --boot), the package installed with dpkg inside, the
# service active through Type=notify, kept alive by watchdog pings, and
# restarted after kill -9. The base system is built once per machine and
# cached; each run works on a fresh copy and removes it.
set -uo pipefail
deb=${1:?usage: systemd.sh PACKAGE.deb}
base=${RACKSIDE_NSPAWN_BASE:-/var/tmp/rackside-nspawn/base}
work=/var/tmp/rackside-nspawn/run-$$
machine=rstest$$
mirror=${RACKSIDE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
pass=0 fail=0
check() {
    local what=$1; shift
    if "$@" >/tmp/rackside-sdtest.out 2>&1; then pass=$((pass + 1)); echo "ok: $what"
    else fail=$((fail + 1)); echo "FAIL: $what"; sed 's/^/    /' /tmp/rackside-sdtest.out | tail -20; fi
}

if [ ! -x "$base/usr/bin/dpkg" ] || [ ! -e "$base/.rackside-ready" ]; then
    echo "building the container base in $base (once per machine)"
    rm -rf "$base"; mkdir -p "$(dirname "$base")"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,libvirt0 bookworm "$base" "$mirror" >/tmp/rackside-debootstrap.log 2>&1 \
        || { tail -20 /tmp/rackside-debootstrap.log; echo "debootstrap failed"; exit 1; }
    touch "$base/.rackside-ready"
fi

nspawn_pid=
cleanup() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
        kill -TERM "$nspawn_pid" 2>/dev/null; sleep 0.5; kill -KILL "$nspawn_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT

rm -rf "$work"; cp -a "$base" "$work"
cp "$deb" "$work/root/rackside.deb"
systemd-nspawn -D "$work" --boot --register=no --keep-unit -M "$machine" --private-network \
    --console=pipe >/tmp/rackside-nspawn.log 2>&1 </dev/null &
nspawn_pid=$!
# The container's init is the nspawn process's child running systemd;
# nspawn briefly has another child (its setup process) that exits.
init=
for _ in $(seq 150); do
    for c in $(pgrep -P "$nspawn_pid"); do
        if [ "$(cat /proc/"$c"/comm 2>/dev/null)" = systemd ]; then init=$c; fi
    done
    [ -n "$init" ] && break
    sleep 0.2
done
[ -n "$init" ] || { echo "no systemd in the container"; cat /tmp/rackside-nspawn.log; exit 1; }
inside() { nsenter -t "$init" -a "$@"; }
booted() {
    for _ in $(seq 120); do
        s=$(inside systemctl is-system-running 2>/dev/null)
        case "$s" in running|degraded) echo "$s"; return 0 ;; esac
        sleep 0.5
    done
    inside systemctl --failed --no-pager; return 1
}
check "container boots to running under systemd" booted

check "dpkg -i inside (postinst enables and starts)" inside dpkg -i /root/rackside.deb
active() { # wait until active
    for _ in $(seq 60); do
        [ "$(inside systemctl is-active rackside-agent.service)" = active ] && return 0
        sleep 0.5
    done
    inside systemctl status --no-pager rackside-agent.service; inside journalctl -u rackside-agent --no-pager -n 30; return 1
}
check "service active (running)" active
prop() { inside systemctl show -p "$1" --value rackside-agent.service; }
check "Type=notify" test "$(prop Type)" = notify
check "enabled" test "$(inside systemctl is-enabled rackside-agent.service)" = enabled
check "shipped watchdog is 30 s" test "$(prop WatchdogUSec)" = 30s
check "hook in place for libvirt" inside test -x /etc/libvirt/hooks/qemu.d/rackside-hook
# How exposed the running service is, by systemd's own measure (recorded,
# and held: a change that widens the sandbox shows here).
security=$(inside systemd-analyze security --no-pager rackside-agent.service 2>/dev/null | sed -n 's/.*Overall exposure level for rackside-agent.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: exposure ${security:-unknown}"
check "exposure at most 3.0 (systemd-analyze security)" awk -v s="${security:-99}" 'BEGIN { exit !(s <= 3.0) }'
check "capabilities: only DAC_OVERRIDE, NET_RAW and SYS_RAWIO" sh -c "[ \"\$(nsenter -t $init -a systemctl show -p CapabilityBoundingSet --value rackside-agent.service)\" = 'cap_dac_override cap_net_raw cap_sys_rawio' ]"

# A 3 s watchdog for this test: without pings systemd would kill it.
inside mkdir -p /etc/systemd/system/rackside-agent.service.d
printf '[Service]\nWatchdogSec=3s\n' | inside tee /etc/systemd/system/rackside-agent.service.d/test.conf >/dev/null
inside systemctl daemon-reload
inside systemctl restart rackside-agent.service
check "active again with a 3 s watchdog" active
pid1=$(prop MainPID); restarts1=$(prop NRestarts)
check "running with a main PID" test "$pid1" -gt 0
sleep 10
check "watchdog pings keep it alive (same PID after 10 s)" test "$(prop MainPID)" = "$pid1"
check "no watchdog restarts" test "$(prop NRestarts)" = "$restarts1"
check "status line from the agent" sh -c "nsenter -t $init -a systemctl show -p StatusText --value rackside-agent.service | grep -q libvirt"

inside sh -c "kill -9 $pid1"
restarted() {
    for _ in $(seq 60); do
        p=$(prop MainPID)
        if [ "$(inside systemctl is-active rackside-agent.service)" = active ] && [ "$p" != 0 ] && [ "$p" != "$pid1" ]; then return 0; fi
        sleep 0.5
    done
    inside systemctl status --no-pager rackside-agent.service; return 1
}
check "restarted after kill -9" restarted
check "restart counted" test "$(prop NRestarts)" -gt "$restarts1"
check "clean stop" inside systemctl stop rackside-agent.service
check "stopped, not failed" test "$(inside systemctl is-active rackside-agent.service)" = inactive
check "dpkg -P inside" inside dpkg -P rackside

echo "test result: $( [ $fail = 0 ] && echo ok || echo FAILED ). $pass passed; $fail failed; 0 ignored"
[ $fail = 0 ]
