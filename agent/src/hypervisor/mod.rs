//! The seam in front of libvirt: everything the evacuation and migration
//! path asks the hypervisor, behind one trait.
//!
//! [`libvirt::Libvirt`] is the real thing (the `virt` crate); [`sim::Sim`]
//! is an in-memory stand-in whose migrations can succeed, stall, fail,
//! hang, vanish or leave a domain paused, and whose peers can hang, so the
//! evacuation's retry, abort and recovery paths are tested in
//! microseconds. Both run the same migration loop
//! ([`crate::migration::run::drive`]) over their own
//! [`crate::migration::run::MigrationOps`].
//!
//! Every call to a peer is bounded by a deadline ([`deadline`]): a peer
//! whose libvirt hangs costs the caller that long, never more.

pub mod deadline;
pub mod libvirt;
pub mod sim;
pub mod volumes;

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;

pub use crate::migration::policy::{Limits, Progress};
pub use crate::migration::run::{Outcome, Pace, Spec};

/// A domain's state, as far as the verdict cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DomState {
    /// Running (or blocked: running, and idle at this instant).
    Running,
    Paused,
    ShutOff,
    /// Shutting down, crashed, suspended to memory, or no state: present,
    /// not usable.
    Other,
}

impl DomState {
    /// libvirt's virDomainState.
    pub fn from_libvirt(state: i32) -> DomState {
        match state {
            1 | 2 => DomState::Running,
            3 => DomState::Paused,
            5 => DomState::ShutOff,
            _ => DomState::Other,
        }
    }

    /// Anything but shut off still occupies the host.
    pub fn is_here(self) -> bool {
        self != DomState::ShutOff
    }
}

impl std::fmt::Display for DomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DomState::Running => "running",
            DomState::Paused => "paused",
            DomState::ShutOff => "shut off",
            DomState::Other => "neither running nor shut off",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub name: String,
    pub state: DomState,
}

/// A peer host: its name (for people and the journal) and libvirt URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    pub name: String,
    pub uri: String,
}

/// Begins the error of a migration call whose own connection to this
/// host's libvirtd broke under it (the daemon stopped or restarted): such
/// an error says nothing about where the VM is. A peer's libvirtd going
/// away is reported by this host's daemon over a connection still alive,
/// and never carries it.
pub const LOCAL_LIBVIRT_LOST: &str = "this host's libvirtd went away during the migration call";

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum HvError {
    /// libvirtd does not answer (connection refused or lost).
    #[error("libvirt does not answer: {0}")]
    Unreachable(String),
    /// A call that did not end within its deadline; its thread was left to
    /// finish on its own.
    #[error("{what} did not answer within {}", human(*after))]
    TimedOut { what: String, after: Duration },
    /// libvirt answered no: its message.
    #[error("{0}")]
    Call(String),
    #[error("no domain named {0}")]
    NoSuchDomain(String),
}

/// "20 s", "50 ms", "1.5 s": durations in reasons people read.
pub fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// What the evacuation and migration path asks the hypervisor.
pub trait Hypervisor: Send + Sync + std::fmt::Debug {
    /// Domains defined on this host, with their states (the verdict's
    /// ground truth: anything not ShutOff is "still here").
    fn local_domains(&self) -> Result<Vec<DomainInfo>, HvError>;

    /// One domain on a peer; Ok(None) if the peer does not have it.
    /// Bounded by a deadline: a peer whose libvirt hangs gives TimedOut,
    /// never blocks the caller longer.
    fn peer_domain(&self, peer: &PeerAddr, vm: &str) -> Result<Option<DomState>, HvError>;

    /// Whether libvirt is still running a job (e.g. an outgoing migration)
    /// on this local domain. NoSuchDomain if the domain is not here.
    fn local_job_active(&self, vm: &str) -> Result<bool, HvError>;

    /// Resumes a paused local domain (after a failed or aborted migration
    /// libvirt may leave it paused).
    fn resume_local(&self, vm: &str) -> Result<(), HvError>;

