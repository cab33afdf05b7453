//! A person's terminal on a management line, for tests that look at the
//! console the way a field engineer does.
//!
//! - [`NullModem`]: two ptys joined by socat, the null-modem cable between
//!   the host's serial port and a laptop's adapter. The agent opens one end
//!   by its path as the tty it is (termios, exclusive, raw), exactly as it
//!   opens `/dev/ttyS0` in production; a terminal program opens the other.
//! - [`Tmux`]: a terminal program (picocom, screen) running in a detached
//!   tmux window of a fixed size on a tmux server of its own (`tmux -L`),
//!   typed at with `send-keys` and read back with `capture-pane`: the
//!   screen a person sees, wrapping and all.
//!
//! Both are guards: dropping one stops what it started, so a failing test
//! leaves no socat, tmux server or terminal program behind.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{self, CmdError};
use crate::teardown::TeardownErrors;

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("cannot start socat")]
    Socat(#[source] std::io::Error),
    #[error("socat made no pty at {link} within {secs} s; socat said: {said}")]
    NoPty {
        link: PathBuf,
        secs: u64,
        said: String,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tmux")]
    Tmux(#[source] CmdError),
    #[error("the terminal is {got}, not {want}")]
    Size { got: String, want: String },
    #[error("the screen did not show {what} within {secs} s; screen:\n{screen}")]
    Timeout {
        what: String,
        secs: u64,
        screen: String,
    },
    #[error("socat exited while the cable was in use: {0}")]
    SocatGone(String),
    #[error("{0} still runs after SIGKILL")]
    Survived(String),
}

/// Two ptys whose slaves are reachable at `agent_end` and `person_end`
/// (symlinks, as udev's /dev/serial/by-id names are), every byte written
/// on one end read on the other, raw, no echo.
#[derive(Debug)]
pub struct NullModem {
    child: Option<Child>,
    pub agent_end: PathBuf,
    pub person_end: PathBuf,
    log: PathBuf,
}

impl NullModem {
    /// Starts socat; returns once both ends exist. `log` gets socat's
    /// own messages.
    pub fn open(agent_end: &Path, person_end: &Path, log: &Path) -> Result<Self, TerminalError> {
        let out = std::fs::File::create(log).map_err(|source| TerminalError::Write {
            path: log.to_owned(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| TerminalError::Write {
            path: log.to_owned(),
            source,
        })?;
        let end = |p: &Path| format!("pty,link={},raw,echo=0", p.display());
        let child = cmd::no_inherited_fds(
            Command::new("socat")
                .arg(end(agent_end))
                .arg(end(person_end))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err),
        )
        .spawn()
        .map_err(TerminalError::Socat)?;
        let mut modem = NullModem {
            child: Some(child),
            agent_end: agent_end.to_owned(),
            person_end: person_end.to_owned(),
            log: log.to_owned(),
        };
        let limit = Duration::from_secs(10);
        let deadline = Instant::now() + limit;
        for link in [agent_end, person_end] {
            while !is_pty_link(link) {
                if Instant::now() >= deadline || !modem.running() {
                    return Err(TerminalError::NoPty {
                        link: link.to_owned(),
                        secs: limit.as_secs(),
                        said: modem.said(),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(modem)
    }

    /// What socat wrote to its log.
    pub fn said(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// True while socat relays.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Stops socat (SIGTERM: it removes its links), then removes links it
    /// could not. A socat that had already exited is reported: the cable
    /// broke while in use.
    pub fn close(mut self) -> Result<(), TeardownErrors> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), TeardownErrors> {
        let mut errs = TeardownErrors::default();
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        let gone_early = stop_child(child, "socat", &mut errs);
        if let Some(status) = gone_early {
            errs.step::<(), _>(
                "socat",
                Err(TerminalError::SocatGone(format!(
                    "{status}: {}",
                    self.said()
                ))),
            );
        }
        for link in [&self.agent_end, &self.person_end] {
            // Ours: socat made them at paths the test chose. Only a link
            // to a pty is removed, never anything else found there.
            if is_pty_link(link) {
                errs.step(
                    format!("remove {}", link.display()),
                    std::fs::remove_file(link),
                );
            }
        }
        errs.into_result()
    }
}

impl Drop for NullModem {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("rackside-lab: null modem: {e}");
        }
    }
}

fn is_pty_link(p: &Path) -> bool {
    std::fs::read_link(p).is_ok_and(|t| t.starts_with("/dev/pts"))
}

/// SIGTERM, up to 5 s, then SIGKILL. Returns the exit status when the
/// process had already exited before it was asked to.
fn stop_child(
    mut child: Child,
    what: &str,
    errs: &mut TeardownErrors,
) -> Option<std::process::ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    errs.step(format!("kill {what}"), child.kill());
    errs.step(format!("wait for {what}"), child.wait());
    None
}

/// A terminal program in a detached tmux window of `cols` x `rows`, on a
/// tmux server of its own: no status line, the whole window is the
/// program's screen.
#[derive(Debug)]
pub struct Tmux {
    socket: String,
    /// The server's socket file, removed once the server is gone.
    socket_path: PathBuf,
    server_pid: Option<i32>,
    /// The program's process, for a look at it when it will not end.
    pane_pid: Option<i32>,
    closed: bool,
}

const TARGET: &str = "term:0.0";

impl Tmux {
    /// Starts `argv` in a fresh tmux server named `socket` (`tmux -L`);
    /// `conf` is where its configuration file is written. Checks that the
    /// pane is exactly `cols` x `rows`.
    pub fn start(
        socket: &str,
        cols: u16,
        rows: u16,
        conf: &Path,
        argv: &[&str],
    ) -> Result<Self, TerminalError> {
        // No status line (it would take a row from the program); the whole
        // history kept; a program that exits leaves its last screen to read.
        let text = "set -g status off\nset -g history-limit 100000\nset -g remain-on-exit on\n";
        std::fs::write(conf, text).map_err(|source| TerminalError::Write {
            path: conf.to_owned(),
            source,
        })?;
        let (c, r) = (cols.to_string(), rows.to_string());
        let mut new = Command::new("tmux");
        new.args(["-L", socket, "-f"])
            .arg(conf)
            .args(["new-session", "-d", "-s", "term", "-x", &c, "-y", &r])
            .args(argv)
            .stdin(Stdio::null());
        // The server outlives this command: it must not hold what the test
        // inherited (the lab lock of `flock ... cargo test`).
        cmd::run(cmd::no_inherited_fds(&mut new)).map_err(TerminalError::Tmux)?;
        let mut t = Tmux {
            socket: socket.to_owned(),
            socket_path: PathBuf::new(),
            server_pid: None,
            pane_pid: None,
            closed: false,
        };
        let info = t.tmux(&[
            "display-message",
            "-p",
            "-t",
            TARGET,
            "#{pid} #{pane_pid} #{socket_path}",
        ])?;
        let mut f = info.trim().splitn(3, ' ');
        if let (Some(server), Some(pane), Some(path)) = (f.next(), f.next(), f.next()) {
            t.server_pid = server.parse().ok();
            t.pane_pid = pane.parse().ok();
            t.socket_path = PathBuf::from(path);
        }
        let got = t.tmux(&[
            "display-message",
            "-p",
            "-t",
            TARGET,
            "#{pane_width}x#{pane_height}",
        ])?;
        let want = format!("{cols}x{rows}");
        if got.trim() != want {
            return Err(TerminalError::Size {
                got: got.trim().to_owned(),
                want,
            });
        }
        Ok(t)
    }

    fn tmux(&self, args: &[&str]) -> Result<String, TerminalError> {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).args(args);
        let out = cmd::run(&mut c).map_err(TerminalError::Tmux)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Types `text` as it is (no key names).
    pub fn type_text(&self, text: &str) -> Result<(), TerminalError> {
        self.tmux(&["send-keys", "-t", TARGET, "-l", "--", text])
            .map(drop)
    }

    /// Presses one named key (`Enter`, `C-c`, ...).
    pub fn press(&self, key: &str) -> Result<(), TerminalError> {
        self.tmux(&["send-keys", "-t", TARGET, key]).map(drop)
    }

    /// The visible screen, `rows` lines as shown.
    pub fn screen(&self) -> Result<String, TerminalError> {
        self.tmux(&["capture-pane", "-p", "-t", TARGET])
    }

    /// Everything the terminal ever showed (scrollback and screen), each
    /// line as written: lines the terminal wrapped are joined again, so a
    /// line wider than the window shows up wider than it.
    pub fn history(&self) -> Result<String, TerminalError> {
        self.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", TARGET])
    }

    /// `dead STATUS` once the program in the window has exited (`dead
    /// signal N` when a signal ended it), else `running`, or `exiting`
    /// while tmux has seen the pty close but not yet the exit status (the
    /// pane counts as dead from the first, and a poll in between read
    /// `dead` with no status).
    pub fn program(&self) -> String {
        match self.tmux(&[
            "display-message",
            "-p",
            "-t",
            TARGET,
            "#{pane_dead}|#{pane_dead_status}|#{pane_dead_signal}",
        ]) {
            Ok(s) => match pane_state(&s) {
                // tmux has seen the pty close but not the exit: a zombie
                // of its own that it has not reaped (it can miss the
                // SIGCHLD: seen in CI, with the server asleep for 30 s).
                // The kernel holds the status until then.
                e if e == "exiting" => self
                    .pane_pid
                    .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
                    .and_then(|stat| zombie_status(&stat))
                    .unwrap_or(e),
                state => state,
            },
            Err(e) => format!("unknown ({e})"),
        }
    }

    /// Polls the history until `done` holds; returns that history.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&str) -> bool,
    ) -> Result<String, TerminalError> {
        let deadline = Instant::now() + limit;
        loop {
            let h = self.history()?;
            if done(&h) {
                return Ok(h);
            }
            if Instant::now() >= deadline {
                let mut screen = self.screen().unwrap_or_else(|e| e.to_string());
                let program = self.program();
                if program != "running" {
                    // Why it has not ended: where its threads wait, and
                    // whether the server can hear SIGCHLD.
                    screen.push_str(&self.processes());
                }
                return Err(TerminalError::Timeout {
                    what: format!("{what} (terminal program: {program})"),
                    secs: limit.as_secs(),
                    screen,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The program's threads (state, where each waits, kernel stack) and
    /// the server's signal masks, from /proc.
    pub fn processes(&self) -> String {
        let mut out = String::new();
        let read = |p: String| std::fs::read_to_string(p).unwrap_or_else(|e| format!("({e})\n"));
        let pick = |status: &str, keys: &[&str]| -> String {
            status
                .lines()
                .filter(|l| keys.iter().any(|k| l.starts_with(k)))
                .collect::<Vec<_>>()
                .join("; ")
        };
        if let Some(pid) = self.pane_pid {
            let status = read(format!("/proc/{pid}/status"));
            out.push_str(&format!(
                "\n--- program pid {pid}: {}\n",
                pick(&status, &["Name:", "State:", "Threads:", "PPid:"])
            ));
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_else(|_| Vec::new());
            for t in tasks {
                let base = format!("/proc/{pid}/task/{t}");
                out.push_str(&format!(
                    "task {t} {}: {} wchan {}\n{}",
                    read(format!("{base}/comm")).trim(),
                    pick(&read(format!("{base}/status")), &["State:"]),
                    read(format!("{base}/wchan")).trim(),
                    read(format!("{base}/stack"))
                ));
            }
        }
        if let Some(pid) = self.server_pid {
            out.push_str(&format!(
                "--- tmux server pid {pid}: {}\n",
                pick(
                    &read(format!("/proc/{pid}/status")),
                    &["State:", "SigBlk:", "SigIgn:", "SigCgt:"]
                )
            ));
        }
        out
    }

    /// Ends the server (and so the program), then removes its socket.
    pub fn close(mut self) -> Result<(), TeardownErrors> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), TeardownErrors> {
        let mut errs = TeardownErrors::default();
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        // Only this server: -L names it, nothing else is addressed.
        let _ = self.tmux(&["kill-server"]);
        if let Some(pid) = self.server_pid {
            let pid = nix::unistd::Pid::from_raw(pid);
            let end = Instant::now() + Duration::from_secs(5);
            while alive(pid) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive(pid) {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                std::thread::sleep(Duration::from_millis(200));
                if alive(pid) {
                    errs.step::<(), _>(
                        "stop the tmux server",
                        Err(TerminalError::Survived(format!("tmux server {pid}"))),
                    );
                }
            }
        }
        // tmux leaves its socket file behind; this one is ours (a name no
        // other server uses), and no server listens on it any more.
        if !self.socket_path.as_os_str().is_empty() && self.socket_path.exists() {
            errs.step(
                format!("remove {}", self.socket_path.display()),
                std::fs::remove_file(&self.socket_path),
            );
        }
        errs.into_result()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("rackside-lab: tmux: {e}");
        }
    }
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: nix::unistd::Pid) -> bool {
    let mut stat = String::new();
    match std::fs::File::open(format!("/proc/{pid}/stat")) {
        Ok(mut f) => {
            let _ = f.read_to_string(&mut stat);
            // The state follows the command name's closing parenthesis.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        }
        Err(_) => false,
    }
}

/// Lines of `text` wider than `cols` columns, with their 1-based numbers
/// and widths (a character is a column: the console writes ASCII and
/// escapes everything else).
pub fn wide_lines(text: &str, cols: usize) -> Vec<(usize, usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let w = l.chars().count();
            (w > cols).then(|| (i + 1, w, l.to_owned()))
        })
        .collect()
}

/// The last line of `text` that is not blank, without trailing blanks:
/// where the cursor sits once output has stopped.
pub fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim_end)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// [`Terminal::program`]'s answer from tmux's
/// `#{pane_dead}|#{pane_dead_status}|#{pane_dead_signal}`.
/// `dead N` or `dead signal N` from `/proc/PID/stat` of a zombie (its
/// 52nd field is the status waitpid would return), else None.
fn zombie_status(stat: &str) -> Option<String> {
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() != Some(&"Z") {
        return None;
    }
    let code: i32 = fields.get(52 - 3)?.parse().ok()?;
    Some(match code & 0x7f {
        0 => format!("dead {}", (code >> 8) & 0xff),
        signal => format!("dead signal {signal}"),
    })
}

fn pane_state(s: &str) -> String {
    let mut f = s.trim().split('|');
    let (dead, status, signal) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
    match dead {
        Some("1") if !status.is_empty() => format!("dead {status}"),
        Some("1") if !signal.is_empty() => format!("dead signal {signal}"),
        Some("1") => "exiting".into(),
        _ => "running".into(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_dead_pane_is_dead_only_with_its_exit_status_or_signal() {
        assert_eq!(pane_state("1|0|\n"), "dead 0");
        assert_eq!(pane_state("1|3|"), "dead 3");
        assert_eq!(pane_state("1||15"), "dead signal 15");
        assert_eq!(pane_state("1||"), "exiting");
        assert_eq!(pane_state("0||"), "running");
    }

    use super::*;

    #[test]
    fn a_zombie_tells_its_exit_status() {
        let tail = (5..=51)
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let stat = |state: &str, code: i32| format!("42 (rackside (x)) {state} 1 {tail} {code}\n");
        assert_eq!(zombie_status(&stat("Z", 0)).as_deref(), Some("dead 0"));
        assert_eq!(zombie_status(&stat("Z", 3 << 8)).as_deref(), Some("dead 3"));
        assert_eq!(
            zombie_status(&stat("Z", 15)).as_deref(),
            Some("dead signal 15")
        );
        assert_eq!(zombie_status(&stat("S", 0)), None);
        assert_eq!(zombie_status("garbage"), None);
    }

    #[test]
    fn a_real_zombie_is_read_from_proc() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let end = Instant::now() + Duration::from_secs(10);
        let mut seen = None;
        while seen.is_none() && Instant::now() < end {
            seen = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| zombie_status(&s));
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut child = child;
        let _ = child.wait();
        assert_eq!(seen.as_deref(), Some("dead 3"));
    }

    #[test]
    fn wide_lines_counts_characters_not_bytes() {
        let ok = "x".repeat(80);
        let wide = "y".repeat(81);
        let accents = "é".repeat(80);
        let text = format!("{ok}\n{wide}\n{accents}\n");
        assert_eq!(wide_lines(&text, 80), vec![(2, 81, wide)]);
    }

    #[test]
    fn last_line_skips_blank_rows_below_the_cursor() {
        assert_eq!(last_line("a\nha> \n\n   \n"), "ha>");
        assert_eq!(last_line(""), "");
    }
}
