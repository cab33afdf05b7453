//! Migration policy: progress, convergence and give-up rules (pure).
//!
//! The agent samples libvirt's job stats about once a second and feeds each
//! sample to a [`Tracker`]. The tracker answers two questions: what to show
//! people ([`Progress`]) and what to do next ([`Decision`]). No I/O, no clock:
//! time arrives inside each [`Sample`] as the duration since the job started,
//! so every rule is tested in microseconds and behaves the same on replay.
//!
//! The rules answer the usual complaints about live migration:
//!
//! - the percentage never runs backwards, and reaches 100 only on success;
//! - a guest that dirties memory faster than it can be copied gets its allowed
//!   downtime raised step by step, then the job is aborted with the numbers
//!   instead of running forever;
//! - a job that moves nothing, or takes longer than its time budget, is
//!   aborted with a reason a person can read;
//! - a slow or stuck job says why in [`Progress::note`].

use std::time::Duration;

const MIB: f64 = 1024.0 * 1024.0;
/// Weight of a new rate measurement in the smoothed rate.
const RATE_ALPHA: f64 = 0.3;
/// Percent shown at most until [`Tracker::finish`].
const PERCENT_CAP: f64 = 99.9;
/// An iteration must leave at most 95% of the best remaining to count as
/// shrinking: `remaining * 20 <= best * 19`.
const SHRINK_NUM: u128 = 19;
const SHRINK_DEN: u128 = 20;

/// One reading of libvirt's job stats (virDomainGetJobStats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// Since the job started (caller's clock).
    pub elapsed: Duration,
    /// Bytes; 0 = unknown yet (the transfer has not started).
    pub data_total: u64,
    pub data_processed: u64,
    pub data_remaining: u64,
    /// Memory iteration (pass) number; absent on older libvirt.
    pub iteration: Option<u64>,
    /// libvirt's measured transfer rate, bytes/s.
    pub bandwidth_bps: Option<u64>,
}

/// When to raise the allowed downtime and when to give up.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Downtime steps in ms, raised one step each time convergence stalls,
    /// e.g. [100, 200, 300, 500]. The first step is the starting downtime,
    /// which the caller sets when it starts the job
    /// ([`Tracker::initial_downtime_ms`]). The tracker sorts the list and
    /// drops duplicates, so a raise never lowers the downtime. Empty: the
    /// downtime is left to libvirt and the first stall aborts.
    pub downtime_steps_ms: Vec<u64>,
    /// Iterations in a row without the remaining data shrinking (by at least
    /// 5% vs the best seen) before we call it stalled. 0 is taken as 1.
    pub stall_iterations: u64,
    /// Give up when no progress (processed bytes not increasing AND remaining
    /// not decreasing) for longer than this.
    pub no_progress_timeout: Duration,
    /// Give up when the job takes longer than this per GiB of guest memory
    /// (e.g. 150 s/GiB like KubeVirt), with a floor.
    pub budget_per_gib: Duration,
    pub budget_floor: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            downtime_steps_ms: vec![100, 200, 300, 500],
            stall_iterations: 2,
            no_progress_timeout: Duration::from_secs(60),
            budget_per_gib: Duration::from_secs(150),
            budget_floor: Duration::from_secs(120),
        }
    }
}

/// What to show people about one migration job.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Progress {
    /// 0..=100, never decreases across the job, 100 only after `finish()`.
    pub percent: f64,
    /// None until libvirt knows the size (the transfer has not started):
    /// never "0 MiB left" before anything is known.
    pub remaining_mib: Option<f64>,
    /// Smoothed transfer rate; None until measured.
    pub rate_mib_s: Option<f64>,
    /// remaining / rate; None while the rate is unknown or zero, and while
    /// stalled (the remaining data is not shrinking, so any ETA would be a lie).
    pub eta_s: Option<u64>,
    /// The current allowed downtime (current step); 0 when no steps are set.
    pub downtime_ms: u64,
    /// Iterations stopped shrinking the remaining data.
    pub stalled: bool,
    /// Why it is slow or stuck, in words for people.
    pub note: Option<String>,
}

/// What the caller does after a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Continue,
    /// Tell libvirt the allowed downtime is now this many ms
    /// (virDomainMigrateSetMaxDowntime).
    RaiseDowntime(u64),
    /// Abort the job (virDomainAbortJob); the reason is for people and the
    /// journal.
    Abort(String),
}

/// Follows one migration job from its samples. See the module docs.
#[derive(Debug, Clone)]
pub struct Tracker {
    guest_mem_mib: u64,
    /// Sorted, without duplicates.
    steps: Vec<u64>,
    /// Index into `steps` of the current allowed downtime.
    step: usize,
    stall_iterations: u64,
    no_progress_timeout: Duration,
    budget: Duration,

