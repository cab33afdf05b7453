//! Input that reached a line while the agent was not reading it (typed
//! while the agent was down, a script's request that timed out) is thrown
//! away when the line is opened or reopened: it must never run later, when
//! nobody is watching. The real agent on a real pty, against libvirt's test
//! driver: no root, no daemon, its own directories.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rackside_lab::pty::PtyLine;
use serde_json::json;

const AGENT: &str = env!("CARGO_BIN_EXE_rackside-agent");
const WAIT: Duration = Duration::from_secs(30);

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("rackside-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent, stopped with SIGTERM when the test ends however it ends.
struct Agent(Child);

impl Agent {
    fn start(dir: &Path, line: &Path) -> Agent {
        let cfg = dir.join("agent.toml");
        std::fs::write(
            &cfg,
            format!(
                "[libvirt]\nuri = \"test:///default\"\npoll_interval_s = 1\n\
                 [state]\ndir = \"{}\"\nrun_dir = \"{}\"\n\
                 [[console]]\npath = \"{}\"\n",
                dir.join("state").display(),
                dir.join("run").display(),
                line.display()
            ),
        )
        .unwrap();
        let child = Command::new(AGENT)
            .arg("--config")
            .arg(&cfg)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// Presses Enter until the session's banner answers, then asks for
/// `status`: the banner comes from a line already opened (and flushed),
/// so anything queued before it would already have been read and run.
fn maintenance_after_banner(line: &mut PtyLine, id: u64) -> serde_json::Value {
    line.wake(WAIT).unwrap_or_else(|e| panic!("no banner: {e}"));
    let r = line
        .request(id, "status", json!({}), WAIT)
        .unwrap_or_else(|e| panic!("no status answer: {e}"));
    assert_eq!(r["ok"], true, "{r}");
    r["data"]["maintenance"].clone()
}

#[test]
fn a_command_written_before_the_line_was_opened_never_runs() {
    let dir = Dir::new("stale-input");
    let link = dir.0.join("line");
    let mut first = PtyLine::open(&link).unwrap();
    // Typed while no agent was reading the line.
    first.write(b"maintenance on\r").unwrap();
    let _agent = Agent::start(&dir.0, &link);
    assert_eq!(
        maintenance_after_banner(&mut first, 1),
        false,
        "a command queued before the agent started ran:\n{}",
        first.tail(3000)
    );
    // The line works: the same command typed now, in a session, runs.
    let r = first
        .request(2, "maintenance", json!({"on": true}), WAIT)
        .unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let r = first
        .request(3, "maintenance", json!({"on": false}), WAIT)
        .unwrap();
    assert_eq!(r["ok"], true, "{r}");

    // Reopen: the line goes away and comes back with a command queued on
    // it while the agent was not reading. The link points at the new pty
    // and the command is on it before the old one hangs up, so it is
    // there before the agent can reopen.
    let mut second = PtyLine::open(&link).unwrap();
    second.write(b"maintenance on\r").unwrap();
    drop(first);
    assert_eq!(
        maintenance_after_banner(&mut second, 4),
        false,
        "a command queued before the line was reopened ran:\n{}",
        second.tail(3000)
    );
    assert!(
        !String::from_utf8_lossy(&second.transcript).contains("state: maintenance"),
        "{}",
        second.tail(3000)
    );
}
