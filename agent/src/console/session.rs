//! One session on one management line: the protocol's state machine.
//!
//! Pure: bytes and the time come in, bytes go out. The line's thread owns
//! the I/O and the lockout (which outlives sessions: replugging the cable
//! must not reset failed logins).

use std::time::{Duration, Instant};

use rackside_protocol::{
    parse_line, wire, Command, ErrorCode, LineEvent, LineReader, Mode, Request,
};
use serde_json::{json, Value};

use super::answer::Backend;
use crate::auth::{self, Lockout};
use crate::events::Event;

const NL: &str = "\r\n";

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub host: String,
    pub location: String,
    /// The line's name in logs (its path).
    pub line: String,
    pub echo: bool,
    pub pin_hash: Option<String>,
    pub idle_timeout: Duration,
}

#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    reader: LineReader,
    mode: Mode,
    logged_in: bool,
    subscribed: bool,
    last_input: Instant,
    /// The line being typed started with '{': a machine's request, not
    /// echoed (an echoed request would look like a JSON line to clients).
    json_line: bool,
}

impl Session {
    pub fn new(cfg: SessionConfig, now: Instant) -> Self {
        Self {
            cfg,
            reader: LineReader::new(),
            mode: Mode::Text,
            logged_in: false,
            subscribed: false,
            last_input: now,
            json_line: false,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn subscribed(&self) -> bool {
        self.subscribed
    }

    pub fn logged_in(&self) -> bool {
        self.logged_in
    }

    fn prompt(&self) -> String {
        format!("{}> ", self.cfg.host)
    }

    /// What a line shows when a session starts on it.
    pub fn greet(&self) -> Vec<u8> {
        if self.mode == Mode::Json {
            return Vec::new();
        }
        let loc = if self.cfg.location.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.cfg.location)
        };
        format!(
            "{NL}rackside-agent {} on {}{loc}; type help{NL}{}",
            env!("CARGO_PKG_VERSION"),
            self.cfg.host,
            self.prompt()
        )
        .into_bytes()
    }

