//! Text renderings of the evacuation commands' answers and the verdict,
//! for people. Every name in them goes through the screen sanitiser when
//! the `Text` is written.

use rackside_protocol::{table, Text};

use crate::placement::{Move, PeerReason, Unplaceable};
use crate::report::{
    Aborted, EvacuationStarted, JobsReport, MaintenanceReport, MigrationStarted, PlanReport,
    Verdict,
};

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// What cannot be placed: one line per peer saying why it takes none of
/// them (the same for every VM it could not take), then those VMs; a VM
/// that cannot move at all, or any VM when no peer reason is known, on a
/// line of its own with its whole reason. `state` says how a VM is when
/// that is worth saying; every line starts with `lead`.
fn unplaceable_text(
    unplaceable: &[&Unplaceable],
    peer_reasons: &[PeerReason],
    state: &dyn Fn(&str) -> Option<String>,
    lead: &str,
) -> Text {
    let indent = lead.len() + UNDER.len();
    let mut t = Text::new();
    let vm = |u: &Unplaceable| match state(&u.vm) {
        Some(st) => format!("{} ({st})", u.vm),
        None => u.vm.clone(),
    };
    let (grouped, alone): (Vec<&Unplaceable>, Vec<&Unplaceable>) = unplaceable
        .iter()
        .copied()
        .partition(|u| !u.unmovable && !peer_reasons.is_empty());
    for p in peer_reasons.iter().filter(|_| !grouped.is_empty()) {
        t.push_wrapped(&format!("{lead}{}: {}", p.host, p.reason), indent);
    }
    if !grouped.is_empty() {
        let names: Vec<String> = grouped.iter().map(|u| vm(u)).collect();
        t.push_wrapped(&format!("{lead}VMs: {}", names.join(", ")), indent);
    }
    for u in alone {
        t.push_wrapped(&format!("{lead}{}: {}", vm(u), u.reason), indent);
    }
    t
}

fn moves_and_unplaceable(
    moves: &[Move],
    unplaceable: &[Unplaceable],
    peer_reasons: &[PeerReason],
) -> Text {
    let rows: Vec<Vec<String>> = moves
        .iter()
        .map(|m| vec![m.vm.clone(), m.dest.clone()])
        .collect();
    let mut t = if rows.is_empty() {
        Text::line("nothing to move")
    } else {
        table::render(&["VM", "TO"], &rows)
    };
    if !unplaceable.is_empty() {
        t.push(format!("cannot place {}:", vms_count(unplaceable.len())));
        let all: Vec<&Unplaceable> = unplaceable.iter().collect();
        t.append(unplaceable_text(&all, peer_reasons, &|_| None, UNDER));
    }
    t
}

/// "1 VM", "3 VMs".
fn vms_count(n: usize) -> String {
    if n == 1 {
        "1 VM".into()
    } else {
        format!("{n} VMs")
    }
}

pub fn plan(p: &PlanReport) -> Text {
    moves_and_unplaceable(&p.moves, &p.unplaceable, &p.peer_reasons)
}

pub fn evacuation_started(e: &EvacuationStarted) -> Text {
    let mut t = Text::line(format!(
        "evacuation {} started; this host is in maintenance",
        e.evacuation
    ));
    t.append(moves_and_unplaceable(
        &e.moves,
        &e.unplaceable,
        &e.peer_reasons,
    ));
    t
}

pub fn migration_started(m: &MigrationStarted) -> Text {
    Text::line(format!("job {} started: {} to {}", m.job, m.vm, m.dest))
}

pub fn aborted(a: &Aborted) -> Text {
    let mut t = Text::new();
    t.push_wrapped(&format!("aborted: {}", a.aborted.join(", ")), 2);
    t
}

pub fn maintenance(m: &MaintenanceReport) -> Text {
    Text::line(format!("state: {}", m.state))
}

