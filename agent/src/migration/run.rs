//! One peer-to-peer live migration, end to end, over any hypervisor.
//!
//! [`drive`] is the loop: it prepares the destination (nwfilters, under a
//! deadline), starts the job, then samples it every [`Pace::poll`]:
//! progress for people, convergence (raise the allowed downtime), give-up
//! rules and abort requests. The hypervisor comes in as [`MigrationOps`],
//! so the same loop runs against libvirt
//! ([`crate::hypervisor::libvirt`]) and against the simulator
//! ([`crate::hypervisor::sim`]), whose clock is virtual.
//!
//! Nothing here blocks past a rule: a hung destination ends at its
//! deadline, a job that moves nothing ends at the policy's limits, and a
//! job that ignores an abort is given up on after [`Pace::abort_grace`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::announce::{self, Announce, Heard, Judged};
use super::policy::{Decision, Limits, Progress, Sample, Tracker};
use super::timeline::{Step, Timeline};
use crate::hypervisor::deadline::{self, Waited};
use crate::hypervisor::{human, DomState, HvError};
use crate::libvirt_ffi::JobStats;

#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub vm: String,
    pub dest: String,
    /// The destination's libvirt URI (peer to peer: the source libvirtd
    /// connects there itself).
    pub dest_uri: String,
    /// Where QEMU's stream goes (the migration network), if not the default.
    pub migrate_uri: Option<String>,
    /// MiB/s; 0: no cap.
    pub bandwidth_mib_s: u64,
    /// A shut-off persistent VM: move its definition (offline migration).
    pub offline: bool,
    pub auto_converge: bool,
    /// Encrypt the migration stream (libvirt's VIR_MIGRATE_TLS).
    pub tls: bool,
    pub mem_mib: u64,
    /// Copy local disks to the destination ([migration] copy_local_disks).
    pub copy_local_disks: bool,
}

/// The destination made ready for a live migration's storage copy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prepared {
    /// Target devs libvirt copies (its migrate_disks); empty: no copy.
    pub copy: Vec<String>,
    /// Paths of the volumes created for them on the destination: deleted
    /// again if the migration fails and the VM is still here.
    pub created: Vec<String>,
    /// Bytes to copy (the disks' capacity): they count in the time budget.
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done {
        seconds: f64,
        downtime_ms: Option<u64>,
        data_mib: Option<f64>,
        /// Where the time went.
        timeline: Timeline,
        /// Whether the VM's traffic was seen to follow it (None: an
        /// offline move, nothing runs to announce).
        announce: Option<Announce>,
    },
    Failed {
        error: String,
        /// Stopped on purpose (abort command or a give-up rule).
        aborted: bool,
    },
}

/// The loop's timing.
#[derive(Debug, Clone, PartialEq)]
pub struct Pace {
    /// How often the job is sampled and `abort` looked at.
    pub poll: Duration,
    /// How long one call to the destination may take (nwfilters, the
    /// completed job's figures).
    pub peer_deadline: Duration,
    /// How long the job may take to end after we asked libvirt to abort it,
    /// before we stop waiting and report it failed.
    pub abort_grace: Duration,
    /// How long after libvirt's end of a live migration the destination's
    /// announcement may still be waited for (when it has not been heard
    /// already, as it usually has).
    pub announce_wait: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            // Often enough that a transfer of a second or two shows
            // intermediate percentages, and the moments of the timeline
            // are seen within a quarter second; one local libvirt call.
            poll: Duration::from_millis(250),
            peer_deadline: Duration::from_secs(20),
            abort_grace: Duration::from_secs(30),
            // QEMU announces as the stream ends and again 50 and 200 ms
            // later: a second covers those, should the first be lost.
            announce_wait: Duration::from_secs(1),
        }
    }
}

/// What the loop asks the hypervisor. Cloned onto helper threads for the
/// calls to the destination, so it holds only addresses or shared handles.
pub trait MigrationOps: Clone + Send + 'static {
    type Job: MigrationJob;
    type Watch: AnnounceWatch;
    /// The loop's clock: time since some fixed point (virtual in the sim).
    fn now(&self) -> Duration;
    /// Defines on the destination every nwfilter the VM needs that it
    /// lacks; returns the names defined. Run under the peer deadline.
    fn ensure_nwfilters(&self, spec: &Spec) -> Result<Vec<String>, String>;
    /// Reads the VM's disks; refuses one that cannot move; creates on the
    /// destination a volume for each local disk to copy. Run under the
    /// peer deadline. On error, nothing it created is left behind.
    fn prepare_storage(&self, spec: &Spec) -> Result<Prepared, String>;
    /// Deletes the volumes `created` on the destination, only if the VM is
    /// still defined here without a job and the destination does not have
    /// it ([`may_discard`]); Err says why they were left. Run under the
    /// peer deadline.
    fn discard_storage(&self, spec: &Spec, created: &[String]) -> Result<(), String>;
    /// Starts the migration, copying the disks `copy` names; returns once
    /// it is under way.
    fn start(&self, spec: &Spec, copy: &[String]) -> Result<Self::Job, String>;
    /// Downtime (ms) and data moved (MiB), from the destination's record of
    /// the completed job. Run under the peer deadline.
    fn completed_stats(&self, spec: &Spec) -> (Option<u64>, Option<f64>);
    /// Whether the destination's libvirt has the VM yet (for the
    /// timeline; None: cannot tell). Run under a deadline of one poll.
    fn dest_has_vm(&self, _spec: &Spec) -> Option<bool> {
        None
    }
    /// Starts listening here for the destination's announcement of the
    /// VM's NICs (QEMU's RARP frames once the stream has ended). Never
    /// fails: what cannot be watched, and why, is in what the watch hears.
    /// Touches no QEMU.
    fn watch_announce(&self, spec: &Spec) -> Self::Watch;
    /// Asks the destination's QEMU to announce the VM's NICs (QMP
    /// announce-self). Only called once the migration is done, never
    /// while the guest switches over. Run under the peer deadline.
    fn request_announce(&self, spec: &Spec) -> Result<(), String>;
}

/// Listening for one VM's announcement; stops listening when dropped.
pub trait AnnounceWatch {
    /// Waits up to `timeout` while a watched NIC has not been heard
    /// (returns at once when none is left); what was heard, timed on the
    /// loop's clock.
    fn wait(&mut self, timeout: Duration) -> Heard;
}

