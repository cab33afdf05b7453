//! One session on one management line: the protocol's state machine.
//!
//! Pure: bytes and the time come in, bytes go out. The line's thread owns
//! the I/O; the failed-login count belongs to the host ([`Logins`]), so
//! neither replugging a cable nor another line resets it.
//!
//! What a text session writes is, byte for byte, one of: the echo of what
//! the person typed, a line end, or a [`Text`] (or the prompt) passed
//! through `rackside_protocol::screen`, the one sanitiser; JSON lines are
//! ASCII-only (`wire`). Nothing from a VM name, a libvirt message or a peer
//! reaches the line any other way.

use std::time::{Duration, Instant};

use rackside_protocol::{
    parse_line, screen, wire, Command, Echo, ErrorCode, LineEvent, LineReader, Mode, Request, Text,
};
use serde_json::{json, Value};

use super::answer::Backend;
use crate::auth::{self, Logins};
use crate::events::{Event, MigrationProgress, Missed, Payload};

const NL: &str = "\r\n";

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub host: String,
    pub location: String,
    /// The line's name in logs (its path).
    pub line: String,
    pub echo: bool,
    pub pin_hash: Option<String>,
    /// A login ends after this long without a command, and the next
    /// Enter shows the banner again (whoever presses it may be someone
    /// else: a UART opened with CLOCAL never sees the cable go).
    pub idle_timeout: Duration,
    /// A login ends this long after it began, however busy the line.
    pub login_lifetime: Duration,
    /// The host's offset from UTC when an event is shown (event lines
    /// show the local time of day); [`super::clock::local_utc_offset_s`]
    /// outside tests.
    pub utc_offset: fn() -> i32,
}

#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    reader: LineReader,
    mode: Mode,
    logged_in: bool,
    /// Subscribed, and in which form: a machine that subscribed with a
    /// JSON request gets JSON events even on a text-mode line.
    subscribed: Option<bool>,
    /// When the last command ran: only whole commands keep a login alive,
    /// never stray bytes (line noise).
    last_command: Instant,
    logged_in_at: Instant,
    /// The banner was shown to whoever is on the line now.
    greeted: bool,
    /// The line being typed started with '{': a machine's request, not
    /// echoed (an echoed request would look like a JSON line to clients).
    json_line: bool,
    /// `login` asked for the PIN: the next line is the PIN, not echoed and
    /// never parsed as a command.
    awaiting_pin: bool,
}

impl Session {
    pub fn new(cfg: SessionConfig, now: Instant) -> Self {
        Self {
            cfg,
            reader: LineReader::new(),
            mode: Mode::Text,
            logged_in: false,
            subscribed: None,
            last_command: now,
            logged_in_at: now,
            greeted: false,
            json_line: false,
            awaiting_pin: false,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn subscribed(&self) -> bool {
        self.subscribed.is_some()
    }

    /// `login` asked for the PIN and the next line will be taken as it.
    pub fn awaiting_pin(&self) -> bool {
        self.awaiting_pin
    }

    pub fn logged_in(&self) -> bool {
        self.logged_in
    }

    /// `ha> `; with a PIN set and this session logged in, `ha# ` (the
    /// router convention field engineers know: `#` may change things).
    fn prompt(&self) -> String {
        let mark = if self.cfg.pin_hash.is_some() && self.logged_in {
            '#'
        } else {
            '>'
        };
        format!("{}{mark} ", screen::escape(&self.cfg.host))
    }

    /// What a person is shown first, on the first Enter of a session (a
    /// banner written when the line opens is seen by nobody who connects
    /// later): the host, where it is, whether a PIN guards it and how to
    /// get help, then each of `warnings` on a line of its own.
    pub fn banner(&self, warnings: &[String]) -> Text {
        let mut t = Text::line(format!(
            "rackside-agent {} on {}",
            env!("CARGO_PKG_VERSION"),
            self.cfg.host,
        ));
        if !self.cfg.location.is_empty() {
            t.push(format!("location: {}", self.cfg.location));
        }
        t.push(match (&self.cfg.pin_hash, self.logged_in) {
            (None, _) => "no PIN set: every command is allowed; type help",
            (Some(_), false) => "PIN set: login to change things; type help",
            (Some(_), true) => "PIN set: logged in (prompt ends in #); type help",
        });
        for w in warnings {
            t.push_wrapped(w, 2);
        }
        t
    }

    /// What the line says when the agent stops, so nobody waits on a
    /// silent line: a text line for people, an `agent.stopping` event for
    /// machines.
    pub fn goodbye(&self) -> Vec<u8> {
        if self.mode == Mode::Json || self.subscribed == Some(true) {
            let data = json!({ "host": self.cfg.host });
            let mut b = Vec::new();
            if self.mode == Mode::Text {
                b.extend_from_slice(NL.as_bytes());
            }
            b.extend(
                wire::json_event("agent.stopping", &crate::events::now_rfc3339(), &data)
                    .into_bytes(),
            );
            b.extend_from_slice(NL.as_bytes());
            return b;
        }
        let mut b = NL.as_bytes().to_vec();
        b.extend(
            Text::line(format!(
                "rackside-agent on {} is stopping; this line is silent until it is back",
                self.cfg.host
            ))
            .to_bytes(),
        );
        b
    }

    /// How typed bytes are echoed: all of them, or, for a terminal that
    /// echoes by itself, only what it cannot show (erasing, line ends,
    /// Ctrl-C); nothing of a PIN or in JSON mode.
    fn echo(&self) -> Echo {
        match (self.mode, self.awaiting_pin, self.cfg.echo) {
            (Mode::Json, _, _) | (_, true, _) => Echo::Off,
            (Mode::Text, false, true) => Echo::On,
            (Mode::Text, false, false) => Echo::EditsOnly,
        }
    }

    /// Feeds bytes read from the line; returns what to write back.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        now: Instant,
        backend: &dyn Backend,
        logins: &Logins,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut events = Vec::new();
        // One byte at a time, so echo can stop as soon as a line turns out
        // to be JSON. Serial lines are slow; this costs nothing.
        for &b in bytes {
            let mut echo = Vec::new();
            self.reader.feed(&[b], self.echo(), &mut echo, &mut events);
            let was_json = self.json_line;
            if events.is_empty() {
                // A machine's line while its first non-blank byte is '{':
                // erasing that brace (or the line) hands it back to the
                // person typing, whose keys echo again.
                let pending = self.reader.pending();
                self.json_line = pending.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'{');
            }
            if !was_json && !self.json_line {
                out.extend_from_slice(&echo);
            }
            for ev in events.drain(..) {
                let was_json = self.json_line;
                self.json_line = false;
                self.on_event(ev, was_json, now, backend, logins, &mut out);
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
        logins: &Logins,
        out: &mut Vec<u8>,
    ) {
        let text = self.mode == Mode::Text;
        if self.awaiting_pin {
            return self.on_pin(ev, was_json, now, backend, logins, out);
        }
        if ev == LineEvent::Recalled {
            return self.redraw_recalled(out);
        }
        if text && !was_json && !self.greeted && ev != LineEvent::Cancelled {
            self.greeted = true;
            out.extend(self.banner(&backend.warnings()).to_bytes());
        }
        if text && was_json {
            // The request was not echoed; start the answer on a fresh line
            // so it begins with '{'.
            out.extend_from_slice(NL.as_bytes());
        }
        match ev {
            LineEvent::Cancelled | LineEvent::Recalled => {}
            LineEvent::TooLong => {
                let msg = format!(
                    "line longer than {} bytes discarded",
                    rackside_protocol::MAX_LINE
                );
                self.write_error(out, None, was_json || !text, ErrorCode::BadRequest, &msg);
            }
            LineEvent::Line(line) => match parse_line(&line) {
                Ok(None) => {}
                Ok(Some(req)) => {
                    self.last_command = now;
                    if matches!(req.cmd, Command::Login { .. }) {
                        // Up arrow must never bring a typed PIN back.
                        self.reader.forget_history();
                    }
                    self.run(req, now, backend, logins, out)
                }
                Err(e) => {
                    let json = e.json || !text;
                    self.write_error(out, e.id.as_ref(), json, e.code, &e.message)
                }
            },
        }
        if self.mode == Mode::Text && !self.awaiting_pin {
            out.extend_from_slice(self.prompt().as_bytes());
        }
    }

    /// The line typed after `PIN: `. Nothing of it was echoed; the Enter
    /// was not either, so the answer starts on a line of its own.
    fn on_pin(
        &mut self,
        ev: LineEvent,
        was_json: bool,
        now: Instant,
        backend: &dyn Backend,
        logins: &Logins,
        out: &mut Vec<u8>,
    ) {
        self.awaiting_pin = false;
        match ev {
            // A machine's request at the PIN prompt is a request: the
            // prompt is dropped and the request handled as ever.
            LineEvent::Line(line) if line.trim_start().starts_with('{') => {
                self.on_event(LineEvent::Line(line), was_json, now, backend, logins, out)
            }
            LineEvent::Line(pin) => {
                out.extend_from_slice(NL.as_bytes());
                self.login(pin.trim(), now, logins, None, false, out);
                out.extend_from_slice(self.prompt().as_bytes());
            }
            // Never sent without echo; the PIN prompt stays.
            LineEvent::Recalled => self.awaiting_pin = true,
            LineEvent::Cancelled | LineEvent::TooLong => {
                out.extend_from_slice(NL.as_bytes());
                out.extend(Text::line("login cancelled").to_bytes());
                out.extend_from_slice(self.prompt().as_bytes());
            }
        }
    }

    fn run(
        &mut self,
        req: Request,
        now: Instant,
        backend: &dyn Backend,
        logins: &Logins,
        out: &mut Vec<u8>,
    ) {
        let json = req.json || self.mode == Mode::Json;
        let id = req.id.clone();
        let id = id.as_ref();
        if self.cfg.pin_hash.is_some() && !self.logged_in && !req.cmd.allowed_without_login() {
            tracing::warn!(line = %self.cfg.line, cmd = %req.cmd.name(), "refused: not logged in");
            let msg = format!("'{}' changes this host: login first", req.cmd.name());
            return self.write_error(out, id, json, ErrorCode::AuthRequired, &msg);
        }
        let changes = req.cmd.changes_state();
        if changes {
            tracing::info!(line = %self.cfg.line, cmd = %req.cmd.name(), args = ?req.cmd, "state-changing command");
        }
        match &req.cmd {
            Command::Login { pin } => self.login(pin, now, logins, id, json, out),
            Command::AskPin => self.ask_pin(now, logins, out),
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
                    out.extend(Text::line("text mode").to_bytes());
                }
            }
            Command::Subscribe => {
                self.subscribed = Some(json);
                self.write_ok(
                    out,
                    id,
                    json,
                    json!({}),
                    "subscribed: events will show on this line",
                );
            }
            Command::Unsubscribe => {
                self.subscribed = None;
                self.write_ok(out, id, json, json!({}), "unsubscribed");
            }
            cmd => match backend.answer(cmd, &self.cfg.line) {
                Ok(a) => {
                    if changes {
                        tracing::info!(line = %self.cfg.line, cmd = %cmd.name(), "state-changing command done");
                    }
                    if json {
                        out.extend_from_slice(wire::json_ok(id, &a.data).as_bytes());
                        out.extend_from_slice(NL.as_bytes());
                    } else {
                        out.extend(a.text.to_bytes());
                    }
                }
                Err((code, msg)) => {
                    if changes {
                        tracing::warn!(line = %self.cfg.line, cmd = %cmd.name(), code = code.as_str(), cause = %msg, "state-changing command refused");
                    }
                    self.write_error(out, id, json, code, &msg)
                }
            },
        }
    }

