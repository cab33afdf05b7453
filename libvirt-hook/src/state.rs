//! Reading the local agent's published state, `RUN_DIR/state.json`
//! ([`Published`], defined with the agent in `rackside-contract`). A file
//! that is missing, unreadable or stale means "the agent is not here":
//! the caller admits.

use std::io::Read;
use std::path::Path;

use rackside_contract::{Freshness, Published, STATE_FILE};

/// A state file is a few hundred bytes.
const MAX_BYTES: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {STATE_FILE}")]
    Read(#[source] std::io::Error),
    #[error("cannot parse {STATE_FILE}")]
    Parse(#[source] serde_json::Error),
    #[error("{STATE_FILE} is stale (updated {age} s ago)")]
    Stale { age: u64 },
}

/// Parses and checks freshness.
pub fn parse(bytes: &[u8], now_unix: u64) -> Result<Published, StateError> {
    let s = Published::decode(bytes).map_err(StateError::Parse)?;
    match s.freshness(now_unix) {
        Freshness::Fresh => Ok(s),
        Freshness::Stale { age_s } => Err(StateError::Stale { age: age_s }),
    }
}

pub fn load(run_dir: &Path, now_unix: u64) -> Result<Published, StateError> {
    let f = std::fs::File::open(run_dir.join(STATE_FILE)).map_err(StateError::Read)?;
    let mut buf = Vec::new();
    f.take(MAX_BYTES)
        .read_to_end(&mut buf)
        .map_err(StateError::Read)?;
    parse(&buf, now_unix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackside_contract::STALE_AFTER;

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
    fn stale_state_is_an_error() {
        let limit = STALE_AFTER.as_secs();
        assert!(parse(json("maintenance", true, 1000).as_bytes(), 1000 + limit).is_ok());
        assert!(matches!(
            parse(json("maintenance", true, 1000).as_bytes(), 1001 + limit),
            Err(StateError::Stale { age }) if age == limit + 1
        ));
    }

    #[test]
    fn unreadable_state_is_an_error() {
        assert!(parse(b"", 0).is_err());
        assert!(parse(b"{\"state\":\"active\"}", 0).is_err());
        assert!(load(Path::new("/nonexistent/rackside"), 0).is_err());
        let d = std::env::temp_dir().join(format!("rackside-hook-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join(STATE_FILE)).unwrap();
        assert!(matches!(load(&d, 0), Err(StateError::Read(_))));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