    /// Runs one migration to its end: defines the needed nwfilters on the
    /// destination (deadline-bounded), starts the peer-to-peer migration,
    /// samples job stats, applies [`crate::migration::policy`] (downtime
    /// raises, give-up rules), honours `abort` (checked at least once a
    /// second, also while a peer call hangs), calls `progress` for every
    /// sample. Never blocks past its give-up rules: a hung destination
    /// ends as Failed with a reason.
    fn migrate(
        &self,
        spec: &Spec,
        limits: &Limits,
        abort: &AtomicBool,
        progress: &mut dyn FnMut(&Progress),
    ) -> Outcome;
}

/// Where a VM stands on the source after a failed or aborted migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// Running here: nothing to do.
    Running,
    /// Was paused; resumed, and libvirt now says running.
    Resumed,
    /// Paused, and it stays paused: why.
    StillPaused(String),
    /// Here, but neither running nor paused (an offline VM stays shut off).
    NotRunning(DomState),
    /// Not defined here (it moved after all, or vanished).
    NotHere,
    /// Local libvirt could not say: why.
    Unknown(String),
}

impl AfterFailure {
    /// Words for people, e.g. appended to a failed job's error.
    pub fn describe(&self, vm: &str) -> String {
        match self {
            AfterFailure::Running => format!("{vm} still runs here"),
            AfterFailure::Resumed => format!("{vm} was left paused here and has been resumed"),
            AfterFailure::StillPaused(why) => format!("{vm} is PAUSED here: {why}"),
            AfterFailure::NotRunning(s) => format!("{vm} is here, {s}"),
            AfterFailure::NotHere => format!("{vm} is not defined here"),
            AfterFailure::Unknown(why) => format!("state of {vm} here unknown: {why}"),
        }
    }
}

/// "Running means running": after a failed or aborted migration, checks
/// the VM on this host and resumes it if libvirt left it paused. A VM
/// with a libvirt job still active is left alone (resuming in the middle
/// of a migration's switchover is libvirt's business, not ours).
pub fn ensure_running_after_failure(hv: &dyn Hypervisor, vm: &str) -> AfterFailure {
    let state = match local_state(hv, vm) {
        Ok(Some(s)) => s,
        Ok(None) => return AfterFailure::NotHere,
        Err(e) => return AfterFailure::Unknown(e.to_string()),
    };
    match state {
        // Running with a job still on it: libvirt is still migrating it
        // (a restarted daemon takes its migrations up again), so whether
        // it stays here is not known yet.
        DomState::Running => {
            return match hv.local_job_active(vm) {
                Ok(true) => AfterFailure::Unknown("libvirt still runs a job on it".into()),
                _ => AfterFailure::Running,
            }
        }
        DomState::Paused => {}
        other => return AfterFailure::NotRunning(other),
    }
    match hv.local_job_active(vm) {
        Ok(false) => {}
        Ok(true) => {
            return AfterFailure::StillPaused("libvirt is still running a job on it".into())
        }
        Err(HvError::NoSuchDomain(_)) => return AfterFailure::NotHere,
        Err(e) => return AfterFailure::StillPaused(format!("cannot check its job: {e}")),
    }
    if let Err(e) = hv.resume_local(vm) {
        return AfterFailure::StillPaused(format!("resume failed: {e}"));
    }
    match local_state(hv, vm) {
        Ok(Some(DomState::Running)) => AfterFailure::Resumed,
        Ok(Some(s)) => AfterFailure::StillPaused(format!("resumed, but libvirt says {s}")),
        Ok(None) => AfterFailure::NotHere,
        Err(e) => AfterFailure::StillPaused(format!("resumed, but cannot confirm: {e}")),
    }
}

fn local_state(hv: &dyn Hypervisor, vm: &str) -> Result<Option<DomState>, HvError> {
    Ok(hv
        .local_domains()?
        .into_iter()
        .find(|d| d.name == vm)
        .map(|d| d.state))
}

#[cfg(test)]
mod tests {
    use super::sim::{ResumeMode, Sim};
    use super::*;

    fn sim_with(state: DomState) -> Sim {
        let sim = Sim::new("ha");
        sim.add_domain("ha", "a", state);
        sim
    }

