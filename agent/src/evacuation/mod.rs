//! Evacuations and migrations: the controller behind `plan`, `migrate`,
//! `evacuate`, `jobs`, `abort`, `maintenance`, `poweroff` and `identify`.
//!
//! A run (an evacuation, or one `migrate`) is planned, journalled, then
//! driven by its own thread: jobs start within the parallelism limits,
//! each migration on threads of its own; a failed job is retried once on
//! the next host; the run ends, always, with a verdict checked against
//! libvirt itself, never against our own bookkeeping.

pub mod journal;
pub mod model;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rackside_protocol::{Dest, ErrorCode, Identify};
use serde_json::{json, Value};
use virt::connect::Connect;

use crate::config::{Config, MigrationSection, PowerSection};
use crate::console::answer::Refusal;
use crate::events::Bus;
use crate::inventory::Inventory;
use crate::libvirt_ffi;
use crate::migration::policy::Limits;
use crate::migration::run::{self as mig, Outcome};
use crate::placement::{self, Plan, Policy, Target, Unplaceable, VmDemand};
use journal::{Journal, Record, Recovered};
use model::{Job, Kind, Phase, Run};

#[derive(Debug)]
pub struct Ctx {
    pub host: String,
    pub local_uri: String,
    pub policy: Policy,
    pub migration: MigrationSection,
    pub power: PowerSection,
}

impl Ctx {
    pub fn from_config(cfg: &Config) -> Ctx {
        Ctx {
            host: cfg.host_name(),
            local_uri: cfg.libvirt.uri.clone(),
            policy: Policy {
                strategy: cfg.placement.strategy,
                load_threshold: cfg.placement.load_threshold,
                mem_reserve_mib: cfg.placement.mem_reserve_mib,
                vcpu_overcommit: cfg.placement.vcpu_overcommit,
            },
            migration: cfg.migration.clone(),
            power: cfg.power.clone(),
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            downtime_steps_ms: self.migration.downtime_steps_ms.clone(),
            no_progress_timeout: Duration::from_secs(self.migration.no_progress_timeout_s),
            budget_per_gib: Duration::from_secs(self.migration.budget_s_per_gib),
            ..Limits::default()
        }
    }
}

#[derive(Debug, Default)]
struct Ctl {
    maintenance: bool,
    current: Option<Run>,
    last: Option<Run>,
    next_run: u64,
    next_job: u64,
    aborts: BTreeMap<u64, Arc<AtomicBool>>,
    /// The named destination of the current run, if any (no retries elsewhere).
    target: Option<String>,
}

#[derive(Debug)]
pub struct Controller {
    ctx: Ctx,
    inventory: Arc<Inventory>,
    bus: Bus,
    journal: Journal,
    ctl: Mutex<Ctl>,
}

fn target_of(dest: &Dest) -> Target {
    match dest {
        Dest::Auto => Target::Auto,
        Dest::Host(h) if h.eq_ignore_ascii_case("auto") => Target::Auto,
        Dest::Host(h) => Target::Host(h.clone()),
    }
}

fn refuse(code: ErrorCode, msg: impl Into<String>) -> Refusal {
    (code, msg.into())
}

/// Names of the domains libvirt reports active here: the ground truth for
/// the verdict.
fn active_here(uri: &str) -> Result<Vec<String>, String> {
    let c = Connect::open(Some(uri)).map_err(|e| e.message().to_owned())?;
    let r = c
        .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        .map_err(|e| e.message().to_owned())
        .map(|doms| {
            doms.iter()
                .filter_map(|d| d.name().ok())
                .collect::<Vec<_>>()
        });
    libvirt_ffi::close(c);
    let mut r = r?;
    r.sort();
    Ok(r)
}

