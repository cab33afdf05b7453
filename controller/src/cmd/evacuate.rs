//! `evacuate HOST`: subscribes to the host's events, starts the
//! evacuation, prints its progress and waits for its verdict
//! (`evacuation.done`). A line that drops meanwhile is reconnected with
//! backoff; then the verdict comes either as the event (the run was still
//! going) or from `status`'s `last_result` (it ended while the line was
//! down: events are not replayed). `status` is also asked now and then
//! while waiting, so a lost event or a line that went quiet cannot leave
//! the controller waiting for ever. When the line drops before the answer
//! to `evacuate` itself, `status` before and after tells whether the
//! evacuation started (the agent throws away input that arrives while a
//! line is down, so a request it did not read never runs later).

use std::time::{Duration, Instant};

use rackside_protocol::{Command, Dest, Text};
use serde_json::{json, Value};

use crate::client::ClientError;
use crate::cmd::Outcome;
use crate::link::{Link, Notify};
use crate::message::Event;
use crate::model::{self, EvacuationDone, LastResult, Migration, ShapeError, Started, Status};
use crate::out::Out;

/// How often `status` is asked while no verdict came.
const CHECK_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Options {
    pub dest: Dest,
    pub poweroff: bool,
    /// How long to wait for the verdict, line drops included.
    pub wait: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum EvacuateError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("no verdict from {host} within {secs} s; the evacuation may still be running (see jobs on the host)")]
    NoVerdict { host: String, secs: u64 },
    #[error("the line dropped before {host} answered 'evacuate', and its status shows no evacuation since: it did not start")]
    NotStarted { host: String },
}

/// The verdict, and how it was learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// From `evacuation.done`, with every detail.
    Event(EvacuationDone),
    /// From `status` after the line came back: the summary only.
    Status(LastResult),
}

impl Verdict {
    pub fn safe(&self) -> bool {
        match self {
            Verdict::Event(done) => done.safe_to_power_off,
            Verdict::Status(last) => last.safe_to_power_off,
        }
    }
}

/// Which evacuation's verdict we wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// The one the agent said it started.
    Id(u64),
    /// The line dropped before the answer: the first one numbered above
    /// the last the host had finished before we asked.
    After(u64),
}

impl Awaited {
    pub fn matches(self, evacuation: u64) -> bool {
        match self {
            Awaited::Id(id) => evacuation == id,
            Awaited::After(before) => evacuation > before,
        }
    }
}

/// What `status` says of the awaited evacuation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Ended(Verdict),
    Running,
    /// Neither ended nor running: the request never reached the agent
    /// (input that arrives while a line is down is thrown away).
    NotStarted,
}

/// Reads what `status` says about `awaited` (pure).
pub fn judge(status: &Status, awaited: Awaited) -> Check {
    match &status.last_result {
        Some(last) if awaited.matches(last.evacuation) => {
            Check::Ended(Verdict::Status(last.clone()))
        }
        _ if status.state == "evacuating" || matches!(awaited, Awaited::Id(_)) => Check::Running,
        _ => Check::NotStarted,
    }
}

