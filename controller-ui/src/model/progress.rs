//! Per-VM progress of a run: from `jobs` answers and `migration.*` events.

use serde_json::Value;

use crate::json::{f64_of, str_of, u64_of};

/// Where a VM's migration is. Failed and aborted carry the reason, which a
/// person needs to decide what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Queued,
    Running,
    Done,
    Failed(String),
    Aborted(String),
}

impl Phase {
    fn parse(phase: Option<&str>, error: Option<String>) -> Self {
        let reason = || error.clone().unwrap_or_else(|| "no reason given".into());
        match phase {
            Some("queued") => Self::Queued,
            Some("running") => Self::Running,
            Some("done") => Self::Done,
            Some("aborted") => Self::Aborted(reason()),
            Some("failed") => Self::Failed(reason()),
            // An unknown phase is shown as running rather than done: the
            // verdict, not this row, says whether the host may be switched
            // off.
            _ => Self::Running,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed(_) => "FAILED",
            Self::Aborted(_) => "aborted",
        }
    }

    pub fn is_over(&self) -> bool {
        matches!(self, Self::Done | Self::Failed(_) | Self::Aborted(_))
    }
}

/// One VM's migration.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: Option<u64>,
    pub vm: String,
    pub dest: Option<String>,
    pub phase: Phase,
    /// 0 to 100, whatever the agent sent.
    pub percent: f64,
    pub remaining_mib: Option<f64>,
    pub rate_mib_s: Option<f64>,
    pub eta_s: Option<u64>,
    pub downtime_ms: Option<u64>,
    pub seconds: Option<f64>,
    pub note: Option<String>,
}

impl Job {
    pub fn queued(vm: &str, dest: Option<&str>) -> Self {
        Self {
            id: None,
            vm: vm.to_owned(),
            dest: dest.map(str::to_owned),
            phase: Phase::Queued,
            percent: 0.0,
            remaining_mib: None,
            rate_mib_s: None,
            eta_s: None,
            downtime_ms: None,
            seconds: None,
            note: None,
        }
    }

    /// One item of a `jobs` answer; `None` without a VM name.
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            id: u64_of(v, "id"),
            vm: str_of(v, "vm")?,
            dest: str_of(v, "dest"),
            phase: Phase::parse(v.get("phase").and_then(Value::as_str), str_of(v, "error")),
            percent: percent_of(v),
            remaining_mib: f64_of(v, "remaining_mib"),
            rate_mib_s: f64_of(v, "rate_mib_s"),
            eta_s: u64_of(v, "eta_s"),
            downtime_ms: u64_of(v, "downtime_ms"),
            seconds: f64_of(v, "seconds"),
            note: str_of(v, "note"),
        })
    }

    /// The fraction a gauge shows: always within 0..=1, since ratatui's
    /// gauges panic outside it.
    pub fn ratio(&self) -> f64 {
        if self.phase == Phase::Done {
            return 1.0;
        }
        (self.percent / 100.0).clamp(0.0, 1.0)
    }
}

/// `percent` clamped to 0..=100 (0 when missing or not a number).
pub(crate) fn percent_of(v: &Value) -> f64 {
    f64_of(v, "percent").unwrap_or(0.0).clamp(0.0, 100.0)
}

/// The jobs of the latest run in a `jobs` answer (it also lists the run
/// before, which is history, not progress), and whether a run is active.
pub fn jobs_from_json(data: &Value) -> (Vec<Job>, bool) {
    let all = crate::json::items(data, "jobs");
    let latest = all.iter().filter_map(|j| u64_of(j, "run")).max();
    let jobs = all
        .iter()
        .filter(|j| latest.is_none() || u64_of(j, "run") == latest)
        .filter_map(Job::from_json)
        .collect();
    let running = data
        .get("running")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    (jobs, running)
}
