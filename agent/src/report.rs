//! What the evacuation controller answers, as typed values: the neutral
//! ground between the domain (evacuation) and the console, which renders
//! them (JSON through `Serialize`, text in `console::text`). Neither side
//! imports the other; both import this.

use std::path::PathBuf;

use rackside_protocol::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::migration::announce::Announce;
use crate::migration::timeline::Timeline;
use crate::placement::{Move, PeerReason, Unplaceable};

/// A command refused, with the protocol's code and the reason in words.
pub type Refusal = (ErrorCode, String);

/// `plan`: where each VM would go, and what cannot be placed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanReport {
    pub moves: Vec<Move>,
    pub unplaceable: Vec<Unplaceable>,
    /// Why each peer took none of the unplaced VMs (placement's
    /// [`PeerReason`]s); empty when every VM that can move was placed.
    pub peer_reasons: Vec<PeerReason>,
}

/// `evacuate`: the run's number and its plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvacuationStarted {
    pub evacuation: u64,
    pub moves: Vec<Move>,
    pub unplaceable: Vec<Unplaceable>,
    pub peer_reasons: Vec<PeerReason>,
}

/// `migrate`: the job and where it goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationStarted {
    pub job: u64,
    #[serde(skip)]
    pub vm: String,
    pub dest: String,
}

/// A job's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Queued,
    Running,
    Done,
    Failed,
    Aborted,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Done | Phase::Failed | Phase::Aborted)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::Aborted => "aborted",
        }
    }
}

/// What a run is: an evacuation, or one `migrate` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Evacuate,
    Migrate,
}

/// One line of `jobs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    pub id: u64,
    pub run: u64,
    pub kind: Kind,
    pub vm: String,
    pub dest: String,
    pub phase: Phase,
    pub percent: f64,
    pub remaining_mib: Option<f64>,
    pub rate_mib_s: Option<f64>,
    pub eta_s: Option<u64>,
    pub downtime_ms: Option<u64>,
    pub seconds: Option<f64>,
    pub data_mib: Option<f64>,
    pub error: Option<String>,
    pub note: Option<String>,
    pub tried: Vec<String>,
    pub offline: bool,
    /// A finished migration's moments (docs/protocol.md); empty otherwise.
    pub timeline: Timeline,
    /// A finished live migration's announcement (docs/protocol.md
    /// "Announcement"); null otherwise.
    pub announce: Option<Announce>,
}

/// `jobs`: the current and the last run's jobs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobsReport {
    pub jobs: Vec<JobRow>,
    pub running: bool,
}

/// `abort`: the VMs whose migrations were stopped (or are being stopped).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Aborted {
    pub aborted: Vec<String>,
}

/// `maintenance on|off`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaintenanceReport {
    pub state: &'static str,
    pub maintenance: bool,
}

/// `poweroff`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoweringOff {
    pub powering_off: bool,
}

/// `identify`: started; its result goes to the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentifyStarted {}

/// A VM the run moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moved {
    pub vm: String,
    pub dest: String,
    pub downtime_ms: Option<u64>,
    pub seconds: Option<f64>,
}

/// A VM the run did not move, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotMoved {
    pub vm: String,
    pub dest: String,
    pub phase: Phase,
    pub error: Option<String>,
    pub tried: Vec<String>,
}

/// A VM libvirt still shows here, with its state: a paused VM is
/// still here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StillHere {
    pub vm: String,
    /// running, paused, shutoff or other.
    pub state: String,
}

/// The end of a run, checked against libvirt: the only ground for SAFE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub evacuation: u64,
    pub host: String,
    pub moved: Vec<Moved>,
    pub failed: Vec<NotMoved>,
    pub unplaceable: Vec<Unplaceable>,
    /// Why each peer took none of `unplaceable` (as planned at the start).
    #[serde(default)]
    pub peer_reasons: Vec<PeerReason>,
    /// Names of the VMs libvirt shows active here (running, paused or
    /// migrating).
    pub remaining: Vec<String>,
    /// The same VMs with their state.
    #[serde(default)]
    pub still_here: Vec<StillHere>,
    pub safe_to_power_off: bool,
    pub check_error: Option<String>,
}

/// The last evacuation's verdict in a few figures, for `status`, while it
/// still describes this host: until maintenance is turned off or another
/// run starts (docs/protocol.md, `status`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastResult {
    pub evacuation: u64,
    /// When it ended (RFC 3339, UTC).
    pub at: String,
    pub safe_to_power_off: bool,
    pub moved: usize,
    /// VMs libvirt showed still here at the end.
    pub still_here: usize,
    /// Whether libvirt could be asked what still runs here.
    pub checked: bool,
}

impl LastResult {
    pub fn of(v: &Verdict, at: String) -> LastResult {
        LastResult {
            evacuation: v.evacuation,
            at,
            safe_to_power_off: v.safe_to_power_off,
            moved: v.moved.len(),
            still_here: v.still_here.len(),
            checked: v.check_error.is_none(),
        }
    }
}

