//! `RUN_DIR/state.json`: what the agent publishes every
//! [`PUBLISH_PERIOD`](crate::PUBLISH_PERIOD) and the hook decides
//! admission by.
//!
//! ```json
//! {"host": "kvm3", "state": "active", "maintenance": false, "mem_total_mib": 65536,
//!  "mem_committed_mib": 8192, "mem_reserve_mib": 4096, "updated_unix": 1700000000}
//! ```
//!
//! Unknown fields are ignored, so an agent may add one before the hook
//! reads it.

use serde::{Deserialize, Serialize};

use crate::STALE_AFTER;

/// `state` words under which the host takes no VMs.
pub const REFUSING_STATES: [&str; 2] = ["maintenance", "evacuating"];

/// `mem_committed_mib`: memory of the VMs running here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The name the agent answers to (`[host] name`, else the hostname):
    /// the hook names the host by it in a refusal. Absent: the hook uses
    /// the hostname.
    #[serde(default)]
    pub host: Option<String>,
    /// `active`, `empty`, `maintenance` or `evacuating`.
    pub state: String,
    pub maintenance: bool,
    pub mem_total_mib: u64,
    pub mem_committed_mib: u64,
    pub mem_reserve_mib: u64,
    pub updated_unix: u64,
    /// The host's hardware health (`ok`, `degraded`, `faulty`) and why;
    /// absent from an older agent: taken as ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_reasons: Vec<String>,
}

/// Whether a published state can still be believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Older than [`STALE_AFTER`]: the agent is not there.
    Stale {
        age_s: u64,
    },
}

impl Published {
    /// Not accepting VMs: flagged, or in a state that empties the host.
    pub fn in_maintenance(&self) -> bool {
        self.maintenance || REFUSING_STATES.contains(&self.state.as_str())
    }

    /// Not sound enough to take VMs: degraded or faulty hardware.
    pub fn unhealthy(&self) -> bool {
        self.health.as_deref().is_some_and(|h| h != "ok")
    }

    /// Memory for VMs before promises: total - committed - reserve.
    pub fn free_mib(&self) -> u64 {
        self.mem_total_mib
            .saturating_sub(self.mem_committed_mib)
            .saturating_sub(self.mem_reserve_mib)
    }

    /// A timestamp in the future counts as fresh (same host, same clock:
    /// it can only be a clock step).
    pub fn freshness(&self, now_unix: u64) -> Freshness {
        let age_s = now_unix.saturating_sub(self.updated_unix);
        if age_s > STALE_AFTER.as_secs() {
            Freshness::Stale { age_s }
        } else {
            Freshness::Fresh
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Plain strings and integers: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Published, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(state: &str, maintenance: bool, updated_unix: u64) -> Published {
        Published {
            host: Some("kvm3".into()),
            state: state.into(),
            maintenance,
            mem_total_mib: 4096,
            mem_committed_mib: 1024,
            mem_reserve_mib: 512,
            updated_unix,
            health: None,
            health_reasons: Vec::new(),
        }
    }

    #[test]
    fn round_trips_and_ignores_unknown_fields() {
        let a = p("maintenance", true, 7);
        assert_eq!(Published::decode(&a.encode()).unwrap(), a);
        let with_extra = br#"{"state":"active","maintenance":false,"mem_total_mib":1,
            "mem_committed_mib":0,"mem_reserve_mib":0,"updated_unix":1,"extra":1}"#;
        let old = Published::decode(with_extra).unwrap();
        assert_eq!((old.state.as_str(), old.host), ("active", None));
        assert!(Published::decode(br#"{"state":"active"}"#).is_err());
        assert!(Published::decode(b"[]").is_err());
    }

    #[test]
    fn maintenance_by_flag_or_state() {
        assert!(p("active", true, 1).in_maintenance());
        assert!(p("maintenance", false, 1).in_maintenance());
        assert!(p("evacuating", false, 1).in_maintenance());
        assert!(!p("empty", false, 1).in_maintenance());
        assert!(!p("active", false, 1).in_maintenance());
    }

    #[test]
    fn free_memory_saturates() {
        let mut s = p("active", false, 1);
        assert_eq!(s.free_mib(), 2560);
        s.mem_committed_mib = u64::MAX;
        assert_eq!(s.free_mib(), 0);
    }

    #[test]
    fn stale_after_the_limit_and_never_from_the_future() {
        let limit = STALE_AFTER.as_secs();
        assert_eq!(
            p("a", false, 1000).freshness(1000 + limit),
            Freshness::Fresh
        );
        assert_eq!(
            p("a", false, 1000).freshness(1001 + limit),
            Freshness::Stale { age_s: limit + 1 }
        );
        assert_eq!(p("a", false, 2000).freshness(1000), Freshness::Fresh);
    }
}
