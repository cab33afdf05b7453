//! One run (an evacuation, or one `migrate`) as a pure state machine:
//! inputs and the time come in, actions go out. No threads, no libvirt, no
//! clock of its own, so every rule is tested in microseconds; the
//! controller carries the actions out and feeds back what happened.
//!
//! Every path ends with a verdict: a job that does not answer by its
//! deadline is failed with the reason, a check that does not answer is
//! given up, and the verdict comes once every job is terminal.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rackside_protocol::ErrorCode;

use super::model::{self, Job, Kind, Phase, Run};
use crate::events::{HostName, MigrationDone, MigrationFailed, MigrationProgress, Payload};
use crate::hypervisor::{human, AfterFailure, DomState, DomainInfo};
use crate::migration::announce::Announce;
use crate::migration::policy::Progress;
use crate::migration::timeline::Timeline;
use crate::report::{Refusal, Verdict};

/// The rules' figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_parallel: usize,
    pub max_per_dest: usize,
    /// A running job that reports nothing (no progress, no result) for this
    /// long is failed: its destination or libvirt does not answer.
    pub answer_timeout: Duration,
    /// How long an aborted job may take to stop.
    pub abort_grace: Duration,
    /// How long a check of libvirt (a VM's whereabouts, what still runs
    /// here) may take.
    pub check_timeout: Duration,
    /// After a restart: how long a migration libvirt still runs is
    /// followed, and its VM looked for, before the job is failed.
    pub reconcile_timeout: Duration,
    /// Progress events at most this often per job.
    pub progress_every: Duration,
    /// While libvirt does not answer the verdict's check, it is asked
    /// again this often, until `check_timeout`.
    pub check_retry_every: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_parallel: 2,
            max_per_dest: 1,
            answer_timeout: Duration::from_secs(120),
            abort_grace: Duration::from_secs(30),
            check_timeout: Duration::from_secs(30),
            reconcile_timeout: Duration::from_secs(600),
            progress_every: Duration::from_millis(500),
            check_retry_every: Duration::from_secs(1),
        }
    }
}

/// Progress that would show nothing new is repeated this often at most.
pub const UNCHANGED_EVERY: Duration = Duration::from_secs(5);

/// What a progress event shows a person, to tell a new one from a copy.
fn shown(p: &Progress) -> String {
    format!(
        "{}|{:?}|{:?}",
        p.percent.floor(),
        p.remaining_mib.map(|m| m.round() as i64),
        p.note
    )
}

/// Where a VM is after its migration failed, as seen on this host (the
/// controller looks, and resumes it if libvirt left it paused).
pub type Whereabouts = AfterFailure;

fn is_here(w: &AfterFailure) -> bool {
    matches!(
        w,
        AfterFailure::Running
            | AfterFailure::Resumed
            | AfterFailure::StillPaused(_)
            | AfterFailure::NotRunning(_)
    )
}

/// In the state it was in before its migration, for sure: the only
/// state a retry may start from.
fn as_before(w: &AfterFailure, job: &Job) -> bool {
    match w {
        AfterFailure::Running | AfterFailure::Resumed => !job.offline,
        AfterFailure::NotRunning(DomState::ShutOff) => job.offline,
        _ => false,
    }
}

/// What people are told about it, when there is something to tell.
fn where_note(w: &AfterFailure, vm: &str) -> Option<String> {
    match w {
        AfterFailure::Resumed | AfterFailure::StillPaused(_) | AfterFailure::Unknown(_) => {
            Some(w.describe(vm))
        }
        _ => None,
    }
}

/// What happened, fed to [`Machine::step`].
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Begin: start jobs (or, for a recovered run, reconcile them).
    Start,
    /// The job's thread is running (its deadline counts from here).
    Started {
        job: u64,
    },
    /// The job's thread could not be started.
    NotStarted {
        job: u64,
        error: String,
    },
    /// The job's thread panicked.
    Panicked {
        job: u64,
        error: String,
    },
    Progress {
        job: u64,
        progress: Progress,
    },
    Done {
        job: u64,
        seconds: f64,
        downtime_ms: Option<u64>,
        data_mib: Option<f64>,
        timeline: Timeline,
        announce: Option<Announce>,
    },
    Failed {
        job: u64,
        error: String,
        /// Stopped on purpose (abort command or a give-up rule).
        aborted: bool,
        where_now: Whereabouts,
    },
    /// The answer to [`Action::CheckWhereabouts`].
    Whereabouts {
        job: u64,
        where_now: Whereabouts,
    },
    /// The answer to [`Action::Reconcile`]: `moved` when the destination
    /// shows it active and this host does not.
    Reconciled {
        job: u64,
        moved: bool,
        where_now: Whereabouts,
    },
    /// The answer to [`Action::CheckLocal`].
    Local(Result<Vec<DomainInfo>, String>),
    /// Time passing (deadlines).
    Tick,
}

/// What the controller is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start migrating this job (a thread of its own).
    Start(Job),
    /// Ask the job's migration to stop.
    SignalAbort {
        job: u64,
    },
    /// Look at the VM on this host, resume it if libvirt left it paused,
    /// and answer with [`Input::Whereabouts`].
    CheckWhereabouts {
        job: u64,
        vm: String,
    },
    /// After a restart: follow the VM's migration if libvirt still runs it,
    /// then find the VM; answer with [`Input::Reconciled`].
    Reconcile(Job),
    /// Write the run to the journal.
    Journal(Run),
    Publish(Payload),
    /// Ask libvirt what is active here; answer with [`Input::Local`].
    CheckLocal,
    PowerOff,
    /// The run has its verdict.
    Finished(Verdict),
}

/// Chooses another host for a failed job (placement over the live
/// inventory in the agent, a fixed answer in tests). `Err`: why none.
pub trait Placer {
    fn next_host(&self, job: &Job, others: &[Job]) -> Result<String, String>;
}

impl<F: Fn(&Job, &[Job]) -> Result<String, String>> Placer for F {
    fn next_host(&self, job: &Job, others: &[Job]) -> Result<String, String> {
        self(job, others)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    /// Built, not started.
    Ready,
    /// Jobs queued or running (or being reconciled).
    Moving,
    /// Every job terminal; waiting for libvirt's list of what runs here.
    Checking {
        deadline: Instant,
    },
    Finished,
}

/// A running job's bookkeeping that the journal does not need.
#[derive(Debug, Clone, PartialEq)]
struct Live {
    deadline: Instant,
    abort_signalled: bool,
    last_published: Option<Instant>,
    /// What the last published progress showed (see [`shown`]).
    last_shown: Option<String>,
    /// Recovered after a restart: being reconciled, not migrated by us.
    reconciling: bool,
    /// Being reconciled because its migration ended while libvirt could
    /// not say where the VM is (libvirtd restarting): the error it ended
    /// with. None for a reconciliation after an agent restart.
    cause: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Machine {
    run: Run,
    host: String,
    limits: Limits,
    stage: Stage,
    recovered: bool,
    live: BTreeMap<u64, Live>,
    /// Failed jobs whose VM is being looked at (and resumed if paused):
    /// the verdict waits for them, up to a deadline.
    checks: BTreeMap<u64, Instant>,
    /// The verdict's check failed (libvirt down, say): why, and when to
    /// ask again.
    check_error: Option<String>,
    check_retry: Option<Instant>,
    dirty: bool,
}

impl Machine {
    pub fn new(run: Run, host: &str, limits: Limits) -> Machine {
        Machine {
            run,
            host: host.to_owned(),
            limits,
            stage: Stage::Ready,
            recovered: false,
            live: BTreeMap::new(),
            checks: BTreeMap::new(),
            check_error: None,
            check_retry: None,
            dirty: false,
        }
    }

