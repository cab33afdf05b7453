#!/usr/bin/env bash
# A rack of three hosts as production has them, end to end (issue 13,
# point 5; a PROTOTYPE). Three Debian 12 system containers (systemd-nspawn
# --boot: systemd as PID 1), each with libvirtd and QEMU from Debian's
# packages (bookworm-backports: QEMU 10.0, libvirt 11.3) started by
# systemd through socket activation, the rackside deb installed with dpkg
# inside so its maintainer scripts run (postinst enables and starts the
# agent, and reloads libvirtd so it loads the hook), each host's management
# line a pty of a socat null modem bind-mounted in as /dev/ttyS0. A small
# guest runs on c1; the controller, outside, evacuates c1 over its line:
# SAFE, and the guest runs exactly once, on c2 or c3.
#
# Must run as root, under `flock /work/lab.lock` on shared machines (it
# starts libvirtd and QEMU). Every container, mount, cgroup, network
# namespace and process it starts is removed on exit.
#
# Obstacles met and their fixes are written where they are dealt with,
# marked "Obstacle:".
set -uo pipefail
deb=${1:?usage: rack.sh PACKAGE.deb}
deb=$(readlink -f "$deb")
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
guest=rackvm
# Lines added to every host's /etc/libvirt/qemu.conf (see "Obstacle:"
# notes at the boot below for why each is there).
qemu_extra=${RACK_QEMU_CONF-}
# 1: the guest has a NIC (a routed tap) and a network policy in its
# metadata, so the hook loads nftables tables where it runs and removes
# them where it leaves: the hook's nft calls inside the containers.
nic=${RACK_NIC:-1}
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
command -v bc >/dev/null || die "bc not installed"

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
    for p in "${socat_pids[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for h in "${hosts[@]}"; do
        mountpoint -q "$work/$h/root" && umount "$work/$h/root"
        ip netns delete "$tag-$h" 2>/dev/null
    done
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
    for r in "$old"/c*/root; do mountpoint -q "$r" && umount "$r"; done
    for ns in $(ip netns list | awk '{print $1}' | grep "^rr$p-"); do ip netns delete "$ns"; done
    for cg in /sys/fs/cgroup/systemd/rr$p /sys/fs/cgroup/unified/rr$p; do
        [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    rm -rf "$old"
done
mkdir -p "$work"/{lines,guest,pkg}

# ---------------------------------------------------------------- the guest
# The lab's guest, reduced: the Debian cloud kernel from /boot and an
# initramfs of busybox-static whose /init fills 16 MiB of memory, keeps
# dirtying a slice and prints a numbered tick through the kernel's log
# (tests/src/guest.rs says why not a tty write). The files are
# bind-mounted read-only at the same path in every container, as a shared
# filesystem would be, so the migration finds them on the destination.
kernel=$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort | tail -1)
[ -n "$kernel" ] || die "no Debian cloud kernel in /boot (install linux-image-cloud-amd64)"
[ -x /bin/busybox ] && file -L /bin/busybox | grep -q 'statically linked' || die "busybox-static needed at /bin/busybox"
guest_dir=/var/lib/rackside-rack-guest
ird=$work/guest/root
mkdir -p "$ird"/{bin,dev,proc,sys,mnt}
cp /bin/busybox "$ird/bin/busybox"; ln -s busybox "$ird/bin/sh"
mknod -m 600 "$ird/dev/console" c 5 1
cat > "$ird/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "<3>$*" > /dev/kmsg 2>/dev/null || echo "$*"; }
mount -t tmpfs -o size=20m tmpfs /mnt
dd if=/dev/urandom of=/mnt/fill bs=1M count=16 2>/dev/null
say "rackside-guest: ready"
i=0
while :; do
  i=$((i + 1))
  dd if=/dev/urandom of=/mnt/fill bs=1M count=1 seek=$((i % 16)) conv=notrunc 2>/dev/null
  say "rackside-tick $i"
  sleep 1
done
EOF
chmod 755 "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet) > "$work/guest/initrd" || die "cpio failed"
install -m 0644 "$kernel" "$work/guest/vmlinuz"
chmod 0644 "$work/guest/initrd"; chmod 0755 "$work/guest"

# ---------------------------------------------------------------- the package
# The controller at the rack runs the one the deb ships.
dpkg-deb -x "$deb" "$work/pkg" || die "cannot unpack $deb"
controller=$work/pkg/usr/bin/rackside-controller
[ -x "$controller" ] || die "no rackside-controller in $deb"