    /// Up arrow brought the last command back. The reader redrew it when
    /// it echoes; a terminal that echoes by itself moved its cursor up a
    /// row on the arrow's escape sequence, so the prompt and the command
    /// are written over the row below, the one being typed on.
    fn redraw_recalled(&self, out: &mut Vec<u8>) {
        if self.echo() != Echo::EditsOnly {
            return;
        }
        out.extend_from_slice(NL.as_bytes());
        out.extend_from_slice(self.prompt().as_bytes());
        // Written by the agent, not echoed: through the sanitiser.
        let typed = String::from_utf8_lossy(self.reader.pending());
        out.extend_from_slice(screen::escape(&typed).as_bytes());
    }

    fn role(&self) -> &'static str {
        match (&self.cfg.pin_hash, self.logged_in) {
            (None, _) => "operator",
            (Some(_), true) => "operator",
            (Some(_), false) => "reader",
        }
    }

    /// `login` alone, on a text line: `PIN: ` and the next line unseen.
    /// Without a PIN, or while locked out, the answer is what `login PIN`
    /// would get, at once.
    fn ask_pin(&mut self, now: Instant, logins: &Logins, out: &mut Vec<u8>) {
        if self.mode == Mode::Json {
            let msg = "usage: login PIN (only a text line asks for the PIN)";
            return self.write_error(out, None, true, ErrorCode::BadRequest, msg);
        }
        if self.cfg.pin_hash.is_none() || logins.locked(now).is_some() {
            return self.login("", now, logins, None, false, out);
        }
        out.extend_from_slice(b"PIN: ");
        self.awaiting_pin = true;
    }

    fn login(
        &mut self,
        pin: &str,
        now: Instant,
        logins: &Logins,
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
        if let Some(left) = logins.locked(now) {
            tracing::warn!(line = %self.cfg.line, "login attempt while locked out");
            let msg = format!("too many failed logins; try again in {left} s");
            return self.write_error(out, id, json, ErrorCode::LockedOut, &msg);
        }
        if auth::verify(pin, &hash) {
            logins.succeed(now);
            self.logged_in = true;
            self.logged_in_at = now;
            tracing::info!(line = %self.cfg.line, "login");
            self.write_ok(out, id, json, json!({"role": "operator"}), "logged in");
        } else {
            let f = logins.fail(now);
            let locked = f.locked.is_some();
            tracing::warn!(line = %self.cfg.line, failures = f.failures, lockout_s = f.locked.map(|d| d.as_secs()), "login failed");
            let msg = auth::wrong_pin_message(f.tries_left, f.locked.unwrap_or(f.next_lockout));
            let code = if locked {
                ErrorCode::LockedOut
            } else {
                ErrorCode::AuthFailed
            };
            self.write_error(out, id, json, code, &msg)
        }
    }

    fn write_ok(&self, out: &mut Vec<u8>, id: Option<&Value>, json: bool, data: Value, text: &str) {
        if json {
            out.extend_from_slice(wire::json_ok(id, &data).as_bytes());
            out.extend_from_slice(NL.as_bytes());
        } else {
            out.extend(Text::line(text).to_bytes());
        }
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
            out.extend_from_slice(NL.as_bytes());
        } else {
            let mut t = Text::new();
            t.push_wrapped(&wire::text_error(code, msg), 2);
            out.extend(t.to_bytes());
        }
    }

    /// An event for this line, if it subscribed.
    pub fn event(&self, ev: &Event) -> Vec<u8> {
        // The verdict reaches every person at the rack, subscribed or not.
        let verdict = ev.name == "evacuation.done" && self.mode == Mode::Text;
        let as_json = match self.subscribed {
            Some(j) => j,
            None if verdict => false,
            None => return Vec::new(),
        };
        let body = if as_json || self.mode == Mode::Json {
            let data = serde_json::to_value(&ev.data).unwrap_or_default();
            let mut b = wire::json_event(ev.name, &ev.ts, &data).into_bytes();
            b.extend_from_slice(NL.as_bytes());
            b
        } else {
            event_text(ev, (self.cfg.utc_offset)()).to_bytes()
        };
        if self.mode == Mode::Json {
            return body;
        }
        // Text line: leave the prompt's line, print the event on its own
        // line (so a JSON event starts with '{'), then redraw the prompt
        // and whatever was being typed.
        let mut s = NL.as_bytes().to_vec();
        s.extend(body);
        if self.awaiting_pin {
            // What was typed of the PIN stays unseen.
            s.extend_from_slice(b"PIN: ");
            return s;
        }
        s.extend_from_slice(self.prompt().as_bytes());
        if self.cfg.echo && !self.json_line {
            s.extend_from_slice(self.reader.pending());
        }
        s
    }

    /// Events dropped because the line fell behind.
    pub fn missed(&self, n: u64) -> Vec<u8> {
        self.event(&Event::now(Payload::EventsMissed(Missed { missed: n })))
    }

    /// Time passing: ends a login that was idle too long or is too old,
    /// and takes an idle line for a new session (banner on the next Enter).
    pub fn tick(&mut self, now: Instant) -> Vec<u8> {
        let idle = now.saturating_duration_since(self.last_command) >= self.cfg.idle_timeout;
        if idle {
            self.greeted = false;
        }
        let why = if !self.logged_in {
            return Vec::new();
        } else if now.saturating_duration_since(self.logged_in_at) >= self.cfg.login_lifetime {
            "lifetime"
        } else if idle {
            "idle"
        } else {
            return Vec::new();
        };
        self.logged_in = false;
        self.awaiting_pin = false;
        tracing::info!(line = %self.cfg.line, reason = why, "login ended");
        if self.mode != Mode::Text {
            return Vec::new();
        }
        let msg = match why {
            "idle" => format!(
                "logged out: no command for {} s",
                self.cfg.idle_timeout.as_secs()
            ),
            _ => format!(
                "logged out: logins last {} min; login again",
                self.cfg.login_lifetime.as_secs() / 60
            ),
        };
        let mut s = NL.as_bytes().to_vec();
        s.extend(Text::line(msg).to_bytes());
        s.extend_from_slice(self.prompt().as_bytes());
        s
    }
}

