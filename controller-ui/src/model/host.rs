//! A host: its line, its own `status`, and what peers say of it (`hosts`).

use serde_json::Value;

use crate::input::Millis;
use crate::json::{bool_of, f64_of, items, str_of, strings_of, u64_of};

/// The controller's own serial line to a host. This is the controller's
/// view, not the agent's: a host whose line is down may be perfectly well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineState {
    /// Known only from a peer's `hosts` answer: no line of ours reaches it.
    NoLine,
    Connecting {
        since: Millis,
    },
    Up {
        since: Millis,
    },
    Dropped {
        since: Millis,
        reason: String,
    },
}

/// What a host is doing (`status.state`, or a peer's view in `hosts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostState {
    Active,
    Maintenance,
    Evacuating,
    Empty,
    PoweringOff,
    /// A peer that another host cannot reach, with the word it gave.
    Unreachable(String),
    Other(String),
    Unknown,
}

impl HostState {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("active") => Self::Active,
            Some("maintenance") => Self::Maintenance,
            Some("evacuating") => Self::Evacuating,
            Some("empty") => Self::Empty,
            Some(other) => Self::Other(other.to_owned()),
            None => Self::Unknown,
        }
    }

    pub fn label(&self) -> String {
        match self {
            Self::Active => "active".into(),
            Self::Maintenance => "maintenance".into(),
            Self::Evacuating => "evacuating".into(),
            Self::Empty => "empty".into(),
            Self::PoweringOff => "powering off".into(),
            Self::Unreachable(_) => "unreachable".into(),
            Self::Other(s) => s.clone(),
            Self::Unknown => "?".into(),
        }
    }
}

/// A host's hardware health. `Unknown` is what peers report of each other:
/// only a host's own agent knows its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    Degraded,
    Faulty,
    Unknown,
}

impl Health {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("ok") => Self::Ok,
            Some("degraded") => Self::Degraded,
            Some("faulty") => Self::Faulty,
            _ => Self::Unknown,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Faulty => "FAULTY",
            Self::Unknown => "unknown",
        }
    }
}

/// A host's `status` answer (its own figures).
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub host: Option<String>,
    pub location: Option<String>,
    pub state: HostState,
    pub maintenance: Option<bool>,
    pub health: Health,
    pub health_reasons: Vec<String>,
    pub cpu_pct: Option<f64>,
    pub mem_free_mib: Option<u64>,
    pub mem_total_mib: Option<u64>,
    pub vms_running: Option<u64>,
    pub libvirt: Option<String>,
    pub journal_note: Option<String>,
}

impl Status {
    pub fn from_json(data: &Value) -> Self {
        Self {
            host: str_of(data, "host"),
            location: str_of(data, "location"),
            state: HostState::parse(data.get("state").and_then(Value::as_str)),
            maintenance: bool_of(data, "maintenance"),
            health: Health::parse(data.get("health").and_then(Value::as_str)),
            health_reasons: strings_of(data, "health_reasons"),
            cpu_pct: f64_of(data, "cpu_pct"),
            mem_free_mib: u64_of(data, "mem_free_mib"),
            mem_total_mib: u64_of(data, "mem_total_mib"),
            vms_running: u64_of(data, "vms_running"),
            libvirt: str_of(data, "libvirt"),
            journal_note: str_of(data, "journal_note"),
        }
    }
}

/// One entry of a `hosts` answer: a host as the answering agent sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostsEntry {
    pub name: String,
    /// The answering host itself (its entry is as good as its `status`).
    pub is_self: bool,
    pub reachable: bool,
    pub error: Option<String>,
    pub state: HostState,
    pub health: Health,
    pub health_reasons: Vec<String>,
    pub cpu_pct: Option<f64>,
    pub mem_free_mib: Option<u64>,
    pub mem_total_mib: Option<u64>,
    pub vms_running: Option<u64>,
    pub location: Option<String>,
}

impl HostsEntry {
    pub fn from_json(v: &Value) -> Option<Self> {
        let reachable = bool_of(v, "reachable").unwrap_or(false);
        let error = str_of(v, "error");
        let state = if reachable {
            HostState::parse(v.get("state").and_then(Value::as_str))
        } else {
            HostState::Unreachable(error.clone().unwrap_or_else(|| "no answer".into()))
        };
        Some(Self {
            name: str_of(v, "name")?,
            is_self: bool_of(v, "self").unwrap_or(false),
            reachable,
            error,
            state,
            health: Health::parse(v.get("health").and_then(Value::as_str)),
            health_reasons: strings_of(v, "health_reasons"),
            cpu_pct: f64_of(v, "cpu_pct"),
            mem_free_mib: u64_of(v, "mem_free_mib"),
            mem_total_mib: u64_of(v, "mem_total_mib"),
            vms_running: u64_of(v, "vms_running"),
            location: str_of(v, "location"),
        })
    }

    /// Every entry of a `hosts` answer's `data.hosts` that has a name.
    pub fn list_from_json(data: &Value) -> Vec<Self> {
        items(data, "hosts")
            .iter()
            .filter_map(Self::from_json)
            .collect()
    }
}
