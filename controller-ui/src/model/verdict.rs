//! The end of an evacuation: `evacuation.done`.
//!
//! This is the one thing on the screen a person acts on by pulling a power
//! cord, so it fails closed: SAFE only when the agent said
//! `safe_to_power_off: true` *and* its own lists agree (nothing still here,
//! nothing remaining, libvirt was asked). Anything missing, garbled or
//! contradictory reads NOT SAFE, with a reason saying so.

use serde_json::Value;

use crate::json::{items, str_of, strings_of, u64_of};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub host: Option<String>,
    pub evacuation: Option<u64>,
    pub safe: bool,
    pub moved: usize,
    /// Every reason it is not safe, one sentence each, in the agent's words
    /// where it gave them; empty when safe.
    pub reasons: Vec<String>,
}

impl Verdict {
    pub fn from_json(data: &Value) -> Self {
        let said_safe = data.get("safe_to_power_off").and_then(Value::as_bool);
        let check_error = str_of(data, "check_error");
        let remaining = strings_of(data, "remaining");
        let still_here: Vec<(String, String)> = items(data, "still_here")
            .iter()
            .filter_map(|s| {
                let state = str_of(s, "state").unwrap_or_else(|| "other".into());
                Some((str_of(s, "vm")?, state))
            })
            .collect();

        let mut reasons = Vec::new();
        if said_safe.is_none() {
            reasons.push("the agent's verdict is missing or unreadable".to_owned());
        }
        if let Some(err) = &check_error {
            reasons.push(format!("cannot verify what still runs here: {err}"));
        }
        for (vm, state) in &still_here {
            reasons.push(still_here_reason(data, vm, state));
        }
        // `remaining` and `still_here` name the same VMs; a name only in
        // `remaining` is still a VM on the host.
        for vm in remaining
            .iter()
            .filter(|r| !still_here.iter().any(|(v, _)| v == *r))
        {
            reasons.push(format!("still here: {vm}"));
        }
        for p in items(data, "peer_reasons") {
            if let (Some(host), Some(reason)) = (str_of(p, "host"), str_of(p, "reason")) {
                reasons.push(format!("peer {host} took none: {reason}"));
            }
        }

        let lists_agree = check_error.is_none() && remaining.is_empty() && still_here.is_empty();
        let safe = said_safe == Some(true) && lists_agree;
        if said_safe == Some(true) && !lists_agree {
            reasons.insert(
                0,
                "the agent said safe, but its lists say otherwise".to_owned(),
            );
        }
        if !safe && reasons.is_empty() {
            reasons.push("the agent gave no reason".to_owned());
        }
        if safe {
            reasons.clear();
        }
        Self {
            host: str_of(data, "host"),
            evacuation: u64_of(data, "evacuation"),
            safe,
            moved: items(data, "moved").len(),
            reasons,
        }
    }
}

/// The agent's own wording: `still running here: VM: REASON` or
/// `still here, STATE: VM: REASON`, the reason being the VM's failed job's
/// error, why placement could not place it, or that it was not part of the
/// evacuation.
fn still_here_reason(data: &Value, vm: &str, state: &str) -> String {
    let named = |key: &str| {
        items(data, key)
            .iter()
            .find(|i| str_of(i, "vm").as_deref() == Some(vm))
            .cloned()
    };
    let why = if let Some(f) = named("failed") {
        str_of(&f, "error").unwrap_or_else(|| "its migration failed".into())
    } else if let Some(u) = named("unplaceable") {
        format!(
            "cannot be placed: {}",
            str_of(&u, "reason").unwrap_or_else(|| "no reason given".into())
        )
    } else {
        "not part of this evacuation".to_owned()
    };
    if state == "running" {
        format!("still running here: {vm}: {why}")
    } else {
        format!("still here, {state}: {vm}: {why}")
    }
}
