//! Telling the local agent what happened: one [`Report`] datagram to
//! `RUN_DIR/hook.sock` (both defined with the agent in
//! `rackside-contract`), fire and forget.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use rackside_contract::{Report, MAX_DATAGRAM, SOCKET};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("report of {0} bytes is too large")]
    TooLarge(usize),
    #[error("cannot create a datagram socket")]
    Socket(#[source] io::Error),
    #[error("cannot send to {SOCKET}")]
    Send(#[source] io::Error),
}

/// Sends without ever blocking: a full or absent socket loses the report.
pub fn send(run_dir: &Path, r: &Report) -> Result<(), NotifyError> {
    let bytes = r.encode();
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

    fn report() -> Report {
        Report {
            vm: "web1".into(),
            uuid: None,
            op: "migrate".into(),
            subop: "begin".into(),
            extra: "-".into(),
            refused: Some("rackside: h is in maintenance; not accepting VM".into()),
        }
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
        assert_eq!(Report::decode(&buf[..n]).unwrap(), report());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn oversized_report_is_not_sent() {
        let mut r = report();
        r.vm = "v".repeat(MAX_DATAGRAM);
        assert!(matches!(
            send(Path::new("/x"), &r),
            Err(NotifyError::TooLarge(_))
        ));
    }
}
