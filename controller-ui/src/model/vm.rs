//! A VM as a host's `vms` answer (and its events) describe it.

use serde_json::Value;

use crate::json::{f64_of, items, str_of, u64_of};

/// A VM's libvirt state, as the agents name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmState {
    Running,
    Paused,
    Shutoff,
    Crashed,
    Migrating,
    /// A state this UI does not know yet (a newer agent); shown as sent.
    Other(String),
    Unknown,
}

impl VmState {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("running") => Self::Running,
            Some("paused") => Self::Paused,
            Some("shutoff") => Self::Shutoff,
            Some("crashed") => Self::Crashed,
            Some("migrating") => Self::Migrating,
            Some(other) => Self::Other(other.to_owned()),
            None => Self::Unknown,
        }
    }

    pub fn label(&self) -> &str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Shutoff => "shutoff",
            Self::Crashed => "crashed",
            Self::Migrating => "migrating",
            Self::Other(s) => s,
            Self::Unknown => "?",
        }
    }

    /// Counted as "running" by the agent (`vms_running`): it is not shut off.
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Running | Self::Paused | Self::Migrating)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vm {
    pub name: String,
    pub state: VmState,
    pub vcpus: Option<u64>,
    pub mem_mib: Option<u64>,
    pub cpu_pct: Option<f64>,
}

impl Vm {
    /// One item of `vms`' `data.vms`; `None` without a name (a VM we could
    /// not name is one we could not act on or locate).
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            name: str_of(v, "name")?,
            state: VmState::parse(v.get("state").and_then(Value::as_str)),
            vcpus: u64_of(v, "vcpus"),
            mem_mib: u64_of(v, "mem_mib"),
            cpu_pct: f64_of(v, "cpu_pct"),
        })
    }
}

/// A host's `vms` answer: the list, and whether it is old.
#[derive(Debug, Clone, PartialEq)]
pub struct VmList {
    pub vms: Vec<Vm>,
    pub stale: bool,
    pub age_s: Option<u64>,
}

impl VmList {
    pub fn from_json(data: &Value) -> Self {
        let mut vms: Vec<Vm> = items(data, "vms")
            .iter()
            .filter_map(Vm::from_json)
            .collect();
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            vms,
            stale: data.get("stale").and_then(Value::as_bool).unwrap_or(false),
            age_s: u64_of(data, "age_s"),
        }
    }
}