# ---------------------------------------------------------------- network
# A switch namespace with a bridge, and one namespace per host joined to
# it by a veth: libvirtd on each host reaches the others over TCP.
# Nothing here leaves the machine.
phase "network"
ip netns add "$tag-sw" || die "cannot make netns $tag-sw"
ip -n "$tag-sw" link add br0 type bridge
ip -n "$tag-sw" link set br0 up
ip -n "$tag-sw" link set lo up
for h in "${hosts[@]}"; do
    ip netns add "$tag-$h" || die "cannot make netns $tag-$h"
    ip link add "$tag$h" netns "$tag-sw" type veth peer name eth0 netns "$tag-$h" || die "veth for $h"
    ip -n "$tag-sw" link set "$tag$h" master br0 up
    ip -n "$tag-$h" addr add "${addr[$h]}/24" dev eth0
    ip -n "$tag-$h" link set eth0 up
    ip -n "$tag-$h" link set lo up
done

# ---------------------------------------------------------------- lines
# One null modem per host: the agent's end goes into the container as
# /dev/ttyS0, the controller opens the other end, out here.
for h in "${hosts[@]}"; do
    socat "pty,link=$work/lines/$h-agent,raw,echo=0" "pty,link=$work/lines/$h-rack,raw,echo=0" \
        </dev/null >"$work/lines/$h.socat.log" 2>&1 &
    socat_pids+=($!)
done
for h in "${hosts[@]}"; do
    for _ in $(seq 100); do [ -L "$work/lines/$h-rack" ] && [ -L "$work/lines/$h-agent" ] && break; sleep 0.1; done
    [ -L "$work/lines/$h-agent" ] || die "no pty for $h"
done

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
    # libvirtd over TCP without authentication: test rack only. With
    # socket activation libvirtd ignores listen_tcp; libvirtd-tcp.socket
    # is what listens. Every host needs its own host_uuid: libvirt refuses
    # to migrate between hosts that share one, and in a container it
    # cannot read one from SMBIOS (no /dev/mem).
    cat >> "$root/etc/libvirt/libvirtd.conf" <<EOF