pub fn run(
    link: &mut Link,
    options: &Options,
    out: &mut Out,
    notify: Notify,
) -> Result<Outcome, EvacuateError> {
    let deadline = Instant::now() + options.wait;
    let host = link.host.clone();
    let before: Status = model::read("status", link.call(&Command::Status, &mut *notify)?)?;
    let before = before.last_result.map_or(0, |last| last.evacuation);
    link.call(&Command::Subscribe, &mut *notify)?;
    let cmd = Command::Evacuate {
        dest: options.dest.clone(),
        poweroff: options.poweroff,
    };
    let awaited = match link.call(&cmd, &mut *notify) {
        Ok(data) => {
            let started: Started = model::read("evacuate", data)?;
            if out.json() {
                out.value(&json!({"host": host, "started": started}));
            } else {
                out.text(&started_text(&host, &started));
            }
            Awaited::Id(started.evacuation)
        }
        Err(e) if e.is_down() => {
            if !out.json() {
                out.say(
                    &format!("{host}: the line dropped before the answer to evacuate; asking the host whether it started"),
                    2,
                );
            }
            Awaited::After(before)
        }
        Err(e) => return Err(e.into()),
    };
    let mut next_check = Instant::now() + CHECK_EVERY;
    let verdict = loop {
        if Instant::now() >= deadline {
            return Err(EvacuateError::NoVerdict {
                host,
                secs: options.wait.as_secs(),
            });
        }
        if !link.is_up() {
            link.connect_until(deadline, &mut *notify)?;
            let checked = link
                .call(&Command::Subscribe, &mut *notify)
                .map_err(EvacuateError::from)
                .and_then(|_| check(link, awaited, &mut *notify));
            match checked {
                Ok(Check::Ended(verdict)) => break verdict,
                Ok(Check::Running) => {}
                Ok(Check::NotStarted) => return Err(EvacuateError::NotStarted { host }),
                Err(EvacuateError::Client(e)) if e.is_down() => continue,
                Err(e) => return Err(e),
            }
            next_check = Instant::now() + CHECK_EVERY;
        }
        let wait = next_check
            .min(deadline)
            .saturating_duration_since(Instant::now());
        match link.next_event(wait, &mut *notify) {
            Ok(Some(event)) => {
                if out.json() {
                    out.value(&json!({"host": host, "event": event.name, "ts": event.ts, "data": event.data}));
                } else if let Some(line) = event_line(&host, &event) {
                    out.say(&line, 2);
                }
                if event.name == "evacuation.done" {
                    let done: EvacuationDone = model::read("evacuation.done", event.data)?;
                    if awaited.matches(done.evacuation) {
                        break Verdict::Event(done);
                    }
                }
                if event.name == "events.missed" {
                    next_check = Instant::now();
                }
            }
            Ok(None) => {
                if Instant::now() >= next_check {
                    match check(link, awaited, &mut *notify) {
                        Ok(Check::Ended(verdict)) => break verdict,
                        Ok(Check::Running) => {}
                        Ok(Check::NotStarted) => return Err(EvacuateError::NotStarted { host }),
                        Err(EvacuateError::Client(e)) if e.is_down() => {}
                        Err(e) => return Err(e),
                    }
                    next_check = Instant::now() + CHECK_EVERY;
                }
            }
            // Marked down and reported by the link: reconnect above.
            Err(e) if e.is_down() => {}
            Err(e) => return Err(e.into()),
        }
    };
    if out.json() {
        out.value(&verdict_json(&host, &verdict));
    } else {
        out.text(&verdict_text(&host, &verdict));
    }
    Ok(if verdict.safe() {
        Outcome::Success
    } else {
        Outcome::NotSafe
    })
}

/// What the host's `status` says of the awaited evacuation.
fn check(link: &mut Link, awaited: Awaited, notify: Notify) -> Result<Check, EvacuateError> {
    let status: Status = model::read("status", link.call(&Command::Status, notify)?)?;
    Ok(judge(&status, awaited))
}

pub fn started_text(host: &str, started: &Started) -> Text {
    let mut text = Text::new();
    text.push_wrapped(
        &format!(
            "{host}: evacuation {} started: {} to move, {} cannot be placed",
            started.evacuation,
            started.moves.len(),
            started.unplaceable.len()
        ),
        2,
    );
    for m in &started.moves {
        text.push_wrapped(
            &format!("  {} -> {}", m.vm, m.dest.as_deref().unwrap_or("-")),
            4,
        );
    }
    for u in &started.unplaceable {
        text.push_wrapped(&format!("  {}: cannot be placed: {}", u.vm, u.reason), 4);
    }
    text
}

/// The progress line for an event, `None` for events that say nothing
/// about the evacuation.
pub fn event_line(host: &str, event: &Event) -> Option<String> {
    let m = || -> Migration { model::read("migration", event.data.clone()).unwrap_or_default() };
    let to = |m: &Migration| m.dest.clone().unwrap_or_else(|| "-".into());
    Some(match event.name.as_str() {
        "migration.progress" => {
            let m = m();
            let mut line = format!("{host}: {} -> {}: ", m.vm, to(&m));
            match m.percent {
                Some(p) => line.push_str(&format!("{}%", p.floor() as i64)),
                None => line.push_str("starting"),
            }
            if let Some(left) = m.remaining_mib {
                line.push_str(&format!(", {} MiB left", left.round() as i64));
            }
            if let Some(eta) = m.eta_s {
                line.push_str(&format!(", eta {eta} s"));
            }
            line
        }
        "migration.done" => {
            let m = m();
            let mut line = format!("{host}: {} -> {}: done", m.vm, to(&m));
            if let Some(s) = m.seconds {
                line.push_str(&format!(" in {s:.1} s"));
            }
            if let Some(d) = m.downtime_ms {
                line.push_str(&format!(", downtime {d} ms"));
            }
            line
        }
        "migration.failed" => {
            let m = m();
            let mut line = format!(
                "{host}: {} -> {}: FAILED: {}",
                m.vm,
                to(&m),
                m.error.as_deref().unwrap_or("no reason given")
            );
            line.push_str(&format!("; now on {}", m.now_on.as_deref().unwrap_or("-")));
            if let Some(next) = &m.retrying_on {
                line.push_str(&format!("; retrying on {next}"));
            }
            line
        }
        "host.empty" => format!("{host}: the host is empty"),
        "host.poweroff" => format!("{host}: the host is switching off"),
        "events.missed" => format!("{host}: events were missed; asking the host for its state"),
        _ => return None,
    })
}