/// An event as a person reads it: a line stamped with the local time of
/// day (`utc_offset_s` from UTC; the stamp as sent when it is not one),
/// what does not fit in 80 columns on indented lines under it; the
/// verdict comes after the stamp's line, its framed line last, so that it
/// starts a line and nothing else can.
pub fn event_text(ev: &Event, utc_offset_s: i32) -> Text {
    let at = super::clock::time_of_day(&ev.ts, utc_offset_s).unwrap_or_else(|| ev.ts.clone());
    if let Payload::EvacuationDone(v) = &ev.data {
        let mut t = Text::line(format!("[{at}] evacuation {} finished", v.evacuation));
        t.append(super::text::verdict(v));
        return t;
    }
    let stamp = format!("[{at}] ");
    let room = screen::WIDTH.saturating_sub(stamp.chars().count());
    let mut t = Text::new();
    t.push_wrapped(&format!("{stamp}{}", event_line(&ev.data, room)), STAMP);
    t
}

/// How far in an event's second line starts: under the text after
/// `[HH:MM:SS] `.
const STAMP: usize = 11;

fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn whole(v: Option<f64>) -> String {
    v.map_or("-".into(), |f| format!("{f:.0}"))
}

/// A migration's progress. Before libvirt knows the size there is nothing
/// to count down: it says so rather than "0 MiB left". The rate is left
/// out when the figures would not fit in `room` columns (long names): the
/// time left says as much.
fn progress_line(p: &MigrationProgress, room: usize) -> String {
    let note = p.note.as_ref().map_or(String::new(), |n| format!(" - {n}"));
    let Some(left) = p.remaining_mib else {
        return format!(
            "{} -> {}: starting (size not known yet){note}",
            p.vm, p.dest
        );
    };
    // Past 10 GiB, whole GiB: the digits that matter, in fewer columns.
    let left = if left >= 10_240.0 {
        format!("{:.0} GiB", left / 1024.0)
    } else {
        format!("{} MiB", whole(Some(left)))
    };
    let head = format!(
        "{} -> {}: {}% ({left} left",
        p.vm,
        p.dest,
        // Floored: 99.9 % is not done, and 100 % means done.
        p.percent.floor(),
    );
    let eta = format!("eta {} s)", or_dash(p.eta_s));
    let full = format!("{head}, {} MiB/s, {eta}", whole(p.rate_mib_s));
    let line = if screen::escape(&full).chars().count() <= room {
        full
    } else {
        format!("{head}, {eta}")
    };
    format!("{line}{note}")
}

