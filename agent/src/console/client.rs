//! `rackside-agent console PATH [COMMAND]`: for scripts and for people
//! without a terminal program. With a command it sends one JSON request and
//! prints the answer's data; without, it relays the terminal to the line.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use rackside_protocol::{parse_line, Command, Dest, Identify, Mode};
use serde_json::{json, Value};

use super::tty::{self, Ready};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("line")]
    Tty(#[from] tty::TtyError),
    #[error("{0}")]
    Request(String),
    #[error("no answer within {0} s")]
    Timeout(u64),
    #[error("the line hung up")]
    HungUp,
    #[error("i/o on the line")]
    Io(#[source] nix::Error),
    #[error("terminal")]
    Terminal(#[source] std::io::Error),
}

fn dest(d: &Dest) -> Value {
    match d {
        Dest::Auto => json!("auto"),
        Dest::Host(h) => json!(h),
    }
}

/// The JSON request for a parsed command.
pub fn to_json(cmd: &Command, id: &str) -> Value {
    let args = match cmd {
        Command::Plan { dest: d } => json!({"dest": dest(d)}),
        Command::Migrate { vm, dest: d } => json!({"vm": vm, "dest": dest(d)}),
        Command::Evacuate { dest: d, poweroff } => json!({"dest": dest(d), "poweroff": poweroff}),
        Command::Abort { vm } => json!({"vm": vm}),
        Command::Maintenance { on } => json!({"on": on}),
        Command::Login { pin } => json!({"pin": pin}),
        Command::Mode(m) => json!({"mode": if *m == Mode::Json { "json" } else { "text" }}),
        Command::Locate { vm } => json!({"vm": vm}),
        Command::Identify(Identify::On) => json!({"on": true}),
        Command::Identify(Identify::Off) => json!({"on": false}),
        Command::Identify(Identify::Seconds(s)) => json!({"seconds": s}),
        Command::Journal { ack } => json!({"ack": ack}),
        Command::Help { command } => json!({"command": command}),
        _ => json!({}),
    };
    json!({"id": id, "cmd": cmd.name(), "args": args})
}

/// Sends one command (text form, as a person would type it) and returns
/// the response object.
pub fn request(
    path: &Path,
    baud: u32,
    command: &str,
    timeout: Duration,
) -> Result<Value, ClientError> {
    let req = match parse_line(command) {
        Ok(Some(r)) if r.cmd == Command::AskPin => {
            return Err(ClientError::Request(
                "login: give the PIN (login PIN); only a terminal session asks for it".into(),
            ))
        }
        Ok(Some(r)) => r,
        Ok(None) => return Err(ClientError::Request("empty command".into())),
        Err(e) => {
            return Err(ClientError::Request(format!(
                "{}: {}",
                e.code.as_str(),
                e.message
            )))
        }
    };
    let id = format!("client-{}", std::process::id());
    let mut line = to_json(&req.cmd, &id).to_string();
    line.push('\r');
    let fd = tty::open_raw(path, baud)?;
    // Ctrl-U first: clears whatever a person left half-typed on the line.
    tty::write_all(&fd, b"\x15", Duration::from_secs(3)).map_err(ClientError::Io)?;
    tty::write_all(&fd, line.as_bytes(), Duration::from_secs(3)).map_err(ClientError::Io)?;
    read_response(&fd, &json!(id), timeout)
}

fn read_response(fd: &OwnedFd, id: &Value, timeout: Duration) -> Result<Value, ClientError> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout(timeout.as_secs()));
        }
        match tty::wait_readable(fd, left.min(Duration::from_millis(200))) {
            Ready::HungUp => return Err(ClientError::HungUp),
            Ready::Timeout => continue,
            Ready::Readable => {}
        }
        match tty::read_some(fd, &mut buf).map_err(ClientError::Io)? {
            None => return Err(ClientError::HungUp),
            Some(n) => pending.extend_from_slice(&buf[..n]),
        }
        while let Some(pos) = pending.iter().position(|&b| b == b'\n' || b == b'\r') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            // Only JSON lines count; prompts, echo and banners are skipped.
            if !text.starts_with('{') {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<Value>(text) {
                if v.get("id") == Some(id) && v.get("ok").is_some() {
                    return Ok(v);
                }
            }
        }
    }
}

/// Relays this terminal to the line until Ctrl-] (like picocom).
pub fn interactive(path: &Path, baud: u32) -> Result<(), ClientError> {
    use nix::sys::termios;
    let fd = tty::open_raw(path, baud)?;
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(stdin.as_fd()).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(stdin.as_fd(), termios::SetArg::TCSANOW, &raw);
    }
    eprint!("connected to {}; Ctrl-] to leave\r\n", path.display());
    let result = relay(&fd);
    if let Some(t) = &saved {
        let _ = termios::tcsetattr(stdin.as_fd(), termios::SetArg::TCSANOW, t);
    }
    eprintln!();
    result
}

fn relay(fd: &OwnedFd) -> Result<(), ClientError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut buf = [0u8; 1024];
    loop {
        let mut fds = [
            PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
            PollFd::new(fd.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll(&mut fds, PollTimeout::from(500u16));
        let ready = |i: usize| fds[i].revents().unwrap_or(PollFlags::empty());
        let (a, b) = (ready(0), ready(1));
        if a.contains(PollFlags::POLLIN) {
            let n = stdin.lock().read(&mut buf).map_err(ClientError::Terminal)?;
            if n == 0 || buf[..n].contains(&0x1d) {
                return Ok(());
            }
            tty::write_all(fd, &buf[..n], Duration::from_secs(3)).map_err(ClientError::Io)?;
        }
        if b.contains(PollFlags::POLLIN) {
            match tty::read_some(fd, &mut buf).map_err(ClientError::Io)? {
                None => return Err(ClientError::HungUp),
                Some(n) => {
                    stdout.write_all(&buf[..n]).map_err(ClientError::Terminal)?;
                    stdout.flush().map_err(ClientError::Terminal)?;
                }
            }
        } else if b.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            return Err(ClientError::HungUp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_commands_become_protocol_requests() {
        let req = parse_line("migrate web1 hb").unwrap().unwrap();
        let j = to_json(&req.cmd, "x");
        assert_eq!(
            j,
            json!({"id": "x", "cmd": "migrate", "args": {"vm": "web1", "dest": "hb"}})
        );
        // and the agent's parser reads them back to the same command
        let back = parse_line(&j.to_string()).unwrap().unwrap();
        assert_eq!(back.cmd, req.cmd);
        for c in [
            "status",
            "vms",
            "hosts",
            "evacuate auto poweroff",
            "abort",
            "locate x",
            "identify 30",
            "maintenance on",
            "mode json",
            "login 1234",
            "help",
            "help migrate",
        ] {
            let r = parse_line(c).unwrap().unwrap();
            let back = parse_line(&to_json(&r.cmd, "i").to_string())
                .unwrap()
                .unwrap();
            assert_eq!(back.cmd, r.cmd, "{c}");
        }
    }
}
