#!/usr/bin/env bash
# A rack of three hosts as production has them, end to end (issue 13,
# point 5). Three Debian 12 system containers (systemd-nspawn --boot:
# systemd as PID 1), each with libvirtd and QEMU from Debian's packages
# (bookworm-backports: QEMU 10.0, libvirt 11.3) started by systemd through
# socket activation, the rackside deb installed with dpkg inside so its
# maintainer scripts run (postinst enables and starts the agent, and
# reloads libvirtd so it loads the hook), each host's management line a pty
# of a socat null modem bind-mounted in as /dev/ttyS0, with a PIN. The
# hosts talk as production hosts do: libvirtd to libvirtd over TLS
# (qemu+tls, certificates from a test CA) and migrations encrypted
# (QEMU's migration TLS). A guest as production has them runs on c1: a
# disk on network storage (NBD), a NIC on a bridge, a network policy the
# hook loads into nftables, and a client outside holding a TCP connection
# to it. The controller, outside, runs `evacuate c1 --poweroff` over the
# lines: SAFE, c1 powers itself off, and the guest runs exactly once, on c2
# or c3, its disk, its client's connection and its policy intact.
#
# Must run as root, under `flock /work/lab.lock` on shared machines (it
# starts libvirtd and QEMU). Every container, mount, cgroup, network
# namespace and process it starts is removed on exit.
#
# Obstacles met and their fixes are written where they are dealt with,
# marked "Obstacle:".
set -uo pipefail
deb=${1:?usage: rack.sh PACKAGE.deb [RACKSIDE-LAB]}
deb=$(readlink -f "$deb")
# The lab's tool builds the guest (the lab's workload) and is its client.
lab_bin=$(readlink -f "${2:-$(dirname "$0")/../../target/debug/rackside-lab}")
top=/var/tmp/rackside-nspawn
base=${RACKSIDE_NSPAWN_BASE:-$top/base}
rack_base=${RACKSIDE_RACK_BASE:-$top/rack-base}
mirror=${RACKSIDE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# unified: the containers get a cgroup v2 tree only (as Debian 12 hosts
# have); hybrid: nspawn's default on this machine (cgroup v1 controllers,
# read-only, plus the v2 tree for systemd).
cgmode=${RACK_CGROUP:-unified}
keep=${RACK_KEEP:-0}   # 1: leave the rack up at the end, for a look (then kill -TERM the script's pid)
tag=rr$$
work=$top/rack-$$
hosts=(c1 c2 c3)
declare -A addr=([c1]=10.79.0.1 [c2]=10.79.0.2 [c3]=10.79.0.3)
storage_addr=10.79.0.254   # NBD server, on the hosts' network
console_addr=10.79.0.253   # the console server (ser2net), on the same network
nbd_port=10809
guest=rackvm
guest_addr=10.79.1.11      # on the guests' network (a bridge in each host)
guest_mac=52:54:00:79:01:11
client_addr=10.79.1.100
pin=${RACK_PIN:-271828}
# 1: libvirtd talks TLS (qemu+tls) and migrations are encrypted, as in
# production; 0: plain qemu+tcp without authentication and clear-text
# migrations (for looking into a failure).
tls=${RACK_TLS:-1}
# Lines added to every host's /etc/libvirt/qemu.conf (see "Obstacle:"
# notes at the boot below for why each is there).
qemu_extra=${RACK_QEMU_CONF-}
pass=0 fail=0
t0=$(date +%s.%N); tphase=$t0
phase() { # phase NAME: prints how long the phase before it took
    local now; now=$(date +%s.%N)
    printf 'phase: %-44s %6.1f s (total %6.1f s)\n' "$pending_phase" "$(echo "$now - $tphase" | bc)" "$(echo "$now - $t0" | bc)"
    tphase=$now; pending_phase=$1
}
pending_phase=start
check() {
    local what=$1; shift
    if "$@" >"$work/check.out" 2>&1; then pass=$((pass + 1)); echo "ok: $what"
    else fail=$((fail + 1)); echo "FAIL: $what"; sed 's/^/    /' "$work/check.out" | tail -30; fi
}
die() { echo "rack: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
command -v socat >/dev/null || die "socat not installed"
for t in bc jq openssl qemu-storage-daemon ser2net tcpdump; do command -v "$t" >/dev/null || die "$t not installed"; done
[ -x "$lab_bin" ] || die "no rackside-lab at $lab_bin (cargo build -p rackside-lab)"

# ---------------------------------------------------------------- base
# The base system of systemd.sh (debootstrap minbase, cached), then, once
# per machine, libvirt and QEMU installed into a copy of it with apt.
# Obstacle: plain `debootstrap --include=libvirt-daemon-system` fails on
# polkitd's virtual dependency (LAB.md); apt inside the tree resolves it.
# Obstacle: Debian 12's QEMU 7.2 loses TCG guests' writes during a live
# migration (README, "QEMU 9.0 or later"); bookworm-backports is reachable
# from here and gives QEMU 1:10.0.2+ds-2+deb13u1~bpo12+1 and libvirt
# 11.3.0-2~bpo12+1 (the same as the lab's hosts), so the rack takes those.
# Obstacle: apt's maintainer scripts would start libvirtd in the build
# tree; a policy-rc.d that says no stops that.
pending_phase="base system"
if [ ! -x "$base/usr/bin/dpkg" ] || [ ! -e "$base/.rackside-ready" ]; then
    echo "building the container base in $base (once per machine)"
    rm -rf "$base"; mkdir -p "$(dirname "$base")"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,libvirt0 bookworm "$base" "$mirror" >/tmp/rackside-debootstrap.log 2>&1 \
        || { tail -20 /tmp/rackside-debootstrap.log; die "debootstrap failed"; }
    touch "$base/.rackside-ready"
fi
rack_packages="qemu-system-x86 libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients"
if [ ! -e "$rack_base/.rackside-rack-ready" ]; then
    echo "building the rack host base in $rack_base (once per machine)"
    tmp=$rack_base.tmp-$$
    rm -rf "$tmp"; cp -a "$base" "$tmp" || die "cannot copy $base"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" \
        > "$tmp/etc/apt/sources.list.d/bookworm-backports.sources"
    printf '#!/bin/sh\nexit 101\n' > "$tmp/usr/sbin/policy-rc.d"; chmod 755 "$tmp/usr/sbin/policy-rc.d"
    systemd-nspawn -q -D "$tmp" --register=no --keep-unit --pipe -E DEBIAN_FRONTEND=noninteractive sh -c "
        apt-get update -qq &&
        apt-get install -y -qq --no-install-recommends -t bookworm-backports $rack_packages &&
        apt-get install -y -qq --no-install-recommends iproute2 procps nftables &&
        apt-get clean" </dev/null >/tmp/rackside-rack-base.log 2>&1 \
        || { tail -20 /tmp/rackside-rack-base.log; rm -rf "$tmp"; die "installing libvirt and QEMU in the base failed"; }
    rm -f "$tmp/usr/sbin/policy-rc.d"
    chroot "$tmp" dpkg-query -W $rack_packages nftables > "$tmp/.rackside-rack-ready"
    rm -rf "$rack_base"; mv "$tmp" "$rack_base"
fi
echo "rack base: $(tr '\t\n' ' ;' < "$rack_base/.rackside-rack-ready")"

# ---------------------------------------------------------------- cleanup
declare -A nspawn_pid=() init_pid=()
socat_pids=()
storage_pid= probe_pid= console_pid= sniff_pid=
cleanup() {
    local h p
    trap - EXIT INT TERM
    # Guests first: libvirt-guests would otherwise try to shut them down
    # at the containers' halt and wait for a guest that has no ACPI.
    for h in "${hosts[@]}"; do
        p=${init_pid[$h]:-}
        [ -n "$p" ] && kill -0 "$p" 2>/dev/null || continue
        timeout 20 nsenter -t "$p" -a sh -c \
            'for d in $(virsh -q -c qemu:///system list --name 2>/dev/null); do virsh -q -c qemu:///system destroy "$d"; done' >/dev/null 2>&1
    done
    for h in "${hosts[@]}"; do
        p=${nspawn_pid[$h]:-}
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null
    done
    # SIGTERM halts the container; a second one ends it at once if a
    # guest holds it up (LAB.md).
    for h in "${hosts[@]}"; do
        p=${nspawn_pid[$h]:-}
        [ -n "$p" ] || continue
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$p" 2>/dev/null; then kill -TERM "$p" 2>/dev/null; sleep 1; kill -KILL "$p" 2>/dev/null; fi
        wait "$p" 2>/dev/null
    done
    for p in $console_pid "${socat_pids[@]}" $storage_pid $probe_pid $sniff_pid; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for h in "${hosts[@]}"; do
        mountpoint -q "$work/$h/root" && umount "$work/$h/root"
        ip netns delete "$tag-$h" 2>/dev/null
    done
    ip netns delete "$tag-cl" 2>/dev/null
    ip netns delete "$tag-sw" 2>/dev/null
    local cg
    for cg in /sys/fs/cgroup/systemd/$tag /sys/fs/cgroup/unified/$tag; do
        # The containers' last processes may take a moment to leave.
        for _ in $(seq 25); do
            [ -d "$cg" ] || break
            find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
            [ -d "$cg" ] && sleep 0.2
        done
        [ -d "$cg" ] && echo "rack: cgroup $cg left (processes still in it?)" >&2
    done
    rm -rf "$work"
    [ "$keep" = 1 ] && rm -f "$top/rack-keep.env"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# What an earlier run killed with SIGKILL left (its trap never ran): only
# runs whose script is gone, and only this script's own names.
for old in "$top"/rack-[0-9]*; do
    [ -d "$old" ] || continue
    p=${old##*/rack-}
    case "$p" in *[!0-9]*) continue ;; esac
    kill -0 "$p" 2>/dev/null && continue
    if pgrep -f "systemd-nspawn -D $old/" >/dev/null; then
        echo "rack: $old: its containers still run; left alone" >&2; continue
    fi
    echo "rack: removing what run $p left"
    pkill -f "qemu-storage-daemon .*$old/storage/" 2>/dev/null
    pkill -f "probe --netns rr$p-cl " 2>/dev/null
    pkill -f "ser2net -n -c $old/lines/" 2>/dev/null
    for r in "$old"/c*/root; do mountpoint -q "$r" && umount "$r"; done
    for ns in $(ip netns list | awk '{print $1}' | grep "^rr$p-"); do ip netns delete "$ns"; done
    for cg in /sys/fs/cgroup/systemd/rr$p /sys/fs/cgroup/unified/rr$p; do
        [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    rm -rf "$old"
done
mkdir -p "$work"/{lines,guest,pkg,storage,pki}

# ---------------------------------------------------------------- the guest
# The lab's workload guest (tests/src/guest.rs): the Debian cloud kernel
# from /boot and a busybox initramfs whose /init fills memory and keeps
# dirtying it, prints a numbered tick, serves HTTP and TCP echo on its
# NIC, and counts on its disk (reading back what it last wrote, so a lost
# write shows). The kernel and initramfs are bind-mounted read-only at the
# same path in every host, as a shared filesystem would be, so the
# migration finds them on the destination.
guest_dir=/var/lib/rackside-rack-guest
kernel=$("$lab_bin" initramfs "$work/guest/initrd") || die "cannot build the guest's initramfs"
install -m 0644 "$kernel" "$work/guest/vmlinuz"
chmod 0644 "$work/guest/initrd"; chmod 0755 "$work/guest"

# ---------------------------------------------------------------- the package
# The controller at the rack runs the one the deb ships.
dpkg-deb -x "$deb" "$work/pkg" || die "cannot unpack $deb"
controller=$work/pkg/usr/bin/rackside-controller
[ -x "$controller" ] || die "no rackside-controller in $deb"

# ---------------------------------------------------------------- network
# A switch namespace with two bridges: br0 for the hosts (libvirtd,
# migrations, the NBD storage at .254) and brg for the guests (the
# client's network). One namespace per host, joined to br0 by eth0 and to
# brg by eth1, which is a port of the host's own guest bridge brvm (as a
# production host's uplink is). Nothing here leaves the machine.
phase "network"
ip netns add "$tag-sw" || die "cannot make netns $tag-sw"
for br in br0 brg; do
    ip -n "$tag-sw" link add "$br" type bridge
    ip -n "$tag-sw" link set "$br" up
done
ip -n "$tag-sw" link set lo up
ip -n "$tag-sw" addr add "$storage_addr/24" dev br0
for h in "${hosts[@]}"; do
    ip netns add "$tag-$h" || die "cannot make netns $tag-$h"
    ip link add "$tag$h" netns "$tag-sw" type veth peer name eth0 netns "$tag-$h" || die "veth for $h"
    ip -n "$tag-sw" link set "$tag$h" master br0 up
    ip -n "$tag-$h" addr add "${addr[$h]}/24" dev eth0
    ip -n "$tag-$h" link set eth0 up
    ip -n "$tag-$h" link set lo up
    ip link add "${tag}g$h" netns "$tag-sw" type veth peer name eth1 netns "$tag-$h" || die "guest veth for $h"
    ip -n "$tag-sw" link set "${tag}g$h" master brg up
    ip -n "$tag-$h" link add brvm type bridge
    ip -n "$tag-$h" link set eth1 master brvm
    ip -n "$tag-$h" link set eth1 up
    ip -n "$tag-$h" link set brvm up
done
# The client: what the guest's users see.
ip netns add "$tag-cl" || die "cannot make netns $tag-cl"
ip link add "${tag}cl" netns "$tag-sw" type veth peer name eth0 netns "$tag-cl" || die "client veth"
ip -n "$tag-sw" link set "${tag}cl" master brg up
ip -n "$tag-cl" addr add "$client_addr/24" dev eth0
ip -n "$tag-cl" link set eth0 up
ip -n "$tag-cl" link set lo up

listening() { # listening ADDR PORT: waits up to 10 s for a server on the management network
    for _ in $(seq 100); do
        ip netns exec "$tag-sw" bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- storage
# The guest's disk on network storage, as shared storage is in a rack: a
# raw image exported over NBD by qemu-storage-daemon on the hosts'
# network. Source and destination QEMU both open it during the move.
truncate -s 16M "$work/storage/$guest.raw"
ip netns exec "$tag-sw" qemu-storage-daemon \
    --blockdev "driver=file,node-name=n0,filename=$work/storage/$guest.raw" \
    --nbd-server "addr.type=inet,addr.host=$storage_addr,addr.port=$nbd_port" \
    --export "type=nbd,id=e0,node-name=n0,name=$guest,writable=on" \
    </dev/null >"$work/storage/daemon.log" 2>&1 &
storage_pid=$!
listening "$storage_addr" "$nbd_port" || { cat "$work/storage/daemon.log"; die "the NBD server did not come up"; }

# ---------------------------------------------------------------- certificates
# A test CA and, per host, what a production host has: libvirtd's server
# and client certificates (qemu+tls between hosts, /etc/pki/libvirt) and
# QEMU's migration certificates (/etc/pki/qemu, the default
# migrate_tls_x509_cert_dir). Each names the host and its address: libvirt
# checks the name in the URI, QEMU the address of the migration URI.
certify() { # certify OUT-PREFIX CN EKU SAN
    openssl req -x509 -nodes -days 2 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -CA "$work/pki/ca-cert.pem" -CAkey "$work/pki/ca-key.pem" \
        -keyout "$1-key.pem" -out "$1-cert.pem" -subj "/CN=$2" \
        -addext basicConstraints=critical,CA:FALSE -addext keyUsage=critical,digitalSignature,keyEncipherment \
        -addext "extendedKeyUsage=$3" -addext "subjectAltName=$4" 2>>"$work/pki/openssl.log"
}
if [ "$tls" = 1 ]; then
    openssl req -x509 -nodes -days 2 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$work/pki/ca-key.pem" -out "$work/pki/ca-cert.pem" -subj "/CN=rackside rack test CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>>"$work/pki/openssl.log" \
        || die "cannot make the test CA: $(cat "$work/pki/openssl.log")"
    for h in "${hosts[@]}"; do
        mkdir -p "$work/pki/$h"
        for role in server client; do
            certify "$work/pki/$h/$role" "$h" "${role}Auth" "IP:${addr[$h]},DNS:$h" \
                || die "cannot make $h's $role certificate: $(cat "$work/pki/openssl.log")"
        done
    done
fi

# ---------------------------------------------------------------- lines
# One null modem per host: the agent's end goes into the container as
# /dev/ttyS0; the rack's end is cabled as field engineers find them:
# c1's and c2's to a console server (ser2net, Debian's package, on the
# rack's management network), which serves c1's on a telnet port (with its
# own option negotiation) and c2's on a raw TCP port; c3's straight to the
# controller, as a USB serial adapter would be.
for h in "${hosts[@]}"; do
    socat "pty,link=$work/lines/$h-agent,raw,echo=0" "pty,link=$work/lines/$h-rack,raw,echo=0" \
        </dev/null >"$work/lines/$h.socat.log" 2>&1 &
    socat_pids+=($!)
done
for h in "${hosts[@]}"; do
    for _ in $(seq 100); do [ -L "$work/lines/$h-rack" ] && [ -L "$work/lines/$h-agent" ] && break; sleep 0.1; done
    [ -L "$work/lines/$h-agent" ] || die "no pty for $h"
done
cat > "$work/lines/ser2net.yaml" <<EOF
%YAML 1.1
---
connection: &c1
  accepter: telnet,tcp,$console_addr,7001
  connector: serialdev,$(readlink -f "$work/lines/c1-rack"),115200n81,local
  options:
    kickolduser: true
connection: &c2
  accepter: tcp,$console_addr,7002
  connector: serialdev,$(readlink -f "$work/lines/c2-rack"),115200n81,local
  options:
    kickolduser: true
EOF
declare -A line_spec=([c1]="telnet://$console_addr:7001" [c2]="tcp://$console_addr:7002" [c3]="$work/lines/c3-rack")
# The console server, on the switch namespace's br0.
ip -n "$tag-sw" addr add "$console_addr/24" dev br0
ip netns exec "$tag-sw" ser2net -n -c "$work/lines/ser2net.yaml" -P "$work/lines/ser2net.pid" \
    </dev/null >"$work/lines/ser2net.log" 2>&1 &
console_pid=$!
listening "$console_addr" 7002 || { cat "$work/lines/ser2net.log"; die "the console server did not come up"; }

# ---------------------------------------------------------------- hosts
# Each host's root is an overlay on the cached base: no 500 MB copy per
# host, and nothing a run does reaches the base.
phase "host roots (overlay) and config"
for h in "${hosts[@]}"; do
    r=$work/$h
    mkdir -p "$r"/{upper,wk,root}
    mount -t overlay overlay -o "lowerdir=$rack_base,upperdir=$r/upper,workdir=$r/wk" "$r/root" || die "overlay for $h"
    root=$r/root
    echo "$h" > "$root/etc/hostname"
    {
        echo "127.0.0.1 localhost"
        for o in "${hosts[@]}"; do echo "${addr[$o]} $o"; done
    } > "$root/etc/hosts"
    # The machine ID is made at first boot, one per host.
    : > "$root/etc/machine-id"
    # Every host needs its own host_uuid: libvirt refuses to migrate
    # between hosts that share one, and in a container it cannot read one
    # from SMBIOS (no /dev/mem).
    printf '\n# rackside rack test\nhost_uuid = "%s"\n' "$(cat /proc/sys/kernel/random/uuid)" >> "$root/etc/libvirt/libvirtd.conf"
    if [ "$tls" = 1 ]; then
        # With socket activation libvirtd ignores listen_tls:
        # libvirtd-tls.socket is what listens. Debian's defaults do the
        # rest (auth_tls none, client certificates checked against the CA).
        install -D -m 0644 "$work/pki/ca-cert.pem" "$root/etc/pki/CA/cacert.pem"
        install -D -m 0644 "$work/pki/$h/server-cert.pem" "$root/etc/pki/libvirt/servercert.pem"
        install -D -m 0644 "$work/pki/$h/client-cert.pem" "$root/etc/pki/libvirt/clientcert.pem"
        install -D -m 0600 "$work/pki/$h/server-key.pem" "$root/etc/pki/libvirt/private/serverkey.pem"
        install -D -m 0600 "$work/pki/$h/client-key.pem" "$root/etc/pki/libvirt/private/clientkey.pem"
        # QEMU runs as libvirt-qemu and reads its keys itself: group-readable
        # by that group, and by no one else.
        qgid=$(awk -F: '$1 == "libvirt-qemu" { print $3 }' "$root/etc/group")
        [ -n "$qgid" ] || die "no libvirt-qemu group in the rack base"
        install -d -m 0750 -o 0 -g "$qgid" "$root/etc/pki/qemu"
        install -m 0644 "$work/pki/ca-cert.pem" "$root/etc/pki/qemu/ca-cert.pem"
        for role in server client; do
            install -m 0644 "$work/pki/$h/$role-cert.pem" "$root/etc/pki/qemu/$role-cert.pem"
            install -m 0640 -o 0 -g "$qgid" "$work/pki/$h/$role-key.pem" "$root/etc/pki/qemu/$role-key.pem"
        done
        printf '\n# rackside rack test: check the peer of every migration\nmigrate_tls_x509_verify = 1\n' >> "$root/etc/libvirt/qemu.conf"
        systemctl --root="$root" enable libvirtd-tls.socket >/dev/null 2>&1 || die "cannot enable libvirtd-tls.socket in $h"
    else
        # libvirtd over TCP without authentication: a look into a failure
        # only, never outside a test.
        printf 'auth_tcp = "none"\n' >> "$root/etc/libvirt/libvirtd.conf"
        systemctl --root="$root" enable libvirtd-tcp.socket >/dev/null 2>&1 || die "cannot enable libvirtd-tcp.socket in $h"
    fi
    if [ -n "$qemu_extra" ]; then
        printf '\n# rackside rack test\n%s\n' "$qemu_extra" >> "$root/etc/libvirt/qemu.conf"
    fi
    mkdir -p "$root$guest_dir"
done

# ---------------------------------------------------------------- boot
# Obstacle: with --keep-unit and --register=no (needed: this machine has
# no systemd outside to register with) nspawn makes the container's cgroup
# subtree in its own cgroup ("payload" and "supervisor" below it). Three
# containers started from one cgroup would share one payload cgroup and
# trample each other's system.slice. Each nspawn is first moved into a
# cgroup of its own, in the name=systemd v1 tree and in the v2 tree.
# Obstacle: this machine has cgroup v1 controllers (hybrid). By default
# nspawn gives the container the same, with the v1 controllers read-only,
# so systemd inside cannot apply DeviceAllow (no writable devices
# controller) and libvirt cannot create its machine cgroups ("Failed to
# create v1 controller cpu for group: Read-only file system", LAB.md).
# RACK_CGROUP=unified (the default here) sets
# SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1: the container sees only a cgroup v2
# tree, as a Debian 12 host does; no controllers are available in it
# (they are all bound to v1 on this machine) but systemd's BPF device
# policy works there, so the agent's DeviceAllow is enforced for real.
phase "boot three containers"
# Obstacle: nspawn gives CAP_NET_ADMIN only with the network options it
# sets up itself (--private-network, --network-veth...), not with
# --network-namespace-path: libvirtd then failed every guest with a NIC
# ("Unable to create tap device vnet0: Operation not permitted") and the
# hook could not have loaded nftables rules. --capability=CAP_NET_ADMIN:
# the container has its own network namespace, so this is its own network
# it administers, as a host does.
# Obstacle: nspawn's seccomp filter refuses bpf(); systemd in the
# container then silently enforces no DevicePolicy/DeviceAllow at all (its
# device policy is a BPF program on cgroup v2): a unit with
# DevicePolicy=closed could still write to /dev/kmsg (1:11). With
# --system-call-filter=bpf systemd loads its device programs and the
# same write is refused (and allowed with DeviceAllow=char-mem w), so the
# agent runs in the device sandbox its unit asks for. Note that systemd
# always allows ptys (char-pts) under any DevicePolicy: a pty line cannot
# show that DeviceAllow=char-ttyS/ttyUSB/ttyACM suffice for real ports.
# Obstacle: a guest NIC is a tap device: QEMU (through libvirt) opens
# /dev/net/tun, which nspawn does not put in a container's /dev.
nspawn_extra="--bind=/dev/net/tun"
for h in "${hosts[@]}"; do
    agent_end=$(readlink -f "$work/lines/$h-agent")
    (
        for hier in systemd unified; do
            mkdir -p "/sys/fs/cgroup/$hier/$tag/$h" && echo "$BASHPID" > "/sys/fs/cgroup/$hier/$tag/$h/cgroup.procs"
        done
        [ "$cgmode" = unified ] && export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
        exec systemd-nspawn -D "$work/$h/root" --boot --register=no --keep-unit -M "$tag$h" --hostname="$h" \
            --network-namespace-path="/run/netns/$tag-$h" --capability=CAP_NET_ADMIN --system-call-filter=bpf --console=pipe \
            --bind="$agent_end:/dev/ttyS0" --bind-ro="$work/guest:$guest_dir" $nspawn_extra
    ) </dev/null >"$work/$h.console.log" 2>&1 &
    nspawn_pid[$h]=$!
done
for h in "${hosts[@]}"; do
    for _ in $(seq 150); do
        for c in $(pgrep -P "${nspawn_pid[$h]}"); do
            [ "$(cat /proc/"$c"/comm 2>/dev/null)" = systemd ] && init_pid[$h]=$c
        done
        [ -n "${init_pid[$h]:-}" ] && break
        sleep 0.2
    done
    [ -n "${init_pid[$h]:-}" ] || { cat "$work/$h.console.log"; die "no systemd in container $h"; }
done
inside() { local h=$1; shift; nsenter -t "${init_pid[$h]}" -a "$@"; }
booted() {
    local h=$1 s
    for _ in $(seq 240); do
        s=$(inside "$h" systemctl is-system-running 2>/dev/null)
        case "$s" in running|degraded) echo "$h: $s"; return 0 ;; esac
        sleep 0.5
    done
    inside "$h" systemctl --failed --no-pager; return 1
}
for h in "${hosts[@]}"; do check "$h boots to running under systemd" booted "$h"; done
for h in "${hosts[@]}"; do
    failed=$(inside "$h" systemctl --failed --no-legend --plain 2>/dev/null | awk '{print $1}' | tr '\n' ' ')
    [ -n "$failed" ] && echo "note: $h has failed units: $failed"
done
[ "$fail" = 0 ] || die "containers did not boot"
echo "cgroup fs in c1: $(inside c1 stat -fc %T /sys/fs/cgroup)"

# ---------------------------------------------------------------- libvirtd
phase "libvirtd up (socket activation)"
lv_up() { # wait until libvirtd answers on its unix socket (starting it)
    local h=$1
    for _ in $(seq 60); do
        inside "$h" virsh -q -c qemu:///system version >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    inside "$h" systemctl status --no-pager libvirtd.service libvirtd.socket; inside "$h" journalctl --no-pager -u libvirtd -n 30; return 1
}
for h in "${hosts[@]}"; do check "$h: libvirtd answers (started by its socket)" lv_up "$h"; done
peer_uri() { # peer_uri HOST: how the others reach its libvirtd
    if [ "$tls" = 1 ]; then echo "qemu+tls://$1/system"; else echo "qemu+tcp://${addr[$1]}/system"; fi
}
for h in "${hosts[@]}"; do
    o=c1; [ "$h" = c1 ] && o=c2
    check "$h reaches $o's libvirtd ($(peer_uri "$o"))" inside "$h" virsh -q -c "$(peer_uri "$o")" version
done
declare -A lv_pid=()
for h in "${hosts[@]}"; do lv_pid[$h]=$(inside "$h" systemctl show -p MainPID --value libvirtd.service); done

# ---------------------------------------------------------------- the deb
phase "dpkg -i in each host"
for h in "${hosts[@]}"; do
    cp "$deb" "$work/$h/root/root/rackside.deb"
    check "$h: dpkg -i (postinst enables and starts the agent, reloads libvirtd)" inside "$h" dpkg -i /root/rackside.deb
done
agent_active() {
    local h=$1
    for _ in $(seq 60); do
        [ "$(inside "$h" systemctl is-active rackside-agent.service)" = active ] && return 0
        sleep 0.5
    done
    inside "$h" systemctl status --no-pager rackside-agent.service; inside "$h" journalctl -u rackside-agent --no-pager -n 30; return 1
}
for h in "${hosts[@]}"; do
    check "$h: agent active after install" agent_active "$h"
    check "$h: hook in place" inside "$h" test -x /etc/libvirt/hooks/qemu.d/rackside-hook
    # The reload, not a restart: the same libvirtd, told to look again.
    check "$h: libvirtd reloaded by postinst (same pid ${lv_pid[$h]})" sh -c \
        "[ \"\$(nsenter -t ${init_pid[$h]} -a systemctl show -p MainPID --value libvirtd.service)\" = '${lv_pid[$h]}' ] &&
         nsenter -t ${init_pid[$h]} -a journalctl --no-pager -u libvirtd.service | grep -q 'Reload'"
done

# ---------------------------------------------------------------- the agents' config
# As an administrator would: the packaged config edited, then a restart.
# Peers are the other two hosts over qemu+tls; migrations encrypted (the
# default, [migration] tls = true); a PIN on every line (its hash made by
# the packaged agent's hash-pin); c1 may power itself off. A drop-in
# turns on the agent's debug lines for hook reports, which show that
# libvirtd runs the hook the postinst made it load.
phase "agents configured and restarted"
pin_hash=$(printf '%s\n' "$pin" | "$work/pkg/usr/bin/rackside-agent" hash-pin) || die "hash-pin failed"
printf '%s\n' "$pin" > "$work/pin"; chmod 600 "$work/pin"
for h in "${hosts[@]}"; do
    {
        printf '[host]\nname = "%s"\nlocation = "rack test / %s"\n\n' "$h" "$h"
        printf '[[console]]\npath = "/dev/ttyS0"\n\n'
        printf '[auth]\npin_hash = "%s"\n\n' "$pin_hash"
        for o in "${hosts[@]}"; do
            [ "$o" = "$h" ] && continue
            printf '[[peer]]\nname = "%s"\nuri = "%s"\nmigrate_uri = "tcp://%s"\n\n' "$o" "$(peer_uri "$o")" "${addr[$o]}"
        done
        # Every container sees the whole machine's /proc/stat and
        # /proc/meminfo: the CPU filter would judge the machine (a busy
        # CI neighbour makes every host look loaded), so it is off.
        printf '[placement]\nmem_reserve_mib = 256\nload_threshold = 1.0\n\n'
        [ "$tls" = 1 ] || printf '[migration]\ntls = false\n\n'
        # The default power-off command, systemctl poweroff, run by the
        # agent from inside its sandbox.
        [ "$h" = c1 ] && printf '[power]\nallow = true\n\n'
    } > "$work/$h/root/etc/rackside/agent.toml"
    mkdir -p "$work/$h/root/etc/systemd/system/rackside-agent.service.d"
    printf '[Service]\nEnvironment=RACKSIDE_LOG=info,rackside_agent::hookio=debug\n' \
        > "$work/$h/root/etc/systemd/system/rackside-agent.service.d/rack-test.conf"
    check "$h: config valid" inside "$h" rackside-agent check-config --config /etc/rackside/agent.toml
    inside "$h" systemctl daemon-reload
    inside "$h" systemctl restart rackside-agent.service
done
for h in "${hosts[@]}"; do check "$h: agent active with its line and peers" agent_active "$h"; done

# ---------------------------------------------------------------- the guest
# Shaped as production guests are: its disk on network storage, its NIC on
# the host's bridge, and a network policy in its metadata that the hook
# loads into nftables where it runs (and removes where it leaves): the
# client may reach TCP 7 (echo) and 80 (HTTP) and ping it, nothing else.
phase "guest started on c1"
cat > "$work/c1/root/root/$guest.xml" <<EOF
<domain type='qemu'>
  <name>$guest</name>
  <metadata><rs:policy xmlns:rs='https://rackside.dev/xmlns/policy/1'><rs:allow proto='tcp' port='7'/><rs:allow proto='tcp' port='80'/><rs:allow proto='icmp'/></rs:policy></metadata>
  <memory unit='MiB'>128</memory>
  <currentMemory unit='MiB'>128</currentMemory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$guest_dir/vmlinuz</kernel>
    <initrd>$guest_dir/initrd</initrd>
    <cmdline>console=ttyS0 quiet printk.time=0 printk.devkmsg=on panic=-1 rackside.fill_mib=16 rackside.dirty_mib=1 rackside.ip=$guest_addr/24 rackside.name=$guest rackside.disk=1</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'>
      <source path='/var/log/libvirt/qemu/$guest.serial.log' append='on'/>
      <target port='0'/>
    </serial>
    <interface type='bridge'><source bridge='brvm'/><mac address='$guest_mac'/><model type='virtio'/></interface>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source protocol='nbd' name='$guest'><host name='$storage_addr' port='$nbd_port'/></source>
      <target dev='vda' bus='virtio'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
check "guest defined on c1" inside c1 virsh -q -c qemu:///system define "/root/$guest.xml"
check "guest started on c1" inside c1 virsh -q -c qemu:///system start "$guest"
serial_log() { # serial_log HOST: the guest's console log there (readable after the host is off)
    cat "$work/$1/root/var/log/libvirt/qemu/$guest.serial.log" 2>/dev/null
}
last_of() { # last_of HOST WORD: the last number printed after WORD
    serial_log "$1" | grep -a -o "$2 [0-9]*" | tail -1 | cut -d' ' -f2
}
ticks() { last_of "$1" rackside-tick; }
counting() { # counting HOST WORD [AFTER]: waits for WORD's number to pass AFTER
    local h=$1 word=$2 after=${3:-0} t
    for _ in $(seq 120); do
        t=$(last_of "$h" "$word"); [ -n "$t" ] && [ "$t" -gt "$after" ] && { echo "$word $t"; return 0; }
        sleep 0.5
    done
    serial_log "$h" | tail -5; inside "$h" tail -20 "/var/log/libvirt/qemu/$guest.log"; return 1
}
check "guest ticks on c1" counting c1 rackside-tick 2
check "guest writes and reads back its disk on c1" counting c1 rackside-disk 1
# For the record: where QEMU runs (cgroup) and as whom.
qpid=$(inside c1 pgrep -f "guest=$guest" | head -1)
[ -n "$qpid" ] && echo "note: c1's QEMU: user $(inside c1 ps -o user= -p "$qpid"), cgroup $(inside c1 cat /proc/"$qpid"/cgroup | tr '\n' ' ')"
uuid=$(inside c1 virsh -q -c qemu:///system domuuid "$guest" | tr -d '-' | head -1)
policy_tables() { inside "$1" nft list tables 2>/dev/null | grep -c "rackside_$uuid"; }
check "hook loaded the guest's policy on c1 (nft tables rackside_$uuid)" test "$(policy_tables c1)" -ge 1
client_tcp() { # client_tcp PORT: open, refused, or dropped (no answer in 5 s)
    ip netns exec "$tag-cl" timeout 5 bash -c "exec 3<>/dev/tcp/$guest_addr/$1" 2>/dev/null
    case $? in 0) echo open ;; 124) echo dropped ;; *) echo refused ;; esac
}
port_is() { local got; got=$(client_tcp "$1"); echo "port $1: $got"; [ "$got" = "$2" ]; }
serving() { for _ in $(seq 120); do [ "$(client_tcp 80)" = open ] && return 0; sleep 0.5; done; serial_log c1 | tail -5; return 1; }
check "the client reaches the guest's web server on c1" serving
# Real packets through the policy: an allowed port answers; a port the
# guest does not listen on is dropped by the policy, where the guest's own
# TCP would refuse it.
check "c1 applies the policy: TCP 7 open" port_is 7 open
check "c1 applies the policy: TCP 23 dropped, not refused" port_is 23 dropped

# ---------------------------------------------------------------- evacuation
# The client holds a TCP echo connection to the guest and pings it through
# the move; it is told to stop after the checks.
mkfifo "$work/probe.in"
"$lab_bin" probe --netns "$tag-cl" "$guest=$guest_addr" <"$work/probe.in" >"$work/probe.json" 2>"$work/probe.err" &
probe_pid=$!
exec 7>"$work/probe.in"
before=$(ticks c1)
phase "controller: evacuate c1 --poweroff"
# The controller is on the rack's management network (the switch
# namespace), where the console server is.
lines=(--pin-file "$work/pin")
for h in "${hosts[@]}"; do lines+=(--line "$h=${line_spec[$h]}"); done
ctl=(ip netns exec "$tag-sw" "$controller")
echo "lines: ${lines[*]}"
timeout 120 "${ctl[@]}" "${lines[@]}" status >"$work/status.out" 2>&1
rc=$?
sed 's/^/  controller| /' "$work/status.out"
check "controller status (PIN given; pty, raw TCP and telnet lines): every line up" test "$rc" = 0
disk_before=$(last_of c1 rackside-disk)
# The wire between the hosts, as anyone on the management network sees
# it: the first bytes of every packet to or from QEMU's migration ports.
ip netns exec "$tag-sw" tcpdump -Z root -i br0 -s 200 -U -w "$work/migration.pcap" \
    'tcp portrange 49152-49215' 2>"$work/tcpdump.err" &
sniff_pid=$!
for _ in $(seq 100); do grep -q 'listening on' "$work/tcpdump.err" && break; sleep 0.1; done
timeout 900 "${ctl[@]}" "${lines[@]}" evacuate c1 --poweroff --wait 600 >"$work/controller.out" 2>&1
rc=$?
kill -INT "$sniff_pid" 2>/dev/null; wait "$sniff_pid" 2>/dev/null; sniff_pid=
sed 's/^/  controller| /' "$work/controller.out"
check "controller exit 0" test "$rc" = 0
check "controller says SAFE" grep -q 'SAFE TO POWER OFF' "$work/controller.out"
check "controller does not say NOT SAFE" sh -c "! grep -q 'NOT SAFE' '$work/controller.out'"

# ---------------------------------------------------------------- power-off
# After the SAFE verdict c1's agent runs `systemctl poweroff` from inside
# its sandbox: systemd in c1 halts the container and nspawn exits 0.
phase "c1 powers itself off"
p=${nspawn_pid[c1]}
for _ in $(seq 240); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$p" 2>/dev/null; then c1_rc=running; else wait "$p"; c1_rc=$?; fi
echo "c1's nspawn: ${c1_rc}"
check "c1 halted by its agent's power-off (nspawn exit 0)" test "$c1_rc" = 0
check "c1's agent logged the power-off" sh -c "journalctl -D '$work/c1/root/var/log/journal' --no-pager -u rackside-agent | grep -q 'powering off'"

phase "checks after the move"
where=()
for h in c2 c3; do
    st=$(inside "$h" virsh -q -c qemu:///system domstate "$guest" 2>/dev/null | head -1)
    echo "  $h: ${st:-absent}"
    [ "$st" = running ] && where+=("$h")
done
check "guest running on exactly one host" test "${#where[@]}" = 1
dest=${where[0]:-c2}
check "c1 kept no definition of the guest (undefined when it left)" test ! -e "$work/c1/root/etc/libvirt/qemu/$guest.xml"
check "guest keeps ticking on $dest (alive, from tick $before on)" counting "$dest" rackside-tick "$before"
check "guest's disk counter goes on on $dest (from ${disk_before:-?})" counting "$dest" rackside-disk "${disk_before:-0}"
check "no disk write lost or failed, on c1 or $dest" sh -c \
    "! cat '$work/c1/root/var/log/libvirt/qemu/$guest.serial.log' '$work/$dest/root/var/log/libvirt/qemu/$guest.serial.log' | grep -a 'rackside-disk-\(LOST\|ERROR\)'"
check "guest persistent on $dest" sh -c "nsenter -t ${init_pid[$dest]} -a virsh -q -c qemu:///system dominfo $guest | grep -q 'Persistent: *yes'"
check "hook ran on $dest for the migration (agent's hook reports)" sh -c \
    "nsenter -t ${init_pid[$dest]} -a journalctl --no-pager -o verbose -u rackside-agent | grep -q 'F_OP=migrate'"
check "hook ran on c1 when the guest left (c1's journal)" sh -c \
    "journalctl -D '$work/c1/root/var/log/journal' --no-pager -o verbose -u rackside-agent | grep -q 'F_OP=release'"
# QEMU's migration stream opens with its magic, "QEVM", in the first
# packet; encrypted, it opens with a TLS handshake (a ClientHello record:
# 16 03 01, length, 01) and the magic appears nowhere in clear.
sniffed() { tcpdump -r "$work/migration.pcap" 2>/dev/null | wc -l; }
echo "migration wire: $(sniffed) packets captured on the hosts' network ($(sed -n 's/^\([0-9]*\) packets dropped by kernel/\1 dropped by the kernel/p' "$work/tcpdump.err"))"
check "the migration crossed the hosts' network (packets captured)" test "$(sniffed)" -gt 0
if [ "$tls" = 1 ]; then
    check "the migration stream is TLS on the wire (a ClientHello)" sh -c \
        "od -An -v -tx1 -w1 '$work/migration.pcap' | tr -d ' ' | paste -sd, | grep -Eq '(^|,)16,03,0[1-3],[0-9a-f]{2},[0-9a-f]{2},01(,|\$)'"
    check "no clear migration stream on the wire (no QEVM magic)" sh -c "! LC_ALL=C grep -qa QEVM '$work/migration.pcap'"
else
    check "the migration stream is in clear on the wire (QEVM magic), as RACK_TLS=0 asks" env LC_ALL=C grep -qa QEVM "$work/migration.pcap"
fi
check "policy followed the guest to $dest (nft)" test "$(policy_tables "$dest")" -ge 1
check "$dest applies the policy: TCP 7 open" port_is 7 open
check "$dest applies the policy: TCP 23 dropped, not refused" port_is 23 dropped
for h in c2 c3; do
    check "$h: agent never restarted" sh -c \
        "[ \"\$(nsenter -t ${init_pid[$h]} -a systemctl show -p NRestarts --value rackside-agent.service)\" = 0 ]"
done
check "c1: agent never restarted (c1's journal)" sh -c \
    "! journalctl -D '$work/c1/root/var/log/journal' --no-pager -u rackside-agent | grep -q 'Scheduled restart job'"

# The engineer asks where the guest went (c1's line is silent now: its
# host is off).
timeout 120 "${ctl[@]}" "${lines[@]}" --timeout 5 locate "$guest" >"$work/locate.out" 2>&1
sed 's/^/  controller| /' "$work/locate.out"
check "controller locate: $guest on $dest" grep -q "$guest: .* on $dest" "$work/locate.out"

# What the client saw, through the whole move.
echo >&7; exec 7>&-
wait "$probe_pid"; probe_pid=
sed 's/^/  probe| /' "$work/probe.err"
jq -r '.[] | "client: \(.guest): ping \(.ping_replies)/\(.pings_sent), longest silence \(.ping_silence.longest_ms|floor) ms; tcp echo \(.echoes_back)/\(.echoes_sent), longest silence \(.echo_silence.longest_ms|floor) ms, connection survived: \(.tcp_survived); http: \(.http)"' "$work/probe.json"
check "the client's TCP connection held through the move" jq -e '.[0].tcp_survived == true' "$work/probe.json"
check "the client fetched the guest's page after the move" jq -e '.[0].http.Ok // "" | startswith("rackside-guest")' "$work/probe.json"

phase "teardown"
if [ "$keep" = 1 ]; then
    for h in "${hosts[@]}"; do echo "$h=${init_pid[$h]}"; done > "$top/rack-keep.env"
    echo "RACK_KEEP=1: rack left up (init pids in $top/rack-keep.env); kill -TERM $$ to end"
    while :; do sleep 5; done
fi
cleanup
pending_phase=done; phase done
echo "test result: $( [ $fail = 0 ] && echo ok || echo FAILED ). $pass passed; $fail failed; 0 ignored"
[ $fail = 0 ]
