//! The agents' events, typed.

use serde_json::Value;

use crate::json::{f64_of, str_of, strings_of, u64_of};
use crate::model::host::Health;
use crate::model::progress::percent_of;
use crate::model::verdict::Verdict;
use crate::model::vm::VmState;

#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub job: Option<u64>,
    pub vm: String,
    pub dest: Option<String>,
    pub percent: f64,
    pub remaining_mib: Option<f64>,
    pub rate_mib_s: Option<f64>,
    pub eta_s: Option<u64>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    MigrationProgress(Progress),
    MigrationDone {
        job: Option<u64>,
        vm: String,
        dest: Option<String>,
        downtime_ms: Option<u64>,
        seconds: Option<f64>,
    },
    MigrationFailed {
        job: Option<u64>,
        vm: String,
        dest: Option<String>,
        error: String,
        note: Option<String>,
        retrying_on: Option<String>,
    },
    EvacuationDone(Verdict),
    HostHealth {
        health: Health,
        reasons: Vec<String>,
    },
    VmState {
        vm: String,
        what: Option<String>,
        state: Option<VmState>,
    },
    VmCrash {
        vm: String,
        action: Option<String>,
        reason: Option<String>,
    },
    HostEmpty,
    HostPoweroff,
    AgentStopping,
    EventsMissed(u64),
    /// An event this UI does not know, or one too garbled to use.
    Ignored(String),
}

impl Event {
    /// `name` is the event's `event` field, `data` its `data`.
    pub fn from_json(name: &str, data: &Value) -> Self {
        let vm = || str_of(data, "vm");
        let ignored = || Self::Ignored(name.to_owned());
        match name {
            "migration.progress" => match vm() {
                Some(vm) => Self::MigrationProgress(Progress {
                    job: u64_of(data, "job"),
                    vm,
                    dest: str_of(data, "dest"),
                    percent: percent_of(data),
                    remaining_mib: f64_of(data, "remaining_mib"),
                    rate_mib_s: f64_of(data, "rate_mib_s"),
                    eta_s: u64_of(data, "eta_s"),
                    note: str_of(data, "note"),
                }),
                None => ignored(),
            },
            "migration.done" => match vm() {
                Some(vm) => Self::MigrationDone {
                    job: u64_of(data, "job"),
                    vm,
                    dest: str_of(data, "dest"),
                    downtime_ms: u64_of(data, "downtime_ms"),
                    seconds: f64_of(data, "seconds"),
                },
                None => ignored(),
            },
            "migration.failed" => match vm() {
                Some(vm) => Self::MigrationFailed {
                    job: u64_of(data, "job"),
                    vm,
                    dest: str_of(data, "dest"),
                    error: str_of(data, "error").unwrap_or_else(|| "no reason given".into()),
                    note: str_of(data, "note"),
                    retrying_on: str_of(data, "retrying_on"),
                },
                None => ignored(),
            },
            "evacuation.done" => Self::EvacuationDone(Verdict::from_json(data)),
            "host.health" => Self::HostHealth {
                health: Health::parse(data.get("health").and_then(Value::as_str)),
                reasons: strings_of(data, "reasons"),
            },
            "vm.state" => match vm() {
                Some(vm) => Self::VmState {
                    vm,
                    what: str_of(data, "what"),
                    state: data
                        .get("state")
                        .and_then(Value::as_str)
                        .map(|s| VmState::parse(Some(s))),
                },
                None => ignored(),
            },
            "vm.crash" => match vm() {
                Some(vm) => Self::VmCrash {
                    vm,
                    action: str_of(data, "action"),
                    reason: str_of(data, "reason"),
                },
                None => ignored(),
            },
            "host.empty" => Self::HostEmpty,
            "host.poweroff" => Self::HostPoweroff,
            "agent.stopping" => Self::AgentStopping,
            "events.missed" => Self::EventsMissed(u64_of(data, "missed").unwrap_or(0)),
            _ => ignored(),
        }
    }
}