    /// A run the journal shows unfinished: its running jobs are reconciled
    /// with libvirt, its queued ones are not started.
    pub fn recovered(run: Run, host: &str, limits: Limits) -> Machine {
        Machine {
            recovered: true,
            ..Machine::new(run, host, limits)
        }
    }

    pub fn run(&self) -> &Run {
        &self.run
    }

    pub fn finished(&self) -> bool {
        self.stage == Stage::Finished
    }

    /// Feeds one input; returns what to do, in order.
    pub fn step(&mut self, input: Input, now: Instant, placer: &dyn Placer) -> Vec<Action> {
        let mut out = Vec::new();
        if self.stage == Stage::Finished {
            return out;
        }
        match input {
            Input::Start => self.start(now, &mut out),
            Input::Started { job } => {
                let answer = now + self.limits.answer_timeout;
                if let Some(l) = self.live.get_mut(&job).filter(|l| !l.abort_signalled) {
                    l.deadline = answer;
                }
            }
            Input::NotStarted { job, error } => {
                // The VM was not touched: it is still here, as it was.
                let why = format!("cannot start the migration thread: {error}");
                self.end_job(job, why, false, AfterFailure::Running, None, now, &mut out);
            }
            Input::Panicked { job, error } => {
                if self.running(job) {
                    let why = format!("the migration thread panicked: {error}");
                    self.fail_unanswered(job, why, now, &mut out);
                }
            }
            Input::Progress { job, progress } => self.progress(job, progress, now, &mut out),
            Input::Done {
                job,
                seconds,
                downtime_ms,
                data_mib,
                timeline,
                announce,
            } => self.done(
                job,
                seconds,
                downtime_ms,
                data_mib,
                timeline,
                announce,
                &mut out,
            ),
            Input::Failed {
                job,
                error,
                aborted,
                where_now,
            } => self.end_job(job, error, aborted, where_now, Some(placer), now, &mut out),
            Input::Whereabouts { job, where_now } => {
                if self.checks.remove(&job).is_some() {
                    if let Some(j) = self.job_mut(job) {
                        if let Some(n) = where_note(&where_now, &j.vm) {
                            j.note = Some(n);
                        }
                    }
                    self.dirty = true;
                }
            }
            Input::Reconciled {
                job,
                moved,
                where_now,
            } => self.reconciled(job, moved, where_now, &mut out),
            Input::Local(here) => {
                if matches!(self.stage, Stage::Checking { .. }) {
                    match here {
                        // libvirt restarting is no verdict: ask again until
                        // the check's deadline, then say it could not tell.
                        Err(e) => {
                            self.check_error = Some(e);
                            self.check_retry = Some(now + self.limits.check_retry_every);
                        }
                        ok => self.finish(ok, &mut out),
                    }
                }
            }
            Input::Tick => self.deadlines(now, &mut out),
        }
        self.advance(now, &mut out);
        out
    }

    /// `abort` (all, or one VM): queued jobs end at once, running ones are
    /// told to stop and end when they do (or at a deadline).
    pub fn abort(
        &mut self,
        vm: Option<&str>,
        now: Instant,
    ) -> Result<(Vec<String>, Vec<Action>), Refusal> {
        if self.stage == Stage::Finished {
            return Err((ErrorCode::NotFound, "nothing is running".into()));
        }
        if let Some(v) = vm {
            if !self
                .run
                .jobs
                .iter()
                .any(|j| j.vm == v && !j.phase.is_terminal())
            {
                return Err((
                    ErrorCode::NotFound,
                    format!("no queued or running migration of '{v}'"),
                ));
            }
        } else {
            self.run.aborting = true;
            self.dirty = true;
        }
        let mut out = Vec::new();
        let mut aborted = Vec::new();
        let grace = now + self.limits.abort_grace;
        for j in self
            .run
            .jobs
            .iter_mut()
            .filter(|j| vm.is_none_or(|v| j.vm == v))
        {
            match j.phase {
                Phase::Queued => {
                    j.phase = Phase::Aborted;
                    j.error = Some("aborted before it started".into());
                    aborted.push(j.vm.clone());
                    self.dirty = true;
                }
                Phase::Running => {
                    if let Some(l) = self.live.get_mut(&j.id) {
                        if !l.abort_signalled {
                            l.abort_signalled = true;
                            l.deadline = l.deadline.min(grace);
                            out.push(Action::SignalAbort { job: j.id });
                        }
                    }
                    aborted.push(j.vm.clone());
                }
                _ => {}
            }
        }
        self.advance(now, &mut out);
        Ok((aborted, out))
    }

    /// Ends the run now, without asking libvirt: the controller could not
    /// drive it (e.g. its thread would not start). Never SAFE.
    pub fn give_up(&mut self, reason: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if self.stage == Stage::Finished {
            return out;
        }
        for j in self.run.jobs.iter_mut().filter(|j| !j.phase.is_terminal()) {
            if j.phase == Phase::Running {
                out.push(Action::SignalAbort { job: j.id });
            }
            j.phase = if j.phase == Phase::Queued {
                Phase::Aborted
            } else {
                Phase::Failed
            };
            j.error = Some(reason.to_owned());
        }
        self.live.clear();
        self.checks.clear();
        self.finish(Err(reason.to_owned()), &mut out);
        out
    }

    fn job_mut(&mut self, id: u64) -> Option<&mut Job> {
        self.run.jobs.iter_mut().find(|j| j.id == id)
    }

    fn running(&self, id: u64) -> bool {
        self.run
            .jobs
            .iter()
            .any(|j| j.id == id && j.phase == Phase::Running)
    }

    fn start(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.stage != Stage::Ready {
            return;
        }
        self.stage = Stage::Moving;
        self.dirty = true;
        if !self.recovered {
            return;
        }
        let deadline = now + self.limits.reconcile_timeout;
        for j in self.run.jobs.iter_mut() {
            match j.phase {
                Phase::Queued => {
                    j.phase = Phase::Aborted;
                    j.error = Some("not started: the agent restarted".into());
                }
                Phase::Running => {
                    self.live.insert(
                        j.id,
                        Live {
                            deadline,
                            abort_signalled: false,
                            last_published: None,
                            last_shown: None,
                            reconciling: true,
                            cause: None,
                        },
                    );
                    out.push(Action::Reconcile(j.clone()));
                }
                _ => {}
            }
        }
    }

