//! Evacuations and migrations: the controller behind `plan`, `migrate`,
//! `evacuate`, `jobs`, `abort`, `maintenance`, `poweroff` and `identify`.
//!
//! A run (an evacuation, or one `migrate`) is planned, journalled, then
//! handed to its [`machine::Machine`], which decides everything; the
//! controller only carries out its actions through the [`Hypervisor`] and
//! feeds back what happened. One driver thread per run starts it and
//! brings the time (deadlines); each migration, check and reconciliation
//! runs on a thread of its own. A thread that cannot start or panics
//! becomes an input like any other, so every run ends with a verdict.

pub mod journal;
pub mod machine;
pub mod model;
pub mod spawn;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use rackside_protocol::{Dest, ErrorCode, Identify};

use crate::config::{Config, MigrationSection, PowerSection};
use crate::events::{Bus, HostName, Payload};
use crate::hypervisor::{
    deadline, ensure_running_after_failure, AfterFailure, HvError, Hypervisor, PeerAddr,
};
use crate::inventory::Inventory;
use crate::migration::policy::Limits;
use crate::migration::run::{Outcome, Spec};
use crate::placement::{self, Plan, Policy, Target, VmDemand};
use crate::report::{
    Aborted, EvacuationStarted, IdentifyStarted, JobsReport, LastResult, MaintenanceReport,
    MigrationStarted, PlanReport, PoweringOff, Refusal,
};
use journal::{Journal, Record, Recovered};
use machine::{Action, Input, Machine};
use model::{Job, Kind, Run};
pub use spawn::{Spawner, Threads};

#[derive(Debug, Clone)]
pub struct Ctx {
    pub host: String,
    pub policy: Policy,
    pub migration: MigrationSection,
    pub power: PowerSection,
    /// The machine's deadlines.
    pub machine: machine::Limits,
    /// How often the driver brings the time.
    pub tick: Duration,
    /// How often a migration libvirt still runs after a restart is looked at.
    pub follow_every: Duration,
    /// How long a restarted libvirtd is given to take up the migrations
    /// it was running (its reconnect threads restore each domain's job)
    /// before a VM with no job is believed to have none.
    pub restart_settle: Duration,
    /// How long `identify`'s command may run before it is killed.
    pub identify_limit: Duration,
}

