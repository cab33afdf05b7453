//! Telling the local agent what happened: one JSON datagram to
//! `RUN_DIR/hook.sock`, fire and forget:
//!
//! ```json
//! {"vm": "web1", "uuid": "6f1c...", "op": "migrate", "subop": "begin",
//!  "extra": "-", "refused": null}
//! ```
//!
//! `uuid` is null when the XML was unreadable; `refused` is the refusal
//! line when this call refused the VM.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use serde::Serialize;

pub const SOCKET: &str = "hook.sock";
/// The agent reads datagrams into a 64 KiB buffer.
pub const MAX_DATAGRAM: usize = 60 << 10;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("report of {0} bytes is too large")]
    TooLarge(usize),
    #[error("cannot create a datagram socket")]
    Socket(#[source] io::Error),
    #[error("cannot send to {SOCKET}")]
    Send(#[source] io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report<'a> {
    pub vm: &'a str,
    pub uuid: Option<&'a str>,
    pub op: &'a str,
    pub subop: &'a str,
    pub extra: &'a str,
    pub refused: Option<String>,
}

pub fn encode(r: &Report<'_>) -> Vec<u8> {
    serde_json::to_vec(r).unwrap_or_default()
}

/// Sends without ever blocking: a full or absent socket loses the report.
pub fn send(run_dir: &Path, r: &Report<'_>) -> Result<(), NotifyError> {
    let bytes = encode(r);
    if bytes.len() > MAX_DATAGRAM {
        return Err(NotifyError::TooLarge(bytes.len()));
    }
    let sock = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
    sock.set_nonblocking(true).map_err(NotifyError::Socket)?;
    sock.send_to(&bytes, run_dir.join(SOCKET))
        .map_err(NotifyError::Send)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report<'static> {
        Report {
            vm: "web\"1",
            uuid: None,
            op: "migrate",
            subop: "begin",
            extra: "-",
            refused: Some("rackside: h is in maintenance; not accepting VM".into()),
        }
    }

    #[test]
    fn encodes_the_documented_shape() {
        let v: serde_json::Value = serde_json::from_slice(&encode(&report())).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"vm": "web\"1", "uuid": null, "op": "migrate", "subop": "begin",
                "extra": "-", "refused": "rackside: h is in maintenance; not accepting VM"})
        );
    }

    #[test]
    fn absent_socket_is_an_error_not_a_hang() {
        assert!(matches!(
            send(Path::new("/nonexistent/rackside"), &report()),
            Err(NotifyError::Send(_))
        ));
    }

    #[test]
    fn delivers_to_a_bound_socket() {
        let d = std::env::temp_dir().join(format!("rackside-hook-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let rx = UnixDatagram::bind(d.join(SOCKET)).unwrap();
        send(&d, &report()).unwrap();
        let mut buf = [0u8; 4096];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &encode(&report())[..]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn oversized_report_is_not_sent() {
        let big = "v".repeat(MAX_DATAGRAM);
        let mut r = report();
        r.vm = &big;
        assert!(matches!(
            send(Path::new("/x"), &r),
            Err(NotifyError::TooLarge(_))
        ));
    }
}