    /// Latest `elapsed` seen: a caller clock that steps back does not move
    /// time backwards here.
    now: Duration,
    /// A sample with `data_total > 0` has been seen.
    started: bool,
    /// The last sample with `data_total > 0`.
    last: Option<Sample>,
    /// When processed last grew or remaining last fell.
    last_progress_at: Duration,
    /// Shown percent (before the cap at 100 on finish).
    percent: f64,
    /// Smoothed rate, bytes/s.
    rate_bps: Option<f64>,
    remaining: u64,

    /// Highest iteration seen.
    iteration: Option<u64>,
    /// Smallest remaining seen at an iteration boundary.
    best_remaining: Option<u64>,
    /// Iterations since the remaining last shrank by 5% against the best.
    stall_count: u64,
    stalled: bool,

    aborted: Option<String>,
    finished: bool,
}

impl Tracker {
    /// `guest_mem_mib` sizes the time budget.
    pub fn new(guest_mem_mib: u64, limits: Limits) -> Self {
        let mut steps = limits.downtime_steps_ms;
        steps.sort_unstable();
        steps.dedup();
        Self {
            guest_mem_mib,
            steps,
            step: 0,
            stall_iterations: limits.stall_iterations.max(1),
            no_progress_timeout: limits.no_progress_timeout,
            budget: time_budget(limits.budget_per_gib, limits.budget_floor, guest_mem_mib),
            now: Duration::ZERO,
            started: false,
            last: None,
            last_progress_at: Duration::ZERO,
            percent: 0.0,
            rate_bps: None,
            remaining: 0,
            iteration: None,
            best_remaining: None,
            stall_count: 0,
            stalled: false,
            aborted: None,
            finished: false,
        }
    }

    /// The downtime (ms) to set when starting the job: the first step, or
    /// None to leave libvirt's default.
    pub fn initial_downtime_ms(&self) -> Option<u64> {
        self.steps.first().copied()
    }

    /// How long the job may take in all: max(floor, per GiB x guest GiB).
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// The reason of the Abort already returned, if any.
    pub fn abort_reason(&self) -> Option<&str> {
        self.aborted.as_deref()
    }

    /// Feeds one sample; returns what to do now. Samples may repeat, go
    /// backwards in data_processed (libvirt restarts counting in new
    /// iterations), have data_total change (grows when guest dirties), or
    /// have zeros before the job really starts. Never panics on any input.
    ///
    /// After an Abort every later call returns the same Abort (the caller
    /// should have stopped; a repeated abort is harmless and sticks). After
    /// `finish()` (even one that raced an Abort) every call returns Continue.
    pub fn observe(&mut self, s: &Sample) -> Decision {
        if self.finished {
            return Decision::Continue;
        }
        if let Some(reason) = &self.aborted {
            return Decision::Abort(reason.clone());
        }
        self.now = self.now.max(s.elapsed);

        // data_total == 0: libvirt has not started the transfer (or returned
        // an empty reading). Such a sample carries no data: before the first
        // real sample only the time budget applies; after it, the no-progress
        // clock keeps running from the last real progress.
        let mut convergence = None;
        if s.data_total > 0 {
            self.take_started(s);
            convergence = self.convergence(s);
        }

        // Aborts win over a raise; the most specific reason first.
        let abort = match convergence {
            Some(Decision::Abort(ref reason)) => Some(reason.clone()),
            _ => self.no_progress().or_else(|| self.over_budget()),
        };
        if let Some(reason) = abort {
            self.aborted = Some(reason.clone());
            return Decision::Abort(reason);
        }
        match convergence {
            Some(raise @ Decision::RaiseDowntime(_)) => {
                self.step = self.step.saturating_add(1);
                raise
            }
            _ => Decision::Continue,
        }
    }

    /// What to show now.
    pub fn progress(&self) -> Progress {
        if self.finished {
            return Progress {
                percent: 100.0,
                remaining_mib: Some(0.0),
                rate_mib_s: self.rate_mib_s(),
                eta_s: Some(0),
                downtime_ms: self.downtime_ms(),
                stalled: false,
                note: None,
            };
        }
        let remaining_mib = self.started.then(|| mib(self.remaining));
        let rate_mib_s = self.rate_mib_s();
        let eta_s = match (rate_mib_s, remaining_mib) {
            (Some(rate), Some(remaining_mib)) if rate > 0.0 && !self.stalled => {
                let eta = (remaining_mib / rate).ceil();
                // `as` saturates; the guard keeps an infinite ETA out.
                eta.is_finite().then_some(eta as u64)
            }
            _ => None,
        };
        Progress {
            percent: self.percent,
            remaining_mib,
            rate_mib_s,
            eta_s,
            downtime_ms: self.downtime_ms(),
            stalled: self.stalled,
            note: self.note(),
        }
    }

