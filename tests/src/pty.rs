//! A real pty standing in for a serial management line: the agent opens
//! the slave by path (a symlink, as udev's /dev/serial/by-id names are),
//! the test talks through the master like a terminal or a controller.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::openpty;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("openpty")]
    Open(#[source] nix::Error),
    #[error("cannot link {link} to the pty")]
    Link {
        link: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write to the pty")]
    Write(#[source] nix::Error),
    #[error("no matching line within {secs} s; received:\n{received}")]
    Timeout { secs: u64, received: String },
}

/// The master side of a pty whose slave is reachable at `link`.
#[derive(Debug)]
pub struct PtyLine {
    master: OwnedFd,
    // Held open so the master never reads EIO between agent sessions.
    _slave: OwnedFd,
    pub link: PathBuf,
    pub slave_path: PathBuf,
    /// Everything received and not yet consumed.
    buf: Vec<u8>,
    /// Everything ever received, for failure messages.
    pub transcript: Vec<u8>,
}

impl PtyLine {
    /// Opens a pty and points `link` at its slave (replacing an old link).
    pub fn open(link: &Path) -> Result<PtyLine, PtyError> {
        let pty = openpty(None, None).map_err(PtyError::Open)?;
        let slave_path = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd()))
            .map_err(|source| PtyError::Link {
                link: link.to_owned(),
                source,
            })?;
        // Raw on our side too: no echo, no line editing by the kernel.
        if let Ok(mut t) = nix::sys::termios::tcgetattr(&pty.slave) {
            nix::sys::termios::cfmakeraw(&mut t);
            let _ =
                nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t);
        }
        let tmp = link.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&slave_path, &tmp)
            .and_then(|()| std::fs::rename(&tmp, link))
            .map_err(|source| PtyError::Link {
                link: link.to_owned(),
                source,
            })?;
        // openpty does not set close-on-exec: without it every process the
        // test starts (the agent itself) would inherit the master, and
        // closing ours would never hang up the line.
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(PtyError::Open)?;
        }
        let flags = nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(PtyError::Open)?;
        let mut flags = nix::fcntl::OFlag::from_bits_truncate(flags);
        flags.insert(nix::fcntl::OFlag::O_NONBLOCK);
        nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(PtyError::Open)?;
        Ok(PtyLine {
            master: pty.master,
            _slave: pty.slave,
            link: link.to_owned(),
            slave_path,
            buf: Vec::new(),
            transcript: Vec::new(),
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), PtyError> {
        let mut rest = bytes;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !rest.is_empty() {
            match nix::unistd::write(&self.master, rest) {
                Ok(n) => rest = &rest[n..],
                Err(nix::Error::EAGAIN) if Instant::now() < deadline => {
                    // The agent reads slower than we write: let it drain
                    // (and drain what it answers, so it never blocks on us).
                    self.pump(Duration::from_millis(20));
                }
                Err(e) => return Err(PtyError::Write(e)),
            }
        }
        Ok(())
    }

    /// Reads whatever arrives within `wait`.
    pub fn pump(&mut self, wait: Duration) {
        let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
        let ms = wait.as_millis().min(u16::MAX as u128) as u16;
        if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) <= 0 {
            return;
        }
        let mut b = [0u8; 8192];
        while let Ok(n) = nix::unistd::read(&self.master, &mut b) {
            if n == 0 {
                break;
            }
            self.buf.extend_from_slice(&b[..n]);
            self.transcript.extend_from_slice(&b[..n]);
        }
    }

    /// Discards what was received so far.
    pub fn clear(&mut self) {
        self.pump(Duration::from_millis(50));
        self.buf.clear();
    }

    /// Waits for a complete line (CR/LF-terminated) matching `pred` and
    /// returns it, consuming everything up to it.
    pub fn expect_line(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<String, PtyError> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(pos) = self.buf.iter().position(|&c| c == b'\n' || c == b'\r') {
                let raw: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&raw[..raw.len() - 1]).into_owned();
                if pred(&line) {
                    return Ok(line);
                }
            }
            if Instant::now() >= deadline {
                return Err(PtyError::Timeout {
                    secs: timeout.as_secs(),
                    received: self.tail(3000),
                });
            }
            self.pump(Duration::from_millis(100));
        }
    }

    /// Waits until the received text contains `needle` (prompts have no
    /// line end); consumes up to and including it.
    pub fn expect_text(&mut self, timeout: Duration, needle: &str) -> Result<String, PtyError> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = String::from_utf8_lossy(&self.buf).into_owned();
            if let Some(i) = text.find(needle) {
                let upto = i + needle.len();
                let consumed: String = text[..upto].to_owned();
                self.buf.drain(..consumed.len().min(self.buf.len()));
                return Ok(consumed);
            }
            if Instant::now() >= deadline {
                return Err(PtyError::Timeout {
                    secs: timeout.as_secs(),
                    received: self.tail(3000),
                });
            }
            self.pump(Duration::from_millis(100));
        }
    }

    /// Presses Enter until the agent's banner answers, as a person who
    /// just plugged in does: the agent writes nothing before the first
    /// Enter. An Enter that reached the line before the agent opened it
    /// was discarded with the rest of the stale input. Returns the banner
    /// and the prompt.
    pub fn wake(&mut self, timeout: Duration) -> Result<String, PtyError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.write(b"\r")?;
            match self.expect_text(Duration::from_millis(500), "type help") {
                Ok(mut seen) => {
                    seen.push_str(&self.expect_text(Duration::from_secs(10), "> ")?);
                    return Ok(seen);
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => {}
            }
        }
    }

    /// Sends a JSON request and returns the response with the same id.
    pub fn request(
        &mut self,
        id: u64,
        cmd: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<Value, PtyError> {
        let req = serde_json::json!({"id": id, "cmd": cmd, "args": args});
        self.write(format!("{req}\r").as_bytes())?;
        let line = self.expect_line(timeout, |l| {
            let l = l.trim_start();
            l.starts_with('{')
                && serde_json::from_str::<Value>(l).is_ok_and(|v| {
                    v.get("id") == Some(&serde_json::json!(id)) && v.get("ok").is_some()
                })
        })?;
        Ok(serde_json::from_str(line.trim_start()).expect("checked above"))
    }

    /// Waits for an event line of the given name matching `pred`.
    pub fn expect_event(
        &mut self,
        name: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Value, PtyError> {
        let line = self.expect_line(timeout, |l| {
            serde_json::from_str::<Value>(l.trim_start())
                .is_ok_and(|v| v["event"] == serde_json::json!(name) && pred(&v))
        })?;
        Ok(serde_json::from_str(line.trim_start()).expect("checked above"))
    }

    pub fn tail(&self, n: usize) -> String {
        let t = String::from_utf8_lossy(&self.transcript).into_owned();
        let start = t.len().saturating_sub(n);
        let start = (start..t.len())
            .find(|i| t.is_char_boundary(*i))
            .unwrap_or(t.len());
        t[start..].to_owned()
    }
}