impl Ctx {
    pub fn from_config(cfg: &Config) -> Ctx {
        let m = &cfg.migration;
        Ctx {
            host: cfg.host_name(),
            policy: Policy {
                strategy: cfg.placement.strategy,
                load_threshold: cfg.placement.load_threshold,
                mem_reserve_mib: cfg.placement.mem_reserve_mib,
                vcpu_overcommit: cfg.placement.vcpu_overcommit,
            },
            migration: m.clone(),
            power: cfg.power.clone(),
            machine: machine::Limits {
                max_parallel: m.max_parallel.max(1) as usize,
                max_per_dest: m.max_per_destination.max(1) as usize,
                // A migration reports every second; its own give-up rules
                // end a slow one. This is for one that says nothing at all.
                answer_timeout: Duration::from_secs(120),
                abort_grace: Duration::from_secs(60),
                check_timeout: Duration::from_secs(30),
                // After a restart a migration libvirt still runs is
                // followed to its end, up to its budget.
                reconcile_timeout: Duration::from_secs(m.budget_s_per_gib.max(120) * 4),
                // A transfer of a second or two still shows its course.
                progress_every: Duration::from_millis(500),
                check_retry_every: Duration::from_secs(1),
            },
            tick: Duration::from_millis(200),
            follow_every: Duration::from_secs(1),
            restart_settle: Duration::from_secs(5),
            identify_limit: Duration::from_secs(10),
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
    current: Option<Machine>,
    last: Option<Run>,
    next_run: u64,
    next_job: u64,
    aborts: BTreeMap<u64, Arc<AtomicBool>>,
    /// The last evacuation's result, for `status`, until maintenance is
    /// turned off or another run starts.
    last_result: Option<LastResult>,
}

impl Ctl {
    fn active(&self) -> Option<&Machine> {
        self.current.as_ref().filter(|m| !m.finished())
    }
}

#[derive(Debug)]
pub struct Controller {
    /// Ourselves, for the threads we start.
    me: Weak<Controller>,
    ctx: Ctx,
    inventory: Arc<Inventory>,
    bus: Bus,
    journal: Journal,
    hv: Arc<dyn Hypervisor>,
    spawner: Arc<dyn Spawner>,
    ctl: Mutex<Ctl>,
}

fn target_of(dest: &Dest) -> Target {
    match dest {
        Dest::Auto => Target::Auto,
        Dest::Host(h) if h.eq_ignore_ascii_case("auto") => Target::Auto,
        Dest::Host(h) => Target::Host(h.clone()),
    }
}

/// The last evacuation's result after a restart: the journal's last run,
/// when it is a finished evacuation and maintenance is still on.
fn recovered_result(r: &Recovered) -> Option<LastResult> {
    let last = r.runs.iter().max_by_key(|run| run.id)?;
    let v = last.verdict.as_ref()?;
    if !(r.maintenance && last.finished && last.kind == Kind::Evacuate) {
        return None;
    }
    let at = r.finished_at.get(&last.id).cloned().unwrap_or_default();
    Some(LastResult::of(v, at))
}

fn refuse(code: ErrorCode, msg: impl Into<String>) -> Refusal {
    (code, msg.into())
}

fn busy() -> Refusal {
    refuse(
        ErrorCode::Busy,
        "an evacuation or migration is already running; see jobs, or abort",
    )
}

/// Whether a migration call failed because this host's libvirtd went away
/// under it (stopped or restarted), rather than with an answer about the
/// migration: see [`crate::hypervisor::LOCAL_LIBVIRT_LOST`].
fn connection_lost(error: &str) -> bool {
    error.contains(crate::hypervisor::LOCAL_LIBVIRT_LOST)
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

impl Controller {
    pub fn new(
        ctx: Ctx,
        inventory: Arc<Inventory>,
        bus: Bus,
        journal: Journal,
        recovered: &Recovered,
        hv: Arc<dyn Hypervisor>,
        spawner: Arc<dyn Spawner>,
    ) -> Arc<Self> {
        let next = recovered.runs.iter().map(|r| r.id).max().unwrap_or(0);
        let next_job = recovered
            .runs
            .iter()
            .flat_map(|r| r.jobs.iter().map(|j| j.id))
            .max()
            .unwrap_or(0);
        Arc::new_cyclic(|me| Controller {
            me: me.clone(),
            ctx,
            inventory,
            bus,
            journal,
            hv,
            spawner,
            ctl: Mutex::new(Ctl {
                maintenance: recovered.maintenance,
                last_result: recovered_result(recovered),
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
        if c.active().is_some_and(|m| m.run().kind == Kind::Evacuate) {
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

    /// The last evacuation's result while it stands (see [`Ctl`]).
    pub fn last_result(&self) -> Option<LastResult> {
        self.lock().last_result.clone()
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

    /// Plans from missing data would say "nothing to move": refuse instead
    /// while local libvirt is not answering or never has.
    fn require_libvirt(&self) -> Result<(), Refusal> {
        let s = self.inventory.snapshot();
        if let Some(b) = s.local_blind(Instant::now()) {
            return Err(refuse(ErrorCode::Unavailable, b.reason));
        }
        if s.local.vms_at.is_none() {
            return Err(refuse(
                ErrorCode::Unavailable,
                "libvirt has not answered yet",
            ));
        }
        Ok(())
    }

    /// A named destination must be one of our peers.
    fn require_peer(&self, target: &Target) -> Result<(), Refusal> {
        let Target::Host(h) = target else {
            return Ok(());
        };
        if h == &self.ctx.host {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!("'{h}' is this host: name a peer, or auto"),
            ));
        }
        if self.inventory.snapshot().peers.iter().any(|p| &p.name == h) {
            Ok(())
        } else {
            Err(refuse(ErrorCode::NotFound, format!("no peer named '{h}'")))
        }
    }

    fn demands(&self) -> Vec<(VmDemand, bool)> {
        model::to_move(
            &self.inventory.snapshot(),
            self.ctx.migration.move_shutoff,
            self.ctx.migration.copy_local_disks,
        )
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

    /// The next host for a failed job, by placement over the live inventory.
    fn next_host(&self, job: &Job, others: &[Job]) -> Result<String, String> {
        let demand = VmDemand {
            name: job.vm.clone(),
            vcpus: job.vcpus,
            mem_mib: job.mem_mib,
            disks: job.disks.clone(),
            unmovable: None,
        };
        self.place_one(demand, &job.tried, others)
    }

    /// A peer for a crashed VM to be started on ([`crate::crash`]), by
    /// placement over the live inventory and the migrations under way,
    /// never one of `tried`.
    pub fn recovery_dest(&self, vm: &VmDemand, tried: &[String]) -> Result<String, String> {
        let jobs = Self::running_jobs(&self.lock());
        self.place_one(vm.clone(), tried, &jobs)
    }

    fn place_one(
        &self,
        demand: VmDemand,
        tried: &[String],
        others: &[Job],
    ) -> Result<String, String> {
        let mut exclude = BTreeMap::new();
        exclude.insert(demand.name.clone(), tried.to_vec());
        let p = self.make_plan(&[demand], &Target::Auto, &exclude, others);
        match (p.moves.first(), p.unplaceable.first()) {
            (Some(m), _) => Ok(m.dest.clone()),
            (None, Some(u)) => Err(u.reason.clone()),
            (None, None) => Err("placement gave no answer".into()),
        }
    }

    fn running_jobs(c: &Ctl) -> Vec<Job> {
        c.active().map(|m| m.run().jobs.clone()).unwrap_or_default()
    }

    /// Makes `run` the current run (the previous one becomes the last),
    /// written to the journal before anything starts.
    fn install(&self, c: &mut Ctl, run: Run, recovered: bool) {
        self.journal.run(&run);
        let m = if recovered {
            Machine::recovered(run, &self.ctx.host, self.ctx.machine.clone())
        } else {
            Machine::new(run, &self.ctx.host, self.ctx.machine.clone())
        };
        if let Some(prev) = c.current.take() {
            c.last = Some(prev.run().clone());
        }
        c.current = Some(m);
        c.last_result = None;
    }

    pub fn plan(&self, dest: &Dest) -> Result<PlanReport, Refusal> {
        self.require_libvirt()?;
        let target = target_of(dest);
        self.require_peer(&target)?;
        let demands = self.demands();
        let vms: Vec<VmDemand> = demands.iter().map(|(d, _)| d.clone()).collect();
        let jobs = Self::running_jobs(&self.lock());
        let p = self.make_plan(&vms, &target, &BTreeMap::new(), &jobs);
        Ok(PlanReport {
            moves: p.moves,
            unplaceable: p.unplaceable,
            peer_reasons: p.peer_reasons,
        })
    }

    pub fn evacuate(
        self: &Arc<Self>,
        dest: &Dest,
        poweroff: bool,
        line: &str,
    ) -> Result<EvacuationStarted, Refusal> {
        self.refuse_if_damaged()?;
        if poweroff && !self.ctx.power.allow {
            return Err(refuse(
                ErrorCode::BadRequest,
                "poweroff is not allowed by this host's config ([power] allow)",
            ));
        }
        self.require_libvirt()?;
        let target = target_of(dest);
        self.require_peer(&target)?;
        let demands = self.demands();
        let vms: Vec<VmDemand> = demands.iter().map(|(d, _)| d.clone()).collect();
        let plan = self.make_plan(&vms, &target, &BTreeMap::new(), &[]);
        let mut c = self.lock();
        if c.active().is_some() {
            return Err(busy());
        }
        self.enter_maintenance(&mut c, line);
        c.next_run += 1;
        let id = c.next_run;
        let mut next_job = c.next_job;
        let jobs = model::jobs_for(&plan.moves, &demands, &mut next_job);
        c.next_job = next_job;
        let mut run = Run::new(id, Kind::Evacuate, poweroff, jobs, plan.unplaceable.clone());
        run.peer_reasons = plan.peer_reasons.clone();
        run.named = match &target {
            Target::Host(h) => Some(h.clone()),
            Target::Auto => None,
        };
        self.install(&mut c, run, false);
        drop(c);
        tracing::info!(evacuation = id, line = %line, moves = plan.moves.len(), unplaceable = plan.unplaceable.len(), "evacuation started");
        self.spawn_driver(id, "run");
        Ok(EvacuationStarted {
            evacuation: id,
            moves: plan.moves,
            unplaceable: plan.unplaceable,
            peer_reasons: plan.peer_reasons,
        })
    }

    pub fn migrate(
        self: &Arc<Self>,
        vm: &str,
        dest: &Dest,
        line: &str,
    ) -> Result<MigrationStarted, Refusal> {
        self.refuse_if_damaged()?;
        self.require_libvirt()?;
        let target = target_of(dest);
        self.require_peer(&target)?;
        let demands = self.demands();
        let Some((d, offline)) = demands.iter().find(|(d, _)| d.name == vm).cloned() else {
            return Err(refuse(
                ErrorCode::NotFound,
                format!("no VM '{vm}' on this host"),
            ));
        };
        let jobs = Self::running_jobs(&self.lock());
        let plan = self.make_plan(std::slice::from_ref(&d), &target, &BTreeMap::new(), &jobs);
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
        if c.active().is_some() {
            return Err(busy());
        }
        c.next_run += 1;
        let id = c.next_run;
        c.next_job += 1;
        let job = Job::new(c.next_job, &d, &dest_name, offline);
        let job_id = job.id;
        let mut run = Run::new(id, Kind::Migrate, false, vec![job], Vec::new());
        run.named = match &target {
            Target::Host(h) => Some(h.clone()),
            Target::Auto => None,
        };
        self.install(&mut c, run, false);
        drop(c);
        tracing::info!(job = job_id, vm = %vm, dest = %dest_name, line = %line, "migration started");
        self.spawn_driver(id, "run");
        Ok(MigrationStarted {
            job: job_id,
            vm: vm.to_owned(),
            dest: dest_name,
        })
    }

    /// Jobs of the current and the last run.
    pub fn jobs(&self) -> JobsReport {
        let c = self.lock();
        let current = c.current.as_ref().map(Machine::run);
        let jobs = c
            .last
            .iter()
            .chain(current)
            .flat_map(|run| run.jobs.iter().map(|j| j.row(run.id, run.kind)))
            .collect();
        JobsReport {
            jobs,
            running: c.active().is_some(),
        }
    }

    pub fn abort(&self, vm: Option<&str>, line: &str) -> Result<Aborted, Refusal> {
        let mut c = self.lock();
        let Some(m) = c.current.as_mut().filter(|m| !m.finished()) else {
            return Err(refuse(ErrorCode::NotFound, "nothing is running"));
        };
        let run_id = m.run().id;
        let (aborted, actions) = m.abort(vm, Instant::now())?;
        self.execute(&mut c, run_id, actions);
        drop(c);
        tracing::info!(line = %line, vms = ?aborted, "abort");
        Ok(Aborted { aborted })
    }

    fn enter_maintenance(&self, c: &mut Ctl, line: &str) {
        if !c.maintenance {
            c.maintenance = true;
            self.journal.write(&Record::Maintenance {
                ts: crate::events::now_rfc3339(),
                on: true,
                line: Some(line.to_owned()),
            });
        }
    }

    pub fn maintenance(&self, on: bool, line: &str) -> Result<MaintenanceReport, Refusal> {
        let mut c = self.lock();
        if !on && c.active().is_some_and(|m| m.run().kind == Kind::Evacuate) {
            return Err(refuse(
                ErrorCode::Busy,
                "an evacuation is running: abort it first",
            ));
        }
        c.maintenance = on;
        if !on {
            c.last_result = None;
        }
        self.journal.write(&Record::Maintenance {
            ts: crate::events::now_rfc3339(),
            on,
            line: Some(line.to_owned()),
        });
        drop(c);
        Ok(MaintenanceReport {
            state: if on { "maintenance" } else { "active" },
            maintenance: on,
        })
    }

    /// Powers off only an empty host. Maintenance comes first (journalled),
    /// so nothing can be admitted between the check and the power cut; a
    /// refused poweroff puts it back as it was.
    pub fn poweroff(&self, line: &str) -> Result<PoweringOff, Refusal> {
        if !self.ctx.power.allow {
            return Err(refuse(
                ErrorCode::BadRequest,
                "poweroff is not allowed by this host's config ([power] allow)",
            ));
        }
        let was_on = {
            let mut c = self.lock();
            if c.active().is_some() {
                return Err(refuse(
                    ErrorCode::Busy,
                    "an evacuation or migration is running",
                ));
            }
            let was_on = c.maintenance;
            self.enter_maintenance(&mut c, line);
            was_on
        };
        if let Err(r) = self.check_empty() {
            // Refused: leave maintenance as it was, unless a run started
            // meanwhile (it needs maintenance on).
            let mut c = self.lock();
            if !was_on && c.active().is_none() {
                c.maintenance = false;
                self.journal.write(&Record::Maintenance {
                    ts: crate::events::now_rfc3339(),
                    on: false,
                    line: Some(line.to_owned()),
                });
            }
            return Err(r);
        }
        self.power_off(line)?;
        Ok(PoweringOff { powering_off: true })
    }

    /// Nothing but shut-off definitions here, as libvirt says (bounded: a
    /// hung libvirtd must not hold the line).
    fn check_empty(&self) -> Result<(), Refusal> {
        let hv = self.hv.clone();
        let here = deadline::bounded("local libvirt", self.ctx.machine.check_timeout, move || {
            hv.local_domains()
        })
        .map_err(|e| {
            refuse(
                ErrorCode::Unavailable,
                format!("cannot check what runs here: {e}"),
            )
        })?;
        let left: Vec<String> = here
            .iter()
            .filter(|d| d.state.is_here())
            .map(|d| format!("{} ({})", d.name, model::state_word(d.state)))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(refuse(
                ErrorCode::Busy,
                format!("not empty: {} still here", left.join(", ")),
            ))
        }
    }

    fn power_off(&self, line: &str) -> Result<(), Refusal> {
        let cmd = &self.ctx.power.command;
        let Some((prog, args)) = cmd.split_first() else {
            return Err(refuse(
                ErrorCode::Internal,
                "no power-off command is configured",
            ));
        };
        tracing::warn!(line = %line, command = ?cmd, "powering off");
        self.bus.publish(Payload::HostPoweroff(HostName {
            host: self.ctx.host.clone(),
        }));
        std::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::null())
            .spawn()
            .map(|_| ())
            .map_err(|e| refuse(ErrorCode::Internal, format!("cannot run {prog}: {e}")))
    }

    /// Starts the locator command and returns: a watcher kills it after
    /// its time limit, so a hung command never blocks a line.
    pub fn identify(&self, what: &Identify) -> Result<IdentifyStarted, Refusal> {
        let cmd = &self.ctx.power.identify_command;
        let Some((prog, args)) = cmd.split_first() else {
            return Err(refuse(
                ErrorCode::Unavailable,
                "no identify command is configured ([power] identify_command)",
            ));
        };
        let secs = match what {
            Identify::On => 255,
            Identify::Off => 0,
            Identify::Seconds(s) => *s,
        };
        let child = std::process::Command::new(prog)
            .args(args)
            .arg(secs.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| refuse(ErrorCode::Internal, format!("cannot run {prog}: {e}")))?;
        let limit = self.ctx.identify_limit;
        let name = prog.clone();
        let slot = Arc::new(Mutex::new(None::<std::process::Child>));
        let theirs = slot.clone();
        let watch = move || {
            let Some(mut child) = theirs.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                return;
            };
            let end = Instant::now() + limit;
            loop {
                match child.try_wait() {
                    Ok(Some(st)) if st.success() => return,
                    Ok(Some(st)) => {
                        tracing::warn!(command = %name, status = %st, "identify failed");
                        return;
                    }
                    Ok(None) if Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        tracing::warn!(command = %name, limit_s = limit.as_secs(), "identify took too long: killed");
                        let _ = child.kill();
                        let _ = child.wait();
                        return;
                    }
                }
            }
        };
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        if let Err(e) = self.spawner.spawn("identify", Box::new(watch)) {
            // No watcher: do not leave the command running unwatched.
            if let Some(mut c) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            return Err(refuse(
                ErrorCode::Internal,
                format!("cannot watch {prog}: {e}"),
            ));
        }
        Ok(IdentifyStarted {})
    }

    /// The run's driver: starts the machine, then brings the time until
    /// the verdict. If it cannot start, the run ends at once, NOT SAFE,
    /// with the reason.
    fn spawn_driver(self: &Arc<Self>, run_id: u64, what: &str) {
        let me = self.clone();
        let spawned = self.spawner.spawn(
            &format!("{what}-{run_id}"),
            Box::new(move || me.drive(run_id)),
        );
        if let Err(e) = spawned {
            tracing::error!(cause = %e, run = run_id, "cannot start the run's thread");
            self.give_up(run_id, &format!("cannot start the {what} thread: {e}"));
        }
    }

    /// Ends the run now, NOT SAFE, with the reason.
    fn give_up(&self, run_id: u64, reason: &str) {
        let mut c = self.lock();
        if let Some(m) = c.current.as_mut().filter(|m| m.run().id == run_id) {
            let actions = m.give_up(reason);
            self.execute(&mut c, run_id, actions);
        }
    }

    /// The driver's body; should it panic, the run ends NOT SAFE with the
    /// reason rather than waiting for ticks that will never come.
    fn drive(&self, run_id: u64) {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.tick_until_done(run_id)
        }));
        if let Err(p) = ran {
            let reason = format!("the run's thread panicked: {}", panic_text(p.as_ref()));
            tracing::error!(run = run_id, "{reason}");
            self.give_up(run_id, &reason);
        }
    }

    fn tick_until_done(&self, run_id: u64) {
        self.feed(run_id, Input::Start);
        loop {
            {
                let c = self.lock();
                let ours = c.current.as_ref().filter(|m| m.run().id == run_id);
                if ours.is_none_or(Machine::finished) {
                    return;
                }
            }
            std::thread::sleep(self.ctx.tick);
            self.feed(run_id, Input::Tick);
        }
    }

    /// One input to the run's machine; its actions carried out at once.
    fn feed(&self, run_id: u64, input: Input) {
        let mut c = self.lock();
        let Some(m) = c.current.as_mut().filter(|m| m.run().id == run_id) else {
            return;
        };
        let actions = m.step(input, Instant::now(), &|j: &Job, o: &[Job]| {
            self.next_host(j, o)
        });
        self.execute(&mut c, run_id, actions);
    }

    /// Carries out actions, under the lock so the journal sees the run's
    /// states in order. Nothing here waits on libvirt: every call to it
    /// runs on a thread of its own. What fails to start comes back to the
    /// machine as an input.
    fn execute(&self, c: &mut Ctl, run_id: u64, actions: Vec<Action>) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            let follow = match a {
                Action::Journal(run) => {
                    self.journal.run(&run);
                    None
                }
                Action::Publish(p) => {
                    self.bus.publish(p);
                    None
                }
                Action::Start(job) => self.start_job(c, run_id, job),
                Action::SignalAbort { job } => {
                    if let Some(f) = c.aborts.get(&job) {
                        f.store(true, Ordering::Relaxed);
                    }
                    None
                }
                Action::CheckWhereabouts { job, vm } => {
                    let me = self.me.clone();
                    self.spawner
                        .spawn(
                            &format!("check-{job}"),
                            Box::new(move || {
                                if let Some(me) = me.upgrade() {
                                    let where_now =
                                        ensure_running_after_failure(me.hv.as_ref(), &vm);
                                    me.feed(run_id, Input::Whereabouts { job, where_now });
                                }
                            }),
                        )
                        .err()
                        .map(|e| Input::Whereabouts {
                            job,
                            where_now: AfterFailure::Unknown(format!(
                                "cannot start the check thread: {e}"
                            )),
                        })
                }
                Action::Reconcile(job) => self.reconcile(run_id, job),
                Action::CheckLocal => {
                    let me = self.me.clone();
                    self.spawner
                        .spawn(
                            &format!("verdict-{run_id}"),
                            Box::new(move || {
                                if let Some(me) = me.upgrade() {
                                    let here = me.hv.local_domains().map_err(|e| e.to_string());
                                    me.feed(run_id, Input::Local(here));
                                }
                            }),
                        )
                        .err()
                        .map(|e| Input::Local(Err(format!("cannot start the check thread: {e}"))))
                }
                Action::PowerOff => {
                    if self.ctx.power.allow {
                        if let Err((_, e)) = self.power_off("evacuate poweroff") {
                            tracing::error!(cause = %e, "cannot power off");
                        }
                    }
                    None
                }
                Action::Finished(v) => {
                    let ids: Vec<u64> = c
                        .current
                        .iter()
                        .flat_map(|m| m.run().jobs.iter().map(|j| j.id))
                        .collect();
                    for id in ids {
                        c.aborts.remove(&id);
                    }
                    self.inventory.nudge_peers();
                    let evacuation = c
                        .current
                        .as_ref()
                        .is_some_and(|m| m.run().id == run_id && m.run().kind == Kind::Evacuate);
                    if evacuation {
                        c.last_result = Some(LastResult::of(&v, crate::events::now_rfc3339()));
                    }
                    tracing::info!(run = run_id, safe = v.safe_to_power_off, remaining = ?v.remaining, "run finished");
                    None
                }
            };
            if let Some(input) = follow {
                if let Some(m) = c.current.as_mut().filter(|m| m.run().id == run_id) {
                    let more = m.step(input, Instant::now(), &|j: &Job, o: &[Job]| {
                        self.next_host(j, o)
                    });
                    queue.extend(more);
                }
            }
        }
    }

