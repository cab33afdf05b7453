//! The hook's network policy against real packets: real nftables in a
//! network namespace that plays the host, no libvirt. Needs root:
//!
//! `flock /work/lab.lock cargo test --locked -p rackside-hook --test nft_packets -- --ignored --test-threads=1`
//!
//! The "host" namespace has a bridge `br0` (10.99.0.1/24) with three
//! ports: `vnet7` and `vnet8`, veths named as libvirt names taps, whose
//! other ends are `eth0` in the "VM" namespaces vm7 (10.99.0.7) and vm8
//! (10.99.0.8), and `cl0` to a client namespace (10.99.0.100). A fourth
//! "VM", vm9, sits on `vnet9`, a routed tap in no bridge (10.98.0.9,
//! reached through the host at 10.98.0.1). The hook binary is run as
//! libvirt runs it, with `nft` run inside the host namespace.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_rackside-hook");
const HOST: &str = "rsnft-host";
const CLIENT: &str = "rsnft-cl";
const VMS: [&str; 3] = ["rsnft-vm7", "rsnft-vm8", "rsnft-vm9"];
/// Two VM names that share far more than any old name prefix.
const PREFIX: &str = "customer-four-two-production-web-frontend-replica";

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `sh -c CMD` inside a namespace; panics unless it succeeds.
fn ns(netns: &str, cmd: &str) -> String {
    let o = run(Command::new("ip").args(["netns", "exec", netns, "sh", "-c", cmd]));
    assert!(
        o.status.success(),
        "{netns}: {cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `sh -c CMD` inside a namespace, whatever its outcome.
fn try_ns(netns: &str, cmd: &str) -> Output {
    run(Command::new("ip").args(["netns", "exec", netns, "sh", "-c", cmd]))
}

fn spawn_ns(netns: &str, cmd: &str) -> Child {
    Command::new("ip")
        .args(["netns", "exec", netns, "sh", "-c", &format!("exec {cmd}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The namespaces, their servers and a scratch directory; all gone on
/// drop, also when a check fails.
struct Rig {
    dir: PathBuf,
    servers: Vec<Child>,
}

fn remove_namespaces() {
    for n in std::iter::once(HOST).chain([CLIENT]).chain(VMS) {
        let _ = Command::new("ip")
            .args(["netns", "del", n])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        remove_namespaces();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rig {
    fn up() -> Rig {
        // A run that was killed leaves its namespaces: start clean.
        remove_namespaces();
        let dir = std::env::temp_dir().join(format!("rsnft-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut rig = Rig {
            dir,
            servers: Vec::new(),
        };
        for n in std::iter::once(HOST).chain([CLIENT]).chain(VMS) {
            run(Command::new("ip").args(["netns", "add", n]));
            ns(n, "ip link set lo up");
        }
        ns(
            HOST,
            "ip link add br0 type bridge && ip addr add 10.99.0.1/24 dev br0 && ip link set br0 up \
             && sysctl -qw net.ipv4.ip_forward=1",
        );
        for (port, peer, addr) in [
            ("vnet7", VMS[0], "10.99.0.7/24"),
            ("vnet8", VMS[1], "10.99.0.8/24"),
            ("cl0", CLIENT, "10.99.0.100/24"),
        ] {
            ns(
                HOST,
                &format!(
                    "ip link add {port} type veth peer name eth0 netns {peer} \
                     && ip link set {port} master br0 && ip link set {port} up"
                ),
            );
            ns(
                peer,
                &format!(
                    "ip addr add {addr} dev eth0 && ip link set eth0 up \
                     && ip route add default via 10.99.0.1"
                ),
            );
        }
        ns(
            HOST,
            &format!(
                "ip link add vnet9 type veth peer name eth0 netns {} \
                 && ip addr add 10.98.0.1/24 dev vnet9 && ip link set vnet9 up",
                VMS[2]
            ),
        );
        ns(
            VMS[2],
            "ip addr add 10.98.0.9/24 dev eth0 && ip link set eth0 up \
             && ip route add default via 10.98.0.1",
        );
        // Echo servers: TCP 22 and 23 and UDP 5353 everywhere.
        for n in VMS.iter().copied().chain([CLIENT]) {
            for port in [22, 23, 9000] {
                let c = spawn_ns(n, &format!("busybox nc -ll -p {port} -e /bin/cat"));
                rig.servers.push(c);
            }
            rig.servers
                .push(spawn_ns(n, "socat UDP4-RECVFROM:5353,fork PIPE"));
        }
        // nft as the hook runs it, inside the host.
        let nft = rig.dir.join("nft");
        std::fs::write(
            &nft,
            format!("#!/bin/sh\nexec ip netns exec {HOST} nft \"$@\"\n"),
        )
        .unwrap();
        std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            rig.dir.join("agent.toml"),
            format!("[state]\nrun_dir = \"{}\"\n", rig.dir.display()),
        )
        .unwrap();
        // Wait until every server answers on loopback.
        for n in VMS.iter().copied().chain([CLIENT]) {
            for port in [22, 23, 9000] {
                let ok = (0..100).any(|_| {
                    let o = try_ns(n, &format!("echo up | {}", tcp_client("127.0.0.1", port)));
                    let up = String::from_utf8_lossy(&o.stdout).contains("up");
                    if !up {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    up
                });
                assert!(ok, "{n}: no server on {port}");
            }
        }
        rig
    }

    /// Runs the hook as libvirt would: `VM OP SUBOP -`, XML on stdin.
    fn hook(&self, vm: &str, op: &str, subop: &str, xml: &str) -> Output {
        let mut child = Command::new(BIN)
            .args([vm, op, subop, "-"])
            .env("RACKSIDE_HOOK_FORCE_QEMU", "1")
            .env("RACKSIDE_HOOK_CONFIG", self.dir.join("agent.toml"))
            .env("RACKSIDE_NFT", self.dir.join("nft"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(xml.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.stdout.is_empty());
        o
    }
}

fn tcp_client(ip: &str, port: u16) -> String {
    format!("socat -t 5 - TCP4:{ip}:{port},connect-timeout=2")
}

/// A line sent from `from` to `ip:port` comes back (echo server).
fn tcp_answers(from: &str, ip: &str, port: u16) -> bool {
    let token = format!("tcp-{from}-{ip}-{port}");
    let o = try_ns(from, &format!("echo {token} | {}", tcp_client(ip, port)));
    String::from_utf8_lossy(&o.stdout).contains(&token)
}

fn udp_answers(from: &str, ip: &str, port: u16) -> bool {
    let token = format!("udp-{from}-{ip}-{port}");
    let o = try_ns(
        from,
        &format!("echo {token} | socat -t 2 - UDP4:{ip}:{port}"),
    );
    String::from_utf8_lossy(&o.stdout).contains(&token)
}

fn pings(from: &str, ip: &str) -> bool {
    try_ns(from, &format!("busybox ping -c 1 -W 2 {ip}"))
        .status
        .success()
}

/// An ARP request from `from` for `ip`, with the neighbour cache emptied
/// first, is answered.
fn arp_answers(from: &str, ip: &str) -> bool {
    ns(from, "ip neigh flush dev eth0");
    try_ns(from, &format!("busybox arping -f -c 3 -w 3 -I eth0 {ip}"))
        .status
        .success()
}

/// A RARP announcement (ethertype 0x8035, as QEMU sends after a
/// migration) broadcast from `from` reaches `to`'s eth0.
fn rarp_reaches(from: &str, to: &str) -> bool {
    let recv = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x8035))
s.bind(("eth0", 0))
s.settimeout(10)
print("ready", flush=True)
try:
    while True:
        f = s.recv(2048)
        if f[12:14] == b"\x80\x35" and b"\x52\x54\x00\xaa\xbb\xcc" in f[14:]:
            print("got", flush=True)
            break
except socket.timeout:
    print("timeout", flush=True)
"#;
    let send = r#"
import socket, time
mac = b"\x52\x54\x00\xaa\xbb\xcc"
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
rarp = b"\x00\x01\x08\x00\x06\x04\x00\x03" + mac + b"\0" * 4 + mac + b"\0" * 4
frame = b"\xff" * 6 + mac + b"\x80\x35" + rarp + b"\0" * 18
for _ in range(5):
    s.send(frame)
    time.sleep(0.2)
"#;
    let mut rx = Command::new("ip")
        .args(["netns", "exec", to, "python3", "-c", recv])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(rx.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let tx = run(Command::new("ip").args(["netns", "exec", from, "python3", "-c", send]));
    assert!(
        tx.status.success(),
        "{}",
        String::from_utf8_lossy(&tx.stderr)
    );
    let got = lines.next().unwrap().unwrap();
    rx.wait().unwrap();
    got == "got"
}

fn uuid(n: u8) -> String {
    format!("5e1ec7ed-0000-4000-8000-0000000000{n:02x}")
}

fn table(n: u8) -> String {
    format!("rackside_5e1ec7ed0000400080000000000000{n:02x}")
}

fn domain(name: &str, n: u8, tap: &str) -> String {
    format!(
        r#"<domain type='qemu'>
  <name>{name}</name>
  <uuid>{}</uuid>
  <memory unit='MiB'>64</memory>
  <metadata>
    <rs:policy xmlns:rs="https://rackside.dev/xmlns/policy/1">
      <rs:allow proto="tcp" port="22" from="10.0.0.0/8"/>
    </rs:policy>
  </metadata>
  <devices>
    <interface type='bridge'><mac address='52:54:00:00:00:{n:02x}'/><source bridge='br0'/><target dev='{tap}'/><model type='virtio'/></interface>
  </devices>
</domain>"#,
        uuid(n)
    )
}

fn tables() -> String {
    ns(HOST, "nft list tables")
}

#[test]
#[ignore = "needs root and nftables: run with --ignored under the lab lock"]
fn policy_filters_real_packets_on_bridged_and_routed_taps() {
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "needs root (network namespaces and nftables)"
    );
    let rig = Rig::up();
    let (vm7, vm8, vm9) = (VMS[0], VMS[1], VMS[2]);

    // Without a policy everything answers: the rig itself blocks nothing.
    assert!(tcp_answers(CLIENT, "10.99.0.7", 23));
    assert!(tcp_answers(CLIENT, "10.98.0.9", 23));
    assert!(udp_answers(CLIENT, "10.99.0.7", 5353));
    assert!(udp_answers(CLIENT, "10.98.0.9", 5353));
    assert!(pings(CLIENT, "10.99.0.7"));
    // The old design, `inet forward` on the tap's name, filters nothing on
    // a bridge: br_netfilter hands that hook bridged packets with the
    // bridge, not the port, as the device.
    ns(
        HOST,
        "nft add table inet old \
         && nft add chain inet old probe '{ type filter hook forward priority 0; policy accept; }' \
         && nft add rule inet old probe oifname vnet7 counter drop \
         && nft add rule inet old probe oifname br0 counter",
    );
    assert!(tcp_answers(CLIENT, "10.99.0.7", 23), "old design filtered");
    let old = ns(HOST, "nft list chain inet old probe");
    eprintln!("inet forward with a bridged VM:\n{old}");
    assert!(
        old.contains("oifname \"vnet7\" counter packets 0 "),
        "{old}"
    );
    assert!(!old.contains("oifname \"br0\" counter packets 0 "), "{old}");
    ns(HOST, "nft delete table inet old");

    let (name7, name8) = (format!("{PREFIX}-7"), format!("{PREFIX}-8"));
    let xml7 = domain(&name7, 7, "vnet7");
    let xml8 = domain(&name8, 8, "vnet8");
    let xml9 = domain("routed9", 9, "vnet9");
    rig.hook(&name7, "started", "begin", &xml7);
    rig.hook(&name8, "started", "begin", &xml8);
    rig.hook("routed9", "started", "begin", &xml9);
    let t = tables();
    for n in [7, 8, 9] {
        for family in ["bridge", "inet"] {
            assert!(t.contains(&format!("table {family} {}\n", table(n))), "{t}");
        }
    }

    // Bridged: the allowed port answers, the others do not.
    assert!(tcp_answers(CLIENT, "10.99.0.7", 22), "allowed port");
    assert!(
        !tcp_answers(CLIENT, "10.99.0.7", 23),
        "denied port answered"
    );
    assert!(
        !udp_answers(CLIENT, "10.99.0.7", 5353),
        "denied UDP answered"
    );
    assert!(!pings(CLIENT, "10.99.0.7"), "ICMP is not allowed");
    // The VM's own connections work: replies come back in.
    assert!(tcp_answers(vm7, "10.99.0.100", 9000), "VM's outgoing TCP");
    assert!(udp_answers(vm7, "10.99.0.100", 5353), "VM's outgoing UDP");
    assert!(pings(vm7, "10.99.0.100"), "VM's outgoing ping");
    // Address resolution and announcements always pass.
    assert!(arp_answers(CLIENT, "10.99.0.7"), "ARP to the VM");
    assert!(arp_answers(vm7, "10.99.0.100"), "ARP from the VM");
    assert!(rarp_reaches(CLIENT, vm7), "RARP to the VM");
    assert!(rarp_reaches(vm7, CLIENT), "RARP from the VM");
    // Between two VMs with a policy each: only the allowed port.
    assert!(tcp_answers(vm8, "10.99.0.7", 22));
    assert!(!tcp_answers(vm8, "10.99.0.7", 23));

    // Routed: the same rules, with conntrack.
    assert!(tcp_answers(CLIENT, "10.98.0.9", 22), "routed allowed port");
    assert!(!tcp_answers(CLIENT, "10.98.0.9", 23), "routed denied port");
    assert!(!udp_answers(CLIENT, "10.98.0.9", 5353));
    assert!(tcp_answers(vm9, "10.99.0.100", 9000), "routed VM's own TCP");
    assert!(udp_answers(vm9, "10.99.0.100", 5353), "routed VM's own UDP");

    // vm7 stops and is released: its tables go, vm8's (whose name shares
    // its first fifty characters) stay and still filter.
    rig.hook(&name7, "stopped", "end", &xml7);
    rig.hook(&name7, "release", "end", &xml7);
    let t = tables();
    assert!(!t.contains(&table(7)), "{t}");
    for n in [8, 9] {
        assert!(t.contains(&format!("table bridge {}\n", table(n))), "{t}");
        assert!(t.contains(&format!("table inet {}\n", table(n))), "{t}");
    }
    assert!(
        tcp_answers(CLIENT, "10.99.0.7", 23),
        "vm7 no longer filtered"
    );
    assert!(!tcp_answers(CLIENT, "10.99.0.8", 23), "vm8 lost its policy");
    assert!(tcp_answers(CLIENT, "10.99.0.8", 22));
    // A second release (libvirt's retry, or a table already gone) is fine.
    rig.hook(&name7, "release", "end", &xml7);

    rig.hook(&name8, "release", "end", &xml8);
    rig.hook("routed9", "release", "end", &xml9);
    assert!(!tables().contains("rackside_"), "{}", tables());
    assert!(tcp_answers(CLIENT, "10.98.0.9", 23));
    drop(rig);
}
