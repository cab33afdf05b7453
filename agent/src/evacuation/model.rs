//! The evacuation's bookkeeping as plain data and pure functions: jobs and
//! their phases, which job may start next, the candidates placement sees,
//! and the verdict. The controller does the I/O around these.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::inventory::{Peer, State};
use crate::placement::{Candidate, Move, Unplaceable, VmDemand};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Queued,
    Running,
    Done,
    Failed,
    Aborted,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Done | Phase::Failed | Phase::Aborted)
    }
}

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
        }
    }

    /// The protocol's `jobs` entry.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id, "vm": self.vm, "dest": self.dest, "phase": self.phase,
            "percent": self.percent, "remaining_mib": self.remaining_mib,
            "rate_mib_s": self.rate_mib_s, "eta_s": self.eta_s,
            "downtime_ms": self.downtime_ms, "seconds": self.seconds, "data_mib": self.data_mib,
            "error": self.error, "note": self.note, "tried": self.tried,
            "offline": self.offline,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Evacuate,
    Migrate,
}

/// One evacuation, or one `migrate` command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: u64,
    pub kind: Kind,
    pub poweroff: bool,
    pub jobs: Vec<Job>,
    pub unplaceable: Vec<Unplaceable>,
    pub aborting: bool,
    pub finished: bool,
    pub verdict: Option<Value>,
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
            aborting: false,
            finished: false,
            verdict: None,
        }
    }

    pub fn active(&self) -> bool {
        !self.finished
    }

    pub fn all_terminal(&self) -> bool {
        self.jobs.iter().all(|j| j.phase.is_terminal())
    }
}

/// Which queued jobs may start now: at most `max_parallel` running in all
/// and `max_per_dest` running into any one destination, in queue order
/// (largest first, as placement ordered them).
pub fn startable(jobs: &[Job], max_parallel: usize, max_per_dest: usize) -> Vec<usize> {
    let mut running = jobs.iter().filter(|j| j.phase == Phase::Running).count();
    let mut per_dest: BTreeMap<&str, usize> = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.phase == Phase::Running) {
        *per_dest.entry(j.dest.as_str()).or_default() += 1;
    }
    let mut out = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        if running >= max_parallel {
            break;
        }
        if j.phase != Phase::Queued {
            continue;
        }
        let n = per_dest.entry(j.dest.as_str()).or_default();
        if *n >= max_per_dest {
            continue;
        }
        *n += 1;
        running += 1;
        out.push(i);
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
            let (mem, vcpus) = jobs
                .iter()
                .filter(|j| j.dest == p.name && matches!(j.phase, Phase::Queued | Phase::Running))
                .fold((0u64, 0u32), |(m, c), j| (m + j.mem_mib, c + j.vcpus));
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
            }
        })
        .collect()
}

/// The VMs an evacuation moves: every active VM, and shut-off persistent
/// definitions when configured.
pub fn to_move(state: &State, move_shutoff: bool) -> Vec<(VmDemand, bool)> {
    state
        .local
        .vms
        .iter()
        .filter(|v| v.state.is_active() || move_shutoff)
        .map(|v| {
            (
                VmDemand {
                    name: v.name.clone(),
                    vcpus: v.vcpus,
                    mem_mib: v.mem_mib,
                },
                !v.state.is_active(),
            )
        })
        .collect()
}

/// The end of a run: what moved, what failed and why, what could not be
/// placed, and what libvirt says is still running here.
pub fn verdict(run: &Run, host: &str, still_running: Result<Vec<String>, String>) -> Value {
    let moved: Vec<Value> = run
        .jobs
        .iter()
        .filter(|j| j.phase == Phase::Done)
        .map(|j| json!({"vm": j.vm, "dest": j.dest, "downtime_ms": j.downtime_ms, "seconds": j.seconds}))
        .collect();
    let failed: Vec<Value> = run
        .jobs
        .iter()
        .filter(|j| matches!(j.phase, Phase::Failed | Phase::Aborted))
        .map(|j| json!({"vm": j.vm, "dest": j.dest, "phase": j.phase, "error": j.error, "tried": j.tried}))
        .collect();
    let (remaining, safe, check_error) = match still_running {
        Ok(r) => {
            let safe = r.is_empty();
            (r, safe, None)
        }
        Err(e) => (Vec::new(), false, Some(e)),
    };
    json!({
        "evacuation": run.id,
        "host": host,
        "moved": moved,
        "failed": failed,
        "unplaceable": run.unplaceable,
        "remaining": remaining,
        "safe_to_power_off": safe,
        "check_error": check_error,
    })
}