impl Controller {
    pub fn new(
        ctx: Ctx,
        inventory: Arc<Inventory>,
        bus: Bus,
        journal: Journal,
        recovered: &Recovered,
    ) -> Arc<Self> {
        let next = recovered.runs.iter().map(|r| r.id).max().unwrap_or(0);
        let next_job = recovered
            .runs
            .iter()
            .flat_map(|r| r.jobs.iter().map(|j| j.id))
            .max()
            .unwrap_or(0);
        Arc::new(Controller {
            ctx,
            inventory,
            bus,
            journal,
            ctl: Mutex::new(Ctl {
                maintenance: recovered.maintenance,
                last: recovered.runs.iter().rev().find(|r| r.finished).cloned(),
                next_run: next,
                next_job,
                ..Default::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Ctl> {
        self.ctl.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This host's state for `status` and `hosts`.
    pub fn host_state(&self, vms_running: Option<u32>) -> &'static str {
        let c = self.lock();
        if c.current
            .as_ref()
            .is_some_and(|r| r.active() && r.kind == Kind::Evacuate)
        {
            "evacuating"
        } else if vms_running == Some(0) {
            "empty"
        } else if c.maintenance {
            "maintenance"
        } else {
            "active"
        }
    }

    pub fn maintenance_on(&self) -> bool {
        self.lock().maintenance
    }

    /// The journal, for `journal` and `journal ack`.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// What every line should be told while the journal's damage stands.
    pub fn warning(&self) -> Option<String> {
        self.journal.warning()
    }

    /// While the journal's damage is not acknowledged a new run is refused:
    /// a lost line may have been a run we know nothing about.
    fn refuse_if_damaged(&self) -> Result<(), Refusal> {
        match self.journal.damage() {
            Some(d) => Err(refuse(ErrorCode::Unavailable, d.note())),
            None => Ok(()),
        }
    }

    fn demands(&self) -> Vec<(VmDemand, bool)> {
        model::to_move(&self.inventory.snapshot(), self.ctx.migration.move_shutoff)
    }

    fn make_plan(
        &self,
        vms: &[VmDemand],
        target: &Target,
        exclude: &BTreeMap<String, Vec<String>>,
        jobs: &[Job],
    ) -> Plan {
        let s = self.inventory.snapshot();
        let cands = model::candidates(&s, jobs, Instant::now(), self.inventory.peer_stale_after());
        placement::plan(vms, &cands, &self.ctx.policy, target, exclude)
    }

    fn running_jobs(&self) -> Vec<Job> {
        let c = self.lock();
        c.current.iter().flat_map(|r| r.jobs.clone()).collect()
    }

    /// Makes `run` the current run (the previous one becomes the last),
    /// written to the journal before anything starts.
    fn install(&self, c: &mut Ctl, run: Run, target: &Target) {
        self.journal.run(&run);
        c.target = match target {
            Target::Host(h) => Some(h.clone()),
            Target::Auto => None,
        };
        c.last = c.current.take().or(c.last.take());
        c.current = Some(run);
    }

    pub fn plan(&self, dest: &Dest) -> Result<Value, Refusal> {
        let demands = self.demands();
        let vms: Vec<VmDemand> = demands.iter().map(|(d, _)| d.clone()).collect();
        let p = self.make_plan(
            &vms,
            &target_of(dest),
            &BTreeMap::new(),
            &self.running_jobs(),
        );
        Ok(json!({"moves": p.moves, "unplaceable": p.unplaceable}))
    }

    pub fn evacuate(
        self: &Arc<Self>,
        dest: &Dest,
        poweroff: bool,
        line: &str,
    ) -> Result<Value, Refusal> {
        self.refuse_if_damaged()?;
        if poweroff && !self.ctx.power.allow {
            return Err(refuse(
                ErrorCode::BadRequest,
                "poweroff is not allowed by this host's config ([power] allow)",
            ));
        }
        let demands = self.demands();
        let vms: Vec<VmDemand> = demands.iter().map(|(d, _)| d.clone()).collect();
        let target = target_of(dest);
        let plan = self.make_plan(&vms, &target, &BTreeMap::new(), &[]);
        let mut c = self.lock();
        if c.current.as_ref().is_some_and(Run::active) {
            return Err(refuse(
                ErrorCode::Busy,
                "an evacuation or migration is already running; see jobs, or abort",
            ));
        }
        if !c.maintenance {
            c.maintenance = true;
            self.journal.write(&Record::Maintenance {
                ts: crate::events::now_rfc3339(),
                on: true,
                line: Some(line.to_owned()),
            });
        }
        c.next_run += 1;
        let id = c.next_run;
        let mut next_job = c.next_job;
        let jobs = model::jobs_for(&plan.moves, &demands, &mut next_job);
        c.next_job = next_job;
        let run = Run::new(id, Kind::Evacuate, poweroff, jobs, plan.unplaceable.clone());
        self.install(&mut c, run, &target);
        drop(c);
        tracing::info!(evacuation = id, line = %line, moves = plan.moves.len(), unplaceable = plan.unplaceable.len(), "evacuation started");
        self.spawn_driver(id);
        Ok(json!({"evacuation": id, "moves": plan.moves, "unplaceable": plan.unplaceable}))
    }

    pub fn migrate(self: &Arc<Self>, vm: &str, dest: &Dest, line: &str) -> Result<Value, Refusal> {
        self.refuse_if_damaged()?;
        let demands = self.demands();
        let Some((d, offline)) = demands.iter().find(|(d, _)| d.name == vm).cloned() else {
            return Err(refuse(
                ErrorCode::NotFound,
                format!("no VM '{vm}' on this host"),
            ));
        };
        let target = target_of(dest);
        let plan = self.make_plan(
            std::slice::from_ref(&d),
            &target,
            &BTreeMap::new(),
            &self.running_jobs(),
        );
        if let Some(u) = plan.unplaceable.first() {
            return Err(refuse(
                ErrorCode::NoCapacity,
                format!("{}: {}", u.vm, u.reason),
            ));
        }
        let Some(dest_name) = plan.moves.first().map(|m| m.dest.clone()) else {
            return Err(refuse(
                ErrorCode::Internal,
                "placement gave no answer for this VM",
            ));
        };
        let mut c = self.lock();
        if c.current.as_ref().is_some_and(Run::active) {
            return Err(refuse(
                ErrorCode::Busy,
                "an evacuation or migration is already running; see jobs, or abort",
            ));
        }
        c.next_run += 1;
        let id = c.next_run;
        c.next_job += 1;
        let job = Job::new(c.next_job, &d, &dest_name, offline);
        let job_id = job.id;
        let run = Run::new(id, Kind::Migrate, false, vec![job], Vec::new());
        self.install(&mut c, run, &target);
        drop(c);
        tracing::info!(job = job_id, vm = %vm, dest = %dest_name, line = %line, "migration started");
        self.spawn_driver(id);
        Ok(json!({"job": job_id, "dest": dest_name}))
    }

    /// Jobs of the current and the last run.
    pub fn jobs(&self) -> Value {
        let c = self.lock();
        let mut jobs: Vec<Value> = Vec::new();
        for run in c.last.iter().chain(c.current.iter()) {
            for j in &run.jobs {
                let mut v = j.to_json();
                v["run"] = json!(run.id);
                v["kind"] = json!(run.kind);
                jobs.push(v);
            }
        }
        json!({"jobs": jobs, "running": c.current.as_ref().is_some_and(Run::active)})
    }

    pub fn abort(&self, vm: Option<&str>, line: &str) -> Result<Value, Refusal> {
        let mut c = self.lock();
        let Some(run) = c.current.as_mut().filter(|r| r.active()) else {
            return Err(refuse(ErrorCode::NotFound, "nothing is running"));
        };
        if let Some(v) = vm {
            if !run.jobs.iter().any(|j| j.vm == v && !j.phase.is_terminal()) {
                return Err(refuse(
                    ErrorCode::NotFound,
                    format!("no queued or running migration of '{v}'"),
                ));
            }
        } else {
            run.aborting = true;
        }
        let mut aborted = Vec::new();
        let mut flags = Vec::new();
        for j in run.jobs.iter_mut().filter(|j| vm.is_none_or(|v| j.vm == v)) {
            match j.phase {
                Phase::Queued => {
                    j.phase = Phase::Aborted;
                    j.error = Some("aborted before it started".into());
                    aborted.push(j.vm.clone());
                }
                Phase::Running => {
                    flags.push(j.id);
                    aborted.push(j.vm.clone());
                }
                _ => {}
            }
        }
        let snapshot = run.clone();
        for id in flags {
            if let Some(f) = c.aborts.get(&id) {
                f.store(true, Ordering::Relaxed);
            }
        }
        drop(c);
        self.journal.run(&snapshot);
        tracing::info!(line = %line, vms = ?aborted, "abort");
        Ok(json!({"aborted": aborted}))
    }

    pub fn maintenance(&self, on: bool, line: &str) -> Result<Value, Refusal> {
        let mut c = self.lock();
        if !on
            && c.current
                .as_ref()
                .is_some_and(|r| r.active() && r.kind == Kind::Evacuate)
        {
            return Err(refuse(
                ErrorCode::Busy,
                "an evacuation is running: abort it first",
            ));
        }
        c.maintenance = on;
        drop(c);
        self.journal.write(&Record::Maintenance {
            ts: crate::events::now_rfc3339(),
            on,
            line: Some(line.to_owned()),
        });
        Ok(json!({"state": if on { "maintenance" } else { "active" }, "maintenance": on}))
    }

    pub fn poweroff(&self, line: &str) -> Result<Value, Refusal> {
        if !self.ctx.power.allow {
            return Err(refuse(
                ErrorCode::BadRequest,
                "poweroff is not allowed by this host's config ([power] allow)",
            ));
        }
        if self.lock().current.as_ref().is_some_and(Run::active) {
            return Err(refuse(
                ErrorCode::Busy,
                "an evacuation or migration is running",
            ));
        }
        let left = active_here(&self.ctx.local_uri).map_err(|e| {
            refuse(
                ErrorCode::Unavailable,
                format!("cannot check what runs here: {e}"),
            )
        })?;
        if !left.is_empty() {
            return Err(refuse(
                ErrorCode::Busy,
                format!("not empty: {} still running here", left.join(", ")),
            ));
        }
        self.power_off(line)?;
        Ok(json!({"powering_off": true}))
    }

    fn power_off(&self, line: &str) -> Result<(), Refusal> {
        let cmd = &self.ctx.power.command;
        tracing::warn!(line = %line, command = ?cmd, "powering off");
        self.bus
            .publish("host.poweroff", json!({"host": self.ctx.host}));
        std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(std::process::Stdio::null())
            .spawn()
            .map(|_| ())
            .map_err(|e| refuse(ErrorCode::Internal, format!("cannot run {}: {e}", cmd[0])))
    }

    pub fn identify(&self, what: &Identify) -> Result<Value, Refusal> {
        let cmd = &self.ctx.power.identify_command;
        if cmd.is_empty() {
            return Err(refuse(
                ErrorCode::Unavailable,
                "no identify command is configured ([power] identify_command)",
            ));
        }
        let secs = match what {
            Identify::On => 255,
            Identify::Off => 0,
            Identify::Seconds(s) => *s,
        };
        let st = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .arg(secs.to_string())
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(|e| refuse(ErrorCode::Internal, format!("cannot run {}: {e}", cmd[0])))?;
        if st.success() {
            Ok(json!({}))
        } else {
            Err(refuse(
                ErrorCode::Internal,
                format!("{} exited with {st}", cmd[0]),
            ))
        }
    }

    fn spawn_driver(self: &Arc<Self>, run_id: u64) {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("run-{run_id}"))
            .spawn(move || me.drive(run_id));
        if let Err(e) = spawned {
            tracing::error!(cause = %e, "cannot start the evacuation thread");
            self.finish(run_id);
        }
    }

    /// Starts jobs as slots free up until every job has ended, then gives
    /// the verdict.
    fn drive(self: Arc<Self>, run_id: u64) {
        loop {
            let mut to_start = Vec::new();
            let done = {
                let mut c = self.lock();
                let max_p = self.ctx.migration.max_parallel as usize;
                let max_d = self.ctx.migration.max_per_destination as usize;
                let Some(run) = c.current.as_mut().filter(|r| r.id == run_id) else {
                    return;
                };
                let idx = model::startable(&run.jobs, max_p, max_d);
                for i in idx {
                    let j = &mut run.jobs[i];
                    j.phase = Phase::Running;
                    j.tried.push(j.dest.clone());
                    to_start.push(j.clone());
                }
                let all = run.all_terminal();
                if !to_start.is_empty() {
                    let snap = run.clone();
                    self.journal.run(&snap);
                }
                for j in &to_start {
                    c.aborts.insert(j.id, Arc::new(AtomicBool::new(false)));
                }
                all
            };
            if done {
                break;
            }
            for j in to_start {
                let me = self.clone();
                let name = format!("job-{}", j.id);
                let flag = self.lock().aborts.get(&j.id).cloned().unwrap_or_default();
                if let Err(e) = std::thread::Builder::new()
                    .name(name)
                    .spawn(move || me.run_job(run_id, j, flag))
                {
                    tracing::error!(cause = %e, "cannot start a migration thread");
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.finish(run_id);
    }

    fn update_job(
        &self,
        run_id: u64,
        job_id: u64,
        f: impl FnOnce(&mut Job, &mut Run),
    ) -> Option<Run> {
        let mut c = self.lock();
        let run = c.current.as_mut().filter(|r| r.id == run_id)?;
        let idx = run.jobs.iter().position(|j| j.id == job_id)?;
        let mut job = run.jobs[idx].clone();
        f(&mut job, run);
        run.jobs[idx] = job;
        Some(run.clone())
    }

    fn run_job(self: Arc<Self>, run_id: u64, job: Job, abort: Arc<AtomicBool>) {
        let peer = self
            .inventory
            .snapshot()
            .peers
            .into_iter()
            .find(|p| p.name == job.dest);
        let Some(peer) = peer else {
            self.job_failed(run_id, &job, format!("no peer named {}", job.dest), false);
            return;
        };
        let spec = mig::Spec {
            vm: job.vm.clone(),
            dest: job.dest.clone(),
            dest_uri: peer.uri.clone(),
            migrate_uri: peer.migrate_uri.clone(),
            bandwidth_mib_s: self.ctx.migration.bandwidth_mib_s,
            offline: job.offline,
            auto_converge: self.ctx.migration.auto_converge,
            mem_mib: job.mem_mib,
        };
        tracing::info!(job = job.id, vm = %job.vm, dest = %job.dest, offline = job.offline, "migration starting");
        let mut last_event = Instant::now() - Duration::from_secs(10);
        let mut on_progress = |p: &crate::migration::policy::Progress| {
            self.update_job(run_id, job.id, |j, _| {
                j.percent = p.percent;
                j.remaining_mib = Some(p.remaining_mib);
                j.rate_mib_s = p.rate_mib_s;
                j.eta_s = p.eta_s;
                j.note = p.note.clone();
            });
            if last_event.elapsed() >= Duration::from_secs(2) {
                last_event = Instant::now();
                self.bus.publish(
                    "migration.progress",
                    json!({"job": job.id, "vm": job.vm, "dest": job.dest, "percent": p.percent,
                           "remaining_mib": p.remaining_mib, "rate_mib_s": p.rate_mib_s, "eta_s": p.eta_s,
                           "downtime_ms": p.downtime_ms, "note": p.note}),
                );
            }
        };
        let outcome = mig::run(
            &self.ctx.local_uri,
            &spec,
            self.ctx.limits(),
            &abort,
            &mut on_progress,
        );
        self.lock().aborts.remove(&job.id);
        self.inventory.nudge_peers();
        match outcome {
            Outcome::Done {
                seconds,
                downtime_ms,
                data_mib,
            } => {
                let snap = self.update_job(run_id, job.id, |j, _| {
                    j.phase = Phase::Done;
                    j.percent = 100.0;
                    j.remaining_mib = Some(0.0);
                    j.eta_s = Some(0);
                    j.seconds = Some((seconds * 10.0).round() / 10.0);
                    j.downtime_ms = downtime_ms;
                    j.data_mib = data_mib.map(|m| (m * 10.0).round() / 10.0);
                    j.note = None;
                });
                if let Some(s) = snap {
                    self.journal.run(&s);
                }
                tracing::info!(job = job.id, vm = %job.vm, dest = %job.dest, seconds, downtime_ms, "migration done");
                self.bus.publish(
                    "migration.done",
                    json!({"job": job.id, "vm": job.vm, "dest": job.dest, "downtime_ms": downtime_ms,
                           "seconds": seconds, "data_mib": data_mib}),
                );
            }
            Outcome::Failed { error, aborted } => {
                let by_user = aborted && abort.load(Ordering::Relaxed);
                self.job_failed(run_id, &job, error, by_user);
            }
        }
    }

    /// A failed job: retried once on the next host unless aborted, else
    /// recorded with the reason and where the VM is.
    fn job_failed(&self, run_id: u64, job: &Job, error: String, by_user: bool) {
        let where_now = match active_here(&self.ctx.local_uri) {
            Ok(names) if names.contains(&job.vm) => Some(self.ctx.host.clone()),
            _ => None,
        };
        let (aborting, named) = {
            let c = self.lock();
            (
                c.current
                    .as_ref()
                    .is_some_and(|r| r.id == run_id && r.aborting),
                c.target.clone(),
            )
        };
        let mut retry_dest = None;
        let mut final_error = error.clone();
        // Retry only when the VM is still here, running once: never chase
        // a VM whose whereabouts are unknown.
        if !by_user && !aborting && named.is_none() && job.tried.len() < 2 && where_now.is_some() {
            let mut exclude = BTreeMap::new();
            exclude.insert(job.vm.clone(), job.tried.clone());
            let others: Vec<Job> = self
                .running_jobs()
                .into_iter()
                .filter(|j| j.id != job.id)
                .collect();
            let demand = VmDemand {
                name: job.vm.clone(),
                vcpus: job.vcpus,
                mem_mib: job.mem_mib,
            };
            let p = self.make_plan(&[demand], &Target::Auto, &exclude, &others);
            match (p.moves.first(), p.unplaceable.first()) {
                (Some(m), _) => retry_dest = Some(m.dest.clone()),
                (None, Some(Unplaceable { reason, .. })) => {
                    final_error = format!("{error}; no other host: {reason}")
                }
                _ => {}
            }
        }
        let snap = self.update_job(run_id, job.id, |j, _| {
            if let Some(d) = &retry_dest {
                j.note = Some(format!("{} failed ({error}); retrying on {d}", j.dest));
                j.dest = d.clone();
                j.phase = Phase::Queued;
                j.percent = 0.0;
            } else {
                j.phase = if by_user || aborting {
                    Phase::Aborted
                } else {
                    Phase::Failed
                };
                j.error = Some(final_error.clone());
            }
        });
        if let Some(s) = snap {
            self.journal.run(&s);
        }
        tracing::warn!(job = job.id, vm = %job.vm, dest = %job.dest, error = %error, retry = ?retry_dest, "migration failed");
        self.bus.publish(
            "migration.failed",
            json!({"job": job.id, "vm": job.vm, "dest": job.dest, "error": error,
                   "now_on": where_now, "retrying_on": retry_dest}),
        );
    }

    fn finish(&self, run_id: u64) {
        let still = active_here(&self.ctx.local_uri);
        let mut c = self.lock();
        let Some(run) = c.current.as_mut().filter(|r| r.id == run_id) else {
            return;
        };
        run.finished = true;
        let kind = run.kind;
        let poweroff = run.poweroff;
        let v = model::verdict(run, &self.ctx.host, still);
        run.verdict = Some(v.clone());
        let snap = run.clone();
        drop(c);
        self.journal.run(&snap);
        self.inventory.nudge_peers();
        if kind != Kind::Evacuate {
            return;
        }
        let safe = v["safe_to_power_off"] == json!(true);
        tracing::info!(evacuation = run_id, safe, "evacuation done");
        self.bus.publish("evacuation.done", v.clone());
        if safe {
            self.bus
                .publish("host.empty", json!({"host": self.ctx.host}));
            if poweroff && self.ctx.power.allow {
                let _ = self.power_off("evacuate poweroff");
            }
        }
    }

    /// At start: a run the journal shows unfinished was cut short by a
    /// restart. Libvirt runs peer-to-peer migrations without us, so each
    /// job's VM is looked for (still migrating here: followed to its end),
    /// and the run is closed with the truth.
    pub fn recover(self: &Arc<Self>, recovered: &Recovered) {
        let Some(run) = recovered.runs.iter().rev().find(|r| !r.finished).cloned() else {
            return;
        };
        tracing::warn!(
            run = run.id,
            "an evacuation was interrupted by a restart; reconciling with libvirt"
        );
        {
            let mut c = self.lock();
            c.current = Some(run.clone());
        }
        let me = self.clone();
        let _ = std::thread::Builder::new()
            .name("recover".into())
            .spawn(move || {
                for job in run.jobs.iter().filter(|j| !j.phase.is_terminal()) {
                    me.reconcile(run.id, job);
                }
                me.finish(run.id);
            });
    }

    fn reconcile(&self, run_id: u64, job: &Job) {
        // Follow a migration libvirt is still running, to its end.
        let deadline =
            Instant::now() + Duration::from_secs(self.ctx.migration.budget_s_per_gib.max(120) * 4);
        while Instant::now() < deadline {
            let busy = Connect::open(Some(&self.ctx.local_uri))
                .ok()
                .map(|c| {
                    let b = c
                        .lookup_domain_by_name(&job.vm)
                        .ok()
                        .and_then(|d| d.job_info().ok())
                        .is_some_and(|j| j.r#type != 0);
                    libvirt_ffi::close(c);
                    b
                })
                .unwrap_or(false);
            if !busy {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let here = active_here(&self.ctx.local_uri)
            .map(|n| n.contains(&job.vm))
            .unwrap_or(false);
        let peers = self.inventory.snapshot().peers;
        let there = peers.iter().find(|p| p.name == job.dest).is_some_and(|p| {
            Connect::open(Some(&p.uri))
                .ok()
                .map(|c| {
                    let ok = c
                        .lookup_domain_by_name(&job.vm)
                        .ok()
                        .and_then(|d| d.is_active().ok())
                        .unwrap_or(false);
                    libvirt_ffi::close(c);
                    ok
                })
                .unwrap_or(false)
        });
        let snap = self.update_job(run_id, job.id, |j, _| {
            if there && !here {
                j.phase = Phase::Done;
                j.percent = 100.0;
                j.note = Some("completed while the agent was restarting".into());
            } else if job.phase == Phase::Queued {
                j.phase = Phase::Aborted;
                j.error = Some("not started: the agent restarted".into());
            } else {
                j.phase = Phase::Failed;
                j.error = Some(if here {
                    "interrupted by an agent restart; the VM still runs here".into()
                } else {
                    "interrupted by an agent restart; the VM was not found here or on the destination".into()
                });
            }
        });
        if let Some(s) = snap {
            self.journal.run(&s);
        }
    }
}
