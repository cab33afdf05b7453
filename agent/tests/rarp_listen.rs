//! The agent's RARP listener on a real bridge, without libvirt: a network
//! namespace with a bridge `br0`, a veth whose one end is a port of it
//! and whose other end sends QEMU's announcement frame. What comes in on
//! a port reaches the bridge device and is heard; a frame from another MAC
//! is not news; an nftables `bridge` `input` chain dropping RARP leaves
//! the listener deaf (what agent/tests/lab_production.rs does to a lab
//! host). Root; run with the lab's lock:
//! `flock /work/lab.lock cargo test --locked -p rackside-agent --test rarp_listen -- --ignored`

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rackside_agent::migration::announce::{Mac, Nic, ETH_P_RARP};
use rackside_agent::migration::rarp::Watch;
use rackside_lab::netns::run_in;

const NS: &str = "rslab-rarptest";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace, removed when dropped.
struct Net;

impl Net {
    fn up() -> Net {
        let _ = Command::new("ip").args(["netns", "del", NS]).output();
        ip(&["netns", "add", NS]);
        let net = Net;
        for args in [
            &["link", "add", "br0", "type", "bridge"][..],
            &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
            &["link", "set", "v0", "master", "br0"],
            &["link", "set", "br0", "up"],
            &["link", "set", "v0", "up"],
            &["link", "set", "v1", "up"],
        ] {
            let mut a = vec!["-n", NS];
            a.extend_from_slice(args);
            ip(&a);
        }
        net
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NS]).output();
    }
}

fn clock() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

/// QEMU's announcement frame for `mac` (net/announce.c).
fn rarp(mac: Mac) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ETH_P_RARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 3]);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&[0; 4]);
    f.resize(60, 0);
    f
}

/// Sends `frame` out of v1, the veth end outside the bridge.
fn send_on_v1(frame: &[u8]) {
    run_in(NS, || {
        // SAFETY: socket(2) with constant arguments; checked; owned once.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from(ETH_P_RARP.to_be()),
            )
        };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: fd is fresh and valid.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new("v1").unwrap();
        // SAFETY: name is NUL-terminated and outlives the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        // SAFETY: sockaddr_ll is plain data; zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_RARP.to_be();
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        // SAFETY: fd, frame and addr are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(
            n,
            frame.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    })
    .expect("namespace");
}

fn watch(mac: Mac) -> Watch {
    run_in(NS, || {
        Watch::start(
            "t",
            &[Nic::Bridged {
                mac,
                bridge: "br0".into(),
            }],
            clock,
        )
    })
    .expect("namespace")
}

#[test]
#[ignore = "root: a network namespace and packet sockets (make test-lab)"]
fn a_rarp_coming_in_on_a_port_is_heard_on_the_bridge_unless_input_drops_it() {
    let _net = Net::up();
    let vm = Mac([0x52, 0x54, 0, 0xaa, 0xbb, 0x01]);
    let other = Mac([0x52, 0x54, 0, 0xaa, 0xbb, 0x02]);

    let w = watch(vm);
    assert!(w.wait(Duration::ZERO).unwatched.is_empty());
    send_on_v1(&rarp(other));
    let h = w.wait(Duration::from_millis(300));
    assert_eq!(h.watched[0].at, None, "another MAC's RARP is not the VM's");
    let sent = clock();
    send_on_v1(&rarp(vm));
    let h = w.wait(Duration::from_secs(5));
    let at = h.watched[0].at.expect("the VM's RARP heard on br0");
    eprintln!(
        "heard {} ms after it was sent",
        at.saturating_sub(sent).as_micros() as f64 / 1000.0
    );
    drop(w);

    // The bridge's own stack no longer gets RARP: nothing is heard.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            NS,
            "nft",
            "add table bridge deaf; \
             add chain bridge deaf input { type filter hook input priority 0; }; \
             add rule bridge deaf input ether type 0x8035 drop",
        ])
        .output()
        .expect("nft");
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = watch(vm);
    send_on_v1(&rarp(vm));
    let h = w.wait(Duration::from_millis(500));
    assert_eq!(h.watched[0].at, None, "dropped at the bridge's input");
}