/// One migration under way.
pub trait MigrationJob {
    /// Waits up to `timeout` for the job to end: None while it runs, else
    /// libvirt's answer (its message on failure).
    fn wait(&mut self, timeout: Duration) -> Option<Result<(), String>>;
    /// The job's statistics now; None when libvirt gives none.
    fn stats(&self) -> Option<JobStats>;
    /// Whether the VM is paused here now (the switchover), for the
    /// timeline; None: cannot tell.
    fn source_paused(&self) -> Option<bool> {
        None
    }
    /// Asks libvirt to abort the job (virDomainAbortJob).
    fn abort(&self);
    /// virDomainMigrateSetMaxDowntime.
    fn set_max_downtime(&self, ms: u64);
}

const ABORTED_BY_REQUEST: &str = "aborted by request";

fn failed(error: String) -> Outcome {
    Outcome::Failed {
        error,
        aborted: false,
    }
}

fn aborted(error: String) -> Outcome {
    Outcome::Failed {
        error,
        aborted: true,
    }
}

/// Runs one migration to its end. `abort` is looked at every `pace.poll`,
/// also while the destination is being prepared; `progress` is called with
/// every sample of a live migration.
pub fn drive<O: MigrationOps>(
    ops: &O,
    pace: &Pace,
    spec: &Spec,
    limits: &Limits,
    abort: &AtomicBool,
    progress: &mut dyn FnMut(&Progress),
) -> Outcome {
    let started = ops.now();
    if abort.load(Ordering::Relaxed) {
        return aborted(ABORTED_BY_REQUEST.into());
    }

    // The destination must know every nwfilter the VM's interfaces use,
    // or libvirt refuses the migration.
    let (o, s) = (ops.clone(), spec.clone());
    match deadline::call(
        "hv-nwfilter",
        pace.peer_deadline,
        Some(abort),
        pace.poll,
        move || o.ensure_nwfilters(&s),
    ) {
        Waited::Done(Ok(names)) => {
            if !names.is_empty() {
                tracing::info!(vm = %spec.vm, dest = %spec.dest, filters = ?names, "nwfilters defined on the destination");
            }
        }
        Waited::Done(Err(e)) => return failed(e),
        Waited::Aborted => return aborted(ABORTED_BY_REQUEST.into()),
        Waited::TimedOut => {
            let e = HvError::TimedOut {
                what: format!("libvirt on {} (defining nwfilters)", spec.dest),
                after: pace.peer_deadline,
            };
            return failed(e.to_string());
        }
        Waited::Lost(why) => return failed(format!("defining nwfilters on {}: {why}", spec.dest)),
    }
    if abort.load(Ordering::Relaxed) {
        return aborted(ABORTED_BY_REQUEST.into());
    }

    // Local disks get their volumes on the destination before libvirt
    // starts: it copies into them.
    let (o, s) = (ops.clone(), spec.clone());
    let prepared = match deadline::call(
        "hv-storage",
        pace.peer_deadline,
        Some(abort),
        pace.poll,
        move || o.prepare_storage(&s),
    ) {
        Waited::Done(Ok(p)) => p,
        Waited::Done(Err(e)) => return failed(e),
        Waited::Aborted => return aborted(ABORTED_BY_REQUEST.into()),
        Waited::TimedOut => {
            let e = HvError::TimedOut {
                what: format!("libvirt on {} (creating volumes)", spec.dest),
                after: pace.peer_deadline,
            };
            return failed(e.to_string());
        }
        Waited::Lost(why) => return failed(format!("creating volumes on {}: {why}", spec.dest)),
    };
    if !prepared.copy.is_empty() {
        tracing::info!(vm = %spec.vm, dest = %spec.dest, disks = ?prepared.copy, created = ?prepared.created, "copying local disks");
    }
    let out = run_job(ops, pace, spec, limits, abort, progress, &prepared, started);
    match out {
        Outcome::Failed { error, aborted } if !prepared.created.is_empty() => {
            let note = discard(ops, pace, spec, &prepared.created);
            Outcome::Failed {
                error: format!("{error}; {note}"),
                aborted,
            }
        }
        out => out,
    }
}

/// Deletes what [`MigrationOps::prepare_storage`] created, when safe;
/// words for the failed job's error either way.
fn discard<O: MigrationOps>(ops: &O, pace: &Pace, spec: &Spec, created: &[String]) -> String {
    let (o, s, c) = (ops.clone(), spec.clone(), created.to_vec());
    let what = created.join(", ");
    let r = match deadline::call(
        "hv-discard",
        pace.peer_deadline,
        None,
        pace.poll,
        move || o.discard_storage(&s, &c),
    ) {
        Waited::Done(r) => r,
        Waited::TimedOut => Err(format!(
            "libvirt on {} did not answer within {}",
            spec.dest,
            human(pace.peer_deadline)
        )),
        Waited::Aborted => Err("interrupted".into()),
        Waited::Lost(why) => Err(why),
    };
    match r {
        Ok(()) => {
            tracing::info!(vm = %spec.vm, dest = %spec.dest, volumes = %what, "volumes created for the migration deleted");
            format!("the volumes created on {} were deleted ({what})", spec.dest)
        }
        Err(why) => {
            tracing::warn!(vm = %spec.vm, dest = %spec.dest, volumes = %what, cause = %why, "volumes created for the migration left in place");
            format!(
                "the volumes created on {} were left ({what}): {why}",
                spec.dest
            )
        }
    }
}

/// Whether volumes created on the destination for a failed migration may
/// be deleted: only when the VM is still defined here with no libvirt job
/// (so the copy is not its disk anywhere) and the destination does not
/// have it. `here`: the VM's state here and whether a job runs on it.
pub fn may_discard(
    here: Result<Option<(DomState, bool)>, String>,
    there: Result<Option<DomState>, String>,
    dest: &str,
) -> Result<(), String> {
    match here {
        Err(e) => return Err(format!("cannot check the VM here: {e}")),
        Ok(None) => return Err("the VM is no longer defined here".into()),
        Ok(Some((_, true))) => return Err("libvirt still runs a job on the VM here".into()),
        Ok(Some((_, false))) => {}
    }
    match there {
        Ok(None) => Ok(()),
        Ok(Some(s)) => Err(format!("{dest} has the VM ({s})")),
        Err(e) => Err(format!("cannot check {dest}: {e}")),
    }
}