/// The reasons, then one framed line, as the agent frames its own.
pub fn verdict_text(host: &str, verdict: &Verdict) -> Text {
    let mut text = Text::new();
    let (moved, summary) = match verdict {
        Verdict::Event(done) => {
            for s in &done.still_here {
                text.push_wrapped(
                    &format!(
                        "  still here ({}): {}: {}",
                        s.state,
                        s.vm,
                        reason(done, &s.vm)
                    ),
                    6,
                );
            }
            if let Some(e) = &done.check_error {
                text.push_wrapped(&format!("  cannot verify what still runs here: {e}"), 6);
            }
            (done.moved.len() as u64, None)
        }
        Verdict::Status(last) => {
            let checked = if last.checked {
                format!("{} still here", last.still_here)
            } else {
                "what still runs there was not verified".to_owned()
            };
            (
                last.moved,
                Some(format!(
                    "  (from the host's status after the line came back: {} moved, {checked})",
                    last.moved
                )),
            )
        }
    };
    if let Some(summary) = summary {
        text.push_wrapped(&summary, 4);
    }
    let line = if verdict.safe() {
        format!("*** SAFE TO POWER OFF {host}: no VM left running; {moved} moved ***")
    } else {
        format!("*** NOT SAFE TO POWER OFF {host}: {moved} moved ***")
    };
    let frame = "*".repeat(line.chars().count());
    text.push(frame.clone());
    text.verdict(line);
    text.push(frame);
    text
}

/// Why a VM is still there, from the verdict's own lists.
fn reason(done: &EvacuationDone, vm: &str) -> String {
    if let Some(f) = done.failed.iter().find(|f| f.vm == vm) {
        return f.error.clone().unwrap_or_else(|| "failed".into());
    }
    if let Some(u) = done.unplaceable.iter().find(|u| u.vm == vm) {
        return format!("cannot be placed: {}", u.reason);
    }
    "not part of this evacuation".into()
}