    /// The job ended successfully: percent becomes 100.
    pub fn finish(&mut self) {
        self.finished = true;
        self.stalled = false;
        self.remaining = 0;
    }

    /// Percent, rate, remaining and the progress clock from a sample of a
    /// started transfer.
    fn take_started(&mut self, s: &Sample) {
        let progressed = match &self.last {
            None => true,
            Some(p) => s.data_processed > p.data_processed || s.data_remaining < p.data_remaining,
        };
        if !self.started || progressed {
            self.last_progress_at = self.now;
        }
        self.started = true;
        self.update_rate(s);
        self.remaining = s.data_remaining;
        self.percent = self.percent.max(raw_percent(s)).min(PERCENT_CAP);
        self.last = Some(*s);
    }

    /// Smoothed (EWMA) rate from libvirt's measured bandwidth when it gives
    /// one, else from processed bytes over time. A repeated sample (time not
    /// advanced) or a processed counter that restarted measures nothing.
    fn update_rate(&mut self, s: &Sample) {
        let Some(prev) = &self.last else {
            if let Some(bw) = s.bandwidth_bps.filter(|&b| b > 0) {
                self.rate_bps = Some(bw as f64);
            }
            return;
        };
        if s.elapsed <= prev.elapsed {
            return;
        }
        let measured = match s.bandwidth_bps {
            Some(bw) if bw > 0 => Some(bw as f64),
            _ if s.data_processed >= prev.data_processed => {
                let dt = (s.elapsed - prev.elapsed).as_secs_f64();
                let bytes = (s.data_processed - prev.data_processed) as f64;
                (dt > 0.0).then(|| bytes / dt)
            }
            _ => None,
        };
        if let Some(m) = measured.filter(|m| m.is_finite()) {
            self.rate_bps = Some(match self.rate_bps {
                None => m,
                Some(r) => r + RATE_ALPHA * (m - r),
            });
        }
    }

    /// The convergence rule, at iteration boundaries only. Returns a raise or
    /// the does-not-converge abort when a stall completes.
    fn convergence(&mut self, s: &Sample) -> Option<Decision> {
        let it = s.iteration?;
        let Some(prev) = self.iteration else {
            // First sight: not a boundary, the sample may be mid-iteration.
            self.iteration = Some(it);
            return None;
        };
        if it <= prev {
            return None;
        }
        self.iteration = Some(it);
        let remaining = s.data_remaining;
        let Some(best) = self.best_remaining else {
            self.best_remaining = Some(remaining);
            return None;
        };
        self.best_remaining = Some(best.min(remaining));
        if u128::from(remaining) * SHRINK_DEN <= u128::from(best) * SHRINK_NUM {
            self.stall_count = 0;
            self.stalled = false;
            return None;
        }
        // Several iterations may pass between two samples; all of them count.
        self.stall_count = self.stall_count.saturating_add(it - prev);
        if self.stall_count < self.stall_iterations {
            return None;
        }
        self.stall_count = 0;
        self.stalled = true;
        match self.steps.get(self.step.saturating_add(1)) {
            // The step advances in `observe`, only if the raise is returned.
            Some(&next) => Some(Decision::RaiseDowntime(next)),
            None => {
                let at = match self.steps.get(self.step) {
                    Some(ms) => format!("max downtime {ms} ms"),
                    None => "libvirt's default downtime".to_owned(),
                };
                Some(Decision::Abort(format!(
                    "does not converge: guest dirties memory faster than it can be copied \
                     (remaining ~{:.0} MiB after {it} iterations at {at})",
                    mib(remaining)
                )))
            }
        }
    }

    fn no_progress(&self) -> Option<String> {
        if !self.started {
            return None;
        }
        let idle = self.now.saturating_sub(self.last_progress_at);
        (idle > self.no_progress_timeout).then(|| {
            format!(
                "no progress for {} s (remaining {:.0} MiB)",
                idle.as_secs(),
                mib(self.remaining)
            )
        })
    }

    fn over_budget(&self) -> Option<String> {
        (self.now > self.budget).then(|| {
            format!(
                "time budget of {} s for a {} MiB guest exhausted at {:.1}%",
                self.budget.as_secs(),
                self.guest_mem_mib,
                self.percent
            )
        })
    }

    fn downtime_ms(&self) -> u64 {
        self.steps.get(self.step).copied().unwrap_or(0)
    }

    fn rate_mib_s(&self) -> Option<f64> {
        self.rate_bps.map(|b| b / MIB)
    }

