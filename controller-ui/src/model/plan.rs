//! Where an evacuation would move (or is moving) each VM: the `data` of
//! `plan` and of `evacuate`'s answer.

use serde_json::Value;

use crate::json::{bool_of, items, str_of, u64_of};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub vm: String,
    pub dest: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaceable {
    pub vm: String,
    pub reason: String,
    /// The VM cannot move at all (a passthrough device, an unmovable disk).
    pub unmovable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReason {
    pub host: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Set when this plan is an evacuation's (the `evacuate` answer).
    pub evacuation: Option<u64>,
    pub moves: Vec<Move>,
    pub unplaceable: Vec<Unplaceable>,
    pub peer_reasons: Vec<PeerReason>,
}

/// What the plan says of one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanFor<'a> {
    MovesTo(&'a str),
    CannotPlace(&'a str),
    NotInPlan,
}

impl Plan {
    pub fn from_json(data: &Value) -> Self {
        let moves = items(data, "moves")
            .iter()
            .filter_map(|m| {
                Some(Move {
                    vm: str_of(m, "vm")?,
                    dest: str_of(m, "dest").unwrap_or_else(|| "?".into()),
                })
            })
            .collect();
        let unplaceable = items(data, "unplaceable")
            .iter()
            .filter_map(|u| {
                Some(Unplaceable {
                    vm: str_of(u, "vm")?,
                    reason: str_of(u, "reason").unwrap_or_else(|| "no reason given".into()),
                    unmovable: bool_of(u, "unmovable").unwrap_or(false),
                })
            })
            .collect();
        let peer_reasons = items(data, "peer_reasons")
            .iter()
            .filter_map(|p| {
                Some(PeerReason {
                    host: str_of(p, "host")?,
                    reason: str_of(p, "reason").unwrap_or_else(|| "no reason given".into()),
                })
            })
            .collect();
        Self {
            evacuation: u64_of(data, "evacuation"),
            moves,
            unplaceable,
            peer_reasons,
        }
    }

    pub fn for_vm(&self, vm: &str) -> PlanFor<'_> {
        if let Some(m) = self.moves.iter().find(|m| m.vm == vm) {
            return PlanFor::MovesTo(&m.dest);
        }
        match self.unplaceable.iter().find(|u| u.vm == vm) {
            Some(u) => PlanFor::CannotPlace(&u.reason),
            None => PlanFor::NotInPlan,
        }
    }
}