    fn progress(&mut self, id: u64, p: Progress, now: Instant, out: &mut Vec<Action>) {
        if !self.running(id) {
            return;
        }
        let answer = now + self.limits.answer_timeout;
        let every = self.limits.progress_every;
        let Some(live) = self.live.get_mut(&id) else {
            return;
        };
        // An answer pushes the deadline, unless an abort is waiting.
        if !live.abort_signalled {
            live.deadline = answer;
        }
        // A line that would say the same again (libvirt still preparing,
        // a stall) goes out only every UNCHANGED_EVERY: a serial line is
        // not filled with copies.
        let shown_now = shown(&p);
        let publish = match live.last_published {
            None => true,
            Some(t) => {
                let since = now.saturating_duration_since(t);
                since >= UNCHANGED_EVERY
                    || (since >= every && live.last_shown.as_ref() != Some(&shown_now))
            }
        };
        if publish {
            live.last_published = Some(now);
            live.last_shown = Some(shown_now);
        }
        let Some(j) = self.job_mut(id) else {
            return;
        };
        j.percent = p.percent;
        j.remaining_mib = p.remaining_mib;
        j.rate_mib_s = p.rate_mib_s;
        j.eta_s = p.eta_s;
        j.note = p.note.clone();
        if publish {
            out.push(Action::Publish(Payload::MigrationProgress(
                MigrationProgress {
                    job: j.id,
                    vm: j.vm.clone(),
                    dest: j.dest.clone(),
                    percent: p.percent,
                    remaining_mib: p.remaining_mib,
                    rate_mib_s: p.rate_mib_s,
                    eta_s: p.eta_s,
                    downtime_ms: p.downtime_ms,
                    note: p.note,
                },
            )));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn done(
        &mut self,
        id: u64,
        seconds: f64,
        downtime_ms: Option<u64>,
        data_mib: Option<f64>,
        timeline: Timeline,
        announce: Option<Announce>,
        out: &mut Vec<Action>,
    ) {
        if !self.running(id) {
            return;
        }
        self.live.remove(&id);
        let Some(j) = self.job_mut(id) else {
            return;
        };
        j.phase = Phase::Done;
        j.percent = 100.0;
        j.remaining_mib = Some(0.0);
        j.eta_s = Some(0);
        j.seconds = Some((seconds * 10.0).round() / 10.0);
        j.downtime_ms = downtime_ms;
        j.data_mib = data_mib.map(|m| (m * 10.0).round() / 10.0);
        j.note = None;
        j.timeline = timeline.clone();
        j.announce = announce.clone();
        let ev = Payload::MigrationDone(MigrationDone {
            job: j.id,
            vm: j.vm.clone(),
            dest: j.dest.clone(),
            downtime_ms,
            seconds,
            data_mib,
            timeline,
            announce,
        });
        self.dirty = true;
        out.push(Action::Publish(ev));
    }

    /// A job that ended without moving its VM: retried once on the next
    /// host when the rules allow, else failed (or aborted) with the reason
    /// and where the VM is. `placer` None: no retry.
    #[allow(clippy::too_many_arguments)]
    fn end_job(
        &mut self,
        id: u64,
        error: String,
        _aborted: bool,
        where_now: Whereabouts,
        placer: Option<&dyn Placer>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if !self.running(id) {
            return;
        }
        let live = self.live.remove(&id);
        let by_user = live.as_ref().is_some_and(|l| l.abort_signalled) || self.run.aborting;
        if let (AfterFailure::Unknown(why), false) = (&where_now, by_user) {
            // libvirt could not say where the VM is (its daemon restarting,
            // say): libvirt may still finish or undo the migration without
            // us. Find out, as after an agent restart, before anyone is
            // told it failed.
            self.live.insert(
                id,
                Live {
                    deadline: now + self.limits.reconcile_timeout,
                    abort_signalled: false,
                    last_published: None,
                    last_shown: None,
                    reconciling: true,
                    cause: Some(error.clone()),
                },
            );
            if let Some(j) = self.job_mut(id) {
                j.note = Some(format!(
                    "{error}; libvirt cannot say where the VM is ({why}): waiting for it"
                ));
                let job = j.clone();
                out.push(Action::Reconcile(job));
            }
            self.dirty = true;
            return;
        }
        let others: Vec<Job> = self
            .run
            .jobs
            .iter()
            .filter(|j| j.id != id && !j.phase.is_terminal())
            .cloned()
            .collect();
        let Some(idx) = self.run.jobs.iter().position(|j| j.id == id) else {
            return;
        };
        let job = self.run.jobs[idx].clone();
        let mut final_error = error.clone();
        let mut retry = None;
        // Retry once, elsewhere, only a VM known to be running here: never
        // after an abort, never when the operator named the destination,
        // never a VM whose whereabouts are unknown (it might run twice).
        // `aborted` alone (a give-up rule: no progress, over budget) is a
        // failure like any other and may be retried; only the operator's
        // abort is final.
        let may_retry = !by_user
            && self.run.named.is_none()
            && job.tried.len() < 2
            && as_before(&where_now, &job);
        if let (true, Some(p)) = (may_retry, placer) {
            match p.next_host(&job, &others) {
                Ok(d) => retry = Some(d),
                Err(reason) => final_error = format!("{error}; no other host: {reason}"),
            }
        }
        let host = self.host.clone();
        let j = &mut self.run.jobs[idx];
        let where_note = where_note(&where_now, &j.vm);
        if let Some(d) = &retry {
            let mut note = format!("{} failed ({error}); retrying on {d}", j.dest);
            if let Some(n) = &where_note {
                note.push_str("; ");
                note.push_str(n);
            }
            j.note = Some(note);
            j.dest = d.clone();
            j.phase = Phase::Queued;
            j.percent = 0.0;
            j.remaining_mib = None;
            j.rate_mib_s = None;
            j.eta_s = None;
        } else {
            j.phase = if by_user {
                Phase::Aborted
            } else {
                Phase::Failed
            };
            j.error = Some(final_error);
            // Keep the story so far (an earlier retry) unless there is news.
            if where_note.is_some() {
                j.note = where_note.clone();
            }
        }
        self.dirty = true;
        out.push(Action::Publish(Payload::MigrationFailed(MigrationFailed {
            job: job.id,
            vm: job.vm.clone(),
            dest: job.dest.clone(),
            error,
            now_on: is_here(&where_now).then(|| host.clone()),
            retrying_on: retry,
            note: where_note,
        })));
    }

    /// A job that will not answer (deadline, panic): failed with the
    /// reason; its migration is told to stop and its VM looked at (and
    /// resumed if paused) before the verdict. Never retried: where the VM
    /// is, nobody knows yet.
    fn fail_unanswered(&mut self, id: u64, why: String, now: Instant, out: &mut Vec<Action>) {
        let Some(live) = self.live.remove(&id) else {
            return;
        };
        let by_user = live.abort_signalled || self.run.aborting;
        let reconciling = live.reconciling;
        let Some(j) = self.job_mut(id) else {
            return;
        };
        let (jid, vm, dest) = (j.id, j.vm.clone(), j.dest.clone());
        j.phase = if by_user {
            Phase::Aborted
        } else {
            Phase::Failed
        };
        j.error = Some(why.clone());
        self.dirty = true;
        if !live.abort_signalled && !reconciling {
            out.push(Action::SignalAbort { job: jid });
        }
        out.push(Action::Publish(Payload::MigrationFailed(MigrationFailed {
            job: jid,
            vm: vm.clone(),
            dest,
            error: why,
            now_on: None,
            retrying_on: None,
            note: None,
        })));
        if !reconciling {
            self.checks.insert(jid, now + self.limits.check_timeout);
            out.push(Action::CheckWhereabouts { job: jid, vm });
        }
    }

    fn reconciled(&mut self, id: u64, moved: bool, where_now: Whereabouts, out: &mut Vec<Action>) {
        if !self.running(id) {
            return;
        }
        let Some(live) = self.live.remove(&id) else {
            return;
        };
        let aborting = self.run.aborting;
        let host = self.host.clone();
        let Some(j) = self.job_mut(id) else {
            return;
        };
        let (what, cut) = match &live.cause {
            None => (
                "completed while the agent was restarting".to_string(),
                "interrupted by an agent restart".to_string(),
            ),
            Some(c) => (format!("completed by libvirt after: {c}"), c.clone()),
        };
        // A shut-off definition left here (a libvirtd stopped between the
        // move and its undefine) is no copy of the VM running here.
        let stale_definition = matches!(where_now, AfterFailure::NotRunning(DomState::ShutOff));
        if moved && (!is_here(&where_now) || stale_definition) {
            j.phase = Phase::Done;
            j.percent = 100.0;
            j.note = Some(if stale_definition {
                format!("{what}; a shut-off definition of it is left on {host}")
            } else {
                what
            });
        } else {
            j.phase = if aborting {
                Phase::Aborted
            } else {
                Phase::Failed
            };
            let error = match &where_now {
                w if is_here(w) => format!("{cut}; the VM is still here"),
                AfterFailure::Unknown(e) => format!("{cut}; whereabouts unknown: {e}"),
                _ => format!("{cut}; the VM was not found here or on the destination"),
            };
            j.error = Some(error.clone());
            j.note = where_note(&where_now, &j.vm);
            if live.cause.is_some() {
                out.push(Action::Publish(Payload::MigrationFailed(MigrationFailed {
                    job: j.id,
                    vm: j.vm.clone(),
                    dest: j.dest.clone(),
                    error,
                    now_on: is_here(&where_now).then_some(host),
                    retrying_on: None,
                    note: j.note.clone(),
                })));
            }
        }
        self.dirty = true;
    }

    fn deadlines(&mut self, now: Instant, out: &mut Vec<Action>) {
        let late: Vec<(u64, Live)> = self
            .live
            .iter()
            .filter(|(_, l)| now >= l.deadline)
            .map(|(id, l)| (*id, l.clone()))
            .collect();
        for (id, l) in late {
            let Some(j) = self.run.jobs.iter().find(|j| j.id == id) else {
                continue;
            };
            let why = if l.reconciling {
                format!(
                    "{}; libvirt did not answer for {}",
                    l.cause
                        .as_deref()
                        .unwrap_or("interrupted by an agent restart"),
                    human(self.limits.reconcile_timeout)
                )
            } else if l.abort_signalled {
                format!(
                    "aborted; no answer from {} for {} after the abort",
                    j.dest,
                    human(self.limits.abort_grace)
                )
            } else {
                format!(
                    "no answer from {} for {}",
                    j.dest,
                    human(self.limits.answer_timeout)
                )
            };
            self.fail_unanswered(id, why, now, out);
        }
        let late: Vec<u64> = self
            .checks
            .iter()
            .filter(|(_, d)| now >= **d)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.checks.remove(&id);
            let after = human(self.limits.check_timeout);
            if let Some(j) = self.job_mut(id) {
                j.note = Some(format!(
                    "whereabouts not confirmed: libvirt did not answer for {after}"
                ));
            }
            self.dirty = true;
        }
        if let Stage::Checking { deadline } = self.stage {
            if now >= deadline {
                let mut why = format!(
                    "libvirt did not answer for {}",
                    human(self.limits.check_timeout)
                );
                if let Some(e) = &self.check_error {
                    why.push_str(": ");
                    why.push_str(e);
                }
                self.finish(Err(why), out);
            } else if self.check_retry.is_some_and(|t| now >= t) {
                self.check_retry = None;
                out.push(Action::CheckLocal);
            }
        }
    }

    /// Starts what may start; asks for the verdict's check once every job
    /// is terminal; journals any change.
    fn advance(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.stage == Stage::Moving {
            if !self.run.aborting {
                let idx = model::startable(
                    &self.run.jobs,
                    self.limits.max_parallel,
                    self.limits.max_per_dest,
                );
                for i in idx {
                    let j = &mut self.run.jobs[i];
                    j.phase = Phase::Running;
                    j.tried.push(j.dest.clone());
                    self.live.insert(
                        j.id,
                        Live {
                            deadline: now + self.limits.answer_timeout,
                            abort_signalled: false,
                            last_published: None,
                            last_shown: None,
                            reconciling: false,
                            cause: None,
                        },
                    );
                    out.push(Action::Start(j.clone()));
                    self.dirty = true;
                }
            } else {
                // Aborting: nothing queued may start (a retry requeued by a
                // failure that raced the abort included).
                for j in self
                    .run
                    .jobs
                    .iter_mut()
                    .filter(|j| j.phase == Phase::Queued)
                {
                    j.phase = Phase::Aborted;
                    j.error = Some("aborted before it started".into());
                    self.dirty = true;
                }
            }
            if self.run.all_terminal() && self.checks.is_empty() {
                self.stage = Stage::Checking {
                    deadline: now + self.limits.check_timeout,
                };
                out.push(Action::CheckLocal);
            }
        }
        if self.dirty && self.stage != Stage::Finished {
            self.dirty = false;
            // Journal before the actions that follow in this batch run.
            let at = out
                .iter()
                .position(|a| matches!(a, Action::Start(_)))
                .unwrap_or(out.len());
            out.insert(at, Action::Journal(self.run.clone()));
        }
    }

    fn finish(&mut self, here: Result<Vec<DomainInfo>, String>, out: &mut Vec<Action>) {
        let v = model::verdict(&self.run, &self.host, here);
        self.run.finished = true;
        self.run.verdict = Some(Box::new(v.clone()));
        self.stage = Stage::Finished;
        self.dirty = false;
        out.push(Action::Journal(self.run.clone()));
        if self.run.kind == Kind::Evacuate {
            // host.empty first: on a person's screen the verdict is the
            // last thing printed.
            if v.safe_to_power_off {
                out.push(Action::Publish(Payload::HostEmpty(HostName {
                    host: self.host.clone(),
                })));
            }
            out.push(Action::Publish(Payload::EvacuationDone(Box::new(
                v.clone(),
            ))));
            if v.safe_to_power_off && self.run.poweroff {
                out.push(Action::PowerOff);
            }
        }
        out.push(Action::Finished(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::VmDemand;

    const S: Duration = Duration::from_secs(1);

    fn job(id: u64, dest: &str) -> Job {
        Job::new(
            id,
            &VmDemand {
                name: format!("vm{id}"),
                vcpus: 1,
                mem_mib: 512,
                ..Default::default()
            },
            dest,
            false,
        )
    }

    fn limits() -> Limits {
        Limits {
            max_parallel: 2,
            max_per_dest: 1,
            reconcile_timeout: 60 * S,
            ..Limits::default()
        }
    }

    fn machine(jobs: Vec<Job>) -> Machine {
        Machine::new(
            Run::new(1, Kind::Evacuate, false, jobs, vec![]),
            "ha",
            limits(),
        )
    }

    /// Places every retry on "hz".
    fn to_hz(_: &Job, _: &[Job]) -> Result<String, String> {
        Ok("hz".into())
    }

    fn nowhere(_: &Job, _: &[Job]) -> Result<String, String> {
        Err("no peer has room".into())
    }

    fn started(a: &[Action]) -> Vec<(u64, String)> {
        a.iter()
            .filter_map(|a| match a {
                Action::Start(j) => Some((j.id, j.dest.clone())),
                _ => None,
            })
            .collect()
    }

    fn phase(m: &Machine, id: u64) -> Phase {
        m.run().jobs.iter().find(|j| j.id == id).unwrap().phase
    }

    fn job_of(m: &Machine, id: u64) -> &Job {
        m.run().jobs.iter().find(|j| j.id == id).unwrap()
    }

    fn failed(job: u64, where_now: AfterFailure) -> Input {
        Input::Failed {
            job,
            error: "refused".into(),
            aborted: false,
            where_now,
        }
    }

    fn done(job: u64) -> Input {
        Input::Done {
            job,
            seconds: 1.0,
            downtime_ms: Some(20),
            data_mib: Some(512.0),
            timeline: Timeline::default(),
            announce: None,
        }
    }

    fn verdict_of(a: &[Action]) -> Option<&Verdict> {
        a.iter().find_map(|a| match a {
            Action::Finished(v) => Some(v),
            _ => None,
        })
    }

    fn empty() -> Input {
        Input::Local(Ok(vec![]))
    }

    #[test]
    fn jobs_start_within_both_limits_and_the_journal_comes_first() {
        let t = Instant::now();
        let mut m = machine(vec![job(1, "hb"), job(2, "hb"), job(3, "hc"), job(4, "hd")]);
        let a = m.step(Input::Start, t, &to_hz);
        assert_eq!(started(&a), vec![(1, "hb".into()), (3, "hc".into())]);
        assert!(matches!(a[0], Action::Journal(ref r) if r.jobs[0].phase == Phase::Running));
        // One ends: the next that fits starts (job 2 to hb, now free).
        let a = m.step(done(1), t, &to_hz);
        assert_eq!(started(&a), vec![(2, "hb".into())]);
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::Publish(Payload::MigrationDone(_)))));
    }

    #[test]
    fn a_failed_job_is_retried_once_on_the_next_host() {
        let t = Instant::now();
        let mut m = machine(vec![job(1, "hb")]);
        m.step(Input::Start, t, &to_hz);
        let a = m.step(failed(1, AfterFailure::Running), t, &to_hz);
        assert_eq!(started(&a), vec![(1, "hz".into())]);
        let ev = a.iter().find_map(|a| match a {
            Action::Publish(Payload::MigrationFailed(f)) => Some(f.clone()),
            _ => None,
        });
        let ev = ev.unwrap();
        assert_eq!(ev.retrying_on.as_deref(), Some("hz"));
        assert_eq!(ev.now_on.as_deref(), Some("ha"));
        assert_eq!(job_of(&m, 1).tried, vec!["hb", "hz"]);
        // The second failure is final, with the reason.
        let a = m.step(failed(1, AfterFailure::Running), t, &to_hz);
        assert!(started(&a).is_empty());
        assert_eq!(phase(&m, 1), Phase::Failed);
        assert!(a.contains(&Action::CheckLocal));
        let a = m.step(empty(), t, &to_hz);
        assert!(verdict_of(&a).unwrap().safe_to_power_off);
        assert!(m.finished());
    }

    #[test]
    fn no_other_host_fails_with_both_reasons() {
        let t = Instant::now();
        let mut m = machine(vec![job(1, "hb")]);
        m.step(Input::Start, t, &nowhere);
        m.step(failed(1, AfterFailure::Running), t, &nowhere);
        assert_eq!(phase(&m, 1), Phase::Failed);
        assert_eq!(
            job_of(&m, 1).error.as_deref(),
            Some("refused; no other host: no peer has room")
        );
    }

    #[test]
    fn a_named_destination_is_never_retried_elsewhere() {
        let t = Instant::now();
        let mut run = Run::new(1, Kind::Migrate, false, vec![job(1, "hb")], vec![]);
        run.named = Some("hb".into());
        let mut m = Machine::new(run, "ha", limits());
        m.step(Input::Start, t, &to_hz);
        let a = m.step(failed(1, AfterFailure::Running), t, &to_hz);
        assert!(started(&a).is_empty());
        assert_eq!(phase(&m, 1), Phase::Failed);
        // A migrate run publishes no evacuation verdict.
        let a = m.step(empty(), t, &to_hz);
        assert!(verdict_of(&a).is_some());
        assert!(!a
            .iter()
            .any(|a| matches!(a, Action::Publish(Payload::EvacuationDone(_)))));
    }

    #[test]
    fn a_vm_whose_whereabouts_are_unknown_or_gone_is_never_retried() {
        let t = Instant::now();
        for w in [
            AfterFailure::NotHere,
            AfterFailure::StillPaused("resume failed".into()),
        ] {
            let mut m = machine(vec![job(1, "hb")]);
            m.step(Input::Start, t, &to_hz);
            let a = m.step(failed(1, w.clone()), t, &to_hz);
            assert!(started(&a).is_empty(), "{w:?}");
            assert_eq!(phase(&m, 1), Phase::Failed);
        }
        // Unknown (libvirt not answering): not retried, not failed yet:
        // reconciled, like after a restart, until libvirt can tell.
        let mut m = machine(vec![job(1, "hb")]);
        m.step(Input::Start, t, &to_hz);
        let a = m.step(
            failed(1, AfterFailure::Unknown("libvirt down".into())),
            t,
            &to_hz,
        );
        assert!(started(&a).is_empty());
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::Reconcile(j) if j.id == 1)));
        assert!(!a.contains(&Action::CheckLocal));
        assert_eq!(phase(&m, 1), Phase::Running);
    }