/// A journal that could not be used as it was: where the old file went and
/// why. Persisted in the new journal until acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damage {
    /// When it was found (RFC 3339).
    pub at: String,
    /// The damaged file, kept byte for byte.
    pub moved_to: PathBuf,
    pub reason: String,
    /// Lines that parsed and were recovered.
    pub lines_kept: usize,
    /// Lines that did not parse (0 when the file could not be read at all).
    pub lines_bad: usize,
}

impl Damage {
    /// One line for a person: what happened and what to do.
    pub fn note(&self) -> String {
        format!(
            "the journal was damaged ({}); it was moved to {} and {} lines were recovered; \
             evacuate and migrate are refused until an operator checks it and types 'journal ack'",
            self.reason,
            self.moved_to.display(),
            self.lines_kept
        )
    }
}

/// What `journal` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalStatus {
    pub path: PathBuf,
    pub damage: Option<Damage>,
    pub torn: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v<T: Serialize>(x: &T) -> serde_json::Value {
        serde_json::to_value(x).unwrap()
    }

    /// The answers' `data` is the JSON the protocol has always sent.
    #[test]
    fn results_serialise_to_the_protocol_shapes() {
        let row = JobRow {
            id: 4,
            run: 2,
            kind: Kind::Evacuate,
            vm: "a".into(),
            dest: "hb".into(),
            phase: Phase::Running,
            percent: 12.5,
            remaining_mib: Some(100.0),
            rate_mib_s: None,
            eta_s: None,
            downtime_ms: None,
            seconds: None,
            data_mib: None,
            error: None,
            note: Some("slow".into()),
            tried: vec!["hb".into()],
            offline: false,
            timeline: Timeline::default(),
            announce: None,
        };
        assert_eq!(
            v(&JobsReport {
                jobs: vec![row],
                running: true
            }),
            json!({"jobs": [{"id": 4, "run": 2, "kind": "evacuate", "vm": "a", "dest": "hb",
                "phase": "running", "percent": 12.5, "remaining_mib": 100.0, "rate_mib_s": null,
                "eta_s": null, "downtime_ms": null, "seconds": null, "data_mib": null,
                "error": null, "note": "slow", "tried": ["hb"], "offline": false,
                "timeline": [], "announce": null}],
                "running": true})
        );
        let moves = vec![Move {
            vm: "a".into(),
            dest: "hb".into(),
        }];
        let unplaceable = vec![Unplaceable {
            vm: "b".into(),
            reason: "too big".into(),
            unmovable: false,
        }];
        let peer_reasons = vec![PeerReason {
            host: "hb".into(),
            reason: "full (needs 2048 MiB, has 0 MiB free)".into(),
        }];
        assert_eq!(
            v(&EvacuationStarted {
                evacuation: 3,
                moves: moves.clone(),
                unplaceable: unplaceable.clone(),
                peer_reasons: peer_reasons.clone(),
            }),
            json!({"evacuation": 3, "moves": [{"vm": "a", "dest": "hb"}],
                   "unplaceable": [{"vm": "b", "reason": "too big"}],
                   "peer_reasons": [{"host": "hb",
                                     "reason": "full (needs 2048 MiB, has 0 MiB free)"}]})
        );
        assert_eq!(
            v(&PlanReport {
                moves,
                unplaceable,
                peer_reasons: Vec::new()
            }),
            json!({"moves": [{"vm": "a", "dest": "hb"}],
                   "unplaceable": [{"vm": "b", "reason": "too big"}],
                   "peer_reasons": []})
        );
        // A VM that cannot move at all says so; the others' JSON is as it
        // always was.
        let gpu = Unplaceable {
            vm: "g".into(),
            reason: "cannot move".into(),
            unmovable: true,
        };
        assert_eq!(
            v(&gpu),
            json!({"vm": "g", "reason": "cannot move", "unmovable": true})
        );
        let old: Unplaceable = serde_json::from_value(json!({"vm": "g", "reason": "x"})).unwrap();
        assert!(!old.unmovable);
        assert_eq!(
            v(&MigrationStarted {
                job: 9,
                vm: "a".into(),
                dest: "hb".into()
            }),
            json!({"job": 9, "dest": "hb"})
        );
        assert_eq!(
            v(&Aborted {
                aborted: vec!["a".into()]
            }),
            json!({"aborted": ["a"]})
        );
        assert_eq!(
            v(&MaintenanceReport {
                state: "maintenance",
                maintenance: true
            }),
            json!({"state": "maintenance", "maintenance": true})
        );
        assert_eq!(
            v(&PoweringOff { powering_off: true }),
            json!({"powering_off": true})
        );
        assert_eq!(v(&IdentifyStarted {}), json!({}));
    }
}
