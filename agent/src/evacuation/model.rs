//! The evacuation's bookkeeping as plain data and pure functions: jobs and
//! their phases, which job may start next, the candidates placement sees,
//! and the verdict. The controller does the I/O around these.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hypervisor::{DomState, DomainInfo};
use crate::inventory::{Peer, State};
use crate::migration::announce::Announce;
use crate::migration::timeline::Timeline;
use crate::placement::{Candidate, DiskNeed, Move, PeerReason, PoolRoom, Unplaceable, VmDemand};
use crate::report::{JobRow, Moved, NotMoved, StillHere, Verdict};

pub use crate::report::{Kind, Phase};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub vm: String,
    pub dest: String,
    pub phase: Phase,
    pub percent: f64,
    pub remaining_mib: Option<f64>,
    pub rate_mib_s: Option<f64>,
    pub eta_s: Option<u64>,
    pub downtime_ms: Option<u64>,
    pub seconds: Option<f64>,
    /// Data moved, from the destination's record of the finished job.
    #[serde(default)]
    pub data_mib: Option<f64>,
    pub error: Option<String>,
    pub note: Option<String>,
    /// Hosts already tried for this VM, in order.
    pub tried: Vec<String>,
    pub mem_mib: u64,
    pub vcpus: u32,
    /// A shut-off definition, moved offline.
    pub offline: bool,
    /// Room its copied local disks take on the destination.
    #[serde(default)]
    pub disks: Vec<DiskNeed>,
    /// Where a finished migration's time went.
    #[serde(default, skip_serializing_if = "Timeline::is_empty")]
    pub timeline: Timeline,
    /// A finished live migration's announcement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<Announce>,
}

impl Job {
    pub fn new(id: u64, vm: &VmDemand, dest: &str, offline: bool) -> Job {
        Job {
            id,
            vm: vm.name.clone(),
            dest: dest.to_owned(),
            phase: Phase::Queued,
            percent: 0.0,
            remaining_mib: None,
            rate_mib_s: None,
            eta_s: None,
            downtime_ms: None,
            seconds: None,
            data_mib: None,
            error: None,
            note: None,
            tried: Vec::new(),
            mem_mib: vm.mem_mib,
            vcpus: vm.vcpus,
            offline,
            disks: vm.disks.clone(),
            timeline: Timeline::default(),
            announce: None,
        }
    }

    /// The protocol's `jobs` entry.
    pub fn row(&self, run: u64, kind: Kind) -> JobRow {
        JobRow {
            id: self.id,
            run,
            kind,
            vm: self.vm.clone(),
            dest: self.dest.clone(),
            phase: self.phase,
            percent: self.percent,
            remaining_mib: self.remaining_mib,
            rate_mib_s: self.rate_mib_s,
            eta_s: self.eta_s,
            downtime_ms: self.downtime_ms,
            seconds: self.seconds,
            data_mib: self.data_mib,
            error: self.error.clone(),
            note: self.note.clone(),
            tried: self.tried.clone(),
            offline: self.offline,
            timeline: self.timeline.clone(),
            announce: self.announce.clone(),
        }
    }
}

/// One evacuation, or one `migrate` command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: u64,
    pub kind: Kind,
    pub poweroff: bool,
    pub jobs: Vec<Job>,
    pub unplaceable: Vec<Unplaceable>,
    /// Why each peer took none of `unplaceable`, as planned.
    #[serde(default)]
    pub peer_reasons: Vec<PeerReason>,
    pub aborting: bool,
    pub finished: bool,
    pub verdict: Option<Box<Verdict>>,
    /// The destination the operator named: failed jobs are never retried
    /// elsewhere.
    #[serde(default)]
    pub named: Option<String>,
}

impl Run {
    pub fn new(
        id: u64,
        kind: Kind,
        poweroff: bool,
        jobs: Vec<Job>,
        unplaceable: Vec<Unplaceable>,
    ) -> Run {
        Run {
            id,
            kind,
            poweroff,
            jobs,
            unplaceable,
            peer_reasons: Vec::new(),
            aborting: false,
            finished: false,
            verdict: None,
            named: None,
        }
    }

    pub fn all_terminal(&self) -> bool {
        self.jobs.iter().all(|j| j.phase.is_terminal())
    }
}