/// The verdict as people at the rack read it: the framed verdict line
/// (the only kind of line that may say "POWER OFF", see
/// `rackside_protocol::screen`), then one line per VM still here. SAFE
/// rings the bell.
pub fn verdict_text(v: &Value) -> rackside_protocol::Text {
    let mut t = rackside_protocol::Text::new();
    let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let moved = list("moved");
    let host = v["host"].as_str().unwrap_or("");
    if v["safe_to_power_off"] == json!(true) {
        t.verdict(format!(
            "*** SAFE TO POWER OFF {host}: no VM left running; {} moved ***",
            moved.len()
        ))
        .bell();
        return t;
    }
    t.verdict(format!(
        "*** NOT SAFE TO POWER OFF {host}: {} moved ***",
        moved.len()
    ));
    for r in list("remaining") {
        let name = r.as_str().unwrap_or("?");
        let why = list("failed")
            .into_iter()
            .find(|f| f["vm"] == json!(name))
            .and_then(|f| f["error"].as_str().map(str::to_owned))
            .or_else(|| {
                list("unplaceable")
                    .into_iter()
                    .find(|u| u["vm"] == json!(name))
                    .and_then(|u| {
                        u["reason"]
                            .as_str()
                            .map(|r| format!("cannot be placed: {r}"))
                    })
            })
            .unwrap_or_else(|| "not part of this evacuation".into());
        t.push(format!("  still running here: {name}: {why}"));
    }
    if let Some(e) = v["check_error"].as_str() {
        t.push(format!("  cannot verify what still runs here: {e}"));
    }
    t
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
            },
            dest,
            false,
        );
        j.phase = phase;
        j
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
        // 2 per destination: job 3 waits although a slot is free overall.
        assert_eq!(startable(&jobs, 4, 2), vec![1, 3, 4]);
        assert_eq!(startable(&jobs, 2, 2), vec![1]);
        assert_eq!(startable(&jobs, 1, 2), Vec::<usize>::new());
        assert_eq!(startable(&jobs, 8, 1), vec![3]);
    }

    #[test]
    fn verdicts_say_safe_only_when_libvirt_shows_nothing_running() {
        let mut run = Run {
            id: 7,
            kind: Kind::Evacuate,
            poweroff: false,
            jobs: vec![job(1, "hb", Phase::Done), job(2, "hc", Phase::Failed)],
            unplaceable: vec![Unplaceable {
                vm: "big".into(),
                reason: "needs 64 GiB".into(),
            }],
            aborting: false,
            finished: true,
            verdict: None,
        };
        run.jobs[1].error = Some("refused by hc".into());
        let v = verdict(&run, "ha", Ok(vec!["vm2".into(), "big".into()]));
        assert_eq!(v["safe_to_power_off"], false);
        let t = verdict_text(&v).to_string();
        assert!(t.contains("NOT SAFE TO POWER OFF"));
        assert!(t.contains("vm2: refused by hc"), "{t}");
        assert!(t.contains("big: cannot be placed: needs 64 GiB"), "{t}");
        assert!(!t.contains('\x07'));
        let v = verdict(&run, "ha", Ok(vec![]));
        assert_eq!(v["safe_to_power_off"], true);
        let t = verdict_text(&v).to_string();
        assert!(t.contains("SAFE TO POWER OFF ha") && t.ends_with('\x07'));
        // Unable to check is never safe.
        let v = verdict(&run, "ha", Err("libvirt down".into()));
        assert_eq!(v["safe_to_power_off"], false);
        assert!(verdict_text(&v).to_string().contains("cannot verify"));
    }
}
