//! One host's current run: its plan, each VM's progress, and its verdict.

use crate::model::event::Progress;
use crate::model::plan::Plan;
use crate::model::progress::{Job, Phase};
use crate::model::verdict::Verdict;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evacuation {
    /// The evacuation's number; `None` for a run we only know from its
    /// events or jobs (a `migrate`, or a run started before we connected).
    pub id: Option<u64>,
    pub plan: Plan,
    pub jobs: Vec<Job>,
    pub verdict: Option<Verdict>,
}

impl Evacuation {
    /// From `evacuate`'s answer: every planned move starts queued, so the
    /// progress screen lists every VM from the first moment.
    pub fn started(plan: Plan) -> Self {
        let jobs = plan
            .moves
            .iter()
            .map(|m| Job::queued(&m.vm, Some(&m.dest)))
            .collect();
        Self {
            id: plan.evacuation,
            plan,
            jobs,
            verdict: None,
        }
    }

    /// A `jobs` answer replaces what events told us: it is the agent's
    /// whole picture, where events may have been missed.
    pub fn set_jobs(&mut self, jobs: Vec<Job>) {
        self.jobs = jobs;
    }

    pub fn is_over(&self) -> bool {
        self.verdict.is_some()
    }

    /// The job an event is about: by job number when both know it, else by
    /// VM (a queued job from the plan has no number yet).
    fn job_mut(&mut self, id: Option<u64>, vm: &str) -> &mut Job {
        let at = self
            .jobs
            .iter()
            .position(|j| id.is_some() && j.id == id)
            .or_else(|| {
                self.jobs
                    .iter()
                    .position(|j| j.vm == vm && !j.phase.is_over())
            })
            .or_else(|| self.jobs.iter().position(|j| j.vm == vm));
        let at = match at {
            Some(at) => at,
            None => {
                self.jobs.push(Job::queued(vm, None));
                self.jobs.len() - 1
            }
        };
        let job = &mut self.jobs[at];
        if job.id.is_none() {
            job.id = id;
        }
        job
    }

    pub fn on_progress(&mut self, p: &Progress) {
        let job = self.job_mut(p.job, &p.vm);
        job.phase = Phase::Running;
        if p.dest.is_some() {
            job.dest.clone_from(&p.dest);
        }
        // The agent never lets percent go down within one migration; keep it
        // so here too, so a late sample cannot make the bar jump back.
        job.percent = job.percent.max(p.percent);
        job.remaining_mib = p.remaining_mib;
        job.rate_mib_s = p.rate_mib_s;
        job.eta_s = p.eta_s;
        job.note.clone_from(&p.note);
    }

    pub fn on_done(
        &mut self,
        id: Option<u64>,
        vm: &str,
        dest: Option<&str>,
        downtime_ms: Option<u64>,
        seconds: Option<f64>,
    ) {
        let job = self.job_mut(id, vm);
        job.phase = Phase::Done;
        if let Some(d) = dest {
            job.dest = Some(d.to_owned());
        }
        job.percent = 100.0;
        job.remaining_mib = Some(0.0);
        job.eta_s = Some(0);
        job.downtime_ms = downtime_ms;
        job.seconds = seconds;
    }

    /// A failure; with `retrying_on`, the same job carries on towards the
    /// next host, starting again from nothing.
    pub fn on_failed(
        &mut self,
        id: Option<u64>,
        vm: &str,
        dest: Option<&str>,
        error: &str,
        note: Option<&str>,
        retrying_on: Option<&str>,
    ) {
        let job = self.job_mut(id, vm);
        let why = match note {
            Some(n) => format!("{error} ({n})"),
            None => error.to_owned(),
        };
        match retrying_on {
            Some(next) => {
                job.phase = Phase::Running;
                job.note = Some(format!(
                    "{} failed: {why}; retrying on {next}",
                    dest.unwrap_or("?")
                ));
                job.dest = Some(next.to_owned());
                job.percent = 0.0;
                job.remaining_mib = None;
                job.rate_mib_s = None;
                job.eta_s = None;
            }
            None => {
                job.phase = if error.starts_with("aborted") {
                    Phase::Aborted(why)
                } else {
                    Phase::Failed(why)
                };
                job.eta_s = None;
            }
        }
    }
}
