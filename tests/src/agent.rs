//! Running rackside-agent inside a lab host, as its systemd unit would on
//! a real one, with a log the test can show when something fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::lab::{Lab, LabError};

#[derive(Debug)]
pub struct AgentProcess {
    child: Option<Child>,
    pub log: PathBuf,
    pub config: PathBuf,
    pub host: String,
}

impl AgentProcess {
    /// Starts `binary` in `host` with the given config text; `dir` holds
    /// the config and the log.
    pub fn start(
        lab: &Lab,
        host: &str,
        binary: &Path,
        dir: &Path,
        config: &str,
    ) -> Result<AgentProcess, LabError> {
        let cfg = dir.join(format!("agent-{host}.toml"));
        let log = dir.join(format!("agent-{host}.log"));
        let io = |source| LabError::Dir {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::write(&cfg, config).map_err(io)?;
        // Inside the host's mount namespace the working directory is not
        // ours: the binary needs an absolute path.
        let binary = binary.canonicalize().map_err(|source| LabError::Dir {
            path: binary.to_owned(),
            source,
        })?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io)?;
        let child = lab
            .exec(host, &binary.to_string_lossy())?
            .arg("--config")
            .arg(&cfg)
            .env("RACKSIDE_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(io)?)
            .stderr(out)
            .spawn()
            .map_err(io)?;
        Ok(AgentProcess {
            child: Some(child),
            log,
            config: cfg,
            host: host.to_owned(),
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the agent's log contains `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// True while the agent process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGTERM and wait: the clean stop systemd does. Returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok().and_then(|s| s.code())
    }

    /// SIGKILL: the crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A lab agent's configuration: `host` polls every other lab host as a
/// peer each second, answers on the pty `line`, keeps its state under
/// `dir`; `extra` is appended (more sections; a `[placement]` section in
/// it gets the load threshold too). Lab hosts share the machine's CPUs,
/// so the load filter (which would judge the whole lab) is off.
pub fn lab_config(lab: &Lab, host: &str, dir: &Path, line: &Path, extra: &str) -> String {
    let placement = "[placement]\nload_threshold = 1.0\n";
    let (own, extra) = if extra.contains("[placement]\n") {
        ("", extra.replacen("[placement]\n", placement, 1))
    } else {
        (placement, extra.to_owned())
    };
    let mut c = format!(
        "[host]\nname = \"{host}\"\n[libvirt]\npoll_interval_s = 1\n[state]\ndir = \"{}\"\n\
         [[console]]\npath = \"{}\"\n{own}",
        dir.join("state").display(),
        line.display()
    );
    for p in lab.desc().hosts.iter().filter(|p| p.name != host) {
        c.push_str(&format!(
            "[[peer]]\nname = \"{}\"\nuri = \"{}\"\nmigrate_uri = \"{}\"\n",
            p.name, p.uri, p.migrate_uri
        ));
    }
    c.push_str(&extra);
    c
}

/// An agent on a lab host with the pty line the test holds, started once
/// the line answers and every peer has been polled (placement needs
/// their figures). Failures panic with the agent's log: a test helper.
#[derive(Debug)]
pub struct LineAgent {
    pub agent: AgentProcess,
    pub line: crate::pty::PtyLine,
    id: u64,
}

const ANSWER: Duration = Duration::from_secs(20);

impl LineAgent {
    /// `binary` on `host`, its files in `dir`, [`lab_config`] plus `extra`.
    pub fn start(lab: &Lab, host: &str, binary: &Path, dir: &Path, extra: &str) -> LineAgent {
        std::fs::create_dir_all(dir).expect("agent dir");
        let link = dir.join("tty");
        let mut line = crate::pty::PtyLine::open(&link).expect("pty");
        let cfg = lab_config(lab, host, dir, &link, extra);
        let agent = AgentProcess::start(lab, host, binary, dir, &cfg).expect("agent");
        line.wake(ANSWER)
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));
        let mut a = LineAgent { agent, line, id: 0 };
        for _ in 0..60 {
            let h = a.req("hosts", serde_json::json!({}));
            let all = h["data"]["hosts"]
                .as_array()
                .is_some_and(|l| l.iter().all(|x| x["reachable"] == serde_json::json!(true)));
            if all {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        a
    }

    /// One JSON request; its whole response.
    pub fn req(&mut self, cmd: &str, args: serde_json::Value) -> serde_json::Value {
        self.id += 1;
        self.line
            .request(self.id, cmd, args, ANSWER)
            .unwrap_or_else(|e| panic!("{cmd}: {e}\nagent log:\n{}", self.agent.log_text()))
    }

    /// The next `name` event `pred` accepts, within `limit`.
    pub fn event(
        &mut self,
        name: &str,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.line
            .expect_event(name, limit, pred)
            .unwrap_or_else(|e| panic!("no {name}: {e}\nagent log:\n{}", self.agent.log_text()))
    }
}

/// The argon2 hash `binary hash-pin` makes of `pin` (read from a pipe, as
/// a script would), for `[auth] pin_hash`.
pub fn hash_pin(binary: &Path, pin: &str) -> String {
    use std::io::Write;
    let out = std::process::Command::new(binary)
        .arg("hash-pin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .expect("piped stdin")
                .write_all(format!("{pin}\n").as_bytes())?;
            c.wait_with_output()
        })
        .expect("rackside-agent hash-pin");
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(hash.starts_with("$argon2"), "hash-pin gave {hash:?}");
    hash
}
