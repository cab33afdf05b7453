//! Where a VM is: the `data` of `locate`.

use serde_json::Value;

use crate::json::{bool_of, str_of, strings_of, u64_of};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub vm: String,
    /// `live`, `inactive`, `moved` or `unknown` (or a newer word).
    pub state: String,
    pub host: Option<String>,
    pub location: Option<String>,
    pub vm_state: Option<String>,
    pub from: Option<String>,
    pub unreachable_peers: Vec<String>,
    pub stale: bool,
    pub age_s: Option<u64>,
}

impl Located {
    pub fn from_json(data: &Value) -> Option<Self> {
        Some(Self {
            vm: str_of(data, "vm")?,
            state: str_of(data, "state").unwrap_or_else(|| "unknown".into()),
            host: str_of(data, "host").or_else(|| str_of(data, "to")),
            location: str_of(data, "location"),
            vm_state: str_of(data, "vm_state"),
            from: str_of(data, "from"),
            unreachable_peers: strings_of(data, "unreachable_peers"),
            stale: bool_of(data, "stale").unwrap_or(false),
            age_s: u64_of(data, "age_s"),
        })
    }

    /// One sentence, as the agent's text form says it.
    pub fn sentence(&self) -> String {
        let place = match (&self.host, &self.location) {
            (Some(h), Some(l)) => format!("{h} ({l})"),
            (Some(h), None) => h.clone(),
            _ => "?".to_owned(),
        };
        let vm_state = self.vm_state.as_deref().unwrap_or("?");
        let mut s = match self.state.as_str() {
            "moved" if self.host.is_none() => format!(
                "{}: left {} by live migration; destination not confirmed yet",
                self.vm,
                self.from.as_deref().unwrap_or("?")
            ),
            "moved" => format!(
                "{}: moved from {} to {place}, {vm_state}",
                self.vm,
                self.from.as_deref().unwrap_or("?")
            ),
            "unknown" if self.unreachable_peers.is_empty() => {
                format!("{}: not found on any host that answered", self.vm)
            }
            "unknown" => format!(
                "{}: not found (not reachable: {})",
                self.vm,
                self.unreachable_peers.join(", ")
            ),
            state => format!("{}: {state} on {place}, {vm_state}", self.vm),
        };
        if self.stale {
            let age = self.age_s.map_or("?".to_owned(), crate::text::duration);
            s.push_str(&format!(" (last known, {age} old)"));
        }
        s
    }
}
