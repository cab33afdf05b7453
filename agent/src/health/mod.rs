//! This host's hardware health, from the host itself (no agent in any
//! guest): what is read each period ([`Readings`], by [`sysfs`], plus the
//! latest findings of the optional [`probe`]s, which run vendor tools on a
//! slower period) and what it means ([`eval::Evaluator`], pure: readings
//! and the time in, findings out), so every rule is tested in
//! microseconds with fixture values.

pub mod eval;
pub mod probe;
pub mod sysfs;
pub mod watch;

use serde::Serialize;

/// How healthy a host is; the worst finding decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Degraded,
    Faulty,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Degraded => "degraded",
            Level::Faulty => "faulty",
        }
    }
}

/// One thing that is not right, with a reason a person understands
/// ("mc0: 3 uncorrected memory errors in the last 5 s").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    /// What it is about, stable across periods ("edac:mc0:ue",
    /// "link:eno1"): a finding is held and cleared by its key.
    pub key: String,
    pub reason: String,
}

/// Error counters of one EDAC memory controller, totals since boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McCounts {
    /// `mc0`, `mc1`, ...
    pub name: String,
    pub corrected: u64,
    pub uncorrected: u64,
}

/// One thermal zone: its temperature and its critical trip point, in
/// millidegrees Celsius as sysfs gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thermal {
    /// `thermal_zone0 (x86_pkg_temp)`.
    pub name: String,
    pub temp_mc: i64,
    pub critical_mc: Option<i64>,
}

/// An hwmon alarm file that reads 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    /// `hwmon1 (nct6775) temp2_crit_alarm`.
    pub name: String,
    /// A `crit`, `emergency` or `lcrit` alarm, not a warning.
    pub critical: bool,
}

/// A configured network interface's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub name: String,
    /// `Some(true)`: up with a carrier; `None`: no such interface.
    pub up: Option<bool>,
    /// The kernel's word (`up`, `down`, `lowerlayerdown`, ...).
    pub operstate: String,
}

/// Everything read in one period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readings {
    pub edac: Vec<McCounts>,
    pub thermal: Vec<Thermal>,
    pub alarms: Vec<Alarm>,
    pub links: Vec<LinkState>,
    /// The probes' latest findings (SMART, the BMC, rasdaemon), judged
    /// where the probe ran: they only need holding.
    pub probes: Vec<Finding>,
}