    /// Feeds bytes read from the line; returns what to write back.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        now: Instant,
        backend: &dyn Backend,
        lockout: &mut Lockout,
    ) -> Vec<u8> {
        self.last_input = now;
        let mut out = Vec::new();
        let mut events = Vec::new();
        // One byte at a time, so echo can stop as soon as a line turns out
        // to be JSON. Serial lines are slow; this costs nothing.
        for &b in bytes {
            let mut echo = Vec::new();
            let echo_on = self.cfg.echo && self.mode == Mode::Text;
            self.reader.feed(&[b], echo_on, &mut echo, &mut events);
            if !self.json_line {
                let pending = self.reader.pending();
                self.json_line = pending.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'{');
            }
            if !self.json_line {
                out.extend_from_slice(&echo);
            }
            for ev in events.drain(..) {
                let was_json = self.json_line;
                self.json_line = false;
                self.on_event(ev, was_json, now, backend, lockout, &mut out);
            }
        }
        out
    }

    fn on_event(
        &mut self,
        ev: LineEvent,
        was_json: bool,
        now: Instant,
        backend: &dyn Backend,
        lockout: &mut Lockout,
        out: &mut Vec<u8>,
    ) {
        let text = self.mode == Mode::Text;
        if text && was_json {
            // The request was not echoed; start the answer on a fresh line
            // so it begins with '{'.
            out.extend_from_slice(NL.as_bytes());
        }
        match ev {
            LineEvent::Cancelled => {}
            LineEvent::TooLong => {
                let msg = format!(
                    "line longer than {} bytes discarded",
                    rackside_protocol::MAX_LINE
                );
                self.write_error(out, None, was_json || !text, ErrorCode::BadRequest, &msg);
            }
            LineEvent::Line(line) => match parse_line(&line) {
                Ok(None) => {}
                Ok(Some(req)) => self.run(req, now, backend, lockout, out),
                Err(e) => {
                    let json = e.json || !text;
                    self.write_error(out, e.id.as_ref(), json, e.code, &e.message)
                }
            },
        }
        if self.mode == Mode::Text {
            out.extend_from_slice(self.prompt().as_bytes());
        }
    }

    fn run(
        &mut self,
        req: Request,
        now: Instant,
        backend: &dyn Backend,
        lockout: &mut Lockout,
        out: &mut Vec<u8>,
    ) {
        let json = req.json || self.mode == Mode::Json;
        let id = req.id.clone();
        let id = id.as_ref();
        if self.cfg.pin_hash.is_some() && !self.logged_in && !req.cmd.allowed_without_login() {
            let msg = format!("'{}' changes this host: login first", req.cmd.name());
            return self.write_error(out, id, json, ErrorCode::AuthRequired, &msg);
        }
        if req.cmd.changes_state() {
            tracing::info!(line = %self.cfg.line, cmd = %req.cmd.name(), args = ?req.cmd, "state-changing command");
        }
        match &req.cmd {
            Command::Login { pin } => self.login(pin, now, lockout, id, json, out),
            Command::Logout => {
                self.logged_in = false;
                self.write_ok(out, id, json, json!({"role": self.role()}), "logged out");
            }
            Command::Mode(m) => {
                self.mode = *m;
                // Confirmation in the new mode: a JSON line for machines,
                // nothing extra for people (the prompt is the answer).
                if *m == Mode::Json || json {
                    out.extend_from_slice(wire::json_ok(id, &json!({})).as_bytes());
                    out.extend_from_slice(NL.as_bytes());
                } else {
                    out.extend_from_slice(format!("text mode{NL}").as_bytes());
                }
            }
            Command::Subscribe => {
                self.subscribed = true;
                self.write_ok(
                    out,
                    id,
                    json,
                    json!({}),
                    "subscribed: events will show on this line",
                );
            }
            Command::Unsubscribe => {
                self.subscribed = false;
                self.write_ok(out, id, json, json!({}), "unsubscribed");
            }
            cmd => match backend.answer(cmd) {
                Ok(a) => {
                    if json {
                        out.extend_from_slice(wire::json_ok(id, &a.data).as_bytes());
                        out.extend_from_slice(NL.as_bytes());
                    } else {
                        out.extend_from_slice(a.text.as_bytes());
                    }
                }
                Err((code, msg)) => self.write_error(out, id, json, code, &msg),
            },
        }
    }

    fn role(&self) -> &'static str {
        match (&self.cfg.pin_hash, self.logged_in) {
            (None, _) => "operator",
            (Some(_), true) => "operator",
            (Some(_), false) => "reader",
        }
    }

    fn login(
        &mut self,
        pin: &str,
        now: Instant,
        lockout: &mut Lockout,
        id: Option<&Value>,
        json: bool,
        out: &mut Vec<u8>,
    ) {
        let Some(hash) = self.cfg.pin_hash.clone() else {
            return self.write_ok(
                out,
                id,
                json,
                json!({"role": "operator"}),
                "no PIN configured: every command is allowed",
            );
        };
        if let Some(left) = lockout.locked(now) {
            tracing::warn!(line = %self.cfg.line, "login attempt while locked out");
            let msg = format!("too many failed logins on this line; try again in {left} s");
            return self.write_error(out, id, json, ErrorCode::LockedOut, &msg);
        }
        if auth::verify(pin, &hash) {
            lockout.succeed();
            self.logged_in = true;
            tracing::info!(line = %self.cfg.line, "login");
            self.write_ok(out, id, json, json!({"role": "operator"}), "logged in");
        } else {
            let locked = lockout.fail(now);
            tracing::warn!(line = %self.cfg.line, failures = lockout.failures(), locked, "login failed");
            if locked {
                let msg = "wrong PIN; this line is locked out".to_string();
                self.write_error(out, id, json, ErrorCode::LockedOut, &msg)
            } else {
                self.write_error(out, id, json, ErrorCode::AuthFailed, "wrong PIN")
            }
        }
    }

    fn write_ok(&self, out: &mut Vec<u8>, id: Option<&Value>, json: bool, data: Value, text: &str) {
        if json {
            out.extend_from_slice(wire::json_ok(id, &data).as_bytes());
        } else {
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(NL.as_bytes());
    }

    fn write_error(
        &self,
        out: &mut Vec<u8>,
        id: Option<&Value>,
        json: bool,
        code: ErrorCode,
        msg: &str,
    ) {
        if json {
            out.extend_from_slice(wire::json_error(id, code, msg).as_bytes());
        } else {
            out.extend_from_slice(wire::text_error(code, msg).as_bytes());
        }
        out.extend_from_slice(NL.as_bytes());
    }

    /// An event for this line, if it subscribed.
    pub fn event(&self, ev: &Event) -> Vec<u8> {
        if !self.subscribed {
            return Vec::new();
        }
        match self.mode {
            Mode::Json => {
                format!("{}{NL}", wire::json_event(ev.name, &ev.ts, &ev.data)).into_bytes()
            }
            Mode::Text => {
                let summary = event_text(ev);
                // Print above the prompt, then redraw what was being typed.
                let mut s =
                    format!("\r{NL}[{}] {summary}{NL}{}", ev.ts, self.prompt()).into_bytes();
                if self.cfg.echo && !self.json_line {
                    s.extend_from_slice(self.reader.pending());
                }
                s
            }
        }
    }

    /// Events dropped because the line fell behind.
    pub fn missed(&self, n: u64) -> Vec<u8> {
        let ev = Event {
            name: "events.missed",
            ts: crate::events::now_rfc3339(),
            data: json!({"missed": n}),
        };
        self.event(&ev)
    }

    /// Time passing: ends an idle login.
    pub fn tick(&mut self, now: Instant) -> Vec<u8> {
        if self.logged_in && now.saturating_duration_since(self.last_input) >= self.cfg.idle_timeout
        {
            self.logged_in = false;
            tracing::info!(line = %self.cfg.line, "login ended: idle");
            if self.mode == Mode::Text {
                return format!("\r{NL}logged out: idle{NL}{}", self.prompt()).into_bytes();
            }
        }
        Vec::new()
    }
}

/// One line for a person about an event.
pub fn event_text(ev: &Event) -> String {
    let d = &ev.data;
    let s = |k: &str| d[k].as_str().unwrap_or("?").to_string();
    match ev.name {
        "vm.state" => format!("{}: {}", s("vm"), s("what")),
        _ => format!("{} {}", ev.name, d),
    }
}