/// Which queued jobs may start now, in the order to start them: at most
/// `max_parallel` running in all and `max_per_dest` running into any one
/// destination. Destinations are filled level by level (every destination
/// one migration before any gets a second), in queue order (largest first,
/// as placement ordered them) within a level: a destination's QEMU
/// startup and the link into it are what two migrations into one host
/// share, so spreading is what makes the drain shortest.
pub fn startable(jobs: &[Job], max_parallel: usize, max_per_dest: usize) -> Vec<usize> {
    let mut running = jobs.iter().filter(|j| j.phase == Phase::Running).count();
    let mut per_dest: BTreeMap<&str, usize> = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.phase == Phase::Running) {
        *per_dest.entry(j.dest.as_str()).or_default() += 1;
    }
    let mut out = Vec::new();
    for level in 1..=max_per_dest {
        for (i, j) in jobs.iter().enumerate() {
            if running >= max_parallel {
                return out;
            }
            if j.phase != Phase::Queued || out.contains(&i) {
                continue;
            }
            let n = per_dest.entry(j.dest.as_str()).or_default();
            if *n >= level {
                continue;
            }
            *n += 1;
            running += 1;
            out.push(i);
        }
    }
    out
}

/// Placement's view of the peers: their committed capacity plus what jobs
/// still queued or running are about to bring them.
pub fn candidates(
    state: &State,
    jobs: &[Job],
    now: std::time::Instant,
    stale_after: std::time::Duration,
) -> Vec<Candidate> {
    state
        .peers
        .iter()
        .map(|p: &Peer| {
            let coming: Vec<&Job> = jobs
                .iter()
                .filter(|j| j.dest == p.name && matches!(j.phase, Phase::Queued | Phase::Running))
                .collect();
            let (mem, vcpus) = coming
                .iter()
                .fold((0u64, 0u32), |(m, c), j| (m + j.mem_mib, c + j.vcpus));
            // A volume created for a copy holds next to nothing until the
            // copy fills it: what is coming is deducted in full.
            let pools = p
                .pools
                .iter()
                .map(|room| {
                    let held: u64 = coming
                        .iter()
                        .flat_map(|j| j.disks.iter())
                        .filter(|n| {
                            std::path::Path::new(&n.dir) == std::path::Path::new(&room.target)
                        })
                        .map(|n| n.bytes)
                        .fold(0u64, u64::saturating_add);
                    PoolRoom {
                        target: room.target.clone(),
                        available: room.available.saturating_sub(held),
                    }
                })
                .collect();
            Candidate {
                name: p.name.clone(),
                reachable: p.reachable(now, stale_after),
                unavailable: false,
                cpus: p.cpus,
                cpu_pct: p.cpu_pct,
                mem_total_mib: p.mem_total_mib,
                mem_committed_mib: p.mem_allocated_mib,
                vcpus_committed: p.vcpus_allocated,
                mem_inflight_mib: mem,
                vcpus_inflight: vcpus,
                pools,
            }
        })
        .collect()
}

/// The VMs an evacuation moves: every active VM, and shut-off persistent
/// definitions when configured; with what their disks need and why one
/// cannot move at all. A VM whose storage the inventory could not read is
/// not held back here: its migration reads the disks again and refuses
/// what cannot move.
pub fn to_move(state: &State, move_shutoff: bool, copy_local_disks: bool) -> Vec<(VmDemand, bool)> {
    state
        .local
        .vms
        .iter()
        .filter(|v| v.state.is_active() || move_shutoff)
        .map(|v| {
            let offline = !v.state.is_active();
            let (disks, unmovable) = match &v.storage {
                Some(st) => (
                    st.needs(),
                    crate::storage::why_unmovable(st, copy_local_disks, offline),
                ),
                None => (Vec::new(), None),
            };
            (
                VmDemand {
                    name: v.name.clone(),
                    vcpus: v.vcpus,
                    mem_mib: v.mem_mib,
                    disks,
                    unmovable,
                },
                offline,
            )
        })
        .collect()
}

/// A domain state as the verdict names it.
pub fn state_word(s: DomState) -> &'static str {
    match s {
        DomState::Running => "running",
        DomState::Paused => "paused",
        DomState::ShutOff => "shutoff",
        DomState::Other => "other",
    }
}

/// The end of a run: what moved, what failed and why, what could not be
/// placed, and what libvirt says is still here (running, paused or
/// migrating: a paused VM is still here).
pub fn verdict(run: &Run, host: &str, here: Result<Vec<DomainInfo>, String>) -> Verdict {
    let moved = run
        .jobs
        .iter()
        .filter(|j| j.phase == Phase::Done)
        .map(|j| Moved {
            vm: j.vm.clone(),
            dest: j.dest.clone(),
            downtime_ms: j.downtime_ms,
            seconds: j.seconds,
        })
        .collect();
    let failed = run
        .jobs
        .iter()
        .filter(|j| matches!(j.phase, Phase::Failed | Phase::Aborted))
        .map(|j| NotMoved {
            vm: j.vm.clone(),
            dest: j.dest.clone(),
            phase: j.phase,
            error: j.error.clone(),
            tried: j.tried.clone(),
        })
        .collect();
    let (still_here, check_error) = match here {
        Ok(vms) => {
            let mut still: Vec<StillHere> = vms
                .into_iter()
                .filter(|v| v.state.is_here())
                .map(|v| StillHere {
                    vm: v.name,
                    state: state_word(v.state).into(),
                })
                .collect();
            still.sort_by(|a, b| a.vm.cmp(&b.vm));
            (still, None)
        }
        Err(e) => (Vec::new(), Some(e)),
    };
    Verdict {
        evacuation: run.id,
        host: host.to_owned(),
        moved,
        failed,
        unplaceable: run.unplaceable.clone(),
        peer_reasons: run.peer_reasons.clone(),
        remaining: still_here.iter().map(|s| s.vm.clone()).collect(),
        safe_to_power_off: check_error.is_none() && still_here.is_empty(),
        still_here,
        check_error,
    }
}