# rackside rack test: never outside a test
auth_tcp = "none"
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
EOF
    systemctl --root="$root" enable libvirtd-tcp.socket >/dev/null 2>&1 || die "cannot enable libvirtd-tcp.socket in $h"
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
nspawn_extra=
# Obstacle: a guest NIC is a tap device: QEMU (through libvirt) opens
# /dev/net/tun, which nspawn does not put in a container's /dev.
[ "$nic" = 1 ] && nspawn_extra="--bind=/dev/net/tun"
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
for h in "${hosts[@]}"; do
    o=c1; [ "$h" = c1 ] && o=c2
    check "$h reaches $o's libvirtd over TCP" inside "$h" virsh -q -c "qemu+tcp://${addr[$o]}/system" version
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
# Peers are the other two hosts; migrations in clear text (no
# certificates in this test: [migration] tls = false). A drop-in turns on
# the agent's debug lines for hook reports, which show that libvirtd runs
# the hook the postinst made it load.
phase "agents configured and restarted"
for h in "${hosts[@]}"; do
    {
        printf '[host]\nname = "%s"\nlocation = "rack test / %s"\n\n' "$h" "$h"
        printf '[[console]]\npath = "/dev/ttyS0"\n\n'
        for o in "${hosts[@]}"; do
            [ "$o" = "$h" ] && continue
            printf '[[peer]]\nname = "%s"\nuri = "qemu+tcp://%s/system"\nmigrate_uri = "tcp://%s"\n\n' "$o" "${addr[$o]}" "${addr[$o]}"
        done
        # Every container sees the whole machine's /proc/stat and
        # /proc/meminfo: the CPU filter would judge the machine (a busy
        # CI neighbour makes every host look loaded), so it is off.
        printf '[placement]\nmem_reserve_mib = 256\nload_threshold = 1.0\n\n[migration]\ntls = false\n'
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
phase "guest started on c1"
cat > "$work/c1/root/root/$guest.xml" <<EOF
<domain type='qemu'>
  <name>$guest</name>
  $( [ "$nic" = 1 ] && echo "<metadata><rs:policy xmlns:rs='https://rackside.dev/xmlns/policy/1'><rs:allow proto='tcp' port='22'/><rs:allow proto='icmp'/></rs:policy></metadata>" )
  <memory unit='MiB'>128</memory>
  <currentMemory unit='MiB'>128</currentMemory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$guest_dir/vmlinuz</kernel>
    <initrd>$guest_dir/initrd</initrd>
    <cmdline>console=ttyS0 quiet printk.time=0 panic=-1</cmdline>
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
    $( [ "$nic" = 1 ] && echo "<interface type='ethernet'><model type='virtio'/></interface>" )
    <memballoon model='none'/>
  </devices>
</domain>
EOF
check "guest defined on c1" inside c1 virsh -q -c qemu:///system define "/root/$guest.xml"
check "guest started on c1" inside c1 virsh -q -c qemu:///system start "$guest"
ticks() { # ticks HOST: the guest's last tick there
    inside "$1" sh -c "grep -a -o 'rackside-tick [0-9]*' /var/log/libvirt/qemu/$guest.serial.log 2>/dev/null | tail -1 | cut -d' ' -f2"
}
ticking() {
    local h=$1 after=${2:-0} t
    for _ in $(seq 120); do
        t=$(ticks "$h"); [ -n "$t" ] && [ "$t" -gt "$after" ] && { echo "tick $t"; return 0; }
        sleep 0.5
    done
    inside "$h" tail -5 "/var/log/libvirt/qemu/$guest.serial.log"; inside "$h" tail -20 "/var/log/libvirt/qemu/$guest.log"; return 1
}
check "guest ticks on c1" ticking c1 2
# For the record: where QEMU runs (cgroup) and as whom.
qpid=$(inside c1 pgrep -f "guest=$guest" | head -1)
[ -n "$qpid" ] && echo "note: c1's QEMU: user $(inside c1 ps -o user= -p "$qpid"), cgroup $(inside c1 cat /proc/"$qpid"/cgroup | tr '\n' ' ')"
before=$(ticks c1)
uuid=$(inside c1 virsh -q -c qemu:///system domuuid "$guest" | tr -d '-' | head -1)
policy_tables() { inside "$1" nft list tables 2>/dev/null | grep -c "rackside_$uuid"; }
if [ "$nic" = 1 ]; then
    check "hook loaded the guest's policy on c1 (nft tables rackside_$uuid)" test "$(policy_tables c1)" -ge 1
fi

# ---------------------------------------------------------------- evacuation
phase "controller: evacuate c1"
lines=()
for h in "${hosts[@]}"; do lines+=(--line "$h=$work/lines/$h-rack"); done
timeout 120 "$controller" "${lines[@]}" status >"$work/status.out" 2>&1
rc=$?
sed 's/^/  controller| /' "$work/status.out"
check "controller status: every line up" test "$rc" = 0
timeout 900 "$controller" "${lines[@]}" evacuate c1 --wait 600 >"$work/controller.out" 2>&1
rc=$?
sed 's/^/  controller| /' "$work/controller.out"
check "controller exit 0" test "$rc" = 0
check "controller says SAFE" grep -q 'SAFE TO POWER OFF' "$work/controller.out"
check "controller does not say NOT SAFE" sh -c "! grep -q 'NOT SAFE' '$work/controller.out'"

phase "checks after the move"
declare -A state=()
where=()
for h in "${hosts[@]}"; do
    state[$h]=$(inside "$h" virsh -q -c qemu:///system domstate "$guest" 2>/dev/null | head -1)
    echo "  $h: ${state[$h]:-absent}"
    [ "${state[$h]:-}" = running ] && where+=("$h")
done
check "guest running on exactly one host" test "${#where[@]}" = 1
check "and that host is not c1" test "${where[0]:-c1}" != c1
dest=${where[0]:-c2}
check "c1 has no running guest" sh -c "[ -z \"\$(nsenter -t ${init_pid[c1]} -a virsh -q -c qemu:///system list --name)\" ]"
check "guest keeps ticking on $dest (alive, from tick $before on)" ticking "$dest" "$before"
check "guest persistent on $dest" sh -c "nsenter -t ${init_pid[$dest]} -a virsh -q -c qemu:///system dominfo $guest | grep -q 'Persistent: *yes'"
check "hook ran on $dest for the migration (agent's hook reports)" sh -c \
    "nsenter -t ${init_pid[$dest]} -a journalctl --no-pager -o verbose -u rackside-agent | grep -q 'F_OP=migrate'"
check "hook ran on c1 when the guest left" sh -c \
    "nsenter -t ${init_pid[c1]} -a journalctl --no-pager -o verbose -u rackside-agent | grep -q 'F_OP=release'"
if [ "$nic" = 1 ]; then
    check "policy followed the guest to $dest (nft)" test "$(policy_tables "$dest")" -ge 1
    check "policy removed from c1 (nft)" test "$(policy_tables c1)" = 0
fi
for h in "${hosts[@]}"; do
    check "$h: agent never restarted" sh -c \
        "[ \"\$(nsenter -t ${init_pid[$h]} -a systemctl show -p NRestarts --value rackside-agent.service)\" = 0 ]"
done
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
