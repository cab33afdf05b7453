//! The agent's answers and events that the controller reads, typed
//! (docs/protocol.md). Only the fields used are declared, each optional
//! where the agent may send `null`; unknown fields are ignored, so a newer
//! agent's additions do not break an older controller.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
#[error("the agent's '{what}' does not read as expected")]
pub struct ShapeError {
    pub what: &'static str,
    #[source]
    pub source: serde_json::Error,
}

/// Reads `value` as `T`; `what` names it in the error.
pub fn read<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    value: Value,
) -> Result<T, ShapeError> {
    serde_json::from_value(value).map_err(|source| ShapeError { what, source })
}

/// `status`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Status {
    pub host: String,
    pub location: Option<String>,
    pub state: String,
    pub health: String,
    pub health_reasons: Vec<String>,
    pub cpus: Option<u64>,
    pub cpu_pct: Option<f64>,
    pub mem_total_mib: Option<u64>,
    pub mem_free_mib: Option<u64>,
    pub vms_running: Option<u64>,
    pub vms_defined: Option<u64>,
    pub libvirt: Option<String>,
    pub last_result: Option<LastResult>,
}

/// `status.last_result`: the last evacuation's verdict, in short.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct LastResult {
    pub evacuation: u64,
    pub at: String,
    pub safe_to_power_off: bool,
    pub moved: u64,
    pub still_here: u64,
    pub checked: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Move {
    pub vm: String,
    pub dest: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Unplaceable {
    pub vm: String,
    pub reason: String,
}

/// The answer to `evacuate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Started {
    pub evacuation: u64,
    pub moves: Vec<Move>,
    pub unplaceable: Vec<Unplaceable>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Failed {
    pub vm: String,
    pub dest: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct StillHere {
    pub vm: String,
    pub state: String,
}

/// `evacuation.done`: the verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct EvacuationDone {
    pub evacuation: u64,
    pub host: String,
    pub moved: Vec<Move>,
    pub failed: Vec<Failed>,
    pub unplaceable: Vec<Unplaceable>,
    pub still_here: Vec<StillHere>,
    pub remaining: Vec<String>,
    pub safe_to_power_off: bool,
    pub check_error: Option<String>,
}

/// `migration.progress`, `migration.done` and `migration.failed`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Migration {
    pub vm: String,
    pub dest: Option<String>,
    pub percent: Option<f64>,
    pub remaining_mib: Option<f64>,
    pub eta_s: Option<u64>,
    pub downtime_ms: Option<u64>,
    pub seconds: Option<f64>,
    pub error: Option<String>,
    pub now_on: Option<String>,
    pub retrying_on: Option<String>,
}

/// `locate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Located {
    pub vm: String,
    pub host: Option<String>,
    pub location: Option<String>,
    /// `live`, `inactive`, `moved` or `unknown`.
    pub state: String,
    pub vm_state: Option<String>,
    pub to: Option<String>,
    pub stale: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The status line of docs/protocol.md reads.
    #[test]
    fn status_as_documented() {
        let data = json!({"age_s":0,"cpu_pct":100.0,"cpus":2,"health":"ok","health_reasons":[],"host":"ha","journal":"ok","journal_note":null,"last_result":{"at":"2026-12-01T05:01:09.024510029Z","checked":true,"evacuation":2,"moved":0,"safe_to_power_off":true,"still_here":0},"libvirt":"up","load1":4.31,"location":"rack 12 / U07","maintenance":true,"mem_allocated_mib":0,"mem_free_mib":22893,"mem_total_mib":24105,"stale":false,"state":"empty","vcpus_allocated":0,"version":"0.1.0","vms_defined":1,"vms_running":0});
        let s: Status = read("status", data).unwrap();
        assert_eq!(s.state, "empty");
        assert_eq!(s.mem_free_mib, Some(22893));
        assert_eq!(s.last_result.unwrap().evacuation, 2);
        let down =
            json!({"vms_running": null, "vms_defined": null, "last_result": null, "host": "ha"});
        let s: Status = read("status", down).unwrap();
        assert_eq!((s.vms_running, s.last_result), (None, None));
    }

    #[test]
    fn verdict_as_documented() {
        let data = json!({"check_error":null,"evacuation":2,"failed":[],"host":"ha","moved":[],"peer_reasons":[],"remaining":["db1","web1"],"safe_to_power_off":false,"still_here":[{"state":"paused","vm":"db1"},{"state":"running","vm":"web1"}],"unplaceable":[{"reason":"no candidate: no peers are known","vm":"db1"},{"reason":"no candidate: no peers are known","vm":"web1"}]});
        let v: EvacuationDone = read("evacuation.done", data).unwrap();
        assert!(!v.safe_to_power_off);
        assert_eq!(v.remaining, ["db1", "web1"]);
        assert_eq!(v.unplaceable[1].reason, "no candidate: no peers are known");
    }

    #[test]
    fn a_wrong_shape_is_an_error_naming_it() {
        let err = read::<Status>("status", json!({"cpus": "two"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the agent's 'status' does not read as expected"
        );
    }
}