/// Moves from placement into jobs, numbering from `next_id`.
pub fn jobs_for(moves: &[Move], demands: &[(VmDemand, bool)], next_id: &mut u64) -> Vec<Job> {
    moves
        .iter()
        .filter_map(|m| {
            let (d, offline) = demands.iter().find(|(d, _)| d.name == m.vm)?;
            *next_id += 1;
            Some(Job::new(*next_id, d, &m.dest, *offline))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, dest: &str, phase: Phase) -> Job {
        let mut j = Job::new(
            id,
            &VmDemand {
                name: format!("vm{id}"),
                vcpus: 1,
                mem_mib: 256,
                ..Default::default()
            },
            dest,
            false,
        );
        j.phase = phase;
        j
    }

    #[test]
    fn storage_reaches_placement_and_disks_in_flight_are_deducted() {
        use crate::inventory::model::{Vm, VmState};
        use crate::inventory::Inventory;
        use crate::storage::{Format, LocalDisk, Storage};

        let peers = vec![crate::config::PeerSection {
            name: "hb".into(),
            uri: "qemu+tcp://hb/system".into(),
            migrate_uri: None,
            location: String::new(),
        }];
        let inv = Inventory::new(&peers, std::time::Duration::from_secs(5));
        let disk = LocalDisk {
            dev: "vda".into(),
            path: "/img/a.qcow2".into(),
            format: Format::Qcow2,
            capacity: 10 << 30,
            allocation: 1 << 30,
        };
        let vm = |name: &str, state, storage| Vm {
            name: name.into(),
            uuid: format!("u-{name}"),
            state,
            vcpus: 1,
            mem_mib: 512,
            cpu_pct: None,
            cpu_time_ns: None,
            storage,
        };
        inv.update(|s| {
            s.local.vms = vec![
                vm(
                    "a",
                    VmState::Running,
                    Some(Storage {
                        local: vec![disk.clone()],
                        blockers: vec![],
                    }),
                ),
                vm(
                    "b",
                    VmState::Shutoff,
                    Some(Storage {
                        local: vec![disk.clone()],
                        blockers: vec![],
                    }),
                ),
                vm(
                    "c",
                    VmState::Running,
                    Some(Storage {
                        local: vec![],
                        blockers: vec!["a host device is passed through to it (<hostdev>)".into()],
                    }),
                ),
                vm("d", VmState::Running, None),
            ];
            s.peers[0].pools = vec![PoolRoom {
                target: "/img".into(),
                available: 25 << 30,
            }];
        });
        let state = inv.snapshot();
        let moves = to_move(&state, true, true);
        let by = |n: &str| moves.iter().find(|(d, _)| d.name == n).cloned().unwrap();
        assert_eq!(
            by("a").0.disks,
            vec![DiskNeed {
                dir: "/img".into(),
                bytes: 10 << 30
            }]
        );
        assert_eq!(by("a").0.unmovable, None);
        assert!(by("b")
            .0
            .unmovable
            .as_deref()
            .is_some_and(|r| r.contains("offline migration")));
        assert!(by("c")
            .0
            .unmovable
            .as_deref()
            .is_some_and(|r| r.contains("<hostdev>")));
        assert_eq!(
            by("d").0,
            VmDemand {
                name: "d".into(),
                vcpus: 1,
                mem_mib: 512,
                ..Default::default()
            }
        );
        let off = to_move(&state, true, false);
        assert!(off[0]
            .0
            .unmovable
            .as_deref()
            .is_some_and(|r| r.contains("copy_local_disks is off")));

        // A job queued towards hb takes its disks' room there already.
        let mut queued = Job::new(1, &by("a").0, "hb", false);
        queued.phase = Phase::Queued;
        let now = std::time::Instant::now();
        let c = candidates(
            &state,
            std::slice::from_ref(&queued),
            now,
            std::time::Duration::from_secs(15),
        );
        assert_eq!(
            c[0].pools,
            vec![PoolRoom {
                target: "/img".into(),
                available: 15 << 30
            }]
        );
        queued.phase = Phase::Done;
        let c = candidates(&state, &[queued], now, std::time::Duration::from_secs(15));
        assert_eq!(c[0].pools[0].available, 25 << 30);
    }

    #[test]
    fn scheduling_respects_both_limits() {
        let jobs = vec![
            job(1, "hb", Phase::Running),
            job(2, "hb", Phase::Queued),
            job(3, "hb", Phase::Queued),
            job(4, "hc", Phase::Queued),
            job(5, "hc", Phase::Queued),
        ];
        // 2 per destination: job 3 waits although a slot is free overall;
        // hc, with nothing coming in yet, goes first.
        assert_eq!(startable(&jobs, 4, 2), vec![3, 1, 4]);
        assert_eq!(startable(&jobs, 2, 2), vec![3]);
        assert_eq!(startable(&jobs, 1, 2), Vec::<usize>::new());
        assert_eq!(startable(&jobs, 8, 1), vec![3]);
    }

    #[test]
    fn scheduling_spreads_over_destinations_before_doubling_up() {
        // Placement queued both of hb's first: hb and hc each get one.
        let jobs = vec![
            job(1, "hb", Phase::Queued),
            job(2, "hb", Phase::Queued),
            job(3, "hc", Phase::Queued),
            job(4, "hc", Phase::Queued),
        ];
        assert_eq!(startable(&jobs, 2, 2), vec![0, 2]);
        // With room for more, the second level follows in queue order.
        assert_eq!(startable(&jobs, 3, 2), vec![0, 2, 1]);
        assert_eq!(startable(&jobs, 8, 2), vec![0, 2, 1, 3]);
        // One destination only: the limits alone decide.
        let one = vec![job(1, "hb", Phase::Queued), job(2, "hb", Phase::Queued)];
        assert_eq!(startable(&one, 2, 2), vec![0, 1]);
    }

    fn here(vms: &[(&str, DomState)]) -> Result<Vec<DomainInfo>, String> {
        Ok(vms
            .iter()
            .map(|(n, s)| DomainInfo {
                name: (*n).into(),
                state: *s,
            })
            .collect())
    }

    #[test]
    fn verdicts_say_safe_only_when_libvirt_shows_nothing_active() {
        let mut run = Run::new(
            7,
            Kind::Evacuate,
            false,
            vec![job(1, "hb", Phase::Done), job(2, "hc", Phase::Failed)],
            vec![Unplaceable {
                vm: "big".into(),
                reason: "needs 64 GiB".into(),
                unmovable: false,
            }],
        );
        run.jobs[1].error = Some("refused by hc".into());
        let v = verdict(
            &run,
            "ha",
            here(&[("vm2", DomState::Running), ("big", DomState::Running)]),
        );
        assert!(!v.safe_to_power_off);
        assert_eq!(v.remaining, vec!["big", "vm2"]);
        assert_eq!(v.failed[0].error.as_deref(), Some("refused by hc"));
        assert_eq!(v.moved[0].vm, "vm1");
        // Shut-off definitions do not count; nothing active is SAFE.
        let v = verdict(&run, "ha", here(&[("old", DomState::ShutOff)]));
        assert!(v.safe_to_power_off && v.remaining.is_empty());
        // A paused VM is still here, and the verdict says it is paused.
        let v = verdict(&run, "ha", here(&[("vm2", DomState::Paused)]));
        assert!(!v.safe_to_power_off);
        assert_eq!(v.still_here[0].state, "paused");
        // Unable to check is never safe.
        let v = verdict(&run, "ha", Err("libvirt down".into()));
        assert!(!v.safe_to_power_off);
        assert_eq!(v.check_error.as_deref(), Some("libvirt down"));
    }

    #[test]
    fn a_verdict_reads_back_from_the_journal_format() {
        let run = Run::new(3, Kind::Evacuate, false, vec![], vec![]);
        let v = verdict(&run, "ha", here(&[("p", DomState::Paused)]));
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["remaining"], serde_json::json!(["p"]));
        assert_eq!(json["still_here"][0]["state"], "paused");
        let back: Verdict = serde_json::from_value(json).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn a_run_journalled_before_still_here_and_named_reads_back() {
        let old = r#"{"id":3,"kind":"evacuate","poweroff":false,"jobs":[],"unplaceable":[],
            "aborting":false,"finished":true,"verdict":{"evacuation":3,"host":"ha",
            "moved":[{"vm":"a","dest":"hb","downtime_ms":null,"seconds":1.5}],
            "failed":[{"vm":"b","dest":"hc","phase":"failed","error":"no","tried":["hc"]}],
            "unplaceable":[],"remaining":["b"],"safe_to_power_off":false,"check_error":null}}"#;
        let run: Run = serde_json::from_str(old).unwrap();
        let v = run.verdict.unwrap();
        assert_eq!(v.remaining, vec!["b"]);
        assert!(v.still_here.is_empty());
        assert_eq!(run.named, None);
    }
}
