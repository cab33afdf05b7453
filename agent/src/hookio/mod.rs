//! The agent's side of rackside-hook: what it publishes for the hook to
//! decide admission by (`RUN_DIR/state.json`), and the hook's reports it
//! receives (`RUN_DIR/hook.sock`). The formats, names and timing are in
//! `rackside-contract`, shared with the hook.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::events::{Bus, HookReport, Payload};
pub use rackside_contract::{Published, Report};
use rackside_contract::{RECV_BUFFER, SOCKET, STATE_FILE, STATE_TMP_FILE};

pub mod socket;

use socket::{OwnedSocket, SocketError};

#[derive(Debug, thiserror::Error)]
pub enum HookIoError {
    #[error("cannot create {0}")]
    CreateDir(PathBuf, #[source] std::io::Error),
    #[error("hook socket")]
    Socket(#[from] SocketError),
    #[error("cannot set the hook socket's read timeout")]
    Timeout(#[source] std::io::Error),
    #[error("cannot start the hook report thread")]
    Thread(#[source] std::io::Error),
}

/// An error and its sources on one line, for a log field.
pub fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Writes `state.json` atomically (a reader never sees half a file).
pub fn publish(run_dir: &Path, p: &Published) -> std::io::Result<()> {
    std::fs::create_dir_all(run_dir)?;
    let tmp = run_dir.join(STATE_TMP_FILE);
    std::fs::write(&tmp, p.encode())?;
    std::fs::rename(&tmp, run_dir.join(STATE_FILE))
}

/// What a hook report means to a person watching events.
pub fn report_word(r: &Report) -> &'static str {
    if r.refused.is_some() {
        return "refused";
    }
    match (r.op.as_str(), r.subop.as_str()) {
        ("migrate", "begin") => "incoming",
        ("prepare", _) => "preparing",
        ("start", _) => "starting",
        ("started", _) => "started",
        ("stopped", _) => "stopped",
        ("release", _) => "released",
        ("reconnect", _) => "reconnected",
        _ => "hook",
    }
}

pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET)
}

/// Receives hook reports until `stop`, publishing each as `vm.state`
/// with `source: "hook"`. Refuses to start when another process serves
/// the socket or something else sits at its path; removes the socket on
/// the way out only if it is still the one bound here.
pub fn spawn_listener(
    run_dir: &Path,
    bus: Bus,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, HookIoError> {
    std::fs::create_dir_all(run_dir).map_err(|e| HookIoError::CreateDir(run_dir.to_owned(), e))?;
    let owned = OwnedSocket::bind(&socket_path(run_dir))?;
    owned
        .socket()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(HookIoError::Timeout)?;
    std::thread::Builder::new()
        .name("hook-reports".into())
        .spawn(move || {
            let mut buf = vec![0u8; RECV_BUFFER];
            while !stop.load(Ordering::Relaxed) {
                let Ok(n) = owned.socket().recv(&mut buf) else {
                    continue;
                };
                match Report::decode(&buf[..n]) {
                    Ok(r) => {
                        if rackside_protocol::validate_name("vm", &r.vm).is_err() {
                            continue;
                        }
                        tracing::debug!(vm = %r.vm, op = %r.op, subop = %r.subop, refused = ?r.refused, "hook report");
                        let what = report_word(&r);
                        bus.publish(Payload::Hook(HookReport {
                            vm: r.vm,
                            uuid: r.uuid,
                            what,
                            source: "hook",
                            op: r.op,
                            subop: r.subop,
                            refused: r.refused,
                        }));
                    }
                    Err(e) => tracing::debug!(cause = %e, "unreadable hook report"),
                }
            }
            drop(owned);
        })
        .map_err(HookIoError::Thread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rackside-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn published_state_is_atomic_json() {
        let dir = tmp("pub");
        let p = Published {
            host: Some("kvm3".into()),
            state: "maintenance".into(),
            maintenance: true,
            mem_total_mib: 4096,
            mem_committed_mib: 512,
            mem_reserve_mib: 1024,
            updated_unix: 1,
            health: None,
            health_reasons: Vec::new(),
        };
        publish(&dir, &p).unwrap();
        let back = Published::decode(&std::fs::read(dir.join(STATE_FILE)).unwrap()).unwrap();
        assert_eq!(back, p);
        assert!(!dir.join(STATE_TMP_FILE).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reports_become_words() {
        let r = Report::decode(
            br#"{"vm":"a","op":"migrate","subop":"begin","extra":"-","uuid":null,"refused":null}"#,
        )
        .unwrap();
        assert_eq!(report_word(&r), "incoming");
        let r = Report::decode(br#"{"vm":"a","op":"migrate","subop":"begin","refused":"full"}"#)
            .unwrap();
        assert_eq!(report_word(&r), "refused");
    }

    #[tokio::test]
    async fn a_datagram_becomes_an_event_and_the_socket_goes_at_the_end() {
        let dir = tmp("hooksock");
        let bus = Bus::new();
        let mut rx = bus.subscribe();
        let stop = Arc::new(AtomicBool::new(false));
        let h = spawn_listener(&dir, bus.clone(), stop.clone()).unwrap();
        let s = UnixDatagram::unbound().unwrap();
        s.send_to(
            br#"{"vm":"web1","op":"started","subop":"begin"}"#,
            socket_path(&dir),
        )
        .unwrap();
        let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let data = serde_json::to_value(&e.data).unwrap();
        assert_eq!(data["what"], "started");
        assert_eq!(data["source"], "hook");
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        assert!(!socket_path(&dir).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_listener_does_not_take_the_socket() {
        let dir = tmp("hooksock2");
        let stop = Arc::new(AtomicBool::new(false));
        let first = spawn_listener(&dir, Bus::new(), stop.clone()).unwrap();
        let e = spawn_listener(&dir, Bus::new(), Arc::new(AtomicBool::new(false))).unwrap_err();
        assert!(
            chain(&e).ends_with("hook.sock is served by another process"),
            "{}",
            chain(&e)
        );
        assert!(socket_path(&dir).exists());
        stop.store(true, Ordering::Relaxed);
        first.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
