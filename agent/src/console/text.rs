//! Text renderings of the evacuation commands' answers and the verdict,
//! for people. Every name in them goes through the screen sanitiser when
//! the `Text` is written.

use rackside_protocol::{table, Text};

use crate::placement::{Move, Unplaceable};
use crate::report::{
    Aborted, EvacuationStarted, JobsReport, MaintenanceReport, MigrationStarted, PlanReport,
    Verdict,
};

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn opt_f(v: Option<f64>) -> String {
    v.map_or("-".into(), |f| format!("{f:.1}"))
}

fn moves_and_unplaceable(moves: &[Move], unplaceable: &[Unplaceable]) -> Text {
    let rows: Vec<Vec<String>> = moves
        .iter()
        .map(|m| vec![m.vm.clone(), m.dest.clone()])
        .collect();
    let mut t = if rows.is_empty() {
        Text::line("nothing to move")
    } else {
        table::render(&["VM", "TO"], &rows)
    };
    for u in unplaceable {
        t.push(format!("cannot place {}: {}", u.vm, u.reason));
    }
    t
}

pub fn plan(p: &PlanReport) -> Text {
    moves_and_unplaceable(&p.moves, &p.unplaceable)
}

pub fn evacuation_started(e: &EvacuationStarted) -> Text {
    let mut t = Text::line(format!(
        "evacuation {} started; this host is in maintenance",
        e.evacuation
    ));
    t.append(moves_and_unplaceable(&e.moves, &e.unplaceable));
    t
}

pub fn migration_started(m: &MigrationStarted) -> Text {
    Text::line(format!("job {} started: {} to {}", m.job, m.vm, m.dest))
}

pub fn aborted(a: &Aborted) -> Text {
    let names = serde_json::to_string(&a.aborted).unwrap_or_default();
    Text::line(format!("aborted: {names}"))
}

pub fn maintenance(m: &MaintenanceReport) -> Text {
    Text::line(format!("state: {}", m.state))
}

pub fn jobs(r: &JobsReport) -> Text {
    let rows: Vec<Vec<String>> = r
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.vm.clone(),
                j.dest.clone(),
                j.phase.as_str().into(),
                format!("{:.1}", j.percent),
                opt_f(j.remaining_mib),
                opt_f(j.rate_mib_s),
                opt(j.eta_s),
                opt(j.downtime_ms),
                match (&j.error, &j.note) {
                    (Some(e), Some(n)) => format!("{e} ({n})"),
                    (Some(e), None) => e.clone(),
                    (None, Some(n)) => n.clone(),
                    (None, None) => String::new(),
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        return Text::line("no jobs");
    }
    let mut t = table::render(
        &[
            "JOB",
            "VM",
            "TO",
            "PHASE",
            "%",
            "LEFT_MIB",
            "MIB/S",
            "ETA_S",
            "DOWNTIME_MS",
            "NOTE",
        ],
        &rows,
    );
    // Where each finished migration's time went, and whether its traffic
    // followed it, one line each per job: too long for a column
    // (docs/protocol.md, "Timeline").
    for j in &r.jobs {
        if !j.timeline.is_empty() {
            t.push(format!(
                "job {} {} (s): {}",
                j.id,
                j.vm,
                j.timeline.compact()
            ));
        }
        if let Some(a) = j.announce.as_ref().filter(|a| a.short().is_some()) {
            t.push(format!("job {} {}: {}", j.id, j.vm, a.text()));
        }
    }
    t
}