    #[test]
    fn a_migration_cut_by_a_libvirtd_restart_ends_as_libvirt_says() {
        let t = Instant::now();
        // libvirt finished it: done, and said how.
        let mut m = machine(vec![job(1, "hb")]);
        m.step(Input::Start, t, &to_hz);
        m.step(failed(1, AfterFailure::Unknown("down".into())), t, &to_hz);
        let a = m.step(
            Input::Reconciled {
                job: 1,
                moved: true,
                where_now: AfterFailure::NotHere,
            },
            t + 5 * S,
            &to_hz,
        );
        assert_eq!(phase(&m, 1), Phase::Done);
        assert!(job_of(&m, 1)
            .note
            .as_deref()
            .unwrap()
            .starts_with("completed by libvirt after"));
        assert!(a.contains(&Action::CheckLocal));
        // libvirt finished it but stopped before undefining it here: the
        // shut-off definition left behind is said, the move is done.
        let mut m = machine(vec![job(1, "hb")]);
        m.step(Input::Start, t, &to_hz);
        m.step(failed(1, AfterFailure::Unknown("down".into())), t, &to_hz);
        m.step(
            Input::Reconciled {
                job: 1,
                moved: true,
                where_now: AfterFailure::NotRunning(DomState::ShutOff),
            },
            t + 5 * S,
            &to_hz,
        );
        assert_eq!(phase(&m, 1), Phase::Done);
        assert!(job_of(&m, 1)
            .note
            .as_deref()
            .unwrap()
            .ends_with("a shut-off definition of it is left on ha"));
        // It stayed here: failed with the cause, and the watchers are told.
        let mut m = machine(vec![job(1, "hb")]);
        m.step(Input::Start, t, &to_hz);
        m.step(failed(1, AfterFailure::Unknown("down".into())), t, &to_hz);
        let a = m.step(
            Input::Reconciled {
                job: 1,
                moved: false,
                where_now: AfterFailure::Running,
            },
            t + 5 * S,
            &to_hz,
        );
        assert_eq!(phase(&m, 1), Phase::Failed);
        assert!(job_of(&m, 1)
            .error
            .as_deref()
            .unwrap()
            .ends_with("the VM is still here"));
        assert!(a.iter().any(|a| matches!(a, Action::Publish(Payload::MigrationFailed(f)) if f.now_on.as_deref() == Some("ha"))));
        // libvirt never comes back: failed at the reconcile deadline.
        let mut m = machine(vec![job(1, "hb")]);
        m.step(Input::Start, t, &to_hz);
        m.step(failed(1, AfterFailure::Unknown("down".into())), t, &to_hz);
        m.step(Input::Tick, t + limits().reconcile_timeout, &to_hz);
        assert_eq!(phase(&m, 1), Phase::Failed);
    }

