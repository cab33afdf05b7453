//! What a guest's owner asks of a move, as assertions shared by the lab
//! tests: the clients kept reaching it, and its disk lost nothing.

use std::time::Duration;

use crate::probe::GuestProbe;
use crate::{guest, GuestSpec, Lab};

const T: Duration = Duration::from_secs(120);

/// What a guest's owner asks of a move, asserted.
pub fn assert_clients_did_not_notice(p: &GuestProbe, moved_at: f64) {
    eprintln!("client: {}", p.summary());
    assert!(p.tcp_survived, "TCP connection lost: {}", p.summary());
    assert!(
        p.last_ping_reply_s.is_some_and(|t| t > moved_at),
        "no ping answered after the move: {}",
        p.summary()
    );
    assert!(
        p.last_echo_s.is_some_and(|t| t > moved_at),
        "no echo after the move: {}",
        p.summary()
    );
    let page = p.http.as_ref().unwrap_or_else(|e| panic!("http: {e}"));
    assert_eq!(page, &format!("rackside-guest {}", p.guest));
}

/// The disk counter went on: no LOST or ERROR line on either host, the
/// destination printed counters past the source's last, and (the guest
/// stopped) the storage holds at least the last one printed.
pub fn assert_disk_carried_on(lab: &Lab, g: &GuestSpec, src: &str, dst: &str, before: u64) {
    let after = lab.wait_disk(dst, &g.name, before + 2, T).unwrap();
    lab.virsh(dst, &["destroy", &g.name]).unwrap();
    let src_log = lab.serial_log(src, &g.name).unwrap();
    let dst_log = lab.serial_log(dst, &g.name).unwrap();
    let faults: Vec<String> = guest::disk_faults(&src_log)
        .into_iter()
        .chain(guest::disk_faults(&dst_log))
        .collect();
    assert!(faults.is_empty(), "{}: {faults:?}", g.name);
    let last = guest::last_disk(&dst_log).unwrap();
    let on_disk = lab
        .disk_counter(dst, g)
        .unwrap()
        .unwrap_or_else(|| panic!("{}: no counter on its disk", g.name));
    eprintln!(
        "{}: disk counter {before} on {src} before the move, {after} on {dst} after, \
         {last} printed last, {on_disk} on the disk",
        g.name
    );
    assert!(on_disk >= last, "{}: disk holds {on_disk} < {last}", g.name);
}

/// What a client's TCP connection attempt to a guest port met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The guest accepted the connection.
    Answered,
    /// The guest's kernel answered with a reset: nothing listens there,
    /// and nothing between the client and the guest dropped the SYN.
    Refused,
    /// No answer at all within the wait: something dropped the SYN.
    Silent,
}

/// Tries one TCP connection from namespace `ns` to `addr:port`.
pub fn tcp_reach(ns: &str, addr: std::net::Ipv4Addr, port: u16) -> Result<Reach, String> {
    let to = std::net::SocketAddr::from((addr, port));
    crate::netns::run_in(ns, || {
        match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(3)) {
            Ok(_) => Ok(Reach::Answered),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(Reach::Refused),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(Reach::Silent),
            Err(e) => Err(format!("connect to {to}: {e}")),
        }
    })
    .map_err(|e| e.to_string())?
}