/// `jobs`: one row per job in 80 columns (the rate is in the progress
/// events and JSON), and under a row, indented, what does not fit a
/// column: the error or note, where the time went, whether the traffic
/// followed (docs/protocol.md, "Timeline" and "Announcement").
pub fn jobs(r: &JobsReport) -> Text {
    if r.jobs.is_empty() {
        return Text::line("no jobs");
    }
    let rows: Vec<Vec<String>> = r
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.vm.clone(),
                j.dest.clone(),
                j.phase.as_str().into(),
                // Floored: 99.9 % is not done.
                format!("{:.0}", j.percent.floor()),
                j.remaining_mib.map_or("-".into(), |m| format!("{m:.0}")),
                opt(j.eta_s),
                opt(j.downtime_ms),
            ]
        })
        .collect();
    let table = table::render(
        &[
            "JOB", "VM", "TO", "PHASE", "%", "LEFT_MIB", "ETA_S", "DOWN_MS",
        ],
        &rows,
    )
    .lines();
    let mut t = Text::new();
    let mut lines = table.into_iter();
    if let Some(header) = lines.next() {
        t.push(header);
    }
    for (j, row) in r.jobs.iter().zip(lines) {
        t.push(row);
        let under = |t: &mut Text, s: String| {
            t.push_wrapped(&format!("{UNDER}{s}"), UNDER.len() + 2);
        };
        match (&j.error, &j.note) {
            (Some(e), Some(n)) => under(&mut t, format!("error: {e} ({n})")),
            (Some(e), None) => under(&mut t, format!("error: {e}")),
            (None, Some(n)) => under(&mut t, format!("note: {n}")),
            (None, None) => {}
        }
        if !j.timeline.is_empty() {
            under(&mut t, format!("time (s): {}", j.timeline.compact()));
        }
        if let Some(a) = j.announce.as_ref().filter(|a| a.short().is_some()) {
            under(&mut t, a.text());
        }
    }
    t
}

/// What goes under a row or a heading starts this far in.
const UNDER: &str = "  ";

/// The verdict as people at the rack read it: first why each VM still
/// here is (a paused VM is still here), and that the host stays in
/// maintenance; last, so that it is what the screen ends with, the verdict
/// line (the only kind of line that may say "POWER OFF", see
/// `rackside_protocol::screen`) framed in lines of `*`. SAFE rings the
/// bell.
pub fn verdict(v: &Verdict) -> Text {
    let mut t = Text::new();
    let line = if v.safe_to_power_off {
        format!(
            "*** SAFE TO POWER OFF {}: no VM left running; {} moved ***",
            v.host,
            v.moved.len()
        )
    } else {
        t.append(not_safe_reasons(v));
        format!(
            "*** NOT SAFE TO POWER OFF {}: {} moved ***",
            v.host,
            v.moved.len()
        )
    };
    let frame = "*".repeat(line.chars().count());
    t.verdict(frame.clone()).verdict(line).verdict(frame);
    if v.safe_to_power_off {
        t.bell();
    }
    t
}

