//! Running `nft`, bounded in time: libvirt waits for us inside its locks.

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest an nft run may take before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// What is kept of nft's stderr for the error message.
const STDERR_KEEP: u64 = 2048;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot wait for nft")]
    Wait(#[source] io::Error),
    #[error("nft still running after {0:?}; killed")]
    Timeout(Duration),
    #[error("nft failed ({status}): {stderr}")]
    Failed { status: ExitStatus, stderr: String },
}

/// One line, bounded.
fn one_line(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs `program args...`, feeding `stdin` (if any), and waits at most
/// `timeout`.
pub fn run(
    program: &Path,
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<(), NftError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NftError::Spawn {
            program: program.display().to_string(),
            source,
        })?;

    // Feed stdin and collect stderr on threads so that neither pipe can
    // block us past the deadline.
    if let (Some(mut pipe), Some(text)) = (child.stdin.take(), stdin) {
        let text = text.to_owned();
        std::thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = (&mut pipe).take(STDERR_KEEP).read_to_end(&mut kept);
            let _ = io::copy(&mut pipe, &mut io::sink());
            let _ = tx.send(kept);
        });
    }

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(NftError::Wait)? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NftError::Timeout(timeout));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    };
    if status.success() {
        return Ok(());
    }
    let stderr = rx
        .recv_timeout(Duration::from_millis(100))
        .map(|b| one_line(&b))
        .unwrap_or_default();
    Err(NftError::Failed { status, stderr })
}

/// Loads a ruleset atomically: `nft -f -`.
pub fn load(program: &Path, ruleset: &str) -> Result<(), NftError> {
    run(program, &["-f", "-"], Some(ruleset), TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_and_failure() {
        assert!(run(Path::new("true"), &[], Some("x"), TIMEOUT).is_ok());
        let e = run(
            Path::new("sh"),
            &["-c", "echo 'Error: no\nsuch' >&2; exit 3"],
            None,
            TIMEOUT,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "nft failed (exit status: 3): Error: no; such"
        );
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let e = load(Path::new("/nonexistent/nft"), "").unwrap_err();
        assert!(matches!(e, NftError::Spawn { .. }));
    }

    #[test]
    fn hung_program_is_killed() {
        let t = Instant::now();
        let e = run(
            Path::new("sleep"),
            &["30"],
            None,
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(matches!(e, NftError::Timeout(_)));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn program_that_ignores_stdin_does_not_block() {
        let big = "x".repeat(1 << 20);
        assert!(run(Path::new("true"), &[], Some(&big), TIMEOUT).is_ok());
    }
}