    fn note(&self) -> Option<String> {
        if let Some(reason) = &self.aborted {
            return Some(format!("aborted: {reason}"));
        }
        if !self.started {
            return Some("waiting for libvirt to start the transfer".to_owned());
        }
        let idle = self.now.saturating_sub(self.last_progress_at);
        let stuck_after =
            (self.no_progress_timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(10));
        if idle >= stuck_after {
            return Some(format!(
                "no data moved for {} s (remaining {:.0} MiB); giving up after {} s",
                idle.as_secs(),
                mib(self.remaining),
                self.no_progress_timeout.as_secs()
            ));
        }
        if self.stalled {
            let link = match self.rate_mib_s() {
                Some(rate) if rate > 0.0 => format!("the link copies it (~{rate:.1} MiB/s)"),
                _ => "it can be copied".to_owned(),
            };
            let last = self.step.saturating_add(1) >= self.steps.len();
            let max = if last {
                " (the maximum; aborting if it stalls again)"
            } else {
                ""
            };
            return Some(format!(
                "guest dirties memory faster than {link}; allowed downtime raised to {} ms{max}",
                self.downtime_ms()
            ));
        }
        // Past 80% of the budget: say the clock is running out.
        if !self.budget.is_zero()
            && self.now.as_nanos().saturating_mul(5) >= self.budget.as_nanos().saturating_mul(4)
        {
            return Some(format!(
                "slow: {} s of the {} s time budget used",
                self.now.as_secs(),
                self.budget.as_secs()
            ));
        }
        None
    }
}

