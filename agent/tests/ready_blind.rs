//! With libvirtd unreachable the agent does not claim READY on the strength
//! of a poll that failed: it waits (retrying, saying why in STATUS), then
//! sends READY with a STATUS saying libvirt is unreachable, and serves
//! blind: health degraded with the reason, `vms` and `locate` unavailable.
//! No systemd and no libvirtd needed: NOTIFY_SOCKET is a datagram socket
//! this test reads, libvirt's socket a path where nothing listens.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rackside_lab::pty::PtyLine;
use serde_json::json;

const AGENT: &str = env!("CARGO_BIN_EXE_rackside-agent");
const WAIT: Duration = Duration::from_secs(30);

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

#[test]
fn ready_waits_for_libvirt_then_says_it_is_unreachable_and_serves_blind() {
    let dir = Dir(std::env::temp_dir().join(format!("rackside-blind-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    let sock_path = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let link = dir.0.join("line");
    let mut line = PtyLine::open(&link).unwrap();
    let cfg = dir.0.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[libvirt]\nuri = \"qemu+unix:///system?socket={}\"\npoll_interval_s = 1\n\
             [state]\ndir = \"{}\"\nrun_dir = \"{}\"\n\
             [[console]]\npath = \"{}\"\n",
            dir.0.join("no-libvirtd.sock").display(),
            dir.0.join("state").display(),
            dir.0.join("run").display(),
            link.display()
        ),
    )
    .unwrap();
    let _agent = Agent(
        Command::new(AGENT)
            .arg("--config")
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // One entry a datagram: what arrives together, arrives in one.
    let mut datagrams: Vec<Vec<String>> = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !datagrams.iter().flatten().any(|l| l == "READY=1") {
        if let Ok(n) = sock.recv(&mut buf) {
            datagrams.push(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }
    let ready = datagrams
        .iter()
        .position(|d| d.iter().any(|l| l == "READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 in {datagrams:?}"));
    // The first poll's outcome came before READY, and said why it waits.
    assert!(
        datagrams[..ready]
            .iter()
            .flatten()
            .any(|l| l.starts_with("STATUS=")
                && l.contains("waiting for libvirt, unreachable")
                && l.contains("no-libvirtd.sock")),
        "{datagrams:?}"
    );
    assert!(
        datagrams[ready]
            .iter()
            .any(|l| l.starts_with("STATUS=libvirt unreachable")),
        "{datagrams:?}"
    );

    // Serving blind: nothing reads as healthy, empty or absent.
    line.wake(WAIT).unwrap_or_else(|e| panic!("no banner: {e}"));
    let status = line.request(1, "status", json!({}), WAIT).unwrap();
    assert_eq!(status["ok"], true, "{status}");
    let d = &status["data"];
    assert_eq!(d["health"], "degraded", "{status}");
    assert!(
        d["health_reasons"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("libvirt unreachable for ")),
        "{status}"
    );
    assert_ne!(d["state"], "empty", "{status}");
    assert_eq!(d["vms_running"], serde_json::Value::Null, "{status}");
    for (id, cmd, args) in [(2, "vms", json!({})), (3, "locate", json!({"vm": "web1"}))] {
        let r = line.request(id, cmd, args, WAIT).unwrap();
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["error"]["code"], "unavailable", "{r}");
    }
}