/// The tracker's reading of libvirt's job stats: memory and the disk copy
/// together. libvirt's data_* figures include the disk copy; when it also
/// gives the parts, their sum is taken if larger, so a libvirt that leaves
/// the disks out of data_* still has them counted.
pub fn sample_of(js: &JobStats, elapsed: Duration) -> Sample {
    let data = (
        js.data_total.unwrap_or(0),
        js.data_processed.unwrap_or(0),
        js.data_remaining.unwrap_or(0),
    );
    let parts = match (js.mem_total, js.disk_total) {
        (Some(mt), Some(dt)) => Some((
            mt.saturating_add(dt),
            js.mem_processed
                .unwrap_or(0)
                .saturating_add(js.disk_processed.unwrap_or(0)),
            js.mem_remaining
                .unwrap_or(0)
                .saturating_add(js.disk_remaining.unwrap_or(0)),
        )),
        _ => None,
    };
    let (total, processed, remaining) = match parts {
        Some(p) if p.0 > data.0 => p,
        _ => data,
    };
    let bandwidth_bps = match (js.mem_bps, js.disk_bps) {
        (None, None) => None,
        (m, d) => Some(m.unwrap_or(0).saturating_add(d.unwrap_or(0))),
    };
    Sample {
        elapsed,
        data_total: total,
        data_processed: processed,
        data_remaining: remaining,
        iteration: js.mem_iteration,
        bandwidth_bps,
    }
}

/// `s` measured against at least `total` bytes: a job that has not yet
/// counted everything it will copy (libvirt's disk phase comes before
/// the memory) is not shown nearly done. Remaining grows to match;
/// nothing changes once libvirt's own total reaches `total`.
pub fn at_least(s: Sample, total: u64) -> Sample {
    if s.data_total == 0 || s.data_total >= total {
        return s;
    }
    Sample {
        data_total: total,
        data_remaining: s.data_remaining.max(total.saturating_sub(s.data_processed)),
        ..s
    }
}

/// After a live migration ended well: did the VM's traffic follow it?
/// When the destination's announcement was not heard (or cannot be),
/// asks the destination to announce the VM, only now that libvirt is done
/// with it: nothing may reach a guest's QEMU during its switchover. `ended`:
/// when libvirt's call returned (loop clock). Also when the last NIC's
/// announcement was heard, for the timeline.
fn follow_traffic<O: MigrationOps>(
    ops: &O,
    pace: &Pace,
    spec: &Spec,
    watch: &mut O::Watch,
    ended: Duration,
) -> (Announce, Option<Duration>) {
    let heard = watch.wait(pace.announce_wait);
    let judged = announce::judge(&heard, ended, pace.announce_wait);
    let request = match &judged {
        Judged::Unconfirmed(why) => {
            tracing::info!(vm = %spec.vm, dest = %spec.dest, reason = %why, "announcement not confirmed: asking the destination to announce");
            let (o, s) = (ops.clone(), spec.clone());
            Some(
                match deadline::call(
                    "hv-announce",
                    pace.peer_deadline,
                    None,
                    pace.poll,
                    move || o.request_announce(&s),
                ) {
                    Waited::Done(r) => r,
                    Waited::TimedOut => Err(format!(
                        "libvirt on {} did not answer within {}",
                        spec.dest,
                        human(pace.peer_deadline)
                    )),
                    Waited::Aborted => Err("interrupted".into()),
                    Waited::Lost(why) => Err(why),
                },
            )
        }
        Judged::NoNic | Judged::Seen { .. } => None,
    };
    let result = Announce::of(&judged, request);
    match &result {
        Announce::NoNic => {}
        Announce::Seen { .. } | Announce::Requested { .. } => {
            tracing::info!(vm = %spec.vm, dest = %spec.dest, announce = %result.text(), "announcement");
        }
        Announce::NotConfirmed { .. } => {
            tracing::warn!(vm = %spec.vm, dest = %spec.dest, announce = %result.text(), "announcement");
        }
    }
    let at = match judged {
        Judged::Seen { at, .. } => Some(at),
        _ => None,
    };
    (result, at)
}