    #[test]
    fn running_stays_untouched() {
        let sim = sim_with(DomState::Running);
        assert_eq!(
            ensure_running_after_failure(&sim, "a"),
            AfterFailure::Running
        );
        assert_eq!(sim.counters().resumes, 0);
    }

    #[test]
    fn running_with_a_job_still_on_it_is_not_known_to_stay() {
        // A restarted libvirtd took the migration up again: the VM runs
        // here now and may be on the destination in a second.
        let sim = sim_with(DomState::Running);
        sim.set_job_active("a", true);
        assert!(matches!(
            ensure_running_after_failure(&sim, "a"),
            AfterFailure::Unknown(_)
        ));
        sim.set_job_active("a", false);
        assert_eq!(
            ensure_running_after_failure(&sim, "a"),
            AfterFailure::Running
        );
    }

    #[test]
    fn paused_is_resumed_and_says_so() {
        let sim = sim_with(DomState::Paused);
        let r = ensure_running_after_failure(&sim, "a");
        assert_eq!(r, AfterFailure::Resumed);
        assert_eq!(sim.state_of("ha", "a"), Some(DomState::Running));
        assert_eq!(sim.counters().resumes, 1);
        assert!(r.describe("a").contains("resumed"));
    }

    #[test]
    fn a_failed_resume_reports_still_paused_with_the_reason() {
        let sim = sim_with(DomState::Paused);
        sim.resume_mode(ResumeMode::Fails("internal error: qemu said no".into()));
        let r = ensure_running_after_failure(&sim, "a");
        assert_eq!(
            r,
            AfterFailure::StillPaused("resume failed: internal error: qemu said no".into())
        );
        assert_eq!(sim.state_of("ha", "a"), Some(DomState::Paused));
        assert!(r.describe("a").contains("PAUSED"));
    }

    #[test]
    fn a_resume_that_changes_nothing_is_still_paused() {
        let sim = sim_with(DomState::Paused);
        sim.resume_mode(ResumeMode::NoEffect);
        assert_eq!(
            ensure_running_after_failure(&sim, "a"),
            AfterFailure::StillPaused("resumed, but libvirt says paused".into())
        );
    }

    #[test]
    fn paused_with_a_job_still_running_is_left_alone() {
        let sim = sim_with(DomState::Paused);
        sim.set_job_active("a", true);
        assert!(matches!(
            ensure_running_after_failure(&sim, "a"),
            AfterFailure::StillPaused(r) if r.contains("job")
        ));
        assert_eq!(sim.counters().resumes, 0);
    }

    #[test]
    fn absent_shut_off_and_blind_are_told_apart() {
        let sim = sim_with(DomState::ShutOff);
        assert_eq!(
            ensure_running_after_failure(&sim, "a"),
            AfterFailure::NotRunning(DomState::ShutOff)
        );
        assert_eq!(
            ensure_running_after_failure(&sim, "b"),
            AfterFailure::NotHere
        );
        sim.set_local_up(false);
        assert!(matches!(
            ensure_running_after_failure(&sim, "a"),
            AfterFailure::Unknown(r) if r.starts_with("libvirt does not answer")
        ));
    }

    #[test]
    fn states_from_libvirt() {
        assert_eq!(DomState::from_libvirt(1), DomState::Running);
        assert_eq!(DomState::from_libvirt(2), DomState::Running);
        assert_eq!(DomState::from_libvirt(3), DomState::Paused);
        assert_eq!(DomState::from_libvirt(5), DomState::ShutOff);
        for s in [0, 4, 6, 7, -1, 99] {
            assert_eq!(DomState::from_libvirt(s), DomState::Other);
            assert!(DomState::from_libvirt(s).is_here());
        }
        assert!(!DomState::ShutOff.is_here());
    }

    #[test]
    fn errors_read_well() {
        let e = HvError::TimedOut {
            what: "libvirt on hb".into(),
            after: Duration::from_secs(20),
        };
        assert_eq!(e.to_string(), "libvirt on hb did not answer within 20 s");
        assert_eq!(human(Duration::from_millis(50)), "50 ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5 s");
    }
}
