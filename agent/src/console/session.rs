//! One session on one management line: the protocol's state machine.
//!
//! Pure: bytes and the time come in, bytes go out. The line's thread owns
//! the I/O and the lockout (which outlives sessions: replugging the cable
//! must not reset failed logins).
//!
//! What a text session writes is, byte for byte, one of: the echo of what
//! the person typed, a line end, or a [`Text`] (or the prompt) passed
//! through `rackside_protocol::screen`, the one sanitiser; JSON lines are
//! ASCII-only (`wire`). Nothing from a VM name, a libvirt message or a peer
//! reaches the line any other way.

use std::time::{Duration, Instant};

use rackside_protocol::{
    parse_line, screen, wire, Command, ErrorCode, LineEvent, LineReader, Mode, Request, Text,
};
use serde_json::{json, Value};

use super::answer::Backend;
use crate::auth::{self, Lockout};
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
    pub idle_timeout: Duration,
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
    last_input: Instant,
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
            last_input: now,
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

    /// What a line shows when a session starts on it: the banner, then
    /// each of `warnings` on a line of its own.
    pub fn greet(&self, warnings: &[String]) -> Vec<u8> {
        if self.mode == Mode::Json {
            return Vec::new();
        }
        let loc = if self.cfg.location.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.cfg.location)
        };
        let mut out = NL.as_bytes().to_vec();
        let mut t = Text::line(format!(
            "rackside-agent {} on {}{loc}; type help",
            env!("CARGO_PKG_VERSION"),
            self.cfg.host,
        ));
        for w in warnings {
            t.push_wrapped(w, 2);
        }
        out.extend(t.to_bytes());
        out.extend_from_slice(self.prompt().as_bytes());
        out
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
            let echo_on = self.cfg.echo && self.mode == Mode::Text && !self.awaiting_pin;
            self.reader.feed(&[b], echo_on, &mut echo, &mut events);
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
        if self.awaiting_pin {
            return self.on_pin(ev, was_json, now, backend, lockout, out);
        }
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
        lockout: &mut Lockout,
        out: &mut Vec<u8>,
    ) {
        self.awaiting_pin = false;
        match ev {
            // A machine's request at the PIN prompt is a request: the
            // prompt is dropped and the request handled as ever.
            LineEvent::Line(line) if line.trim_start().starts_with('{') => {
                self.on_event(LineEvent::Line(line), was_json, now, backend, lockout, out)
            }
            LineEvent::Line(pin) => {
                out.extend_from_slice(NL.as_bytes());
                self.login(pin.trim(), now, lockout, None, false, out);
                out.extend_from_slice(self.prompt().as_bytes());
            }
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
            Command::AskPin => self.ask_pin(now, lockout, out),
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
                    if json {
                        out.extend_from_slice(wire::json_ok(id, &a.data).as_bytes());
                        out.extend_from_slice(NL.as_bytes());
                    } else {
                        out.extend(a.text.to_bytes());
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

    /// `login` alone, on a text line: `PIN: ` and the next line unseen.
    /// Without a PIN, or while locked out, the answer is what `login PIN`
    /// would get, at once.
    fn ask_pin(&mut self, now: Instant, lockout: &mut Lockout, out: &mut Vec<u8>) {
        if self.mode == Mode::Json {
            let msg = "usage: login PIN (only a text line asks for the PIN)";
            return self.write_error(out, None, true, ErrorCode::BadRequest, msg);
        }
        if self.cfg.pin_hash.is_none() || lockout.locked(now).is_some() {
            return self.login("", now, lockout, None, false, out);
        }
        out.extend_from_slice(b"PIN: ");
        self.awaiting_pin = true;
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
            let msg = auth::wrong_pin_message(lockout.tries_left(), lockout.lockout_s());
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

    /// Time passing: ends an idle login.
    pub fn tick(&mut self, now: Instant) -> Vec<u8> {
        if self.logged_in && now.saturating_duration_since(self.last_input) >= self.cfg.idle_timeout
        {
            self.logged_in = false;
            self.awaiting_pin = false;
            tracing::info!(line = %self.cfg.line, "login ended: idle");
            if self.mode == Mode::Text {
                let mut s = NL.as_bytes().to_vec();
                s.extend(Text::line("logged out: idle").to_bytes());
                s.extend_from_slice(self.prompt().as_bytes());
                return s;
            }
        }
        Vec::new()
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
                | Command::Help
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
            utc_offset: || 3600,
        }
    }

    fn lockout() -> Lockout {
        Lockout::new(5, Duration::from_secs(300))
    }

    /// A '{' typed by mistake and erased (or a line cleared with Ctrl-U)
    /// no longer hides the rest of the line from the person typing it.
    #[test]
    fn an_erased_brace_gives_the_echo_back() {
        let now = Instant::now();
        for input in [&b"{\x7fvms\r"[..], b"{\"cmd\x15vms\r", b" {\x08vms\r"] {
            let mut s = Session::new(cfg(None), now);
            let out =
                String::from_utf8_lossy(&s.feed(input, now, &Echo, &mut lockout())).into_owned();
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

    #[test]
    fn text_mode_echoes_answers_and_prompts() {
        let now = Instant::now();
        let mut s = Session::new(cfg(None), now);
        assert!(text(&s.greet(&[])).ends_with("ha> "));
        let warned = text(&s.greet(&["WARNING: the journal was damaged\r*** x".into()]));
        assert!(
            warned.contains("type help\r\nWARNING: the journal was damaged\\r*** x\r\nha> "),
            "{warned:?}"
        );
        let out = text(&s.feed(b"status\r", now, &Echo, &mut lockout()));
        assert_eq!(out, "status\r\nanswer to status\r\nha> ");
        let out = text(&s.feed(b"nosuch\r", now, &Echo, &mut lockout()));
        assert!(out.contains("error: unknown_command: "), "{out}");
        assert!(out.ends_with("ha> "));
    }

    #[test]
    fn a_json_request_on_a_text_line_is_not_echoed_and_answers_on_its_own_line() {
        let now = Instant::now();
        let mut s = Session::new(cfg(None), now);
        let out = text(&s.feed(b"{\"id\":3,\"cmd\":\"vms\"}\r", now, &Echo, &mut lockout()));
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
        let out = text(&s.feed(b"mode json\r", now, &Echo, &mut lockout()));
        assert!(out.ends_with("{\"ok\":true,\"data\":{}}\r\n"), "{out:?}");
        assert!(s.greet(&[]).is_empty());
        let out = text(&s.feed(
            b"status\r{\"id\":\"a\",\"cmd\":\"hosts\"}\n\r\n",
            now,
            &Echo,
            &mut lockout(),
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
        let mut s = Session::new(cfg(Some("4711")), now);
        let mut lo = lockout();
        let out = text(&s.feed(b"login\r", now, &Echo, &mut lo));
        assert!(out.ends_with("PIN: "), "{out:?}");
        // Typed, erased, retyped: nothing of it reaches the screen.
        let out = text(&s.feed(b"47\x7f\x7f12", now, &Echo, &mut lo));
        assert_eq!(out, "");
        let out = text(&s.feed(b"34\r", now, &Echo, &mut lo));
        assert!(!out.contains("12") && !out.contains("34"), "{out:?}");
        assert!(out.contains("wrong PIN"), "{out:?}");
        assert!(out.ends_with("ha> "), "{out:?}");
        assert!(!s.logged_in());
        s.feed(b"login\r", now, &Echo, &mut lo);
        let out = text(&s.feed(b"4711\r", now, &Echo, &mut lo));
        assert!(!out.contains("4711"), "{out:?}");
        assert!(out.starts_with("\r\nlogged in"), "{out:?}");
        // The prompt says the session may now change things.
        assert!(out.ends_with("ha# "), "{out:?}");
        assert!(s.logged_in());
        let out = text(&s.feed(b"logout\r", now, &Echo, &mut lo));
        assert!(out.ends_with("ha> "), "{out:?}");
    }

    #[test]
    fn the_pin_prompt_can_be_left_and_gives_way_to_a_machine() {
        let now = Instant::now();
        let mut lo = lockout();
        let mut s = Session::new(cfg(Some("4711")), now);
        s.feed(b"login\r", now, &Echo, &mut lo);
        s.feed(b"subscribe\r", now, &Echo, &mut lo);
        // "subscribe" was taken as a (wrong) PIN, not as a command.
        assert!(!s.subscribed());
        s.feed(b"login\r", now, &Echo, &mut lo);
        let out = text(&s.feed(b"47\x03", now, &Echo, &mut lo));
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
        s.feed(b"subscribe\r", now, &Echo, &mut lo);
        s.feed(b"login\r47", now, &Echo, &mut lo);
        let out = text(&s.event(&ev));
        assert!(out.ends_with("ha is empty\r\nPIN: "), "{out:?}");
        // A JSON request at the prompt is a request.
        let out = text(&s.feed(b"\x15{\"id\":1,\"cmd\":\"status\"}\r", now, &Echo, &mut lo));
        assert!(out.contains("\"id\":1"), "{out:?}");
        // Without a PIN set, login alone answers at once.
        let mut open = Session::new(cfg(None), now);
        let out = text(&open.feed(b"login\r", now, &Echo, &mut lo));
        assert!(
            out.contains("no PIN configured") && out.ends_with("ha> "),
            "{out:?}"
        );
    }

    #[test]
    fn a_pin_guards_state_changes_and_locks_out_after_failures() {
        let now = Instant::now();
        let mut s = Session::new(cfg(Some("4711")), now);
        let mut lo = lockout();
        let req = |s: &mut Session, lo: &mut Lockout, line: &str| -> Value {
            let out = text(&s.feed(format!("{line}\r").as_bytes(), now, &Echo, lo));
            let l = out
                .split("\r\n")
                .find(|l| l.starts_with('{'))
                .unwrap()
                .to_string();
            serde_json::from_str(&l).unwrap()
        };
        assert_eq!(req(&mut s, &mut lo, r#"{"cmd":"status"}"#)["ok"], true);
        let r = req(&mut s, &mut lo, r#"{"cmd":"evacuate"}"#);
        assert_eq!(r["error"]["code"], "auth_required");
        for _ in 0..4 {
            let r = req(&mut s, &mut lo, r#"{"cmd":"login","args":{"pin":"1"}}"#);
            assert_eq!(r["error"]["code"], "auth_failed");
        }
        let r = req(&mut s, &mut lo, r#"{"cmd":"login","args":{"pin":"1"}}"#);
        assert_eq!(r["error"]["code"], "locked_out");
        let r = req(&mut s, &mut lo, r#"{"cmd":"login","args":{"pin":"4711"}}"#);
        assert_eq!(r["error"]["code"], "locked_out");
        // A new session on the same line (cable replugged) is still locked.
        let mut s2 = Session::new(cfg(Some("4711")), now);
        let r = req(&mut s2, &mut lo, r#"{"cmd":"login","args":{"pin":"4711"}}"#);
        assert_eq!(r["error"]["code"], "locked_out");
        // After the lockout the right PIN works, and the command runs.
        let later = now + Duration::from_secs(301);
        let out = text(&s2.feed(b"login 4711\r", later, &Echo, &mut lo));
        assert!(out.contains("logged in"), "{out}");
        assert!(s2.logged_in());
        // The command is allowed past the PIN (and refused by the backend).
        let out = text(&s2.feed(b"evacuate\r", later, &Echo, &mut lo));
        assert!(out.contains("error: unavailable"), "{out}");
        // Idle: the login ends.
        let out = text(&s2.tick(later + Duration::from_secs(61)));
        assert!(out.contains("logged out: idle"));
        assert!(!s2.logged_in());
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
        s.feed(b"subscribe\r", now, &Echo, &mut lockout());
        let out = text(&s.event(&ev));
        assert!(
            out.contains("web1: stopped") && out.ends_with("ha> "),
            "{out:?}"
        );
        // Stamped with the local time of day (this session's zone is UTC+1).
        assert!(out.contains("[01:00:00] web1: stopped"), "{out:?}");
        s.feed(b"{\"cmd\":\"subscribe\"}\r", now, &Echo, &mut lockout());
        let out = text(&s.event(&ev));
        let line = out.split("\r\n").find(|l| l.starts_with('{')).unwrap();
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["event"], "vm.state");
        s.feed(b"unsubscribe\r", now, &Echo, &mut lockout());
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
        s.feed(b"subscribe\r", now, &Echo, &mut lockout());
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
                &mut lockout(),
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
            s.feed(b"mode json\r", now, &Echo, &mut lockout());
            let out = s.feed(&bytes, now, &Echo, &mut lockout());
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
            let out = text(&s.feed(&bytes, now, &Echo, &mut lockout()));
            for l in out.split("\r\n").filter(|l| l.starts_with('{')) {
                prop_assert!(serde_json::from_str::<Value>(l).is_ok(), "{l:?}");
            }
        }
    }
}