/// The job itself, once its storage is ready.
#[allow(clippy::too_many_arguments)]
fn run_job<O: MigrationOps>(
    ops: &O,
    pace: &Pace,
    spec: &Spec,
    limits: &Limits,
    abort: &AtomicBool,
    progress: &mut dyn FnMut(&Progress),
    prepared: &Prepared,
    started: Duration,
) -> Outcome {
    let elapsed = || ops.now().saturating_sub(started);
    let mut timeline = Timeline::default();
    let mark = |t: &mut Timeline, step: Step, at: Duration| {
        if t.at(step).is_none() {
            tracing::debug!(vm = %spec.vm, dest = %spec.dest, step = step.as_str(), at_s = at.as_secs_f64(), "migration timeline");
        }
        t.mark(step, at);
    };
    mark(&mut timeline, Step::Accepted, Duration::ZERO);
    if abort.load(Ordering::Relaxed) {
        return aborted(ABORTED_BY_REQUEST.into());
    }
    // Listening starts before libvirt does: QEMU's first RARP can come
    // before the migrate call returns.
    let mut watch = (!spec.offline).then(|| ops.watch_announce(spec));
    let mut job = match ops.start(spec, &prepared.copy) {
        Ok(j) => j,
        Err(e) => return failed(e),
    };
    // The disks' copy counts in the time budget as memory does.
    let disk_mib = prepared.bytes.div_ceil(1024 * 1024);
    // libvirt copies the disks first and counts memory only once its copy
    // starts: without a floor the disk phase alone would read ~100 %.
    let expected_bytes = if prepared.bytes > 0 {
        spec.mem_mib
            .saturating_mul(1024 * 1024)
            .saturating_add(prepared.bytes)
    } else {
        0
    };
    let mut tracker = Tracker::new(spec.mem_mib.saturating_add(disk_mib), limits.clone());
    mark(&mut timeline, Step::Prepared, elapsed());
    let mut abort_reason: Option<String> = None;
    // When we asked libvirt to abort (loop clock).
    let mut abort_sent: Option<Duration> = None;
    let mut downtime_set = false;
    let result = loop {
        if let Some(r) = job.wait(pace.poll) {
            break r;
        }
        let now = elapsed();
        if abort_reason.is_none() && abort.load(Ordering::Relaxed) {
            abort_reason = Some(ABORTED_BY_REQUEST.into());
            abort_sent = Some(now);
            job.abort();
        }
        if let (Some(reason), Some(at)) = (&abort_reason, abort_sent) {
            if now.saturating_sub(at) > pace.abort_grace {
                tracing::error!(vm = %spec.vm, reason = %reason, "libvirt did not end the migration after an abort");
                return aborted(format!(
                    "{reason}; libvirt had not ended the migration {} after the abort \
                     (the VM may still move)",
                    human(pace.abort_grace)
                ));
            }
            continue;
        }
        // A reading without figures (none yet, an offline migration, or
        // libvirt busy) still carries the time: the budget keeps counting.
        let sample = match (spec.offline, job.stats()) {
            (false, Some(js)) => at_least(sample_of(&js, now), expected_bytes),
            _ => Sample {
                elapsed: now,
                ..Sample::default()
            },
        };
        if sample.data_processed > 0 {
            mark(&mut timeline, Step::FirstByte, now);
        } else if !spec.offline && timeline.at(Step::DestStarted).is_none() {
            let (o, s) = (ops.clone(), spec.clone());
            if let Waited::Done(Some(true)) =
                deadline::call("hv-dest", pace.poll, None, pace.poll, move || {
                    o.dest_has_vm(&s)
                })
            {
                mark(&mut timeline, Step::DestStarted, elapsed());
            }
        }
        if !spec.offline && job.source_paused() == Some(true) {
            mark(&mut timeline, Step::Switchover, elapsed());
        }
        if !downtime_set && sample.data_total > 0 {
            downtime_set = true;
            if let Some(ms) = tracker.initial_downtime_ms() {
                job.set_max_downtime(ms);
            }
        }
        match tracker.observe(&sample) {
            Decision::Continue => {}
            Decision::RaiseDowntime(ms) => {
                tracing::info!(vm = %spec.vm, downtime_ms = ms, "migration not converging: raising allowed downtime");
                job.set_max_downtime(ms);
            }
            Decision::Abort(reason) => {
                tracing::warn!(vm = %spec.vm, reason = %reason, "giving up on migration");
                abort_reason = Some(reason);
                abort_sent = Some(now);
                job.abort();
            }
        }
        if !spec.offline {
            progress(&tracker.progress());
        }
    };
    drop(job);

    match result {
        Ok(()) => {
            let ended = ops.now();
            mark(&mut timeline, Step::Ended, ended.saturating_sub(started));
            tracker.finish();
            progress(&tracker.progress());
            let announce = watch.take().map(|mut w| {
                let (a, heard_at) = follow_traffic(ops, pace, spec, &mut w, ended);
                if let Some(at) = heard_at {
                    timeline.insert(Step::Announced, at.saturating_sub(started));
                }
                a
            });
            // An offline migration moves a definition: no job, no figures.
            let (downtime_ms, data_mib) = if spec.offline {
                (None, None)
            } else {
                let (o, s) = (ops.clone(), spec.clone());
                match deadline::call(
                    "hv-completed",
                    pace.peer_deadline,
                    None,
                    pace.poll,
                    move || o.completed_stats(&s),
                ) {
                    Waited::Done(figures) => figures,
                    _ => (None, None),
                }
            };
            let seconds = elapsed();
            mark(&mut timeline, Step::Done, seconds);
            tracing::info!(vm = %spec.vm, dest = %spec.dest, timeline = %timeline.text(), "migration timeline");
            Outcome::Done {
                seconds: seconds.as_secs_f64(),
                downtime_ms,
                data_mib,
                timeline,
                announce,
            }
        }
        Err(msg) => match abort_reason {
            Some(reason) => aborted(reason),
            None if spec.tls => failed(super::tls::explain(&msg, &spec.dest)),
            None => failed(msg),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::hypervisor::sim::{Announcing, Reach, Script, Sim, ABORTED_MSG};
    use crate::hypervisor::{
        ensure_running_after_failure, AfterFailure, DomState, HvError, Hypervisor,
    };

    fn spec(vm: &str) -> Spec {
        Spec {
            vm: vm.into(),
            dest: "hb".into(),
            dest_uri: "sim://hb/system".into(),
            migrate_uri: None,
            bandwidth_mib_s: 0,
            offline: false,
            auto_converge: false,
            tls: false,
            mem_mib: 1024,
            copy_local_disks: true,
        }
    }

    /// ha (local) with VM `a` running, hb a peer that answers.
    fn world() -> Sim {
        let sim = Sim::new("ha");
        sim.add_domain("ha", "a", DomState::Running);
        sim.add_host("hb");
        sim
    }

    fn migrate(sim: &Sim, spec: &Spec, abort: &AtomicBool) -> (Outcome, Vec<Progress>) {
        let mut seen = Vec::new();
        let out = sim.migrate(spec, &Limits::default(), abort, &mut |p| {
            seen.push(p.clone())
        });
        (out, seen)
    }

    /// Migrates `a` with a job that hangs until aborted, raising the abort
    /// flag at the `after`th progress report.
    fn hang_then_abort(sim: &Sim, after: u32) -> Outcome {
        sim.script(
            "a",
            Script::Hang {
                honours_abort: true,
            },
        );
        let abort = AtomicBool::new(false);
        let mut n = 0;
        sim.migrate(&spec("a"), &Limits::default(), &abort, &mut |_| {
            n += 1;
            if n == after {
                abort.store(true, Ordering::Relaxed);
            }
        })
    }

    const IMG: &str = "/var/lib/libvirt/images/a.qcow2";

    fn world_with_disk() -> Sim {
        let sim = world();
        sim.local_disks("a", &[("vda", IMG, 4 << 30)]);
        sim
    }

    #[test]
    fn a_local_disk_gets_its_volume_first_and_keeps_it_when_moved() {
        let sim = world_with_disk();
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
        assert_eq!(
            sim.volumes_on("hb").into_iter().collect::<Vec<_>>(),
            vec![IMG]
        );
        assert_eq!(sim.state_of("hb", "a"), Some(DomState::Running));
    }

    #[test]
    fn a_failed_copy_deletes_the_volumes_it_created_and_says_so() {
        let sim = world_with_disk();
        sim.script(
            "a",
            Script::Fail {
                after: 2,
                message: "internal error: mirror failed".into(),
            },
        );
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        let Outcome::Failed { error, aborted } = out else {
            panic!("{out:?}")
        };
        assert!(!aborted);
        assert_eq!(
            error,
            format!(
                "internal error: mirror failed; the volumes created on hb were deleted ({IMG})"
            )
        );
        assert!(sim.volumes_on("hb").is_empty());
        assert_eq!(sim.state_of("ha", "a"), Some(DomState::Running));
    }

    #[test]
    fn an_aborted_copy_deletes_its_volumes_too() {
        let sim = world_with_disk();
        let out = hang_then_abort(&sim, 2);
        assert!(
            matches!(out, Outcome::Failed { aborted: true, ref error } if error.contains("were deleted")),
            "{out:?}"
        );
        assert!(sim.volumes_on("hb").is_empty());
    }

    #[test]
    fn volumes_stay_when_the_vm_may_be_on_the_destination() {
        let sim = world_with_disk();
        sim.script("a", Script::Vanish { after: 1 });
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        let Outcome::Failed { error, .. } = out else {
            panic!("{out:?}")
        };
        assert!(
            error.ends_with(&format!(
                "the volumes created on hb were left ({IMG}): the VM is no longer defined here"
            )),
            "{error}"
        );
        assert_eq!(sim.volumes_on("hb").len(), 1);
    }

    #[test]
    fn a_volume_in_the_way_is_never_overwritten_nor_deleted() {
        let sim = world_with_disk();
        sim.add_volume("hb", IMG);
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert_eq!(
            out,
            Outcome::Failed {
                error: format!("hb already has a volume {IMG}: not overwritten"),
                aborted: false
            }
        );
        assert_eq!(sim.counters().migrations_started, 0);
        assert_eq!(sim.volumes_on("hb").len(), 1);
    }

    #[test]
    fn copying_turned_off_refuses_before_anything_is_made() {
        let sim = world_with_disk();
        let mut sp = spec("a");
        sp.copy_local_disks = false;
        let (out, _) = migrate(&sim, &sp, &AtomicBool::new(false));
        assert!(
            matches!(out, Outcome::Failed { ref error, .. } if error.contains("copy_local_disks is off")),
            "{out:?}"
        );
        assert!(sim.volumes_on("hb").is_empty());
        assert_eq!(sim.counters().migrations_started, 0);
    }

    #[test]
    fn discarding_needs_the_vm_here_idle_and_absent_there() {
        let ok: Result<Option<DomState>, String> = Ok(None);
        assert_eq!(
            may_discard(Ok(Some((DomState::Running, false))), ok.clone(), "hb"),
            Ok(())
        );
        assert_eq!(
            may_discard(Ok(Some((DomState::Paused, false))), ok.clone(), "hb"),
            Ok(())
        );
        assert_eq!(
            may_discard(Ok(Some((DomState::Paused, true))), ok.clone(), "hb"),
            Err("libvirt still runs a job on the VM here".into())
        );
        assert_eq!(
            may_discard(Ok(None), ok.clone(), "hb"),
            Err("the VM is no longer defined here".into())
        );
        assert!(may_discard(Err("down".into()), ok, "hb").is_err());
        assert_eq!(
            may_discard(
                Ok(Some((DomState::Running, false))),
                Ok(Some(DomState::Paused)),
                "hb"
            ),
            Err("hb has the VM (paused)".into())
        );
        assert_eq!(
            may_discard(
                Ok(Some((DomState::Running, false))),
                Err("timeout".into()),
                "hb"
            ),
            Err("cannot check hb: timeout".into())
        );
    }

    #[test]
    fn the_disk_phase_is_not_shown_nearly_done() {
        let disk_done = Sample {
            elapsed: Duration::from_secs(2),
            data_total: 8 << 20,
            data_processed: 8 << 20,
            data_remaining: 0,
            iteration: None,
            bandwidth_bps: Some(1 << 20),
        };
        let s = at_least(disk_done, 120 << 20);
        assert_eq!(
            (s.data_total, s.data_processed, s.data_remaining),
            (120 << 20, 8 << 20, 112 << 20)
        );
        // Once libvirt counts the memory too, its figures stand.
        let later = Sample {
            data_total: 130 << 20,
            data_processed: 40 << 20,
            data_remaining: 90 << 20,
            ..disk_done
        };
        assert_eq!(at_least(later, 120 << 20), later);
        // No reading yet stays no reading; no floor changes nothing.
        assert_eq!(at_least(Sample::default(), 120 << 20), Sample::default());
        assert_eq!(at_least(disk_done, 0), disk_done);
    }

    #[test]
    fn samples_count_disk_and_memory() {
        let t = Duration::from_secs(3);
        // libvirt 9: data_* already hold both parts.
        let js = JobStats {
            kind: 1,
            data_total: Some(1100),
            data_processed: Some(300),
            data_remaining: Some(800),
            mem_total: Some(100),
            mem_processed: Some(0),
            mem_remaining: Some(100),
            disk_total: Some(1000),
            disk_processed: Some(300),
            disk_remaining: Some(700),
            disk_bps: Some(50),
            ..JobStats::default()
        };
        let s = sample_of(&js, t);
        assert_eq!(
            (
                s.data_total,
                s.data_processed,
                s.data_remaining,
                s.bandwidth_bps
            ),
            (1100, 300, 800, Some(50))
        );
        // A libvirt that leaves the disk out of data_*: the parts count.
        let older = JobStats {
            data_total: Some(100),
            data_processed: Some(0),
            data_remaining: Some(100),
            mem_bps: Some(10),
            ..js
        };
        let s = sample_of(&older, t);
        assert_eq!(
            (
                s.data_total,
                s.data_processed,
                s.data_remaining,
                s.bandwidth_bps
            ),
            (1100, 300, 800, Some(60))
        );
        // Memory only, as before.
        let mem = JobStats {
            kind: 1,
            data_total: Some(64),
            data_processed: Some(32),
            data_remaining: Some(32),
            mem_bps: Some(8),
            mem_iteration: Some(2),
            ..JobStats::default()
        };
        let s = sample_of(&mem, t);
        assert_eq!(
            (
                s.data_total,
                s.data_processed,
                s.data_remaining,
                s.bandwidth_bps,
                s.iteration
            ),
            (64, 32, 32, Some(8), Some(2))
        );
    }

    #[test]
    fn a_migration_succeeds_with_monotone_progress() {
        let sim = world();
        sim.script("a", Script::Succeed { samples: 5 });
        let (out, seen) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert!(
            matches!(
                out,
                Outcome::Done {
                    downtime_ms: Some(42),
                    ..
                }
            ),
            "{out:?}"
        );
        assert_eq!(seen.len(), 6, "five samples and the finish");
        assert!(seen.windows(2).all(|w| w[1].percent >= w[0].percent));
        assert!(seen[0].percent > 0.0 && seen[4].percent < 100.0);
        assert_eq!(seen.last().map(|p| p.percent), Some(100.0));
        assert_eq!(sim.state_of("ha", "a"), None);
        assert_eq!(sim.state_of("hb", "a"), Some(DomState::Running));
        // The first step of the schedule is set once the transfer starts.
        assert_eq!(sim.counters().downtimes, vec![("a".to_string(), 100)]);
    }

    #[test]
    fn a_done_migration_says_where_its_time_went_in_order() {
        let sim = world();
        sim.script("a", Script::Succeed { samples: 3 });
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        let Outcome::Done { timeline, .. } = out else {
            panic!("{out:?}")
        };
        let steps: Vec<Step> = timeline.marks().iter().map(|m| m.step).collect();
        assert_eq!(
            steps,
            [
                Step::Accepted,
                Step::Prepared,
                Step::FirstByte,
                Step::Ended,
                Step::Done
            ],
            "the sim cannot tell the destination's start or the pause"
        );
        assert!(timeline.marks().windows(2).all(|w| w[0].at_s <= w[1].at_s));
    }

    fn announced(out: &Outcome) -> Option<Announce> {
        match out {
            Outcome::Done { announce, .. } => announce.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_announcement_heard_is_seen_placed_in_the_timeline_and_not_requested() {
        let sim = world();
        sim.announcing("a", Announcing::Heard);
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert_eq!(announced(&out), Some(Announce::Seen { from_end_ms: 0 }));
        let Outcome::Done { timeline, .. } = &out else {
            panic!("{out:?}")
        };
        assert_eq!(timeline.at(Step::Announced), timeline.at(Step::Ended));
        assert!(sim.counters().announce_requests.is_empty());
    }

    #[test]
    fn a_vm_without_nics_has_nothing_to_announce() {
        let sim = world();
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert_eq!(announced(&out), Some(Announce::NoNic));
        assert!(sim.counters().announce_requests.is_empty());
    }

    #[test]
    fn an_announcement_not_heard_is_requested_after_the_migration_is_done() {
        let sim = world();
        sim.announcing("a", Announcing::Silent);
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert_eq!(
            announced(&out),
            Some(Announce::Requested {
                reason: "no RARP from 52:54:00:00:00:01 seen on br0 within 1000 ms of the end"
                    .into()
            })
        );
        assert_eq!(
            sim.counters().announce_requests,
            vec![("hb".to_string(), "a".to_string())]
        );
        // Never while the guest switches over: only once libvirt is done.
        let log = sim.log();
        let done = log.iter().position(|l| l == "done a");
        let asked = log.iter().position(|l| l == "announce-self a on hb");
        assert!(done.is_some() && asked > done, "{log:?}");
        let Outcome::Done { timeline, .. } = &out else {
            panic!("{out:?}")
        };
        assert_eq!(timeline.at(Step::Announced), None);
    }

    #[test]
    fn a_nic_that_cannot_be_watched_gets_an_announcement_requested() {
        let sim = world();
        let why = "NIC 52:54:00:00:00:07 is not on a bridge (macvtap)";
        sim.announcing("a", Announcing::Unwatchable(why.into()));
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert_eq!(
            announced(&out),
            Some(Announce::Requested { reason: why.into() })
        );
        assert_eq!(sim.counters().announce_requests.len(), 1);
    }

    #[test]
    fn a_refused_request_says_it_could_not_and_why() {
        let sim = world();
        sim.announcing("a", Announcing::Silent);
        sim.refuse_announce("hb", "QEMU refused announce-self: no");
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        let Some(Announce::NotConfirmed { reason }) = announced(&out) else {
            panic!("{out:?}")
        };
        assert!(
            reason.ends_with(
                "asking the destination to announce failed: QEMU refused announce-self: no"
            ),
            "{reason}"
        );
    }

    #[test]
    fn a_destination_that_hangs_on_the_request_leaves_it_not_confirmed_in_bounded_time() {
        let sim = world();
        sim.set_peer_deadline(Duration::from_millis(50));
        sim.announcing("a", Announcing::Silent);
        // The migration itself is done before the destination starts to hang.
        sim.script("a", Script::Succeed { samples: 1 });
        let sim2 = sim.clone();
        let out = sim.migrate(
            &spec("a"),
            &Limits::default(),
            &AtomicBool::new(false),
            &mut |p| {
                if p.percent >= 100.0 {
                    sim2.reach("hb", Reach::Hangs);
                }
            },
        );
        let Some(Announce::NotConfirmed { reason }) = announced(&out) else {
            panic!("{out:?}")
        };
        assert!(
            reason.contains("libvirt on hb did not answer within 50 ms"),
            "{reason}"
        );
    }

    #[test]
    fn an_offline_move_has_no_announcement() {
        let sim = Sim::new("ha");
        sim.add_domain("ha", "off", DomState::ShutOff);
        sim.add_host("hb");
        sim.announcing("off", Announcing::Silent);
        let mut s = spec("off");
        s.offline = true;
        let (out, _) = migrate(&sim, &s, &AtomicBool::new(false));
        assert_eq!(announced(&out), None);
        assert!(sim.counters().announce_requests.is_empty());
    }

    #[test]
    fn a_failed_migration_asks_nothing_of_the_destination() {
        let sim = world();
        sim.announcing("a", Announcing::Silent);
        sim.script(
            "a",
            Script::Fail {
                after: 1,
                message: "no".into(),
            },
        );
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert!(matches!(out, Outcome::Failed { .. }), "{out:?}");
        assert!(sim.counters().announce_requests.is_empty());
    }

    #[test]
    fn a_stall_raises_the_downtime_then_gives_up_with_the_policys_reason() {
        let sim = world();
        sim.script("a", Script::Stall);
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        let Outcome::Failed { error, aborted } = out else {
            panic!("{out:?}")
        };
        assert!(aborted);
        assert!(error.starts_with("does not converge"), "{error}");
        let steps: Vec<u64> = sim.counters().downtimes.iter().map(|d| d.1).collect();
        assert_eq!(steps, vec![100, 200, 300, 500]);
        assert_eq!(sim.counters().aborts, 1);
        assert_eq!(sim.state_of("ha", "a"), Some(DomState::Running));
        assert_eq!(sim.state_of("hb", "a"), None);
    }

    #[test]
    fn a_libvirt_error_fails_with_libvirts_message() {
        let sim = world();
        let msg = "internal error: unable to execute QEMU command 'migrate': boom";
        sim.script(
            "a",
            Script::Fail {
                after: 2,
                message: msg.into(),
            },
        );
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert_eq!(
            out,
            Outcome::Failed {
                error: msg.into(),
                aborted: false
            }
        );
        assert_eq!(sim.counters().aborts, 0);
    }

    #[test]
    fn the_abort_flag_stops_a_running_migration() {
        let sim = world();
        let out = hang_then_abort(&sim, 3);
        assert_eq!(
            out,
            Outcome::Failed {
                error: "aborted by request".into(),
                aborted: true
            }
        );
        assert_eq!(sim.counters().aborts, 1);
        assert_eq!(sim.state_of("ha", "a"), Some(DomState::Running));
    }

    #[test]
    fn an_abort_before_the_start_starts_nothing() {
        let sim = world();
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(true));
        assert!(matches!(out, Outcome::Failed { aborted: true, .. }));
        assert_eq!(sim.counters().migrations_started, 0);
    }

    #[test]
    fn a_job_that_ignores_the_abort_is_given_up_after_the_grace() {
        let sim = world();
        sim.script(
            "a",
            Script::Hang {
                honours_abort: false,
            },
        );
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        let Outcome::Failed { error, aborted } = out else {
            panic!("{out:?}")
        };
        assert!(aborted);
        assert!(error.starts_with("no progress for"), "{error}");
        assert!(
            error.contains("libvirt had not ended the migration 30 s after the abort"),
            "{error}"
        );
    }

    #[test]
    fn a_vanished_domain_fails_and_is_nowhere() {
        let sim = world();
        sim.script("a", Script::Vanish { after: 1 });
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert!(
            matches!(&out, Outcome::Failed { error, aborted: false } if error.starts_with("Domain not found")),
            "{out:?}"
        );
        assert_eq!(sim.state_of("ha", "a"), None);
        assert_eq!(sim.state_of("hb", "a"), None);
    }

    #[test]
    fn nwfilters_are_defined_on_the_destination_first() {
        let sim = world();
        sim.filters("a", &["clean-traffic", "rs-web"]);
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
        assert_eq!(sim.counters().nwfilters_defined.len(), 2);
        assert!(sim.nwfilters_on("hb").contains("rs-web"));
    }

    #[test]
    fn a_destination_hung_on_nwfilter_define_fails_at_the_deadline() {
        let sim = world();
        sim.filters("a", &["clean-traffic"]);
        sim.reach("hb", Reach::Hangs);
        sim.set_peer_deadline(Duration::from_millis(20));
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert_eq!(
            out,
            Outcome::Failed {
                error: "libvirt on hb (defining nwfilters) did not answer within 20 ms".into(),
                aborted: false
            }
        );
        assert_eq!(sim.counters().migrations_started, 0);
        assert_eq!(sim.state_of("ha", "a"), Some(DomState::Running));
    }

    #[test]
    fn abort_is_honoured_while_the_destination_hangs() {
        let sim = world();
        sim.filters("a", &["clean-traffic"]);
        sim.reach("hb", Reach::Hangs);
        // Far longer than the test may take: only the abort can end it.
        sim.set_peer_deadline(Duration::from_secs(3600));
        let abort = Arc::new(AtomicBool::new(false));
        let (s, a) = (sim.clone(), abort.clone());
        let aborter = std::thread::spawn(move || {
            s.wait_until_hanging(1);
            a.store(true, Ordering::Relaxed);
        });
        let (out, _) = migrate(&sim, &spec("a"), &abort);
        let _ = aborter.join();
        assert_eq!(
            out,
            Outcome::Failed {
                error: "aborted by request".into(),
                aborted: true
            }
        );
        assert_eq!(sim.counters().migrations_started, 0);
    }

    #[test]
    fn a_destination_that_hangs_mid_migration_ends_by_the_policy() {
        let sim = world();
        sim.set_peer_deadline(Duration::from_millis(50));
        sim.reach("hb", Reach::Hangs);
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert!(
            matches!(&out, Outcome::Failed { error, aborted: true } if error.starts_with("no progress")),
            "{out:?}"
        );
        assert_eq!(sim.state_of("ha", "a"), Some(DomState::Running));
    }

    #[test]
    fn an_unreachable_destination_fails_with_the_reason() {
        let sim = world();
        sim.reach("hb", Reach::Unreachable);
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert!(
            matches!(&out, Outcome::Failed { error, aborted: false } if error.contains("Connection refused")),
            "{out:?}"
        );
    }

    #[test]
    fn local_libvirt_unreachable_fails_before_starting() {
        let sim = world();
        sim.set_local_up(false);
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert!(
            matches!(&out, Outcome::Failed { error, .. } if error.starts_with("cannot reach local libvirt")),
            "{out:?}"
        );
        assert_eq!(sim.counters().migrations_started, 0);
    }

    #[test]
    fn a_missing_vm_fails_with_libvirts_answer() {
        let sim = world();
        let (out, _) = migrate(&sim, &spec("nosuch"), &AtomicBool::new(false));
        assert!(
            matches!(&out, Outcome::Failed { error, .. } if error.starts_with("no VM nosuch here")),
            "{out:?}"
        );
    }

    #[test]
    fn an_offline_migration_moves_the_definition_without_figures() {
        let sim = Sim::new("ha");
        sim.add_domain("ha", "off", DomState::ShutOff);
        sim.add_host("hb");
        let mut s = spec("off");
        s.offline = true;
        let (out, seen) = migrate(&sim, &s, &AtomicBool::new(false));
        assert!(
            matches!(
                out,
                Outcome::Done {
                    downtime_ms: None,
                    data_mib: None,
                    ..
                }
            ),
            "{out:?}"
        );
        assert_eq!(seen.len(), 1, "only the finish");
        assert_eq!(sim.state_of("hb", "off"), Some(DomState::ShutOff));
    }

    #[test]
    fn paused_after_failure_is_resumed_and_said() {
        let sim = world();
        sim.script(
            "a",
            Script::FailPaused {
                after: 1,
                message: "operation failed: migration out job: unexpectedly failed".into(),
            },
        );
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert!(matches!(out, Outcome::Failed { aborted: false, .. }));
        assert_eq!(sim.state_of("ha", "a"), Some(DomState::Paused));
        let after = ensure_running_after_failure(&sim, "a");
        assert_eq!(after, AfterFailure::Resumed);
        assert_eq!(sim.state_of("ha", "a"), Some(DomState::Running));
        assert_eq!(sim.counters().resumes, 1);
    }

    #[test]
    fn paused_after_an_abort_is_resumed_too() {
        let sim = world();
        sim.script(
            "a",
            Script::FailPaused {
                after: 1000,
                message: String::new(),
            },
        );
        let abort = AtomicBool::new(false);
        let out = sim.migrate(&spec("a"), &Limits::default(), &abort, &mut |_| {
            abort.store(true, Ordering::Relaxed)
        });
        assert!(matches!(out, Outcome::Failed { aborted: true, .. }));
        assert!(sim.log().iter().any(|l| l.ends_with(ABORTED_MSG)));
        assert_eq!(
            ensure_running_after_failure(&sim, "a"),
            AfterFailure::Resumed
        );
    }

    #[test]
    fn a_script_per_destination_overrides_the_vms() {
        let sim = world();
        sim.add_host("hc");
        sim.script(
            "a",
            Script::Fail {
                after: 0,
                message: "no".into(),
            },
        );
        sim.script_to("a", "hc", Script::Succeed { samples: 1 });
        let (out, _) = migrate(&sim, &spec("a"), &AtomicBool::new(false));
        assert_eq!(out, failed("no".into()));
        let mut to_hc = spec("a");
        to_hc.dest = "hc".into();
        let (out, _) = migrate(&sim, &to_hc, &AtomicBool::new(false));
        assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
        assert_eq!(sim.state_of("hc", "a"), Some(DomState::Running));
    }

    #[test]
    fn a_hung_peer_lookup_times_out() {
        let sim = world();
        sim.reach("hb", Reach::Hangs);
        sim.set_peer_deadline(Duration::from_millis(10));
        assert_eq!(
            sim.peer_domain(&sim.peer("hb"), "a"),
            Err(HvError::TimedOut {
                what: "libvirt on hb".into(),
                after: Duration::from_millis(10)
            })
        );
        // The call did reach the peer (and hangs there still).
        sim.wait_until_hanging(1);
    }

    #[test]
    fn peer_lookups_tell_absent_from_unreachable() {
        let sim = world();
        sim.add_domain("hb", "b", DomState::Paused);
        assert_eq!(
            sim.peer_domain(&sim.peer("hb"), "b"),
            Ok(Some(DomState::Paused))
        );
        assert_eq!(sim.peer_domain(&sim.peer("hb"), "a"), Ok(None));
        sim.reach("hb", Reach::Unreachable);
        assert!(matches!(
            sim.peer_domain(&sim.peer("hb"), "b"),
            Err(HvError::Unreachable(_))
        ));
    }
}

#[cfg(test)]
mod gated_tests {
    use std::sync::Arc;

    use super::*;
    use crate::hypervisor::sim::{Script, Sim};
    use crate::hypervisor::{DomState, Hypervisor};

    fn setup() -> (Sim, Spec) {
        let sim = Sim::new("ha");
        sim.add_domain("ha", "g", DomState::Running);
        sim.add_host("hb");
        sim.script("g", Script::Gated);
        let spec = Spec {
            vm: "g".into(),
            dest: "hb".into(),
            dest_uri: "sim://hb/system".into(),
            migrate_uri: None,
            bandwidth_mib_s: 0,
            offline: false,
            auto_converge: false,
            tls: false,
            mem_mib: 512,
            copy_local_disks: true,
        };
        (sim, spec)
    }

    fn spawn(sim: &Sim, spec: Spec, abort: Arc<AtomicBool>) -> std::thread::JoinHandle<Outcome> {
        let s = sim.clone();
        std::thread::spawn(move || s.migrate(&spec, &Limits::default(), &abort, &mut |_| {}))
    }

    #[test]
    fn a_gated_migration_runs_until_released() {
        let (sim, spec) = setup();
        let job = spawn(&sim, spec, Arc::new(AtomicBool::new(false)));
        sim.wait_until(|c| c.migrations_started == 1);
        assert_eq!(sim.local_job_active("g"), Ok(true));
        sim.release("g", Ok(()));
        let out = job.join().unwrap_or_else(|_| failed("panicked".into()));
        assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
        assert_eq!(sim.state_of("hb", "g"), Some(DomState::Running));
        assert_eq!(sim.counters().migrations_ended, 1);
    }

    #[test]
    fn a_running_gated_migration_is_aborted_by_the_flag() {
        let (sim, spec) = setup();
        let abort = Arc::new(AtomicBool::new(false));
        let job = spawn(&sim, spec, abort.clone());
        sim.wait_until(|c| c.migrations_started == 1);
        abort.store(true, Ordering::Relaxed);
        let out = job.join().unwrap_or_else(|_| failed("panicked".into()));
        assert_eq!(out, aborted(ABORTED_BY_REQUEST.into()));
        assert_eq!(sim.state_of("ha", "g"), Some(DomState::Running));
        assert_eq!(sim.local_job_active("g"), Ok(false));
    }

    #[test]
    fn a_gated_migration_can_be_failed_by_the_test() {
        let (sim, spec) = setup();
        sim.release("g", Err("internal error: no".into()));
        let out = spawn(&sim, spec, Arc::new(AtomicBool::new(false)))
            .join()
            .unwrap_or_else(|_| aborted("panicked".into()));
        assert_eq!(out, failed("internal error: no".into()));
    }
}