    #[test]
    fn a_verdict_check_libvirt_cannot_answer_is_asked_again_until_its_deadline() {
        let t = Instant::now();
        let mut m = machine(vec![job(1, "hb")]);
        m.step(Input::Start, t, &to_hz);
        let a = m.step(done(1), t, &to_hz);
        assert!(a.contains(&Action::CheckLocal));
        // libvirtd restarting: no verdict from that.
        let a = m.step(Input::Local(Err("connection refused".into())), t, &to_hz);
        assert!(verdict_of(&a).is_none());
        let a = m.step(Input::Tick, t + S / 2, &to_hz);
        assert!(!a.contains(&Action::CheckLocal));
        let a = m.step(Input::Tick, t + S, &to_hz);
        assert!(a.contains(&Action::CheckLocal));
        // It answers: the verdict, from what it says.
        let a = m.step(empty(), t + 2 * S, &to_hz);
        assert!(verdict_of(&a).unwrap().safe_to_power_off);
        // It never answers: NOT SAFE at the deadline, with its last error.
        let mut m = machine(vec![job(1, "hb")]);
        m.step(Input::Start, t, &to_hz);
        m.step(done(1), t, &to_hz);
        m.step(Input::Local(Err("connection refused".into())), t, &to_hz);
        let a = m.step(Input::Tick, t + limits().check_timeout, &to_hz);
        let v = verdict_of(&a).unwrap();
        assert!(!v.safe_to_power_off);
        assert!(v
            .check_error
            .as_deref()
            .unwrap()
            .ends_with(": connection refused"));
    }