/// What a person reads about an event other than the verdict, in `room`
/// columns where it can.
fn event_line(data: &Payload, room: usize) -> String {
    match data {
        Payload::VmState(e) => format!("{}: {}", e.vm, e.what),
        Payload::Hook(e) => match &e.refused {
            Some(why) => format!("{}: {} ({why})", e.vm, e.what),
            None => format!("{}: {}", e.vm, e.what),
        },
        Payload::MigrationProgress(p) => progress_line(p, room),
        Payload::MigrationDone(d) => format!(
            "{} -> {}: done in {:.1} s, downtime {} ms{}",
            d.vm,
            d.dest,
            d.seconds,
            or_dash(d.downtime_ms),
            d.announce
                .as_ref()
                .and_then(|a| a.short())
                .map_or(String::new(), |s| format!(", {s}")),
        ),
        Payload::MigrationFailed(f) => format!(
            "{} -> {}: FAILED: {}; now on {}{}{}",
            f.vm,
            f.dest,
            f.error,
            f.now_on.as_deref().unwrap_or("-"),
            f.note.as_ref().map_or(String::new(), |n| format!(" ({n})")),
            f.retrying_on
                .as_ref()
                .map_or(String::new(), |h| format!("; retrying on {h}")),
        ),
        Payload::EvacuationDone(v) => format!("evacuation {} finished", v.evacuation),
        Payload::HostEmpty(h) => format!("{} is empty", h.host),
        Payload::HostPoweroff(h) => format!("{} is powering off", h.host),
        Payload::VmCrash(c) => format!("{}: {}", c.vm, c.reason),
        Payload::HostHealth(h) if h.reasons.is_empty() => {
            format!("{} health: {}", h.host, h.health.as_str())
        }
        Payload::HostHealth(h) => format!(
            "{} health: {} ({})",
            h.host,
            h.health.as_str(),
            h.reasons.join("; ")
        ),
        Payload::EventsMissed(m) => format!("{} events missed: this line fell behind", m.missed),
    }
}

#[cfg(test)]
mod tests {
    use super::super::answer::{Answer, Refusal};
    use super::*;
    use crate::events::{
        HookReport, HostName, MigrationDone, MigrationFailed, MigrationProgress, Missed,
        VmStateChange,
    };
    use crate::migration::announce::Announce;
    use crate::migration::timeline::Timeline;
    use crate::placement::{PeerReason, Unplaceable};
    use crate::report::{NotMoved, Phase, StillHere, Verdict};
    use proptest::prelude::*;

    #[test]
    fn progress_before_the_size_is_known_says_starting_not_zero_left() {
        let mut p = MigrationProgress {
            job: 1,
            vm: "a".into(),
            dest: "hb".into(),
            percent: 0.0,
            remaining_mib: None,
            rate_mib_s: None,
            eta_s: None,
            downtime_ms: 100,
            note: None,
        };
        assert_eq!(
            progress_line(&p, 69),
            "a -> hb: starting (size not known yet)"
        );
        p.remaining_mib = Some(12.4);
        p.percent = 99.9;
        p.rate_mib_s = Some(80.0);
        p.eta_s = Some(1);
        assert_eq!(
            progress_line(&p, 69),
            "a -> hb: 99% (12 MiB left, 80 MiB/s, eta 1 s)",
            "99.9 % is not 100 %"
        );
    }

    #[test]
    fn the_done_line_says_in_a_word_whether_traffic_followed() {
        let mut d = MigrationDone {
            job: 1,
            vm: "a".into(),
            dest: "hb".into(),
            downtime_ms: Some(155),
            seconds: 4.1,
            data_mib: None,
            timeline: Timeline::default(),
            announce: Some(Announce::Seen { from_end_ms: -40 }),
        };
        let line = |d: &MigrationDone| event_line(&Payload::MigrationDone(d.clone()), 69);
        assert_eq!(
            line(&d),
            "a -> hb: done in 4.1 s, downtime 155 ms, announced"
        );
        d.announce = Some(Announce::Requested {
            reason: "no RARP from 52:54:00:00:00:01 seen on brvm within 1000 ms of the end".into(),
        });
        assert_eq!(
            line(&d),
            "a -> hb: done in 4.1 s, downtime 155 ms, announce requested"
        );
        d.announce = Some(Announce::NotConfirmed { reason: "x".into() });
        assert!(line(&d).ends_with(", announce NOT confirmed"));
        // No NIC, or an offline move: nothing said.
        for a in [Some(Announce::NoNic), None] {
            d.announce = a;
            assert_eq!(line(&d), "a -> hb: done in 4.1 s, downtime 155 ms");
        }
    }

    /// Every kind of event, with 20-char VM names, 12-char hosts and long
    /// reasons, fits 80 columns with its stamp; a progress line stays one
    /// line.
    #[test]
    fn every_event_fits_80_columns() {
        use crate::console::fit::{assert_fits_80, vm_name, HOST_A, HOST_B, HOST_C};
        let vm = vm_name(7);
        let long = format!(
            "operation failed: migration out job: unexpectedly failed; {HOST_B} refused the \
             incoming migration: its hook says {HOST_B} is in maintenance"
        );
        let progress = |remaining_mib, rate, note: Option<String>| {
            Payload::MigrationProgress(MigrationProgress {
                job: 12345,
                vm: vm.clone(),
                dest: HOST_B.into(),
                percent: 45.6,
                remaining_mib,
                rate_mib_s: rate,
                eta_s: Some(1234),
                downtime_ms: 300,
                note,
            })
        };
        let verdict = Verdict {
            evacuation: 12,
            host: HOST_A.into(),
            moved: vec![],
            failed: vec![NotMoved {
                vm: vm.clone(),
                dest: HOST_B.into(),
                phase: Phase::Failed,
                error: Some(long.clone()),
                tried: vec![HOST_B.into(), HOST_C.into()],
            }],
            unplaceable: vec![],
            peer_reasons: vec![],
            remaining: vec![vm.clone()],
            still_here: vec![],
            safe_to_power_off: false,
            check_error: Some(long.clone()),
        };
        let events = [
            Payload::VmState(VmStateChange {
                vm: vm.clone(),
                uuid: "6f1c2d3e-4b5a-4c6d-8e7f-000000000003".into(),
                what: "shutting_down",
                state: Some("running"),
            }),
            Payload::Hook(HookReport {
                vm: vm.clone(),
                uuid: None,
                what: "refused",
                source: "hook",
                op: "migrate".into(),
                subop: "begin".into(),
                refused: Some(long.clone()),
            }),
            progress(None, None, None),
            progress(Some(131_072.0), Some(1180.4), None),
            progress(Some(12.0), Some(80.0), None),
            progress(Some(131_072.0), Some(1180.4), Some(long.clone())),
            Payload::MigrationDone(MigrationDone {
                job: 12345,
                vm: vm.clone(),
                dest: HOST_B.into(),
                downtime_ms: Some(30_000),
                seconds: 1234.5,
                data_mib: Some(131_072.0),
                timeline: Timeline::default(),
                announce: Some(Announce::NotConfirmed {
                    reason: long.clone(),
                }),
            }),
            Payload::MigrationFailed(MigrationFailed {
                job: 12345,
                vm: vm.clone(),
                dest: HOST_B.into(),
                error: long.clone(),
                now_on: Some(HOST_A.into()),
                retrying_on: Some(HOST_C.into()),
                note: Some(format!("resumed {vm} here after libvirt left it paused")),
            }),
            Payload::EvacuationDone(Box::new(verdict.clone())),
            Payload::EvacuationDone(Box::new(Verdict {
                safe_to_power_off: true,
                ..verdict
            })),
            Payload::HostEmpty(HostName {
                host: HOST_A.into(),
            }),
            Payload::HostPoweroff(HostName {
                host: HOST_A.into(),
            }),
            Payload::EventsMissed(Missed { missed: u64::MAX }),
            Payload::VmCrash(crate::events::VmCrash {
                vm: vm.clone(),
                uuid: "6f1c2d3e-4b5a-4c6d-8e7f-000000000003".into(),
                crash: crate::crash::CrashKind::QemuDied,
                health: crate::health::Level::Degraded,
                action: "leave",
                dest: None,
                reason: "QEMU died: left as it is: this host is degraded, so it is not \
                         restarted here, and this version does not start crashed VMs on peers"
                    .into(),
            }),
            Payload::HostHealth(crate::events::HostHealth {
                host: HOST_A.into(),
                health: crate::health::Level::Faulty,
                reasons: vec![
                    "mc0: 12 uncorrected memory errors in the last 5 s".into(),
                    "thermal_zone0 (x86_pkg_temp): 101 °C, critical at 100 °C".into(),
                    long.clone(),
                ],
            }),
        ];
        for data in events {
            let ev = Event {
                name: data.name(),
                ts: "2026-03-01T14:31:31.123456789Z".into(),
                data,
            };
            let shown = event_text(&ev, 3600).to_string();
            assert_fits_80(&shown);
            let lines: Vec<&str> = shown.trim_end_matches("\r\n").split("\r\n").collect();
            assert!(lines[0].starts_with("[15:31:31] "), "{shown}");
            for l in &lines[1..] {
                assert!(
                    l.starts_with("           ") || matches!(ev.data, Payload::EvacuationDone(_)),
                    "{shown}"
                );
            }
            if let Payload::MigrationProgress(p) = &ev.data {
                if p.note.is_none() {
                    assert_eq!(lines.len(), 1, "{shown}");
                }
            }
        }
        // The rate is shown when it fits, and left out when it does not.
        let p = |vm: &str| MigrationProgress {
            job: 1,
            vm: vm.into(),
            dest: HOST_B.into(),
            percent: 45.6,
            remaining_mib: Some(131_072.0),
            rate_mib_s: Some(1180.4),
            eta_s: Some(1234),
            downtime_ms: 300,
            note: None,
        };
        assert_eq!(
            progress_line(&p("web1"), 69),
            format!("web1 -> {HOST_B}: 45% (128 GiB left, 1180 MiB/s, eta 1234 s)")
        );
        assert_eq!(
            progress_line(&p(&vm), 69),
            format!("{vm} -> {HOST_B}: 45% (128 GiB left, eta 1234 s)")
        );
    }

