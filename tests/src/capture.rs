//! Traffic follows the VM: after a live migration the destination's QEMU
//! announces the VM's MAC with RARP frames (ethertype 0x8035), and the
//! guests' network bridge learns that the MAC now lives behind the
//! destination host's port. A packet socket in the switch namespace sees
//! the frames as they come in on each port; `bridge fdb` tells where the
//! switch sends the MAC now.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::cmd::{self, CmdError};
use crate::netns::{self, NetnsError};

const ETH_P_RARP: u16 = 0x8035;
/// Every protocol: a frame coming in on a bridge port is taken by the
/// bridge before protocol-specific sockets see it; only "all" taps see it
/// on the port itself.
const ETH_P_ALL: u16 = 0x0003;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("switch namespace")]
    Netns(#[from] NetnsError),
    #[error("could not open a packet socket")]
    Socket(#[source] std::io::Error),
    #[error("could not list the switch's ports")]
    Links(#[source] CmdError),
    #[error("could not read the bridge's forwarding table")]
    Fdb(#[source] CmdError),
}

/// One RARP frame seen on a port of the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RarpFrame {
    /// The switch port (interface) it was seen on.
    pub port: String,
    /// Came in from the port's far end (not sent out of it by the bridge).
    pub incoming: bool,
    /// Source MAC, lower-case `aa:bb:...`.
    pub src_mac: String,
    /// When the capture thread read it.
    pub at: Instant,
}

/// True when `frames` hold a RARP from `mac` that came in on `port`.
pub fn saw_rarp(frames: &[RarpFrame], port: &str, mac: &str) -> bool {
    frames
        .iter()
        .any(|f| f.incoming && f.port == port && f.src_mac.eq_ignore_ascii_case(mac))
}

/// The RARP frames from `mac` that came in on `port`, in order. One port:
/// a frame crossing a bridge is seen coming in on its port and again on
/// the bridge device.
pub fn rarps_from<'a>(frames: &'a [RarpFrame], port: &str, mac: &str) -> Vec<&'a RarpFrame> {
    frames
        .iter()
        .filter(|f| f.incoming && f.port == port && f.src_mac.eq_ignore_ascii_case(mac))
        .collect()
}

/// A frame as captured: interface index, packet type, source MAC, when.
type Seen = (i32, u8, [u8; 6], Instant);

/// Captures RARP frames on every interface of a namespace until finished.
#[derive(Debug)]
pub struct RarpWatch {
    netns: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<JoinHandle<()>>,
}

fn packet_socket(protocol: u16) -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked and
    // owned by exactly one OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol.to_be())) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and valid; nobody else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // A receive timeout so the capture thread sees the stop flag.
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: fd is valid; tv lives across the call and its size is given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// One frame with the interface it was seen on and its packet type
/// (`PACKET_OUTGOING` for frames the namespace sent).
fn recv_frame(fd: &OwnedFd, buf: &mut [u8]) -> Option<(usize, i32, u8)> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: buf and addr are valid for the lengths given and outlive the
    // call; the kernel writes at most those lengths.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut addr as *mut libc::sockaddr_ll).cast(),
            &mut len,
        )
    };
    (n > 0).then_some((n as usize, addr.sll_ifindex, addr.sll_pkttype))
}