    #[test]
    fn a_vm_left_paused_and_resumed_is_said_so() {
        let t = Instant::now();
        let mut run = Run::new(1, Kind::Evacuate, false, vec![job(1, "hb")], vec![]);
        run.named = Some("hb".into());
        let mut m = Machine::new(run, "ha", limits());
        m.step(Input::Start, t, &to_hz);
        let a = m.step(failed(1, AfterFailure::Resumed), t, &to_hz);
        let note = job_of(&m, 1).note.clone().unwrap();
        assert!(note.contains("resumed"), "{note}");
        assert!(a.iter().any(|a| matches!(a,
            Action::Publish(Payload::MigrationFailed(f)) if f.note.as_deref() == Some(note.as_str()))));
        // And the verdict counts a VM still paused as still here.
        let here = vec![DomainInfo {
            name: "vm1".into(),
            state: DomState::Paused,
        }];
        let a = m.step(Input::Local(Ok(here)), t, &to_hz);
        let v = verdict_of(&a).unwrap();
        assert!(!v.safe_to_power_off);
        assert_eq!(v.still_here[0].state, "paused");
    }

    #[test]
    fn abort_ends_queued_jobs_at_once_and_signals_running_ones() {
        let t = Instant::now();
        let mut m = machine(vec![job(1, "hb"), job(2, "hb"), job(3, "hc")]);
        m.step(Input::Start, t, &to_hz);
        let (vms, a) = m.abort(None, t).unwrap();
        assert_eq!(vms, vec!["vm1", "vm2", "vm3"]);
        assert_eq!(phase(&m, 2), Phase::Aborted);
        assert!(a.contains(&Action::SignalAbort { job: 1 }));
        assert!(a.contains(&Action::SignalAbort { job: 3 }));
        assert!(!a.contains(&Action::CheckLocal));
        // A running job ends when its migration stops: aborted, not
        // retried, even though the VM runs here.
        let a = m.step(
            Input::Failed {
                job: 1,
                error: "aborted by request".into(),
                aborted: true,
                where_now: AfterFailure::Running,
            },
            t,
            &to_hz,
        );
        assert!(started(&a).is_empty());
        assert_eq!(phase(&m, 1), Phase::Aborted);
        let a = m.step(failed(3, AfterFailure::Running), t, &to_hz);
        assert_eq!(phase(&m, 3), Phase::Aborted);
        assert!(a.contains(&Action::CheckLocal));
        // Nothing left to abort once the verdict is given.
        m.step(empty(), t, &to_hz);
        assert_eq!(m.abort(None, t).unwrap_err().0, ErrorCode::NotFound);
    }

