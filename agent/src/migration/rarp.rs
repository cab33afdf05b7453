//! Listening on this host's bridges for the destination's announcement of
//! a migrating VM ([`super::announce`] says why a RARP heard here means
//! that, and holds the pure parts).
//!
//! One packet socket per bridge, for RARP only (the kernel filters by
//! ethertype), bound to the bridge device: a broadcast coming in on any
//! port of the bridge is delivered to the bridge device, and seen there.
//! One thread (`rarp-VM`) reads them and notes when each of the VM's MACs
//! is first heard, until the watch is dropped. Opening a socket needs
//! CAP_NET_RAW. Nothing here can fail a migration: a bridge that cannot be
//! watched becomes a reason in what is heard.

use std::ffi::CString;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags};

use super::announce::{by_bridge, rarp_sender, Heard, Nic, Watched, ETH_P_RARP};
use crate::hookio::chain;

#[derive(Debug, thiserror::Error)]
pub enum RarpError {
    #[error("no interface {0} on this host")]
    NoBridge(String),
    #[error("cannot open a packet socket")]
    Socket(#[source] std::io::Error),
    #[error("cannot bind a packet socket to {0}")]
    Bind(String, #[source] std::io::Error),
    #[error("cannot start the listening thread")]
    Thread(#[source] std::io::Error),
}

impl RarpError {
    /// The whole chain, with the cure when it is the usual one.
    fn reason(&self) -> String {
        let denied = matches!(self, RarpError::Socket(e) if e.kind() == std::io::ErrorKind::PermissionDenied);
        let mut s = chain(self);
        if denied {
            s.push_str(" (the agent needs CAP_NET_RAW)");
        }
        s
    }
}

#[derive(Debug)]
struct Shared {
    heard: Mutex<Heard>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Heard> {
        self.heard.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Listening for one VM's announcement; stops when dropped.
#[derive(Debug)]
pub struct Watch {
    shared: Arc<Shared>,
}

/// A socket on one bridge.
#[derive(Debug)]
struct Ear {
    fd: OwnedFd,
    bridge: String,
    ifindex: i32,
}

impl Watch {
    /// Starts listening for `vm`'s `nics` on their bridges. `clock` is the
    /// migration loop's: what is heard is timed on it.
    pub fn start(vm: &str, nics: &[Nic], clock: fn() -> Duration) -> Watch {
        let (bridges, unwatched) = by_bridge(nics);
        let mut heard = Heard {
            watched: Vec::new(),
            unwatched,
        };
        let mut ears = Vec::new();
        for (bridge, macs) in bridges {
            match open(&bridge) {
                Ok(ear) => {
                    heard.watched.extend(macs.iter().map(|m| Watched {
                        mac: *m,
                        bridge: bridge.clone(),
                        at: None,
                    }));
                    ears.push(ear);
                }
                Err(e) => heard.unwatched.push(cannot_watch(&bridge, &macs, &e)),
            }
        }
        let shared = Arc::new(Shared {
            heard: Mutex::new(heard),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        if ears.is_empty() {
            return Watch { shared };
        }
        let s = shared.clone();
        let name: String = format!("rarp-{vm}").chars().take(15).collect();
        let vm = vm.to_owned();
        if let Err(e) = std::thread::Builder::new()
            .name(name)
            .spawn(move || listen(&s, &ears, clock, &vm))
        {
            // The sockets went with the closure; nothing is heard.
            let why = chain(&RarpError::Thread(e));
            let mut h = shared.lock();
            let lost: Vec<Watched> = std::mem::take(&mut h.watched);
            for w in lost {
                h.unwatched
                    .push(format!("cannot watch {} for {}: {why}", w.bridge, w.mac));
            }
        }
        Watch { shared }
    }

    /// A watch that hears nothing, for one reason.
    pub fn blind(why: String) -> Watch {
        Watch {
            shared: Arc::new(Shared {
                heard: Mutex::new(Heard::blind(why)),
                changed: Condvar::new(),
                stop: AtomicBool::new(false),
            }),
        }
    }

    /// Waits up to `timeout` while a watched NIC has not been heard;
    /// returns at once when none is left. What was heard.
    pub fn wait(&self, timeout: Duration) -> Heard {
        let end = Instant::now() + timeout;
        let mut h = self.shared.lock();
        while h.waiting() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            h = self
                .shared
                .changed
                .wait_timeout(h, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        h.clone()
    }
}

impl super::run::AnnounceWatch for Watch {
    fn wait(&mut self, timeout: Duration) -> Heard {
        Watch::wait(self, timeout)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // The thread sees this within one poll interval and closes its
        // sockets; nobody waits for it.
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn cannot_watch(bridge: &str, macs: &[super::announce::Mac], e: &RarpError) -> String {
    let macs: Vec<String> = macs.iter().map(ToString::to_string).collect();
    format!(
        "cannot watch {bridge} for {}: {}",
        macs.join(", "),
        e.reason()
    )
}

/// How often the thread looks at its stop flag.
const POLL_MS: u16 = 100;

fn listen(shared: &Shared, ears: &[Ear], clock: fn() -> Duration, vm: &str) {
    // A RARP is 60 bytes; a longer frame is cut, which is fine.
    let mut buf = [0u8; 128];
    while !shared.stop.load(Ordering::Relaxed) {
        let mut fds: Vec<PollFd<'_>> = ears
            .iter()
            .map(|e| PollFd::new(e.fd.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, POLL_MS) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                let mut h = shared.lock();
                h.unwatched.push(format!("listening for RARP failed: {e}"));
                shared.changed.notify_all();
                return;
            }
        }
        for ear in ears {
            while let Some((n, ifindex, pkttype)) = recv(&ear.fd, &mut buf) {
                // Frames queued between socket() and bind() may come from
                // elsewhere; frames this host sent are not news.
                if ifindex != ear.ifindex || pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                let Some(mac) = rarp_sender(&buf[..n]) else {
                    continue;
                };
                let at = clock();
                let mut h = shared.lock();
                if h.hear(mac, at) {
                    tracing::debug!(vm = %vm, mac = %mac, bridge = %ear.bridge, "RARP heard");
                    shared.changed.notify_all();
                }
            }
        }
    }
}

/// A packet socket for RARP on `bridge`, non-blocking.
fn open(bridge: &str) -> Result<Ear, RarpError> {
    let no_bridge = || RarpError::NoBridge(bridge.to_owned());
    let name = CString::new(bridge).map_err(|_| no_bridge())?;
    // SAFETY: name is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    let ifindex = i32::try_from(index).map_err(|_| no_bridge())?;
    if ifindex == 0 {
        return Err(no_bridge());
    }
    let proto = ETH_P_RARP.to_be();
    // SAFETY: socket(2) with constant arguments; the result is checked and
    // owned by exactly one OwnedFd.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(RarpError::Socket(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is fresh and valid; nobody else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex;
    // SAFETY: fd is valid; addr lives across the call and its size is given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(RarpError::Bind(
            bridge.to_owned(),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(Ear {
        fd,
        bridge: bridge.to_owned(),
        ifindex,
    })
}

/// One queued frame: its length, the interface it came in on and its
/// packet type; None when nothing is queued (or on an error: the poll
/// loop tries again).
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> Option<(usize, i32, u8)> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: buf and addr are valid for the lengths given and outlive the
    // call; the kernel writes at most those lengths.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&mut addr as *mut libc::sockaddr_ll).cast(),
            &mut len,
        )
    };
    // A frame longer than buf comes back cut to buf's length.
    let n = usize::try_from(n).ok()?.min(buf.len());
    Some((n, addr.sll_ifindex, addr.sll_pkttype))
}

#[cfg(test)]
mod tests {
    use super::super::announce::Mac;
    use super::*;

    fn zero() -> Duration {
        Duration::ZERO
    }

    #[test]
    fn a_missing_bridge_is_a_reason_not_an_error() {
        let mac = Mac([0x52, 0x54, 0, 0, 0, 1]);
        let w = Watch::start(
            "a",
            &[
                Nic::Bridged {
                    mac,
                    bridge: "rs-no-such-br0".into(),
                },
                Nic::Unwatchable("NIC x is not on a bridge (macvtap)".into()),
            ],
            zero,
        );
        let started = Instant::now();
        let h = w.wait(Duration::from_secs(5));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "nothing watched: no wait"
        );
        assert!(h.watched.is_empty());
        assert_eq!(
            h.unwatched,
            [
                "NIC x is not on a bridge (macvtap)",
                "cannot watch rs-no-such-br0 for 52:54:00:00:00:01: no interface rs-no-such-br0 on this host"
            ]
        );
    }

    #[test]
    fn a_blind_watch_says_why() {
        let h = Watch::blind("cannot read the VM's definition".into()).wait(Duration::from_secs(5));
        assert_eq!(h, Heard::blind("cannot read the VM's definition".into()));
    }

    #[test]
    fn no_nics_no_watch() {
        let h = Watch::start("a", &[], zero).wait(Duration::from_secs(5));
        assert_eq!(h, Heard::default());
    }

    #[test]
    fn permission_denied_names_the_capability() {
        let e = RarpError::Socket(std::io::Error::from_raw_os_error(libc::EPERM));
        assert!(
            e.reason().ends_with("(the agent needs CAP_NET_RAW)"),
            "{}",
            e.reason()
        );
        let e = RarpError::Bind(
            "br0".into(),
            std::io::Error::from_raw_os_error(libc::ENODEV),
        );
        assert!(!e.reason().contains("CAP_NET_RAW"));
    }
}
