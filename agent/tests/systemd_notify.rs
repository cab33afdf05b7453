//! The agent speaks sd_notify as a Type=notify unit needs: READY once the
//! first inventory is in, STATUS lines, WATCHDOG pings when the watchdog is
//! on, STOPPING and exit 0 on SIGTERM. No systemd needed: NOTIFY_SOCKET
//! points at a datagram socket this test reads. The agent's state and run
//! directories are the test's own (never the machine's /run/rackside).

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_rackside-agent");

#[test]
fn ready_status_watchdog_and_clean_stop() {
    let dir = std::env::temp_dir().join(format!("rackside-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[libvirt]\nuri = \"test:///default\"\npoll_interval_s = 1\n[state]\ndir = \"{}\"\nrun_dir = \"{}\"\n",
            dir.join("state").display(),
            dir.join("run").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(AGENT)
        .arg("--config")
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let mut got: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            got.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_owned),
            );
        }
        if got.iter().filter(|l| *l == "WATCHDOG=1").count() >= 3 {
            break;
        }
    }
    let ready = got.iter().position(|l| l == "READY=1");
    assert!(ready.is_some(), "no READY=1 in {got:?}");
    assert!(
        got.iter()
            .any(|l| l.starts_with("STATUS=") && l.contains("libvirt up")),
        "{got:?}"
    );
    assert!(
        got.iter().filter(|l| *l == "WATCHDOG=1").count() >= 3,
        "{got:?}"
    );
    let first_ping = got.iter().position(|l| l == "WATCHDOG=1").unwrap();
    assert!(ready < Some(first_ping), "watchdog before ready: {got:?}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    while let Ok(n) = sock.recv(&mut buf) {
        got.extend(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_owned),
        );
    }
    assert!(status.success(), "exit {status:?}");
    assert!(got.iter().any(|l| l == "STOPPING=1"), "{got:?}");
    // It worked in the directories it was given, and cleaned up its socket.
    assert!(dir.join("run").join(rackside_contract::STATE_FILE).exists());
    assert!(!dir.join("run").join(rackside_contract::SOCKET).exists());
    let _ = std::fs::remove_dir_all(&dir);
}