    /// Answers every reading command with its own name, so tests see which
    /// command ran; refuses the rest like the agent before evacuation.
    struct Echo;
    impl Backend for Echo {
        fn answer(&self, cmd: &Command, _line: &str) -> Result<Answer, Refusal> {
            match cmd {
                Command::Status
                | Command::Vms { .. }
                | Command::Hosts
                | Command::Help { .. }
                | Command::Locate { .. } => Ok(Answer {
                    data: json!({"cmd": cmd.name()}),
                    text: Text::line(format!("answer to {}", cmd.name())),
                }),
                _ => Err((ErrorCode::Unavailable, "not yet".into())),
            }
        }
    }

    fn cfg(pin: Option<&str>) -> SessionConfig {
        SessionConfig {
            host: "ha".into(),
            location: "rack 1".into(),
            line: "/dev/ttyS1".into(),
            echo: true,
            pin_hash: pin.map(|p| auth::hash_pin(p).unwrap()),
            idle_timeout: Duration::from_secs(60),
            login_lifetime: Duration::from_secs(3600),
            utc_offset: || 3600,
        }
    }

    fn lockout() -> Logins {
        Logins::in_memory(5, Duration::from_secs(300))
    }

    /// A '{' typed by mistake and erased (or a line cleared with Ctrl-U)
    /// no longer hides the rest of the line from the person typing it.
    #[test]
    fn an_erased_brace_gives_the_echo_back() {
        let now = Instant::now();
        for input in [&b"{\x7fvms\r"[..], b"{\"cmd\x15vms\r", b" {\x08vms\r"] {
            let mut s = greeted(cfg(None), now);
            let out = String::from_utf8_lossy(&s.feed(input, now, &Echo, &lockout())).into_owned();
            let lead = if input[0] == b' ' { " " } else { "" };
            assert_eq!(
                out,
                format!("{lead}vms\r\nanswer to vms\r\nha> "),
                "{input:?}"
            );
        }
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    /// A session whose person pressed Enter once (and saw the banner).
    fn greeted(cfg: SessionConfig, now: Instant) -> Session {
        let mut s = Session::new(cfg, now);
        s.feed(b"\r", now, &Echo, &lockout());
        s
    }

    struct Warned;
    impl Backend for Warned {
        fn answer(&self, cmd: &Command, line: &str) -> Result<Answer, Refusal> {
            Echo.answer(cmd, line)
        }
        fn warnings(&self) -> Vec<String> {
            vec!["WARNING: the journal was damaged\r*** x".into()]
        }
    }

    #[test]
    fn the_banner_comes_with_the_first_enter_and_again_after_an_idle_spell() {
        let now = Instant::now();
        let mut s = Session::new(cfg(Some("471147")), now);
        let out = text(&s.feed(b"\r", now, &Warned, &lockout()));
        assert_eq!(
            out,
            format!(
                "\r\nrackside-agent {} on ha\r\nlocation: rack 1\r\n\
                 PIN set: login to change things; type help\r\n\
                 WARNING: the journal was damaged\\r*** x\r\nha> ",
                env!("CARGO_PKG_VERSION")
            )
        );
        let out = text(&s.feed(b"\r", now, &Warned, &lockout()));
        assert_eq!(out, "\r\nha> ", "once per session");
        // Whoever presses Enter after a quiet spell may be someone else.
        let later = now + Duration::from_secs(61);
        assert_eq!(text(&s.tick(later)), "", "nobody logged in, nothing to say");
        let out = text(&s.feed(b"status\r", later, &Warned, &lockout()));
        assert!(out.starts_with("status\r\nrackside-agent"), "{out:?}");
        assert!(out.ends_with("answer to status\r\nha> "), "{out:?}");
        // A machine's first request gets its answer, never a banner.
        let mut m = Session::new(cfg(None), now);
        let out = text(&m.feed(b"{\"cmd\":\"vms\"}\r", now, &Warned, &lockout()));
        assert!(!out.contains("rackside-agent"), "{out:?}");
        let no_pin = text(&m.feed(b"\r", now, &Warned, &lockout()));
        assert!(
            no_pin.contains("no PIN set: every command is allowed"),
            "{no_pin:?}"
        );
    }

    #[test]
    fn text_mode_echoes_answers_and_prompts() {
        let now = Instant::now();
        let mut s = greeted(cfg(None), now);
        let out = text(&s.feed(b"status\r", now, &Echo, &lockout()));
        assert_eq!(out, "status\r\nanswer to status\r\nha> ");
        let out = text(&s.feed(b"nosuch\r", now, &Echo, &lockout()));
        assert!(out.contains("error: unknown_command: "), "{out}");
        assert!(out.ends_with("ha> "));
    }

    /// The agent's own help answers, everything else refused.
    struct Helpful;
    impl Backend for Helpful {
        fn answer(&self, cmd: &Command, _line: &str) -> Result<Answer, Refusal> {
            match cmd {
                Command::Help { command } => Ok(crate::console::answer::help(*command)),
                _ => Err((ErrorCode::Unavailable, "not yet".into())),
            }
        }
    }

    #[test]
    fn help_lists_every_command_and_help_command_explains_one() {
        let now = Instant::now();
        let mut s = greeted(cfg(Some("471147")), now);
        let out = text(&s.feed(b"help\r", now, &Helpful, &lockout()));
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(lines[1], "COMMAND                          WHAT");
        assert_eq!(lines.len(), 1 + 1 + rackside_protocol::COMMANDS.len() + 1);
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{out}");
        let out = text(&s.feed(b"help MIGRATE\r", now, &Helpful, &lockout()));
        assert!(
            out.starts_with("help MIGRATE\r\nmigrate VM [HOST|auto]: live-migrate one VM\r\n"),
            "{out}"
        );
        assert!(out.contains("\r\nlogin: needed when a PIN is set"), "{out}");
        assert!(out.ends_with("ha> "));
        // Nothing but the error: no list, no other page.
        let out = text(&s.feed(b"help nosuch\r", now, &Helpful, &lockout()));
        assert_eq!(
            out,
            "help nosuch\r\nerror: not_found: no command 'nosuch'; type help for the list\r\nha> "
        );
        let out = text(&s.feed(
            b"{\"id\":1,\"cmd\":\"help\",\"args\":{\"command\":\"journal\"}}\r",
            now,
            &Helpful,
            &lockout(),
        ));
        let v: Value = serde_json::from_str(out.split("\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(v["data"]["command"], "journal");
        assert_eq!(v["data"]["usage"], "journal [ack]");
        assert_eq!(v["data"]["login"], true);
        let out = text(&s.feed(b"{\"id\":2,\"cmd\":\"help\"}\r", now, &Helpful, &lockout()));
        let v: Value = serde_json::from_str(out.split("\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(v["data"], json!({"commands": rackside_protocol::COMMANDS}));
    }

    #[test]
    fn a_json_request_on_a_text_line_is_not_echoed_and_answers_on_its_own_line() {
        let now = Instant::now();
        let mut s = Session::new(cfg(None), now);
        let out = text(&s.feed(b"{\"id\":3,\"cmd\":\"vms\"}\r", now, &Echo, &lockout()));
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(lines[0], "", "request echoed: {out:?}");
        let v: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["id"], 3);
        assert_eq!(v["data"]["cmd"], "vms");
    }

    #[test]
    fn json_mode_has_no_echo_no_prompt_and_one_answer_per_line() {
        let now = Instant::now();
        let mut s = Session::new(cfg(None), now);
        let out = text(&s.feed(b"mode json\r", now, &Echo, &lockout()));
        assert!(out.ends_with("{\"ok\":true,\"data\":{}}\r\n"), "{out:?}");
        assert!(!text(&s.feed(b"\r", now, &Warned, &lockout())).contains("rackside"));
        let out = text(&s.feed(
            b"status\r{\"id\":\"a\",\"cmd\":\"hosts\"}\n\r\n",
            now,
            &Echo,
            &lockout(),
        ));
        let lines: Vec<&str> = out.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 2, "{out:?}");
        for l in lines {
            assert!(serde_json::from_str::<Value>(l).unwrap().is_object());
        }
    }

    #[test]
    fn login_alone_asks_for_the_pin_and_never_shows_it() {
        let now = Instant::now();
        let mut s = Session::new(cfg(Some("471147")), now);
        let lo = lockout();
        let out = text(&s.feed(b"login\r", now, &Echo, &lo));
        assert!(out.ends_with("PIN: "), "{out:?}");
        // Typed, erased, retyped: nothing of it reaches the screen.
        let out = text(&s.feed(b"47\x7f\x7f12", now, &Echo, &lo));
        assert_eq!(out, "");
        let out = text(&s.feed(b"34\r", now, &Echo, &lo));
        assert!(!out.contains("12") && !out.contains("34"), "{out:?}");
        assert!(out.contains("wrong PIN"), "{out:?}");
        assert!(out.ends_with("ha> "), "{out:?}");
        assert!(!s.logged_in());
        s.feed(b"login\r", now, &Echo, &lo);
        let out = text(&s.feed(b"471147\r", now, &Echo, &lo));
        assert!(!out.contains("471147"), "{out:?}");
        assert!(out.starts_with("\r\nlogged in"), "{out:?}");
        // The prompt says the session may now change things.
        assert!(out.ends_with("ha# "), "{out:?}");
        assert!(s.logged_in());
        let out = text(&s.feed(b"logout\r", now, &Echo, &lo));
        assert!(out.ends_with("ha> "), "{out:?}");
    }

    #[test]
    fn the_pin_prompt_can_be_left_and_gives_way_to_a_machine() {
        let now = Instant::now();
        let lo = lockout();
        let mut s = Session::new(cfg(Some("471147")), now);
        s.feed(b"login\r", now, &Echo, &lo);
        s.feed(b"subscribe\r", now, &Echo, &lo);
        // "subscribe" was taken as a (wrong) PIN, not as a command.
        assert!(!s.subscribed());
        s.feed(b"login\r", now, &Echo, &lo);
        let out = text(&s.feed(b"47\x03", now, &Echo, &lo));
        assert!(
            out.contains("login cancelled") && out.ends_with("ha> "),
            "{out:?}"
        );
        assert!(!out.contains("47"), "{out:?}");
        let ev = Event {
            name: "host.empty",
            ts: "2026-01-01T00:00:00Z".into(),
            data: Payload::HostEmpty(HostName { host: "ha".into() }),
        };
        s.feed(b"subscribe\r", now, &Echo, &lo);
        s.feed(b"login\r47", now, &Echo, &lo);
        let out = text(&s.event(&ev));
        assert!(out.ends_with("ha is empty\r\nPIN: "), "{out:?}");
        // A JSON request at the prompt is a request.
        let out = text(&s.feed(b"\x15{\"id\":1,\"cmd\":\"status\"}\r", now, &Echo, &lo));
        assert!(out.contains("\"id\":1"), "{out:?}");
        // Without a PIN set, login alone answers at once.
        let mut open = Session::new(cfg(None), now);
        let out = text(&open.feed(b"login\r", now, &Echo, &lo));
        assert!(
            out.contains("no PIN configured") && out.ends_with("ha> "),
            "{out:?}"
        );
    }

    #[test]
    fn a_pin_guards_state_changes_and_locks_out_after_failures() {
        let now = Instant::now();
        let mut s = Session::new(cfg(Some("471147")), now);
        let lo = lockout();
        let req = |s: &mut Session, lo: &Logins, line: &str| -> Value {
            let out = text(&s.feed(format!("{line}\r").as_bytes(), now, &Echo, lo));
            let l = out
                .split("\r\n")
                .find(|l| l.starts_with('{'))
                .unwrap()
                .to_string();
            serde_json::from_str(&l).unwrap()
        };
        assert_eq!(req(&mut s, &lo, r#"{"cmd":"status"}"#)["ok"], true);
        let r = req(&mut s, &lo, r#"{"cmd":"evacuate"}"#);
        assert_eq!(r["error"]["code"], "auth_required");
        for _ in 0..4 {
            let r = req(&mut s, &lo, r#"{"cmd":"login","args":{"pin":"1"}}"#);
            assert_eq!(r["error"]["code"], "auth_failed");
        }
        let r = req(&mut s, &lo, r#"{"cmd":"login","args":{"pin":"1"}}"#);
        assert_eq!(r["error"]["code"], "locked_out");
        let r = req(&mut s, &lo, r#"{"cmd":"login","args":{"pin":"471147"}}"#);
        assert_eq!(r["error"]["code"], "locked_out");
        // A new session on the same line (cable replugged) is still locked.
        let mut s2 = Session::new(cfg(Some("471147")), now);
        let r = req(&mut s2, &lo, r#"{"cmd":"login","args":{"pin":"471147"}}"#);
        assert_eq!(r["error"]["code"], "locked_out");
        // After the lockout the right PIN works, and the command runs.
        let later = now + Duration::from_secs(301);
        let out = text(&s2.feed(b"login 471147\r", later, &Echo, &lo));
        assert!(out.contains("logged in"), "{out}");
        assert!(s2.logged_in());
        // The command is allowed past the PIN (and refused by the backend).
        let out = text(&s2.feed(b"evacuate\r", later, &Echo, &lo));
        assert!(out.contains("error: unavailable"), "{out}");
        // Idle: the login ends.
        let out = text(&s2.tick(later + Duration::from_secs(61)));
        assert!(out.contains("logged out: no command for 60 s"), "{out:?}");
        assert!(!s2.logged_in());
    }

    #[test]
    fn only_commands_keep_a_login_alive_and_no_login_outlives_its_lifetime() {
        let t0 = Instant::now();
        let lo = lockout();
        let mut s = greeted(cfg(Some("471147")), t0);
        s.feed(b"login 471147\r", t0, &Echo, &lo);
        assert!(s.logged_in());
        // Line noise and half-typed lines every few seconds: still idle.
        for i in 1..=12 {
            let t = t0 + Duration::from_secs(5 * i);
            s.feed(b"x\x7f", t, &Echo, &lo);
            let out = text(&s.tick(t));
            if i < 12 {
                assert!(s.logged_in(), "ended after {} s: {out:?}", 5 * i);
            }
        }
        assert!(
            !s.logged_in(),
            "bytes that are not commands restarted the idle clock"
        );

        // A busy login still ends when its lifetime is over.
        let mut s = greeted(cfg(Some("471147")), t0);
        s.feed(b"login 471147\r", t0, &Echo, &lo);
        let mut t = t0;
        while t + Duration::from_secs(30) < t0 + Duration::from_secs(3600) {
            t += Duration::from_secs(30);
            s.feed(b"status\r", t, &Echo, &lo);
            s.tick(t);
        }
        assert!(s.logged_in());
        let out = text(&s.tick(t0 + Duration::from_secs(3600)));
        assert!(out.contains("logged out: logins last 60 min"), "{out:?}");
        assert!(!s.logged_in());
    }

    #[test]
    fn up_arrow_brings_back_the_last_command_but_never_a_pin() {
        let now = Instant::now();
        let lo = lockout();
        let mut s = greeted(cfg(Some("471147")), now);
        s.feed(b"vms\r", now, &Echo, &lo);
        let out = text(&s.feed(b"st\x1b[A", now, &Echo, &lo));
        assert_eq!(out, "st\x08 \x08\x08 \x08vms");
        let out = text(&s.feed(b"\r", now, &Echo, &lo));
        assert!(out.contains("answer to vms"), "{out:?}");
        s.feed(b"login 471147\r", now, &Echo, &lo);
        let out = text(&s.feed(b"\x1b[A", now, &Echo, &lo));
        assert_eq!(out, "", "after a login line there is nothing to recall");
        s.feed(b"\x15login\r471147\r", now, &Echo, &lo);
        let out = text(&s.feed(b"\x1bOA", now, &Echo, &lo));
        assert!(!out.contains("4711"), "{out:?}");
    }

    /// `echo = false`: the terminal shows what is typed; the agent shows
    /// what such a terminal gets wrong, so the screen matches the line.
    #[test]
    fn a_locally_echoing_terminal_keeps_a_true_screen() {
        let now = Instant::now();
        let lo = lockout();
        let mut c = cfg(None);
        c.echo = false;
        let mut s = greeted(c, now);
        // Typed characters are the terminal's to show.
        assert_eq!(text(&s.feed(b"vms", now, &Echo, &lo)), "");
        // DEL shows nothing on such a terminal: the agent erases; BS moved
        // the cursor back already: the agent blanks the character.
        assert_eq!(text(&s.feed(b"\x7f", now, &Echo, &lo)), "\x08 \x08");
        assert_eq!(text(&s.feed(b"\x08", now, &Echo, &lo)), " \x08");
        assert_eq!(text(&s.feed(b"\x15", now, &Echo, &lo)), "\x08 \x08");
        // Ctrl-C and Enter leave the row, so the prompt and the answer
        // never land on the command's row.
        assert_eq!(text(&s.feed(b"ab\x03", now, &Echo, &lo)), "^C\r\nha> ");
        let out = text(&s.feed(b"status\r", now, &Echo, &lo));
        assert_eq!(out, "\r\nanswer to status\r\nha> ");
        // Up arrow: the prompt and the command again, on the row below
        // the one the terminal's own echo of the arrow moved up to.
        let out = text(&s.feed(b"\x1b[A", now, &Echo, &lo));
        assert_eq!(out, "\r\nha> status");
    }

    #[test]
    fn the_agent_says_goodbye_to_people_and_machines() {
        let now = Instant::now();
        let lo = lockout();
        let s = greeted(cfg(None), now);
        let out = text(&s.goodbye());
        assert_eq!(
            out,
            "\r\nrackside-agent on ha is stopping; this line is silent until it is back\r\n"
        );
        let mut m = Session::new(cfg(None), now);
        m.feed(b"mode json\r", now, &Echo, &lo);
        let out = text(&m.goodbye());
        let v: Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["event"], "agent.stopping", "{out:?}");
        assert_eq!(v["data"]["host"], "ha");
    }

    #[test]
    fn events_reach_only_subscribed_sessions_in_the_subscription_form() {
        let now = Instant::now();
        let ev = Event {
            name: "vm.state",
            ts: "2026-01-01T00:00:00Z".into(),
            data: Payload::VmState(VmStateChange {
                vm: "web1".into(),
                uuid: "u".into(),
                what: "stopped",
                state: Some("shutoff"),
            }),
        };
        let mut s = Session::new(cfg(None), now);
        assert!(s.event(&ev).is_empty());
        s.feed(b"subscribe\r", now, &Echo, &lockout());
        let out = text(&s.event(&ev));
        assert!(
            out.contains("web1: stopped") && out.ends_with("ha> "),
            "{out:?}"
        );
        // Stamped with the local time of day (this session's zone is UTC+1).
        assert!(out.contains("[01:00:00] web1: stopped"), "{out:?}");
        s.feed(b"{\"cmd\":\"subscribe\"}\r", now, &Echo, &lockout());
        let out = text(&s.event(&ev));
        let line = out.split("\r\n").find(|l| l.starts_with('{')).unwrap();
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["event"], "vm.state");
        s.feed(b"unsubscribe\r", now, &Echo, &lockout());
        assert!(s.event(&ev).is_empty());
    }

    /// Names as hostile as libvirt accepts: a CR and a forged verdict, C1
    /// codes (CSI, NEL), ESC, bidi override.
    const HOSTILE: &[&str] = &[
        "x\r*** SAFE TO POWER OFF ha: no VM left running; 3 moved ***",
        "y\u{9b}2J\u{85}*** SAFE TO POWER OFF ha ***",
        "z\x1b[2J\x1b[H*** SAFE TO POWER OFF",
        "w\u{202e}FFO REWOP OT EFAS\r\n*** SAFE TO POWER OFF",
    ];

    /// Every line a text session shows is free of controls, and only a
    /// verdict line (starting with "*** ") says "POWER OFF".
    fn assert_screen_safe(out: &[u8]) {
        let s = String::from_utf8(out.to_vec()).expect("text output is UTF-8");
        for line in s.split("\r\n") {
            let line = line.trim_end_matches('\x07');
            assert!(
                !line.chars().any(|c| c.is_control()),
                "control character on the screen: {line:?}"
            );
            if line.to_ascii_lowercase().contains("power off") {
                assert!(
                    line.starts_with("*** SAFE TO POWER OFF ha:")
                        || line.starts_with("*** NOT SAFE TO POWER OFF ha:"),
                    "forged verdict: {line:?}"
                );
            }
        }
    }

    #[test]
    fn hostile_names_never_forge_a_verdict_or_drive_the_terminal() {
        let now = Instant::now();
        let mut s = Session::new(cfg(None), now);
        s.feed(b"subscribe\r", now, &Echo, &lockout());
        for name in HOSTILE {
            let n = || (*name).to_owned();
            for data in [
                Payload::VmState(VmStateChange {
                    vm: n(),
                    uuid: n(),
                    what: "started",
                    state: Some("running"),
                }),
                Payload::Hook(HookReport {
                    vm: n(),
                    uuid: Some(n()),
                    what: "refused",
                    source: "hook",
                    op: n(),
                    subop: n(),
                    refused: Some(n()),
                }),
                Payload::MigrationProgress(MigrationProgress {
                    job: 1,
                    vm: n(),
                    dest: n(),
                    percent: 5.0,
                    remaining_mib: Some(1.0),
                    rate_mib_s: None,
                    eta_s: None,
                    downtime_ms: 0,
                    note: Some(n()),
                }),
                Payload::MigrationFailed(MigrationFailed {
                    job: 1,
                    vm: n(),
                    dest: "hb".into(),
                    error: n(),
                    now_on: Some(n()),
                    retrying_on: Some(n()),
                    note: Some(n()),
                }),
                Payload::MigrationDone(MigrationDone {
                    job: 1,
                    vm: n(),
                    dest: "hb".into(),
                    downtime_ms: None,
                    seconds: 1.0,
                    data_mib: None,
                    timeline: Timeline::default(),
                    announce: None,
                }),
                Payload::HostEmpty(HostName { host: n() }),
                Payload::HostPoweroff(HostName { host: n() }),
            ] {
                let out = s.event(&Event {
                    name: data.name(),
                    ts: "t".into(),
                    data,
                });
                assert_screen_safe(&out);
                assert!(!out.is_empty());
            }
            // A NOT SAFE verdict listing the hostile VM: the real verdict
            // line is there, and the name's copy of it is not.
            let verdict = Verdict {
                evacuation: 1,
                host: "ha".into(),
                moved: vec![],
                failed: vec![NotMoved {
                    vm: n(),
                    dest: n(),
                    phase: Phase::Failed,
                    error: Some(n()),
                    tried: vec![n()],
                }],
                unplaceable: vec![Unplaceable {
                    vm: format!("{name}2"),
                    reason: n(),
                    unmovable: false,
                }],
                peer_reasons: vec![PeerReason {
                    host: n(),
                    reason: n(),
                }],
                remaining: vec![n(), format!("{name}2")],
                still_here: vec![
                    StillHere {
                        vm: n(),
                        state: "paused".into(),
                    },
                    StillHere {
                        vm: format!("{name}2"),
                        state: n(),
                    },
                ],
                safe_to_power_off: false,
                check_error: None,
            };
            let out = s.event(&Event::now(Payload::EvacuationDone(Box::new(verdict))));
            assert_screen_safe(&out);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(text.matches("POWER OFF").count(), 1, "{text}");
            assert!(
                text.contains("\r\n*** NOT SAFE TO POWER OFF ha: 0 moved ***\r\n"),
                "{text}"
            );
        }
        // Answers and errors carrying the name go through the same
        // sanitiser (a CR would end the typed line, so those are left out).
        for name in HOSTILE.iter().filter(|n| !n.contains(['\r', '\n'])) {
            let out = s.feed(
                format!("locate {name}\r").as_bytes(),
                now,
                &Echo,
                &lockout(),
            );
            let echo_end = out.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
            assert_screen_safe(&out[echo_end..]);
        }
    }

    /// Counts the complete request lines in `bytes` the way the line
    /// discipline does: a line end is CR, LF, or a CRLF pair.
    fn line_ends(bytes: &[u8]) -> usize {
        let mut n = 0;
        let mut prev_cr = false;
        for &b in bytes {
            match b {
                b'\r' => {
                    n += 1;
                    prev_cr = true
                }
                b'\n' if prev_cr => prev_cr = false,
                b'\n' => n += 1,
                _ => prev_cr = false,
            }
        }
        n
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary bytes in JSON mode: every line out is one JSON object,
        /// and there is at most one answer per line in.
        #[test]
        fn json_mode_never_emits_anything_but_json(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let now = Instant::now();
            let mut s = Session::new(cfg(None), now);
            s.feed(b"mode json\r", now, &Echo, &lockout());
            let out = s.feed(&bytes, now, &Echo, &lockout());
            let out = text(&out);
            let answers: Vec<&str> = out.split("\r\n").filter(|l| !l.is_empty()).collect();
            prop_assert!(answers.len() <= line_ends(&bytes) + 1);
            for l in answers {
                let v: Value = serde_json::from_str(l).map_err(|e| TestCaseError::fail(format!("{e}: {l:?}")))?;
                prop_assert!(v.is_object());
            }
        }

        /// Arbitrary bytes in text mode never panic, and every answer line
        /// that starts with '{' is valid JSON.
        #[test]
        fn text_mode_survives_anything(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let now = Instant::now();
            let mut s = Session::new(cfg(None), now);
            let out = text(&s.feed(&bytes, now, &Echo, &lockout()));
            for l in out.split("\r\n").filter(|l| l.starts_with('{')) {
                prop_assert!(serde_json::from_str::<Value>(l).is_ok(), "{l:?}");
            }
        }
    }
}