pub fn verdict_json(host: &str, verdict: &Verdict) -> Value {
    let (from, detail, id) = match verdict {
        Verdict::Event(done) => ("event", json!(done), done.evacuation),
        Verdict::Status(last) => ("status", json!(last), last.evacuation),
    };
    json!({
        "host": host,
        "evacuation": id,
        "safe_to_power_off": verdict.safe(),
        "from": from,
        "verdict": detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Failed, Move, StillHere, Unplaceable};

    fn event(name: &str, data: Value) -> Event {
        Event {
            name: name.into(),
            ts: "T".into(),
            data,
        }
    }

    #[test]
    fn progress_lines() {
        let cases = [
            (
                event(
                    "migration.progress",
                    json!({"vm":"db1","dest":"hb","percent":41.2,"remaining_mib":57.3,"eta_s":2}),
                ),
                "ha: db1 -> hb: 41%, 57 MiB left, eta 2 s",
            ),
            (
                event(
                    "migration.progress",
                    json!({"vm":"db1","dest":"hb","percent":null}),
                ),
                "ha: db1 -> hb: starting",
            ),
            (
                event(
                    "migration.done",
                    json!({"vm":"db1","dest":"hb","seconds":4.12,"downtime_ms":155}),
                ),
                "ha: db1 -> hb: done in 4.1 s, downtime 155 ms",
            ),
            (
                event(
                    "migration.failed",
                    json!({"vm":"web1","dest":"hb","error":"no progress","now_on":"ha","retrying_on":"hc"}),
                ),
                "ha: web1 -> hb: FAILED: no progress; now on ha; retrying on hc",
            ),
            (
                event("host.empty", json!({"host":"ha"})),
                "ha: the host is empty",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(event_line("ha", &e).as_deref(), Some(want));
        }
        assert_eq!(event_line("ha", &event("vm.state", json!({}))), None);
    }

    #[test]
    fn safe_verdict_is_framed() {
        let done = EvacuationDone {
            evacuation: 3,
            host: "ha".into(),
            moved: vec![Move {
                vm: "web1".into(),
                dest: Some("hb".into()),
            }],
            safe_to_power_off: true,
            ..EvacuationDone::default()
        };
        let lines = verdict_text("ha", &Verdict::Event(done)).lines();
        assert_eq!(
            lines,
            [
                "*********************************************************",
                "*** SAFE TO POWER OFF ha: no VM left running; 1 moved ***",
                "*********************************************************",
            ]
        );
    }

    #[test]
    fn not_safe_lists_each_vm_with_its_reason() {
        let done = EvacuationDone {
            evacuation: 3,
            host: "ha".into(),
            failed: vec![Failed {
                vm: "app2".into(),
                dest: Some("hc".into()),
                error: Some("no answer from hc for 120 s".into()),
            }],
            unplaceable: vec![Unplaceable {
                vm: "db1".into(),
                reason: "no candidate".into(),
            }],
            still_here: vec![
                StillHere {
                    vm: "app2".into(),
                    state: "running".into(),
                },
                StillHere {
                    vm: "db1".into(),
                    state: "paused".into(),
                },
                StillHere {
                    vm: "new1".into(),
                    state: "running".into(),
                },
            ],
            ..EvacuationDone::default()
        };
        let lines = verdict_text("ha", &Verdict::Event(done)).lines();
        assert_eq!(
            lines[0],
            "  still here (running): app2: no answer from hc for 120 s"
        );
        assert_eq!(
            lines[1],
            "  still here (paused): db1: cannot be placed: no candidate"
        );
        assert_eq!(
            lines[2],
            "  still here (running): new1: not part of this evacuation"
        );
        assert_eq!(lines[4], "*** NOT SAFE TO POWER OFF ha: 0 moved ***");
    }

    #[test]
    fn a_verdict_from_status_says_so() {
        let last = LastResult {
            evacuation: 4,
            safe_to_power_off: true,
            moved: 2,
            still_here: 0,
            checked: true,
            ..LastResult::default()
        };
        let v = Verdict::Status(last);
        let lines = verdict_text("ha", &v).lines();
        assert!(
            lines[0]
                .contains("from the host's status after the line came back: 2 moved, 0 still here"),
            "{lines:?}"
        );
        assert_eq!(lines.last().map(|l| l.starts_with('*')), Some(true));
        assert!(lines
            .iter()
            .any(|l| l == "*** SAFE TO POWER OFF ha: no VM left running; 2 moved ***"));
        let j = verdict_json("ha", &v);
        assert_eq!(
            (j["from"].as_str(), j["safe_to_power_off"].as_bool()),
            (Some("status"), Some(true))
        );
    }

    #[test]
    fn judging_status_after_a_drop() {
        let status = |state: &str, last: Option<u64>| Status {
            state: state.into(),
            last_result: last.map(|evacuation| LastResult {
                evacuation,
                safe_to_power_off: true,
                ..LastResult::default()
            }),
            ..Status::default()
        };
        // Known id: ended when status has it, else still running.
        assert!(matches!(
            judge(&status("maintenance", Some(4)), Awaited::Id(4)),
            Check::Ended(_)
        ));
        assert_eq!(
            judge(&status("evacuating", Some(3)), Awaited::Id(4)),
            Check::Running
        );
        assert_eq!(
            judge(&status("active", None), Awaited::Id(4)),
            Check::Running
        );
        // Answer lost: a newer result, a run going on, or nothing at all.
        assert!(matches!(
            judge(&status("empty", Some(4)), Awaited::After(3)),
            Check::Ended(_)
        ));
        assert_eq!(
            judge(&status("evacuating", Some(3)), Awaited::After(3)),
            Check::Running
        );
        assert_eq!(
            judge(&status("active", Some(3)), Awaited::After(3)),
            Check::NotStarted
        );
        assert_eq!(
            judge(&status("active", None), Awaited::After(0)),
            Check::NotStarted
        );
    }

    #[test]
    fn a_host_name_cannot_forge_a_verdict_line() {
        let started = Started {
            evacuation: 1,
            moves: vec![Move {
                vm: "x\r*** SAFE TO POWER OFF ha ***".into(),
                dest: Some("hb".into()),
            }],
            unplaceable: vec![],
        };
        for line in started_text("ha", &started).lines() {
            assert!(!line.contains("POWER OFF"), "{line}");
        }
    }
}
