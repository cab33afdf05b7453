//! Running a probe's tool: found on PATH, given a time limit, killed with
//! everything it started when over it (or when the agent stops), so a hung
//! BMC or disk never holds the probe thread.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for {program}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} took over {} s: killed", limit.as_secs_f64())]
    Timeout { program: String, limit: Duration },
    #[error("{program} was killed: the agent is stopping")]
    Stopped { program: String },
}

/// What a tool printed, and how it ended. The status is the tool's to
/// explain (smartctl's is a bit mask): it is not judged here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// More than any of the probed tools prints; a tool gone mad does not
/// fill the agent's memory.
const OUTPUT_LIMIT: u64 = 8 << 20;

/// The first executable file named `name` in the directories of `path`
/// (a PATH value).
pub fn find(path: &OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `program args` with no input, waits at most `limit` for it to end,
/// and gives what it printed. Over the limit, or once `stop` is set, the
/// tool and whatever it started are killed.
pub fn run(
    program: &Path,
    args: &[&str],
    limit: Duration,
    stop: &AtomicBool,
) -> Result<Output, RunError> {
    let name = program.display().to_string();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a kill reaches the children a script
        // or wrapper started; they would otherwise keep the pipes open and
        // the readers below waiting.
        .process_group(0)
        // Untranslated messages and numbers, whatever the host's locale.
        .env("LC_ALL", "C")
        .spawn()
        .map_err(|source| RunError::Spawn {
            program: name.clone(),
            source,
        })?;
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Read both pipes while waiting: a tool that fills one would block.
    let out = child.stdout.take().map(reader);
    let err = child.stderr.take().map(reader);
    let end = Instant::now() + limit;
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if stop.load(Ordering::Relaxed) => {
                break Err(RunError::Stopped {
                    program: name.clone(),
                })
            }
            Ok(None) if Instant::now() >= end => {
                break Err(RunError::Timeout {
                    program: name.clone(),
                    limit,
                })
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(source) => {
                break Err(RunError::Wait {
                    program: name.clone(),
                    source,
                })
            }
        }
    };
    // Also after a normal exit: a child it left behind would hold the
    // pipes open.
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    if outcome.is_err() {
        let _ = child.wait();
    }
    let stdout = out.map(join).unwrap_or_default();
    let stderr = err.map(join).unwrap_or_default();
    outcome.map(|status| Output {
        status,
        stdout,
        stderr,
    })
}

fn reader(r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.take(OUTPUT_LIMIT).read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn join(h: std::thread::JoinHandle<String>) -> String {
    h.join().unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A temporary directory of fake tools, removed when dropped.
    #[derive(Debug)]
    pub(crate) struct Tools(pub PathBuf);

    impl Tools {
        pub(crate) fn new(tag: &str) -> Tools {
            let d =
                std::env::temp_dir().join(format!("rackside-probe-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Tools(d)
        }

        /// Writes an executable shell script named `name`.
        pub(crate) fn script(&self, name: &str, body: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        }

        pub(crate) fn path(&self) -> std::ffi::OsString {
            self.0.clone().into_os_string()
        }
    }

    impl Drop for Tools {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `run`, retried while the script is "busy": another test thread may
    /// have forked while this one held the script open for writing, and
    /// the fork keeps that descriptor until it execs.
    pub(crate) fn run_script(
        p: &Path,
        args: &[&str],
        limit: Duration,
        stop: &AtomicBool,
    ) -> Result<Output, RunError> {
        for _ in 0..50 {
            match run(p, args, limit, stop) {
                Err(RunError::Spawn { source, .. })
                    if source.raw_os_error() == Some(libc::ETXTBSY) =>
                {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => return other,
            }
        }
        run(p, args, limit, stop)
    }

    #[test]
    fn finds_tools_on_the_path_and_skips_what_is_missing() {
        let t = Tools::new("find");
        let tool = t.script("smartctl", "exit 0");
        std::fs::write(t.0.join("ipmitool"), "not executable").unwrap();
        let path =
            std::env::join_paths([Path::new("/nonexistent"), &t.0, Path::new("rel")]).unwrap();
        assert_eq!(find(&path, "smartctl"), Some(tool));
        assert_eq!(find(&path, "ipmitool"), None, "not executable");
        assert_eq!(find(&path, "ras-mc-ctl"), None, "not there");
        assert_eq!(find(OsStr::new(""), "smartctl"), None);
    }

    #[test]
    fn gives_output_and_status_whatever_the_status() {
        let t = Tools::new("output");
        let tool = t.script("tool", "echo \"out $1\"; echo oops >&2; exit 4");
        let o = run_script(
            &tool,
            &["a"],
            Duration::from_secs(60),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(o.stdout, "out a\n");
        assert_eq!(o.stderr, "oops\n");
        assert_eq!(o.status.code(), Some(4));
    }

    /// The tool and the child it started (which holds the output pipe)
    /// are both killed: the call returns.
    #[test]
    fn a_tool_over_its_time_is_killed_with_its_children() {
        let t = Tools::new("timeout");
        let tool = t.script("tool", "echo started; sleep 1000; echo never");
        let e = run_script(
            &tool,
            &[],
            Duration::from_millis(100),
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert!(matches!(e, RunError::Timeout { .. }), "{e}");
    }

    #[test]
    fn stopping_kills_the_tool() {
        let t = Tools::new("stop");
        let tool = t.script("tool", "sleep 1000");
        let e = run_script(
            &tool,
            &[],
            Duration::from_secs(3600),
            &AtomicBool::new(true),
        )
        .unwrap_err();
        assert!(matches!(e, RunError::Stopped { .. }), "{e}");
    }

    #[test]
    fn a_missing_program_is_an_error_naming_it() {
        let e = run(
            Path::new("/nonexistent/smartctl"),
            &[],
            Duration::from_secs(1),
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "cannot start /nonexistent/smartctl");
    }
}
