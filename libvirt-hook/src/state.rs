//! The local agent's published state, `RUN_DIR/state.json`:
//!
//! ```json
//! {"state": "active", "maintenance": false, "mem_total_mib": 65536,
//!  "mem_committed_mib": 8192, "mem_reserve_mib": 4096, "updated_unix": 1700000000}
//! ```
//!
//! Unknown fields are ignored. A file that is missing, unreadable or older
//! than [`STALE_AFTER_SECS`] means "the agent is not here": admit.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;

pub const FILE: &str = "state.json";
pub const STALE_AFTER_SECS: u64 = 300;
/// A state file is a few hundred bytes.
const MAX_BYTES: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {FILE}")]
    Read(#[source] std::io::Error),
    #[error("cannot parse {FILE}")]
    Parse(#[source] serde_json::Error),
    #[error("{FILE} is stale (updated {age} s ago)")]
    Stale { age: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HostState {
    pub state: String,
    pub maintenance: bool,
    pub mem_total_mib: u64,
    pub mem_committed_mib: u64,
    pub mem_reserve_mib: u64,
    pub updated_unix: u64,
}

impl HostState {
    /// Not accepting VMs: flagged, or in a state that empties the host.
    pub fn in_maintenance(&self) -> bool {
        self.maintenance || matches!(self.state.as_str(), "maintenance" | "evacuating")
    }

    /// Memory for VMs before promises: total - committed - reserve.
    pub fn free_mib(&self) -> u64 {
        self.mem_total_mib
            .saturating_sub(self.mem_committed_mib)
            .saturating_sub(self.mem_reserve_mib)
    }
}

/// Parses and checks freshness. A timestamp in the future counts as fresh
/// (same host, same clock: it can only be a clock step).
pub fn parse(bytes: &[u8], now_unix: u64) -> Result<HostState, StateError> {
    let s: HostState = serde_json::from_slice(bytes).map_err(StateError::Parse)?;
    let age = now_unix.saturating_sub(s.updated_unix);
    if age > STALE_AFTER_SECS {
        return Err(StateError::Stale { age });
    }
    Ok(s)
}

pub fn load(run_dir: &Path, now_unix: u64) -> Result<HostState, StateError> {
    let f = std::fs::File::open(run_dir.join(FILE)).map_err(StateError::Read)?;
    let mut buf = Vec::new();
    f.take(MAX_BYTES)
        .read_to_end(&mut buf)
        .map_err(StateError::Read)?;
    parse(&buf, now_unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(state: &str, maintenance: bool, updated: u64) -> String {
        format!(
            r#"{{"state":"{state}","maintenance":{maintenance},"mem_total_mib":4096,
                "mem_committed_mib":1024,"mem_reserve_mib":512,"updated_unix":{updated},"extra":1}}"#
        )
    }

    #[test]
    fn parses_fresh_state() {
        let s = parse(json("active", false, 1000).as_bytes(), 1100).unwrap();
        assert_eq!(s.free_mib(), 2560);
        assert!(!s.in_maintenance());
    }

    #[test]
    fn maintenance_by_flag_or_state() {
        assert!(parse(json("active", true, 1).as_bytes(), 1)
            .unwrap()
            .in_maintenance());
        assert!(parse(json("maintenance", false, 1).as_bytes(), 1)
            .unwrap()
            .in_maintenance());
        assert!(parse(json("evacuating", false, 1).as_bytes(), 1)
            .unwrap()
            .in_maintenance());
        assert!(!parse(json("empty", false, 1).as_bytes(), 1)
            .unwrap()
            .in_maintenance());
    }

    #[test]
    fn stale_state_is_an_error() {
        assert!(parse(json("maintenance", true, 1000).as_bytes(), 1300).is_ok());
        assert!(matches!(
            parse(json("maintenance", true, 1000).as_bytes(), 1301),
            Err(StateError::Stale { age: 301 })
        ));
        assert!(
            parse(json("active", false, 2000).as_bytes(), 1000).is_ok(),
            "future is fresh"
        );
    }

    #[test]
    fn unreadable_state_is_an_error() {
        assert!(parse(b"", 0).is_err());
        assert!(parse(b"{\"state\":\"active\"}", 0).is_err());
        assert!(parse(b"[]", 0).is_err());
        assert!(load(Path::new("/nonexistent/rackside"), 0).is_err());
    }

    #[test]
    fn saturating_free() {
        let mut s = parse(json("active", false, 1).as_bytes(), 1).unwrap();
        s.mem_committed_mib = u64::MAX;
        assert_eq!(s.free_mib(), 0);
    }
}