/// Raw completion estimate in percent, 0..=100.
///
/// `1 - remaining / total`, not `processed / (processed + remaining)`:
/// libvirt's processed counter may restart in a new iteration, while
/// remaining is the quantity that must reach (nearly) zero for the switch-over
/// and total is either the guest's memory or grows with it. This estimate
/// still drops when the guest re-dirties pages (remaining jumps up at an
/// iteration boundary); the caller's ratchet (max with the previous value)
/// keeps the shown percentage from running backwards. Remaining above total
/// (an inconsistent reading) gives 0, never a negative.
fn raw_percent(s: &Sample) -> f64 {
    if s.data_total == 0 {
        return 0.0;
    }
    let done = s.data_total.saturating_sub(s.data_remaining);
    done as f64 / s.data_total as f64 * 100.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

/// max(floor, per_gib x guest_mem_mib / 1024), saturating.
fn time_budget(per_gib: Duration, floor: Duration, guest_mem_mib: u64) -> Duration {
    let nanos = per_gib.as_nanos().saturating_mul(u128::from(guest_mem_mib)) / 1024;
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, sub).max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const M: u64 = 1024 * 1024;

    fn sample(elapsed_s: u64, total_mib: u64, processed_mib: u64, remaining_mib: u64) -> Sample {
        Sample {
            elapsed: Duration::from_secs(elapsed_s),
            data_total: total_mib * M,
            data_processed: processed_mib * M,
            data_remaining: remaining_mib * M,
            iteration: None,
            bandwidth_bps: None,
        }
    }

    fn iter(mut s: Sample, iteration: u64) -> Sample {
        s.iteration = Some(iteration);
        s
    }

    #[test]
    fn default_limits() {
        let l = Limits::default();
        assert_eq!(l.downtime_steps_ms, vec![100, 200, 300, 500]);
        assert_eq!(l.stall_iterations, 2);
        assert_eq!(l.no_progress_timeout, Duration::from_secs(60));
        assert_eq!(l.budget_per_gib, Duration::from_secs(150));
        assert_eq!(l.budget_floor, Duration::from_secs(120));
    }

    #[test]
    fn budget_scales_with_memory_and_has_a_floor() {
        let l = Limits::default();
        assert_eq!(
            Tracker::new(512, l.clone()).budget(),
            Duration::from_secs(120)
        );
        assert_eq!(
            Tracker::new(1024, l.clone()).budget(),
            Duration::from_secs(150)
        );
        assert_eq!(
            Tracker::new(4096, l.clone()).budget(),
            Duration::from_secs(600)
        );
        let huge = Limits {
            budget_per_gib: Duration::MAX,
            ..l
        };
        assert_eq!(Tracker::new(u64::MAX, huge).budget().as_secs(), u64::MAX);
    }

    #[test]
    fn percent_monotone_when_remaining_grows() {
        let mut t = Tracker::new(1024, Limits::default());
        let mut shown = Vec::new();
        for (i, s) in [
            iter(sample(1, 1024, 0, 1024), 1),
            iter(sample(2, 1024, 512, 512), 1),
            iter(sample(3, 1024, 1000, 24), 1),
            // Guest re-dirtied memory: remaining jumps up, total grows.
            iter(sample(4, 1300, 1100, 300), 2),
            iter(sample(5, 1300, 50, 250), 2),
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(t.observe(s), Decision::Continue, "sample {i}");
            shown.push(t.progress().percent);
        }
        assert!(shown.windows(2).all(|w| w[1] >= w[0]), "{shown:?}");
        assert!((shown[1] - 50.0).abs() < 1e-9);
        assert!(shown[4] > 97.0 && shown[4] < 100.0, "{shown:?}");
    }

    #[test]
    fn nothing_is_left_unknown_before_the_size_is_known() {
        let mut t = Tracker::new(1024, Limits::default());
        // libvirt's job exists, the transfer has not started: no figures.
        t.observe(&Sample {
            elapsed: Duration::from_millis(250),
            ..Sample::default()
        });
        let p = t.progress();
        assert_eq!((p.percent, p.remaining_mib, p.eta_s), (0.0, None, None));
        t.observe(&sample(1, 1024, 24, 1000));
        assert_eq!(t.progress().remaining_mib, Some(1000.0));
    }

    #[test]
    fn hundred_only_after_finish() {
        let mut t = Tracker::new(1024, Limits::default());
        t.observe(&sample(1, 1024, 1024, 0));
        let p = t.progress();
        assert!((p.percent - 99.9).abs() < 1e-9, "{}", p.percent);
        t.finish();
        let p = t.progress();
        assert_eq!(p.percent, 100.0);
        assert_eq!(p.remaining_mib, Some(0.0));
        assert_eq!(p.note, None);
        // Late samples after success change nothing.
        assert_eq!(t.observe(&sample(2, 1024, 0, 1024)), Decision::Continue);
        assert_eq!(t.progress().percent, 100.0);
    }

    /// A guest whose dirty set stays at 400 MiB whatever the downtime.
    fn stalling_job(t: &mut Tracker) -> Vec<(u64, Decision)> {
        let mut out = Vec::new();
        t.observe(&iter(sample(0, 4096, 0, 4096), 1));
        for it in 2..=20u64 {
            let d = t.observe(&iter(sample(it * 5, 4096, 4096 + it * 400, 400), it));
            if d != Decision::Continue {
                out.push((it, d.clone()));
            }
            if matches!(d, Decision::Abort(_)) {
                break;
            }
        }
        out
    }

    #[test]
    fn stall_raises_each_step_then_aborts() {
        let mut t = Tracker::new(4096, Limits::default());
        assert_eq!(t.initial_downtime_ms(), Some(100));
        assert_eq!(t.progress().downtime_ms, 100);
        let ds = stalling_job(&mut t);
        // Iteration 2 sets the baseline; each stall needs 2 more iterations.
        assert_eq!(ds.len(), 4, "{ds:?}");
        assert_eq!(ds[0], (4, Decision::RaiseDowntime(200)));
        assert_eq!(ds[1], (6, Decision::RaiseDowntime(300)));
        assert_eq!(ds[2], (8, Decision::RaiseDowntime(500)));
        let (it, Decision::Abort(reason)) = &ds[3] else {
            panic!("{ds:?}")
        };
        assert_eq!(*it, 10);
        assert_eq!(
            reason,
            "does not converge: guest dirties memory faster than it can be copied \
             (remaining ~400 MiB after 10 iterations at max downtime 500 ms)"
        );
        assert_eq!(t.abort_reason(), Some(reason.as_str()));
    }

    #[test]
    fn stalled_progress_says_why() {
        let mut t = Tracker::new(4096, Limits::default());
        t.observe(&iter(sample(0, 4096, 0, 4096), 1));
        let mut s = iter(sample(5, 4096, 4000, 400), 2);
        s.bandwidth_bps = Some(80 * M);
        t.observe(&s);
        s.iteration = Some(3);
        s.elapsed = Duration::from_secs(6);
        s.data_processed += 80 * M;
        t.observe(&s);
        s.iteration = Some(4);
        s.elapsed = Duration::from_secs(7);
        s.data_processed += 80 * M;
        assert_eq!(t.observe(&s), Decision::RaiseDowntime(200));
        let p = t.progress();
        assert!(p.stalled);
        assert_eq!(p.downtime_ms, 200);
        assert_eq!(p.eta_s, None, "no ETA while not converging");
        assert_eq!(
            p.note.as_deref(),
            Some("guest dirties memory faster than the link copies it (~80.0 MiB/s); allowed downtime raised to 200 ms")
        );
        // The dirty set finally shrinks: no longer stalled.
        s.iteration = Some(5);
        s.elapsed = Duration::from_secs(8);
        s.data_processed += 80 * M;
        s.data_remaining = 100 * M;
        assert_eq!(t.observe(&s), Decision::Continue);
        let p = t.progress();
        assert!(!p.stalled);
        assert_eq!(p.note, None);
        assert_eq!(p.eta_s, Some(2));
    }

    #[test]
    fn converging_job_never_raises() {
        let mut t = Tracker::new(4096, Limits::default());
        let mut remaining = 4096 * M;
        let mut processed = 0u64;
        for it in 1..=40u64 {
            processed += remaining;
            remaining = remaining / 10 * 9; // shrinks 10% per iteration
            let s = Sample {
                elapsed: Duration::from_secs(it),
                data_total: 4096 * M,
                data_processed: processed,
                data_remaining: remaining,
                iteration: Some(it),
                bandwidth_bps: Some(500 * M),
            };
            assert_eq!(t.observe(&s), Decision::Continue, "iteration {it}");
            assert!(!t.progress().stalled);
        }
        assert_eq!(t.progress().downtime_ms, 100);
    }

    #[test]
    fn slow_shrinking_below_five_percent_stalls() {
        let mut t = Tracker::new(4096, Limits::default());
        t.observe(&iter(sample(0, 4096, 0, 4096), 1));
        let mut remaining = 1000u64;
        let mut raised = false;
        for it in 2..=6u64 {
            remaining -= 20; // 2% per iteration: below the 5% bar vs the best
            let d = t.observe(&iter(sample(it, 4096, it * 1000, remaining), it));
            raised |= d == Decision::RaiseDowntime(200);
        }
        assert!(raised);
    }

    #[test]
    fn without_iterations_only_time_rules_apply() {
        let mut t = Tracker::new(4096, Limits::default());
        for sec in 0..100u64 {
            // Remaining never shrinks, but data keeps moving.
            let d = t.observe(&sample(sec, 4096, sec * 100, 400));
            assert_eq!(d, Decision::Continue, "at {sec} s");
        }
        assert!(!t.progress().stalled);
    }

    #[test]
    fn no_progress_timeout_aborts_with_the_numbers() {
        let mut t = Tracker::new(4096, Limits::default());
        t.observe(&sample(0, 4096, 0, 4096));
        t.observe(&sample(10, 4096, 3584, 512));
        for sec in 11..=70u64 {
            assert_eq!(t.observe(&sample(sec, 4096, 3584, 512)), Decision::Continue);
        }
        let note = t.progress().note.unwrap_or_default();
        assert_eq!(
            note,
            "no data moved for 60 s (remaining 512 MiB); giving up after 60 s"
        );
        let d = t.observe(&sample(71, 4096, 3584, 512));
        assert_eq!(
            d,
            Decision::Abort("no progress for 61 s (remaining 512 MiB)".into())
        );
        // Sticky: the same Abort again, never something else.
        assert_eq!(t.observe(&sample(72, 4096, 4000, 0)), d);
        assert!(t
            .progress()
            .note
            .unwrap_or_default()
            .starts_with("aborted: no progress"));
    }

    #[test]
    fn processed_restarting_counts_as_no_progress_only_if_nothing_moves() {
        let mut t = Tracker::new(4096, Limits::default());
        t.observe(&sample(0, 4096, 0, 4096));
        t.observe(&sample(1, 4096, 4000, 96));
        // New iteration: processed restarts, remaining grows; then moves again.
        for sec in 2..200u64 {
            let d = t.observe(&sample(sec, 4096, sec, 2000));
            assert_eq!(d, Decision::Continue);
        }
    }

    #[test]
    fn time_budget_aborts() {
        let mut t = Tracker::new(1024, Limits::default());
        for sec in 0..=150u64 {
            let s = sample(sec, 1024, sec * 2, 1024 - sec * 2);
            assert_eq!(t.observe(&s), Decision::Continue, "at {sec} s");
        }
        assert_eq!(
            t.progress().note.as_deref(),
            Some("slow: 150 s of the 150 s time budget used")
        );
        let d = t.observe(&sample(151, 1024, 302, 722));
        assert_eq!(
            d,
            Decision::Abort("time budget of 150 s for a 1024 MiB guest exhausted at 29.5%".into())
        );
    }

    #[test]
    fn starting_zeros_dont_abort_before_the_budget() {
        let mut t = Tracker::new(1024, Limits::default());
        for sec in 0..=150u64 {
            let d = t.observe(&Sample {
                elapsed: Duration::from_secs(sec),
                ..Sample::default()
            });
            assert_eq!(d, Decision::Continue, "at {sec} s");
            let p = t.progress();
            assert_eq!(p.percent, 0.0);
            assert_eq!(
                p.note.as_deref(),
                Some("waiting for libvirt to start the transfer")
            );
        }
        let d = t.observe(&Sample {
            elapsed: Duration::from_secs(151),
            ..Sample::default()
        });
        assert!(
            matches!(&d, Decision::Abort(r) if r.starts_with("time budget of 150 s")),
            "{d:?}"
        );
    }

    #[test]
    fn late_start_starts_the_no_progress_clock_at_the_start() {
        let mut t = Tracker::new(4096, Limits::default());
        for sec in 0..100u64 {
            t.observe(&Sample {
                elapsed: Duration::from_secs(sec),
                ..Sample::default()
            });
        }
        assert_eq!(t.observe(&sample(100, 4096, 0, 4096)), Decision::Continue);
        assert_eq!(t.observe(&sample(150, 4096, 0, 4096)), Decision::Continue);
        assert!(matches!(
            t.observe(&sample(161, 4096, 0, 4096)),
            Decision::Abort(_)
        ));
    }

    #[test]
    fn eta_from_libvirt_bandwidth() {
        let mut t = Tracker::new(4096, Limits::default());
        let mut s = sample(1, 4096, 3596, 500);
        s.bandwidth_bps = Some(100 * M);
        t.observe(&s);
        let p = t.progress();
        assert_eq!(p.rate_mib_s, Some(100.0));
        assert_eq!(p.eta_s, Some(5));
        assert_eq!(p.remaining_mib, Some(500.0));
    }

    #[test]
    fn eta_from_processed_bytes_when_libvirt_gives_no_rate() {
        let mut t = Tracker::new(4096, Limits::default());
        t.observe(&sample(0, 4096, 0, 4096));
        let p = t.progress();
        assert_eq!(p.rate_mib_s, None);
        assert_eq!(p.eta_s, None);
        t.observe(&sample(2, 4096, 400, 3696));
        let p = t.progress();
        assert_eq!(p.rate_mib_s, Some(200.0));
        assert_eq!(p.eta_s, Some(19)); // 3696 / 200 = 18.48, rounded up
                                       // Smoothed: one fast second moves the rate only part of the way.
        t.observe(&sample(3, 4096, 1400, 2696));
        let rate = t.progress().rate_mib_s.unwrap_or_default();
        assert!(rate > 200.0 && rate < 1000.0, "{rate}");
    }

    #[test]
    fn repeated_sample_is_harmless() {
        let mut t = Tracker::new(4096, Limits::default());
        let s = iter(sample(1, 4096, 100, 3996), 1);
        t.observe(&s);
        let before = t.progress();
        for _ in 0..10 {
            assert_eq!(t.observe(&s), Decision::Continue);
        }
        assert_eq!(t.progress(), before);
    }

    #[test]
    fn steps_are_sorted_and_deduplicated() {
        let limits = Limits {
            downtime_steps_ms: vec![300, 100, 300, 200],
            ..Limits::default()
        };
        let mut t = Tracker::new(4096, limits);
        let ds = stalling_job(&mut t);
        let raises: Vec<_> = ds.iter().map(|(_, d)| d.clone()).collect();
        assert_eq!(raises[0], Decision::RaiseDowntime(200));
        assert_eq!(raises[1], Decision::RaiseDowntime(300));
        assert!(matches!(&raises[2], Decision::Abort(r) if r.contains("max downtime 300 ms")));
    }

    #[test]
    fn no_steps_aborts_on_first_stall() {
        let limits = Limits {
            downtime_steps_ms: vec![],
            ..Limits::default()
        };
        let mut t = Tracker::new(4096, limits);
        assert_eq!(t.initial_downtime_ms(), None);
        let ds = stalling_job(&mut t);
        assert_eq!(ds.len(), 1);
        assert!(matches!(&ds[0].1, Decision::Abort(r) if r.contains("libvirt's default downtime")));
    }

    #[test]
    fn a_raise_that_loses_to_an_abort_is_not_applied() {
        // Found by proptest: a stall and the no-progress timeout on the same
        // sample. The Abort wins, and the downtime shown stays the one set.
        let limits = Limits {
            stall_iterations: 1,
            no_progress_timeout: Duration::ZERO,
            ..Limits::default()
        };
        let mut t = Tracker::new(4096, limits);
        t.observe(&iter(sample(0, 4096, 100, 400), 1));
        t.observe(&iter(sample(1, 4096, 200, 400), 2));
        let d = t.observe(&iter(sample(2, 4096, 200, 400), 3));
        assert!(
            matches!(&d, Decision::Abort(r) if r.starts_with("no progress")),
            "{d:?}"
        );
        assert_eq!(t.progress().downtime_ms, 100);
    }

    #[test]
    fn progress_serializes() {
        let mut t = Tracker::new(1024, Limits::default());
        t.observe(&sample(1, 1024, 512, 512));
        let json = serde_json::to_value(t.progress()).unwrap_or_default();
        assert_eq!(json["percent"], 50.0);
        assert_eq!(json["downtime_ms"], 100);
        assert_eq!(json["stalled"], false);
    }

    // ---- properties ----

    fn num() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            0u64..5000,
            (0u64..8192).prop_map(|m| m * M),
            any::<u64>()
        ]
    }

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (0u64..200).prop_map(Duration::from_secs),
            any::<u64>().prop_map(Duration::from_millis),
            (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        ]
    }

    fn limits() -> impl Strategy<Value = Limits> {
        (
            proptest::collection::vec(num(), 0..6),
            prop_oneof![0u64..5, any::<u64>()],
            duration(),
            duration(),
            duration(),
        )
            .prop_map(|(steps, stall, np, per_gib, floor)| Limits {
                downtime_steps_ms: steps,
                stall_iterations: stall,
                no_progress_timeout: np,
                budget_per_gib: per_gib,
                budget_floor: floor,
            })
    }

    /// (elapsed step or absolute, total, processed, remaining, iteration, bandwidth)
    type Raw = (u64, u64, u64, u64, Option<u64>, Option<u64>);

    fn raw() -> impl Strategy<Value = Raw> {
        (
            prop_oneof![0u64..3000, any::<u64>()],
            num(),
            num(),
            num(),
            proptest::option::of(prop_oneof![0u64..30, any::<u64>()]),
            proptest::option::of(num()),
        )
    }

    fn samples(raws: &[Raw], monotone: bool) -> Vec<Sample> {
        let mut clock = 0u64;
        raws.iter()
            .map(|&(t, total, processed, remaining, iteration, bw)| {
                let ms = if monotone {
                    clock = clock.saturating_add(t);
                    clock
                } else {
                    t
                };
                Sample {
                    elapsed: Duration::from_millis(ms),
                    data_total: total,
                    data_processed: processed,
                    data_remaining: remaining,
                    iteration,
                    bandwidth_bps: bw,
                }
            })
            .collect()
    }

    fn check_progress(p: &Progress) -> Result<(), TestCaseError> {
        prop_assert!(p.percent.is_finite() && (0.0..=PERCENT_CAP).contains(&p.percent));
        if let Some(r) = p.remaining_mib {
            prop_assert!(r.is_finite() && r >= 0.0);
        }
        if let Some(r) = p.rate_mib_s {
            prop_assert!(r.is_finite() && r >= 0.0);
        }
        prop_assert!(serde_json::to_string(p).is_ok());
        Ok(())
    }

    proptest! {
        #[test]
        fn any_samples_keep_the_promises(
            guest in num(),
            limits in limits(),
            raws in proptest::collection::vec(raw(), 0..60),
            monotone in any::<bool>(),
        ) {
            let mut steps = limits.downtime_steps_ms.clone();
            steps.sort_unstable();
            let mut t = Tracker::new(guest, limits);
            let mut downtime = t.initial_downtime_ms().unwrap_or(0);
            prop_assert_eq!(t.progress().downtime_ms, downtime);
            let mut percent = t.progress().percent;
            let mut abort: Option<String> = None;
            for s in samples(&raws, monotone) {
                let d = t.observe(&s);
                match (&abort, d) {
                    (Some(first), Decision::Abort(r)) => prop_assert_eq!(first, &r),
                    (Some(_), Decision::Continue) => {}
                    (Some(_), d) => {
                        return Err(TestCaseError::fail(format!("{d:?} after an abort")));
                    }
                    (None, Decision::Abort(r)) => abort = Some(r),
                    (None, Decision::RaiseDowntime(ms)) => {
                        prop_assert!(steps.binary_search(&ms).is_ok(), "{} not a step", ms);
                        prop_assert!(ms > downtime, "{} after {}", ms, downtime);
                        downtime = ms;
                    }
                    (None, Decision::Continue) => {}
                }
                let p = t.progress();
                check_progress(&p)?;
                prop_assert!(p.percent >= percent, "{} after {}", p.percent, percent);
                prop_assert_eq!(p.downtime_ms, downtime);
                percent = p.percent;
            }
            t.finish();
            prop_assert_eq!(t.progress().percent, 100.0);
            for s in samples(&raws, monotone) {
                prop_assert_eq!(t.observe(&s), Decision::Continue);
                prop_assert_eq!(t.progress().percent, 100.0);
            }
        }

        #[test]
        fn stalls_raise_through_every_step_in_order(
            steps in proptest::collection::vec(0u64..2000, 1..8),
            stall in 1u64..4,
            dirty_mib in 1u64..2048,
        ) {
            let limits = Limits {
                downtime_steps_ms: steps.clone(),
                stall_iterations: stall,
                ..Limits::default()
            };
            let mut want = steps;
            want.sort_unstable();
            want.dedup();
            let mut t = Tracker::new(4096, limits);
            let mut raised = Vec::new();
            let mut aborted = false;
            for it in 1..200u64 {
                let s = iter(sample(it, 4096, it * 4096, dirty_mib), it);
                match t.observe(&s) {
                    Decision::RaiseDowntime(ms) => raised.push(ms),
                    Decision::Abort(r) => {
                        prop_assert!(r.starts_with("does not converge"), "{}", r);
                        aborted = true;
                        break;
                    }
                    Decision::Continue => {}
                }
            }
            prop_assert!(aborted);
            prop_assert_eq!(&raised[..], &want[1..]);
        }
    }
}
