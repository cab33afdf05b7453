//! The agent's side of rackside-hook: what it publishes for the hook to
//! decide admission by (`RUN_DIR/state.json`), and the hook's reports it
//! receives (`RUN_DIR/hook.sock`, JSON datagrams).
//!
//! The hook runs inside libvirt's locks and may not call libvirt or wait
//! on us: a file it reads and a datagram it fires are the whole contract.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::events::{Bus, HookReport, Payload};
use serde::{Deserialize, Serialize};

/// What the hook reads. `mem_committed_mib`: memory of VMs running here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub state: String,
    pub maintenance: bool,
    pub mem_total_mib: u64,
    pub mem_committed_mib: u64,
    pub mem_reserve_mib: u64,
    pub updated_unix: u64,
}

/// Writes `state.json` atomically (a reader never sees half a file).
pub fn publish(run_dir: &Path, p: &Published) -> std::io::Result<()> {
    std::fs::create_dir_all(run_dir)?;
    let tmp = run_dir.join(".state.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(p).unwrap_or_default())?;
    std::fs::rename(&tmp, run_dir.join("state.json"))
}

/// A report from the hook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Report {
    pub vm: String,
    #[serde(default)]
    pub uuid: Option<String>,
    pub op: String,
    #[serde(default)]
    pub subop: String,
    #[serde(default)]
    pub refused: Option<String>,
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
    run_dir.join("hook.sock")
}

/// Receives hook reports until `stop`, publishing each as `vm.state`
/// with `source: "hook"`. The socket is ours (our run directory): a stale
/// one from a previous run is replaced.
pub fn spawn_listener(
    run_dir: &Path,
    bus: Bus,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::fs::create_dir_all(run_dir)?;
    let path = socket_path(run_dir);
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path)?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    std::thread::Builder::new().name("hook-reports".into()).spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            let Ok(n) = sock.recv(&mut buf) else {
                continue;
            };
            match serde_json::from_slice::<Report>(&buf[..n]) {
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
        let _ = std::fs::remove_file(&path);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_state_is_atomic_json() {
        let dir = std::env::temp_dir().join(format!("rackside-pub-{}", std::process::id()));
        let p = Published {
            state: "maintenance".into(),
            maintenance: true,
            mem_total_mib: 4096,
            mem_committed_mib: 512,
            mem_reserve_mib: 1024,
            updated_unix: 1,
        };
        publish(&dir, &p).unwrap();
        let back: Published =
            serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
        assert_eq!(back, p);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reports_become_words() {
        let r: Report = serde_json::from_str(
            r#"{"vm":"a","op":"migrate","subop":"begin","extra":"-","uuid":null,"refused":null}"#,
        )
        .unwrap();
        assert_eq!(report_word(&r), "incoming");
        let r: Report =
            serde_json::from_str(r#"{"vm":"a","op":"migrate","subop":"begin","refused":"full"}"#)
                .unwrap();
        assert_eq!(report_word(&r), "refused");
    }

    #[tokio::test]
    async fn a_datagram_becomes_an_event() {
        let dir = std::env::temp_dir().join(format!("rackside-hooksock-{}", std::process::id()));
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