impl RarpWatch {
    /// Starts capturing in namespace `netns` (the lab's switch namespace).
    pub fn start(netns: &str) -> Result<RarpWatch, CaptureError> {
        let fd =
            netns::run_in(netns, || packet_socket(ETH_P_ALL))?.map_err(CaptureError::Socket)?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Some((n, ifindex, pkttype)) = recv_frame(&fd, &mut buf) {
                        if n >= 14 && buf[12..14] == ETH_P_RARP.to_be_bytes() {
                            let mut src = [0u8; 6];
                            src.copy_from_slice(&buf[6..12]);
                            seen.lock().expect("rarp frames").push((
                                ifindex,
                                pkttype,
                                src,
                                Instant::now(),
                            ));
                        }
                    }
                }
            })
        };
        Ok(RarpWatch {
            netns: netns.to_owned(),
            stop,
            seen,
            thread: Some(thread),
        })
    }

    /// Stops capturing; the frames seen, by port name.
    pub fn finish(mut self) -> Result<Vec<RarpFrame>, CaptureError> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let links = cmd::stdout("ip", ["-n", &self.netns, "-o", "link", "show"])
            .map_err(CaptureError::Links)?;
        let names = parse_links(&links);
        let seen = self.seen.lock().expect("rarp frames").clone();
        Ok(seen
            .into_iter()
            .map(|(ifindex, pkttype, src, at)| RarpFrame {
                port: names
                    .iter()
                    .find(|(i, _)| *i == ifindex)
                    .map_or_else(|| format!("if{ifindex}"), |(_, n)| n.clone()),
                incoming: pkttype != libc::PACKET_OUTGOING,
                src_mac: src
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
                at,
            })
            .collect())
    }
}

impl Drop for RarpWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// (ifindex, name) from `ip -o link show` (`3: g-ha@if2: <...`).
pub fn parse_links(out: &str) -> Vec<(i32, String)> {
    out.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ": ");
            let index = it.next()?.trim().parse().ok()?;
            let name = it.next()?.split('@').next()?.to_owned();
            Some((index, name))
        })
        .collect()
}

/// The port `bridge fdb show` maps `mac` to (learned entries), if any.
pub fn parse_fdb(out: &str, mac: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        if !w.next()?.eq_ignore_ascii_case(mac) {
            return None;
        }
        let rest: Vec<&str> = w.collect();
        let dev = rest.iter().position(|x| *x == "dev")?;
        rest.get(dev + 1).map(|s| (*s).to_owned())
    })
}

/// Where the bridge `bridge` in namespace `netns` now sends frames for `mac`.
pub fn fdb_port(netns: &str, bridge: &str, mac: &str) -> Result<Option<String>, CaptureError> {
    let out = cmd::stdout("bridge", ["-n", netns, "fdb", "show", "br", bridge])
        .map_err(CaptureError::Fdb)?;
    Ok(parse_fdb(&out, mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_read_from_ip_output() {
        let out = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue\n\
                   4: g-hb@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master brguest\n\
                   5: brguest: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500\n";
        assert_eq!(
            parse_links(out),
            vec![(1, "lo".into()), (4, "g-hb".into()), (5, "brguest".into())]
        );
    }

    #[test]
    fn the_fdb_entry_of_a_mac_names_its_port() {
        let out = "33:33:00:00:00:01 dev brguest self permanent\n\
                   52:54:00:ab:cd:ef dev g-hb master brguest \n\
                   a2:11:22:33:44:55 dev g-ha vlan 1 master brguest permanent\n";
        assert_eq!(parse_fdb(out, "52:54:00:AB:CD:EF").as_deref(), Some("g-hb"));
        assert_eq!(parse_fdb(out, "52:54:00:00:00:00"), None);
    }

    #[test]
    fn a_rarp_counts_only_coming_in_on_the_port() {
        let f = |port: &str, incoming| RarpFrame {
            port: port.into(),
            incoming,
            src_mac: "52:54:00:01:02:03".into(),
            at: Instant::now(),
        };
        let frames = [f("g-ha", false), f("g-hb", true)];
        assert!(saw_rarp(&frames, "g-hb", "52:54:00:01:02:03"));
        assert!(!saw_rarp(&frames, "g-ha", "52:54:00:01:02:03"));
        assert!(!saw_rarp(&frames, "g-hb", "52:54:00:99:02:03"));
        assert_eq!(rarps_from(&frames, "g-hb", "52:54:00:01:02:03").len(), 1);
        assert!(rarps_from(&frames, "g-ha", "52:54:00:01:02:03").is_empty());
        assert!(rarps_from(&frames, "g-hb", "52:54:00:99:02:03").is_empty());
    }
}