    #[test]
    fn abort_of_one_vm_leaves_the_others_going() {
        let t = Instant::now();
        let mut m = machine(vec![job(1, "hb"), job(2, "hb")]);
        m.step(Input::Start, t, &to_hz);
        let (vms, a) = m.abort(Some("vm2"), t).unwrap();
        assert_eq!(vms, vec!["vm2"]);
        assert!(a.iter().all(|a| !matches!(a, Action::SignalAbort { .. })));
        assert_eq!(phase(&m, 2), Phase::Aborted);
        assert_eq!(phase(&m, 1), Phase::Running);
        let e = m.abort(Some("vm9"), t).unwrap_err();
        assert_eq!(e.0, ErrorCode::NotFound);
        // vm1's failure is still retried: only vm2 was aborted.
        let a = m.step(failed(1, AfterFailure::Running), t, &to_hz);
        assert_eq!(started(&a), vec![(1, "hz".into())]);
    }

    #[test]
    fn progress_that_shows_nothing_new_is_not_repeated_every_time() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut m = machine(vec![job(1, "hb")]);
        m.step(Input::Start, t, &to_hz);
        m.step(Input::Started { job: 1 }, t, &to_hz);
        let waiting = Progress {
            percent: 0.0,
            remaining_mib: None,
            rate_mib_s: None,
            eta_s: None,
            downtime_ms: 100,
            stalled: false,
            note: None,
        };
        let mut published = Vec::new();
        let mut feed = |m: &mut Machine, p: &Progress, at: Duration| {
            let a = m.step(
                Input::Progress {
                    job: 1,
                    progress: p.clone(),
                },
                t + at,
                &to_hz,
            );
            if !a.is_empty() {
                published.push(at);
            }
        };
        // Sampled every 250 ms for 6 s while libvirt prepares.
        for i in 0..24 {
            feed(&mut m, &waiting, ms(250 * i));
        }
        // Then the transfer: each new percentage, at most every 500 ms.
        for (i, pct) in [10.0, 20.0, 30.0, 40.0].into_iter().enumerate() {
            let p = Progress {
                percent: pct,
                remaining_mib: Some(100.0 - pct),
                ..waiting.clone()
            };
            feed(&mut m, &p, ms(6_000 + 250 * i as u64));
        }
        assert_eq!(
            published,
            vec![ms(0), ms(5_000), ms(6_000), ms(6_500)],
            "the first, a reminder after 5 s, then changes 500 ms apart"
        );
    }

    #[test]
    fn a_job_with_no_answer_by_its_deadline_fails_and_the_run_goes_on() {
        let t = Instant::now();
        let mut m = machine(vec![job(1, "hb"), job(2, "hb")]);
        m.step(Input::Start, t, &to_hz);
        // The thread's start and its progress push the deadline.
        m.step(Input::Started { job: 1 }, t + 50 * S, &to_hz);
        m.step(Input::Tick, t + 160 * S, &to_hz);
        assert_eq!(phase(&m, 1), Phase::Running);
        let p = Progress {
            percent: 10.0,
            remaining_mib: Some(400.0),
            rate_mib_s: Some(100.0),
            eta_s: Some(4),
            downtime_ms: 100,
            stalled: false,
            note: None,
        };
        let a = m.step(
            Input::Progress {
                job: 1,
                progress: p.clone(),
            },
            t + 100 * S,
            &to_hz,
        );
        assert_eq!(a.len(), 1, "one progress event: {a:?}");
        let a = m.step(Input::Tick, t + 200 * S, &to_hz);
        assert_eq!(phase(&m, 1), Phase::Running, "{a:?}");
        let a = m.step(Input::Tick, t + 220 * S, &to_hz);
        assert_eq!(phase(&m, 1), Phase::Failed);
        assert_eq!(
            job_of(&m, 1).error.as_deref(),
            Some("no answer from hb for 120 s")
        );
        assert!(a.contains(&Action::SignalAbort { job: 1 }));
        assert!(a.contains(&Action::CheckWhereabouts {
            job: 1,
            vm: "vm1".into()
        }));
        // Never retried (it may yet move), and the run goes on.
        assert_eq!(started(&a), vec![(2, "hb".into())]);
        // A late answer from the hung job changes nothing.
        assert!(m.step(done(1), t + 230 * S, &to_hz).is_empty());
        assert_eq!(phase(&m, 1), Phase::Failed);
    }

    #[test]
    fn abort_works_while_a_job_hangs() {
        let t = Instant::now();
        let mut m = machine(vec![job(1, "hb")]);
        m.step(Input::Start, t, &to_hz);
        let (_, a) = m.abort(None, t + S).unwrap();
        assert!(a.contains(&Action::SignalAbort { job: 1 }));
        // The migration never answers: it ends at the abort's grace.
        let a = m.step(Input::Tick, t + 32 * S, &to_hz);
        assert_eq!(phase(&m, 1), Phase::Aborted);
        assert!(job_of(&m, 1)
            .error
            .as_deref()
            .unwrap()
            .contains("after the abort"));
        assert!(
            !a.contains(&Action::SignalAbort { job: 1 }),
            "signalled once"
        );
        // The VM is looked at before the verdict; the verdict waits.
        assert!(a.contains(&Action::CheckWhereabouts {
            job: 1,
            vm: "vm1".into()
        }));
        assert!(!a.contains(&Action::CheckLocal));
        let a = m.step(
            Input::Whereabouts {
                job: 1,
                where_now: AfterFailure::Resumed,
            },
            t + 33 * S,
            &to_hz,
        );
        assert!(a.contains(&Action::CheckLocal));
        assert!(job_of(&m, 1).note.as_deref().unwrap().contains("resumed"));
    }

    #[test]
    fn a_check_that_does_not_answer_is_given_up_and_the_verdict_comes() {
        let t = Instant::now();
        let mut m = machine(vec![job(1, "hb")]);
        m.step(Input::Start, t, &to_hz);
        m.step(Input::Tick, t + 121 * S, &to_hz);
        // The whereabouts check hangs too.
        let a = m.step(Input::Tick, t + 152 * S, &to_hz);
        assert!(a.contains(&Action::CheckLocal));
        // And so does libvirt's list: NOT SAFE, with the reason.
        let a = m.step(Input::Tick, t + 183 * S, &to_hz);
        let v = verdict_of(&a).unwrap();
        assert!(!v.safe_to_power_off);
        assert_eq!(
            v.check_error.as_deref(),
            Some("libvirt did not answer for 30 s")
        );
        assert!(m.finished());
    }

    #[test]
    fn a_thread_that_cannot_start_or_panics_fails_its_job_with_the_reason() {
        let t = Instant::now();
        let mut m = machine(vec![job(1, "hb"), job(2, "hc")]);
        m.step(Input::Start, t, &to_hz);
        let a = m.step(
            Input::NotStarted {
                job: 1,
                error: "Resource temporarily unavailable".into(),
            },
            t,
            &to_hz,
        );
        assert!(started(&a).is_empty(), "not retried: {a:?}");
        assert_eq!(phase(&m, 1), Phase::Failed);
        assert_eq!(
            job_of(&m, 1).error.as_deref(),
            Some("cannot start the migration thread: Resource temporarily unavailable")
        );
        let a = m.step(
            Input::Panicked {
                job: 2,
                error: "boom".into(),
            },
            t,
            &to_hz,
        );
        assert_eq!(phase(&m, 2), Phase::Failed);
        assert!(job_of(&m, 2)
            .error
            .as_deref()
            .unwrap()
            .contains("panicked: boom"));
        assert!(a.contains(&Action::CheckWhereabouts {
            job: 2,
            vm: "vm2".into()
        }));
        let a = m.step(
            Input::Whereabouts {
                job: 2,
                where_now: AfterFailure::Running,
            },
            t,
            &to_hz,
        );
        assert!(a.contains(&Action::CheckLocal));
        let here = vec![
            DomainInfo {
                name: "vm1".into(),
                state: DomState::Running,
            },
            DomainInfo {
                name: "vm2".into(),
                state: DomState::Running,
            },
        ];
        let v = m.step(Input::Local(Ok(here)), t, &to_hz);
        assert_eq!(verdict_of(&v).unwrap().remaining, vec!["vm1", "vm2"]);
    }

    #[test]
    fn the_verdict_comes_only_when_every_job_is_terminal() {
        let t = Instant::now();
        let mut m = machine(vec![job(1, "hb"), job(2, "hc")]);
        m.step(Input::Start, t, &to_hz);
        assert!(!m.step(done(1), t, &to_hz).contains(&Action::CheckLocal));
        // An early answer to a check never asked is ignored.
        assert!(verdict_of(&m.step(empty(), t, &to_hz)).is_none());
        assert!(m.step(done(2), t, &to_hz).contains(&Action::CheckLocal));
        let a = m.step(empty(), t, &to_hz);
        let v = verdict_of(&a).unwrap();
        assert!(v.safe_to_power_off);
        assert_eq!(v.moved.len(), 2);
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::Publish(Payload::HostEmpty(_)))));
        // Once finished, nothing more happens.
        assert!(m.step(Input::Tick, t + 1000 * S, &to_hz).is_empty());
    }

    #[test]
    fn an_empty_run_and_poweroff_go_straight_to_the_verdict() {
        let t = Instant::now();
        let mut m = Machine::new(
            Run::new(1, Kind::Evacuate, true, vec![], vec![]),
            "ha",
            limits(),
        );
        assert!(m
            .step(Input::Start, t, &to_hz)
            .contains(&Action::CheckLocal));
        let a = m.step(empty(), t, &to_hz);
        assert!(a.contains(&Action::PowerOff));
        // Not safe: no power-off.
        let mut m = Machine::new(
            Run::new(1, Kind::Evacuate, true, vec![], vec![]),
            "ha",
            limits(),
        );
        m.step(Input::Start, t, &to_hz);
        m.step(Input::Local(Err("down".into())), t, &to_hz);
        let a = m.step(Input::Tick, t + limits().check_timeout, &to_hz);
        assert!(verdict_of(&a).is_some());
        assert!(!a.contains(&Action::PowerOff));
    }

    #[test]
    fn giving_up_ends_the_run_not_safe_with_the_reason() {
        let t = Instant::now();
        let mut m = machine(vec![job(1, "hb"), job(2, "hb")]);
        m.step(Input::Start, t, &to_hz);
        let a = m.give_up("cannot start the run thread: EAGAIN");
        let v = verdict_of(&a).unwrap();
        assert!(!v.safe_to_power_off);
        assert_eq!(
            v.check_error.as_deref(),
            Some("cannot start the run thread: EAGAIN")
        );
        assert_eq!(phase(&m, 1), Phase::Failed);
        assert_eq!(phase(&m, 2), Phase::Aborted);
        assert!(m.run().finished);
    }

    fn recovered(jobs: Vec<Job>, aborting: bool) -> Machine {
        let mut run = Run::new(4, Kind::Evacuate, false, jobs, vec![]);
        run.aborting = aborting;
        Machine::recovered(run, "ha", limits())
    }

    fn with_phase(mut j: Job, p: Phase) -> Job {
        j.phase = p;
        j.tried.push(j.dest.clone());
        j
    }

    #[test]
    fn recovery_closes_queued_jobs_and_reconciles_running_ones() {
        let t = Instant::now();
        let mut m = recovered(
            vec![
                with_phase(job(1, "hb"), Phase::Running),
                job(2, "hb"),
                with_phase(job(3, "hc"), Phase::Running),
                with_phase(job(4, "hc"), Phase::Done),
            ],
            false,
        );
        let a = m.step(Input::Start, t, &to_hz);
        assert_eq!(phase(&m, 2), Phase::Aborted);
        let reconciles: Vec<u64> = a
            .iter()
            .filter_map(|a| match a {
                Action::Reconcile(j) => Some(j.id),
                _ => None,
            })
            .collect();
        assert_eq!(reconciles, vec![1, 3]);
        assert!(started(&a).is_empty(), "a recovery starts nothing");
        m.step(
            Input::Reconciled {
                job: 1,
                moved: true,
                where_now: AfterFailure::NotHere,
            },
            t,
            &to_hz,
        );
        assert_eq!(phase(&m, 1), Phase::Done);
        let a = m.step(
            Input::Reconciled {
                job: 3,
                moved: false,
                where_now: AfterFailure::Resumed,
            },
            t,
            &to_hz,
        );
        assert_eq!(phase(&m, 3), Phase::Failed);
        assert!(job_of(&m, 3).note.as_deref().unwrap().contains("resumed"));
        assert!(a.contains(&Action::CheckLocal));
    }

    #[test]
    fn recovery_of_an_aborting_run_ends_its_jobs_aborted() {
        let t = Instant::now();
        let mut m = recovered(vec![with_phase(job(1, "hb"), Phase::Running)], true);
        m.step(Input::Start, t, &to_hz);
        m.step(
            Input::Reconciled {
                job: 1,
                moved: false,
                where_now: AfterFailure::Running,
            },
            t,
            &to_hz,
        );
        assert_eq!(phase(&m, 1), Phase::Aborted);
    }

    #[test]
    fn recovery_of_a_run_whose_verdict_was_pending_gives_it() {
        let t = Instant::now();
        let mut m = recovered(vec![with_phase(job(1, "hb"), Phase::Done)], false);
        let a = m.step(Input::Start, t, &to_hz);
        assert!(a.contains(&Action::CheckLocal));
        assert!(verdict_of(&m.step(empty(), t, &to_hz)).is_some());
    }

    #[test]
    fn a_reconciliation_that_does_not_answer_is_failed_at_its_deadline() {
        let t = Instant::now();
        let mut m = recovered(vec![with_phase(job(1, "hb"), Phase::Running)], false);
        m.step(Input::Start, t, &to_hz);
        m.step(Input::Tick, t + 59 * S, &to_hz);
        assert_eq!(phase(&m, 1), Phase::Running);
        let a = m.step(Input::Tick, t + 61 * S, &to_hz);
        assert_eq!(phase(&m, 1), Phase::Failed);
        assert!(job_of(&m, 1).error.as_deref().unwrap().contains("60 s"));
        assert!(a.contains(&Action::CheckLocal));
    }
}