/// Why each VM is still here, one line each but for those placement could
/// not place: those are listed once under the peers' reasons.
fn not_safe_reasons(v: &Verdict) -> Text {
    let mut t = Text::new();
    let state = |name: &str| {
        v.still_here
            .iter()
            .find(|h| h.vm == name)
            .map_or("running", |h| h.state.as_str())
            .to_owned()
    };
    // Placement's VMs still here, when it said why of each peer; any
    // other VM (one that cannot move at all, say) gets a line of its own.
    let unplaced: Vec<&Unplaceable> = v
        .unplaceable
        .iter()
        .filter(|u| v.remaining.contains(&u.vm) && !u.unmovable && !v.peer_reasons.is_empty())
        .collect();
    for name in &v.remaining {
        let failed = v.failed.iter().find(|f| &f.vm == name);
        if failed.is_none() && unplaced.iter().any(|u| &u.vm == name) {
            continue;
        }
        let why = failed
            .and_then(|f| f.error.clone())
            .or_else(|| {
                v.unplaceable
                    .iter()
                    .find(|u| &u.vm == name)
                    .map(|u| format!("cannot be placed: {}", u.reason))
            })
            .unwrap_or_else(|| "not part of this evacuation".into());
        let line = match state(name).as_str() {
            "running" => format!("{UNDER}still running here: {name}: {why}"),
            st => format!("{UNDER}still here, {st}: {name}: {why}"),
        };
        t.push_wrapped(&line, 3 * UNDER.len());
    }
    if !unplaced.is_empty() {
        t.push(format!(
            "{UNDER}cannot be placed, still here: {}",
            vms_count(unplaced.len())
        ));
        let lead = UNDER.repeat(2);
        t.append(unplaceable_text(
            &unplaced,
            &v.peer_reasons,
            &|name| Some(state(name)).filter(|st| st != "running"),
            &lead,
        ));
    }
    if let Some(e) = &v.check_error {
        t.push_wrapped(
            &format!("{UNDER}cannot verify what still runs here: {e}"),
            3 * UNDER.len(),
        );
    }
    t.push("this host is still in maintenance: 'maintenance off' takes it out");
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::fit::{fits, vm_name, HOST_A, HOST_B, HOST_C};
    use crate::migration::announce::Announce;
    use crate::migration::timeline::{Step, Timeline};
    use crate::report::{JobRow, Kind, Moved, NotMoved, Phase, StillHere};

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
                unmovable: false,
            }],
            peer_reasons: vec![],
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
    fn verdict_text_says_why_each_vm_is_still_here_then_the_verdict_last() {
        let t = fits(&verdict(&not_safe()));
        let lines: Vec<&str> = t.trim_end_matches("\r\n").split("\r\n").collect();
        let frame = "*".repeat(41);
        assert_eq!(
            lines[lines.len() - 3..],
            [
                frame.as_str(),
                "*** NOT SAFE TO POWER OFF ha: 1 moved ***",
                frame.as_str()
            ],
            "{t}"
        );
        assert!(t.contains("still here, paused: vm2: refused by hc"), "{t}");
        assert!(t.contains("still running here: big"), "{t}");
        assert!(t.contains("big: cannot be placed: needs 64 GiB"), "{t}");
        assert!(
            t.contains("\r\nthis host is still in maintenance: 'maintenance off' takes it out\r\n"),
            "{t}"
        );
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
        let t = fits(&verdict(&v));
        let line = "*** SAFE TO POWER OFF ha: no VM left running; 1 moved ***";
        assert_eq!(
            t,
            format!("{f}\r\n{line}\r\n{f}\r\n\x07", f = "*".repeat(line.len()))
        );
    }

    /// Ten VMs, four moved, the rest for every reason there is, long names.
    fn crowded() -> Verdict {
        let vm = vm_name;
        let mut v = not_safe();
        v.host = HOST_A.into();
        v.moved = (0..4)
            .map(|i| Moved {
                vm: vm(i),
                dest: HOST_B.into(),
                downtime_ms: Some(120),
                seconds: Some(8.5),
            })
            .collect();
        v.failed = vec![
            NotMoved {
                vm: vm(4),
                dest: HOST_B.into(),
                phase: Phase::Failed,
                error: Some(format!(
                    "operation failed: migration out job: unexpectedly failed; \
                     {HOST_B} refused the incoming migration: the hook says it is in maintenance"
                )),
                tried: vec![HOST_B.into(), HOST_C.into()],
            },
            NotMoved {
                vm: vm(5),
                dest: HOST_C.into(),
                phase: Phase::Aborted,
                error: Some("aborted from /dev/ttyS1".into()),
                tried: vec![HOST_C.into()],
            },
        ];
        v.unplaceable = (6..9)
            .map(|i| Unplaceable {
                vm: vm(i),
                reason: format!(
                    "needs 16384 MiB; {HOST_B} has 0 MiB free after the 1024 MiB reserve, \
                     6144 MiB over its 3072 MiB already; not considered: {HOST_C} is unreachable"
                ),
                unmovable: false,
            })
            .chain(std::iter::once(Unplaceable {
                vm: vm(9),
                reason: "cannot move: a host device is passed through to it (<hostdev>)".into(),
                unmovable: true,
            }))
            .collect();
        v.peer_reasons = vec![
            PeerReason {
                host: HOST_B.into(),
                reason: "full (needs at least 16384 MiB, has 0 MiB free after the 1 GiB reserve)"
                    .into(),
            },
            PeerReason {
                host: HOST_C.into(),
                reason: "unreachable".into(),
            },
        ];
        v.remaining = (4..11).map(vm).collect();
        v.still_here = (4..11)
            .map(|i| StillHere {
                vm: vm(i),
                state: if i == 5 { "paused" } else { "running" }.into(),
            })
            .collect();
        v
    }

    #[test]
    fn a_crowded_not_safe_verdict_fits_and_gives_each_peer_reason_once() {
        let t = fits(&verdict(&crowded()));
        eprintln!("{}", t.replace("\r\n", "\n"));
        assert_eq!(t.matches("unreachable").count(), 1, "{t}");
        assert_eq!(t.matches("full (needs").count(), 1, "{t}");
        assert!(
            t.contains("  cannot be placed, still here: 3 VMs\r\n"),
            "{t}"
        );
        assert!(
            t.contains(&format!(
                "    VMs: {}, {}, {}\r\n",
                vm_name(6),
                vm_name(7),
                vm_name(8)
            )),
            "{t}"
        );
        assert!(
            t.contains(&format!(
                "  still running here: {}: cannot be placed: cannot move",
                vm_name(9)
            )),
            "{t}"
        );
        assert!(
            t.contains(&format!(
                "still running here: {}: not part of this evacuation",
                vm_name(10)
            )),
            "{t}"
        );
        assert!(
            t.ends_with(&format!(
                "*** NOT SAFE TO POWER OFF {HOST_A}: 4 moved ***\r\n{}\r\n",
                "*".repeat(51)
            )),
            "{t}"
        );
        let mut safe = crowded();
        safe.safe_to_power_off = true;
        fits(&verdict(&safe));
    }

    #[test]
    fn plan_and_evacuation_start_name_each_peer_once_then_the_vms() {
        let c = crowded();
        let moves: Vec<Move> = (0..6)
            .map(|i| Move {
                vm: vm_name(i),
                dest: if i % 2 == 0 { HOST_B } else { HOST_C }.into(),
            })
            .collect();
        let p = PlanReport {
            moves: moves.clone(),
            unplaceable: c.unplaceable.clone(),
            peer_reasons: c.peer_reasons.clone(),
        };
        let t = fits(&plan(&p));
        eprintln!("{}", t.replace("\r\n", "\n"));
        assert!(t.starts_with("VM                    TO\r\n"), "{t}");
        assert!(t.contains("\r\ncannot place 4 VMs:\r\n"), "{t}");
        assert!(
            t.contains(&format!("\r\n  {HOST_C}: unreachable\r\n")),
            "{t}"
        );
        assert_eq!(t.matches("16384 MiB").count(), 1, "{t}");
        let e = EvacuationStarted {
            evacuation: 12,
            moves,
            unplaceable: c.unplaceable,
            peer_reasons: c.peer_reasons,
        };
        let t = fits(&evacuation_started(&e));
        assert!(
            t.starts_with("evacuation 12 started; this host is in maintenance\r\n"),
            "{t}"
        );
        // Without peer reasons (an older journal) each VM keeps its own.
        let mut p = p;
        p.peer_reasons.clear();
        let t = fits(&plan(&p));
        assert_eq!(t.matches("not considered").count(), 3, "{t}");
        let empty = PlanReport {
            moves: vec![],
            unplaceable: vec![],
            peer_reasons: vec![],
        };
        assert_eq!(plan(&empty).to_string(), "nothing to move\r\n");
    }

    #[test]
    fn the_other_answers_fit() {
        fits(&migration_started(&MigrationStarted {
            job: 1234,
            vm: vm_name(1),
            dest: HOST_B.into(),
        }));
        fits(&aborted(&Aborted {
            aborted: (0..10).map(vm_name).collect(),
        }));
        fits(&maintenance(&MaintenanceReport {
            state: "maintenance",
            maintenance: true,
        }));
    }

    fn timeline() -> Timeline {
        let mut timeline = Timeline::default();
        timeline.mark(Step::Accepted, std::time::Duration::ZERO);
        timeline.mark(Step::Done, std::time::Duration::from_millis(4_100));
        timeline
    }

    fn row(id: u64, vm: &str, announce: Option<Announce>) -> JobRow {
        JobRow {
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
            timeline: timeline(),
            announce,
        }
    }

    #[test]
    fn jobs_text_puts_timeline_and_announcement_under_each_row() {
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
        assert_eq!(
            lines,
            [
                "JOB  VM    TO  PHASE  %    LEFT_MIB  ETA_S  DOWN_MS",
                "1    db1   hb  done   100  0         0      155",
                "  time (s): done 4.1",
                "  announced: RARP seen here 12 ms after the migration ended",
                "2    web1  hb  done   100  0         0      155",
                "  time (s): done 4.1",
                "  announcement requested from the destination (NIC 52:54:00:00:00:07 is not on a",
                "    bridge (macvtap))",
                "3    idle  hb  done   100  0         0      155",
                "  time (s): done 4.1",
            ]
        );
        assert_eq!(
            jobs(&JobsReport {
                jobs: vec![],
                running: false
            })
            .to_string(),
            "no jobs\r\n"
        );
    }

    #[test]
    fn jobs_with_long_names_errors_and_notes_fit() {
        let mut rows = Vec::new();
        for i in 0..12 {
            let mut j = row(
                100 + i as u64,
                &vm_name(i),
                Some(Announce::NotConfirmed {
                    reason: format!(
                        "no RARP from 52:54:00:00:00:{i:02} seen on brvm-prod-uplink within 1000 ms"
                    ),
                }),
            );
            j.dest = HOST_B.into();
            match i % 4 {
                0 => {
                    j.phase = Phase::Running;
                    j.percent = 99.9;
                    j.remaining_mib = Some(131_072.4);
                    j.rate_mib_s = Some(1180.2);
                    j.eta_s = Some(1234);
                    j.downtime_ms = Some(30_000);
                    j.timeline = Timeline::default();
                    j.announce = None;
                }
                1 => {
                    j.phase = Phase::Failed;
                    j.error = Some(format!(
                        "operation failed: migration out job: unexpectedly failed; \
                         {HOST_B} refused the incoming migration"
                    ));
                    j.note = Some(format!(
                        "resumed {} here after libvirt left it paused",
                        j.vm
                    ));
                }
                2 => j.note = Some("slow: 3 downtime steps, now at 2000 ms".into()),
                _ => j.phase = Phase::Aborted,
            }
            rows.push(j);
        }
        let r = JobsReport {
            jobs: rows,
            running: true,
        };
        let t = fits(&jobs(&r));
        eprintln!("{}", t.replace("\r\n", "\n"));
        assert!(
            t.contains(&format!(
                "100  {}  {HOST_B}  running  99   131072    1234   30000\r\n",
                vm_name(0)
            )),
            "{t}"
        );
        assert!(t.contains("\r\n  error: operation failed"), "{t}");
        assert!(t.contains("\r\n  note: slow: 3 downtime steps"), "{t}");
    }
}