/// The verdict as people at the rack read it: the framed verdict line
/// (the only kind of line that may say "POWER OFF", see
/// `rackside_protocol::screen`), then one line per VM still here, with its
/// state (a paused VM is still here). SAFE rings the bell.
pub fn verdict(v: &Verdict) -> Text {
    let mut t = Text::new();
    if v.safe_to_power_off {
        t.verdict(format!(
            "*** SAFE TO POWER OFF {}: no VM left running; {} moved ***",
            v.host,
            v.moved.len()
        ))
        .bell();
        return t;
    }
    t.verdict(format!(
        "*** NOT SAFE TO POWER OFF {}: {} moved ***",
        v.host,
        v.moved.len()
    ));
    for name in &v.remaining {
        let why = v
            .failed
            .iter()
            .find(|f| &f.vm == name)
            .and_then(|f| f.error.clone())
            .or_else(|| {
                v.unplaceable
                    .iter()
                    .find(|u| &u.vm == name)
                    .map(|u| format!("cannot be placed: {}", u.reason))
            })
            .unwrap_or_else(|| "not part of this evacuation".into());
        let state = v
            .still_here
            .iter()
            .find(|h| &h.vm == name)
            .map_or("running", |h| h.state.as_str());
        if state == "running" {
            t.push(format!("  still running here: {name}: {why}"));
        } else {
            t.push(format!("  still here, {state}: {name}: {why}"));
        }
    }
    if let Some(e) = &v.check_error {
        t.push(format!("  cannot verify what still runs here: {e}"));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Moved, NotMoved, Phase, StillHere};

    fn not_safe() -> Verdict {
        Verdict {
            evacuation: 7,
            host: "ha".into(),
            moved: vec![Moved {
                vm: "vm1".into(),
                dest: "hb".into(),
                downtime_ms: Some(30),
                seconds: Some(2.0),
            }],
            failed: vec![NotMoved {
                vm: "vm2".into(),
                dest: "hc".into(),
                phase: Phase::Failed,
                error: Some("refused by hc".into()),
                tried: vec!["hc".into()],
            }],
            unplaceable: vec![Unplaceable {
                vm: "big".into(),
                reason: "needs 64 GiB".into(),
            }],
            remaining: vec!["big".into(), "vm2".into()],
            still_here: vec![
                StillHere {
                    vm: "big".into(),
                    state: "running".into(),
                },
                StillHere {
                    vm: "vm2".into(),
                    state: "paused".into(),
                },
            ],
            safe_to_power_off: false,
            check_error: None,
        }
    }

    #[test]
    fn verdict_text_says_why_each_vm_is_still_here() {
        let t = verdict(&not_safe()).to_string();
        assert!(
            t.starts_with("*** NOT SAFE TO POWER OFF ha: 1 moved"),
            "{t}"
        );
        assert!(t.contains("still here, paused: vm2: refused by hc"), "{t}");
        assert!(t.contains("still running here: big"), "{t}");
        assert!(t.contains("big: cannot be placed: needs 64 GiB"), "{t}");
        assert!(!t.contains('\x07'));
        let mut v = not_safe();
        v.remaining.clear();
        v.still_here.clear();
        v.check_error = Some("libvirt down".into());
        assert!(verdict(&v)
            .to_string()
            .contains("cannot verify what still runs here: libvirt down"));
        v.check_error = None;
        v.safe_to_power_off = true;
        let t = verdict(&v).to_string();
        assert!(
            t.contains("SAFE TO POWER OFF ha") && t.ends_with('\x07'),
            "{t}"
        );
    }

    #[test]
    fn jobs_text_has_a_line_for_each_timeline_and_announcement() {
        use crate::migration::announce::Announce;
        use crate::migration::timeline::{Step, Timeline};
        use crate::report::{JobRow, JobsReport, Kind};
        let mut timeline = Timeline::default();
        timeline.mark(Step::Accepted, std::time::Duration::ZERO);
        timeline.mark(Step::Done, std::time::Duration::from_millis(4_100));
        let row = |id, vm: &str, announce| JobRow {
            id,
            run: 1,
            kind: Kind::Evacuate,
            vm: vm.into(),
            dest: "hb".into(),
            phase: Phase::Done,
            percent: 100.0,
            remaining_mib: Some(0.0),
            rate_mib_s: None,
            eta_s: Some(0),
            downtime_ms: Some(155),
            seconds: Some(4.1),
            data_mib: None,
            error: None,
            note: None,
            tried: vec!["hb".into()],
            offline: false,
            timeline: timeline.clone(),
            announce,
        };
        let r = JobsReport {
            jobs: vec![
                row(1, "db1", Some(Announce::Seen { from_end_ms: 12 })),
                row(
                    2,
                    "web1",
                    Some(Announce::Requested {
                        reason: "NIC 52:54:00:00:00:07 is not on a bridge (macvtap)".into(),
                    }),
                ),
                row(3, "idle", Some(Announce::NoNic)),
            ],
            running: false,
        };
        let lines = jobs(&r).lines();
        let after: Vec<&str> = lines
            .iter()
            .skip_while(|l| !l.starts_with("job "))
            .map(String::as_str)
            .collect();
        assert_eq!(
            after,
            [
                "job 1 db1 (s): done 4.1",
                "job 1 db1: announced: RARP seen here 12 ms after the migration ended",
                "job 2 web1 (s): done 4.1",
                "job 2 web1: announcement requested from the destination \
                 (NIC 52:54:00:00:00:07 is not on a bridge (macvtap))",
                "job 3 idle (s): done 4.1",
            ]
        );
    }
}