    /// Starts one migration on a thread of its own. Its end (or its
    /// panic) comes back as an input; so does a thread that cannot start.
    fn start_job(&self, c: &mut Ctl, run_id: u64, job: Job) -> Option<Input> {
        let peer = self
            .inventory
            .snapshot()
            .peers
            .into_iter()
            .find(|p| p.name == job.dest);
        let Some(peer) = peer else {
            return Some(Input::Failed {
                job: job.id,
                error: format!("no peer named {}", job.dest),
                aborted: false,
                where_now: AfterFailure::Running,
            });
        };
        let spec = Spec {
            vm: job.vm.clone(),
            dest: job.dest.clone(),
            dest_uri: peer.uri.clone(),
            migrate_uri: peer.migrate_uri.clone(),
            bandwidth_mib_s: self.ctx.migration.bandwidth_mib_s,
            offline: job.offline,
            auto_converge: self.ctx.migration.auto_converge,
            tls: self.ctx.migration.tls,
            mem_mib: job.mem_mib,
            copy_local_disks: self.ctx.migration.copy_local_disks,
        };
        let flag = Arc::new(AtomicBool::new(false));
        c.aborts.insert(job.id, flag.clone());
        let me = self.me.upgrade()?;
        let limits = self.ctx.limits();
        let id = job.id;
        tracing::info!(job = id, vm = %job.vm, dest = %job.dest, offline = job.offline, "migration starting");
        let body = move || {
            me.feed(run_id, Input::Started { job: id });
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut on_progress = |p: &crate::migration::policy::Progress| {
                    me.feed(
                        run_id,
                        Input::Progress {
                            job: id,
                            progress: p.clone(),
                        },
                    )
                };
                let outcome = me.hv.migrate(&spec, &limits, &flag, &mut on_progress);
                me.inventory.nudge_peers();
                match outcome {
                    Outcome::Done {
                        seconds,
                        downtime_ms,
                        data_mib,
                        timeline,
                        announce,
                    } => {
                        tracing::info!(job = id, vm = %spec.vm, dest = %spec.dest, seconds, downtime_ms, "migration done");
                        Input::Done {
                            job: id,
                            seconds,
                            downtime_ms,
                            data_mib,
                            timeline,
                            announce,
                        }
                    }
                    Outcome::Failed { error, aborted } => {
                        // Running means running: a VM libvirt left paused
                        // is resumed before anyone is told. A call cut by
                        // the local libvirtd going away says nothing about
                        // the VM, and a daemon still shutting down may yet
                        // answer "running" while QEMU migrates on: its
                        // whereabouts are found out (reconciled) instead.
                        let where_now = if connection_lost(&error) {
                            AfterFailure::Unknown(error.clone())
                        } else {
                            ensure_running_after_failure(me.hv.as_ref(), &spec.vm)
                        };
                        tracing::warn!(job = id, vm = %spec.vm, dest = %spec.dest, error = %error, after = ?where_now, "migration failed");
                        Input::Failed {
                            job: id,
                            error,
                            aborted,
                            where_now,
                        }
                    }
                }
            }));
            let input = ran.unwrap_or_else(|p| {
                let error = panic_text(p.as_ref());
                tracing::error!(job = id, error = %error, "migration thread panicked");
                Input::Panicked { job: id, error }
            });
            me.feed(run_id, input);
        };
        self.spawner
            .spawn(&format!("job-{id}"), Box::new(body))
            .err()
            .map(|e| {
                tracing::error!(job = id, cause = %e, "cannot start a migration thread");
                Input::NotStarted {
                    job: id,
                    error: e.to_string(),
                }
            })
    }

    /// After a restart: follows a migration libvirt still runs for this
    /// job's VM, then finds the VM (here, resumed if left paused; or on
    /// the destination). Bounded by the machine's deadline.
    fn reconcile(&self, run_id: u64, job: Job) -> Option<Input> {
        let me = self.me.upgrade()?;
        let dest = self
            .inventory
            .snapshot()
            .peers
            .into_iter()
            .find(|p| p.name == job.dest)
            .map(|p| PeerAddr {
                name: p.name,
                uri: p.uri,
            });
        let limit = self.ctx.machine.reconcile_timeout;
        let every = self.ctx.follow_every;
        let settle = self.ctx.restart_settle;
        let id = job.id;
        let body = move || {
            let end = Instant::now() + limit;
            // Follow a job libvirt still runs, and wait while libvirt does
            // not answer (its daemon restarting): only libvirt can say
            // where the VM ended up.
            // Returns whether libvirt was unreachable at any look.
            let follow = || {
                let mut saw_down = false;
                while Instant::now() < end {
                    match me.hv.local_job_active(&job.vm) {
                        Ok(true) => {}
                        Err(HvError::Unreachable(_) | HvError::TimedOut { .. }) => saw_down = true,
                        _ => break,
                    }
                    std::thread::sleep(every);
                }
                saw_down
            };
            // A libvirtd shutting down may still answer (without the
            // migration it goes on finishing), and a restarted one answers
            // before its reconnect threads have restored each domain's job
            // or found its QEMU gone: an answer right after libvirt was
            // away may only mean "not yet". So look again after it has
            // settled, until a settled look saw libvirt answer throughout.
            follow();
            loop {
                std::thread::sleep(settle.min(end.saturating_duration_since(Instant::now())));
                if !follow() || Instant::now() >= end {
                    break;
                }
            }
            let where_now = ensure_running_after_failure(me.hv.as_ref(), &job.vm);
            let moved = dest.as_ref().is_some_and(
                |p| matches!(me.hv.peer_domain(p, &job.vm), Ok(Some(s)) if s.is_here()),
            );
            me.feed(
                run_id,
                Input::Reconciled {
                    job: id,
                    moved,
                    where_now,
                },
            );
        };
        self.spawner
            .spawn(&format!("reconcile-{id}"), Box::new(body))
            .err()
            .map(|e| Input::Reconciled {
                job: id,
                moved: false,
                where_now: AfterFailure::Unknown(format!("cannot start the check thread: {e}")),
            })
    }

    /// At start: a run the journal shows unfinished was cut short by a
    /// restart. libvirt runs peer-to-peer migrations without us, so each
    /// running job's VM is looked for (still migrating: followed to its
    /// end), queued jobs are not started, and the run is closed with the
    /// truth. A recovery that cannot start closes the run NOT SAFE.
    pub fn recover(self: &Arc<Self>, recovered: &Recovered) {
        let Some(run) = recovered.runs.iter().rev().find(|r| !r.finished).cloned() else {
            return;
        };
        tracing::warn!(
            run = run.id,
            "an evacuation was interrupted by a restart; reconciling with libvirt"
        );
        let id = run.id;
        {
            let mut c = self.lock();
            if let Some(l) = recovered
                .runs
                .iter()
                .rev()
                .find(|r| r.finished && r.id != id)
            {
                c.last = Some(l.clone());
            }
            self.install(&mut c, run, true);
        }
        self.spawn_driver(id, "recovery");
    }
}
