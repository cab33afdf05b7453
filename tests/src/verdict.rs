//! An evacuation's verdict against libvirt on the evacuated host: SAFE
//! only when libvirt shows nothing active there (running, paused or in any
//! other live state); NOT SAFE lists exactly what is.

use serde_json::Value;

use crate::lab::Lab;
use crate::virsh;

/// Why `verdict` (an `evacuation.done` data object) is not the truth
/// about a host where libvirt shows `active`; None when it is.
pub fn mismatch(verdict: &Value, active: &[String]) -> Option<String> {
    let mut active = active.to_vec();
    active.sort();
    let mut remaining: Vec<String> = verdict["remaining"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    remaining.sort();
    match verdict["safe_to_power_off"].as_bool() {
        Some(true) if active.is_empty() && remaining.is_empty() => None,
        Some(true) => Some(format!(
            "SAFE, but libvirt shows {active:?} active there (verdict lists {remaining:?})"
        )),
        Some(false) if remaining == active && !active.is_empty() => None,
        Some(false) if active.is_empty() => Some(format!(
            "NOT SAFE, but libvirt shows nothing active there (verdict lists {remaining:?})"
        )),
        Some(false) => Some(format!(
            "NOT SAFE lists {remaining:?}, libvirt shows {active:?} active there"
        )),
        None => Some("no safe_to_power_off in the verdict".into()),
    }
}

impl Lab {
    /// Names libvirt shows active (in any live state) on `host`.
    pub fn active_names(&self, host: &str) -> Vec<String> {
        let uri = self
            .host(host)
            .unwrap_or_else(|e| panic!("{e}"))
            .local_uri
            .clone();
        virsh::states(&uri)
            .unwrap_or_else(|e| panic!("libvirt on {host}: {e}"))
            .into_iter()
            .filter(|(_, s)| s.is_active())
            .map(|(n, _)| n)
            .collect()
    }

    /// Panics unless `verdict` tells the truth about `host` as its libvirt
    /// shows it now.
    pub fn assert_verdict_true(&self, host: &str, verdict: &Value) {
        let active = self.active_names(host);
        if let Some(why) = mismatch(verdict, &active) {
            panic!("untrue verdict for {host}: {why}\nverdict: {verdict}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn safe_needs_an_empty_host_and_not_safe_names_what_remains() {
        let safe = json!({"safe_to_power_off": true, "remaining": []});
        assert_eq!(mismatch(&safe, &[]), None);
        assert!(mismatch(&safe, &["p".into()]).is_some());
        let not = json!({"safe_to_power_off": false, "remaining": ["b", "a"]});
        assert_eq!(mismatch(&not, &["a".into(), "b".into()]), None);
        assert!(mismatch(&not, &["a".into()]).is_some());
        assert!(mismatch(&not, &[]).is_some());
        // Unable to check (libvirt down) lists nothing: untrue if VMs remain.
        let blind = json!({"safe_to_power_off": false, "remaining": [], "check_error": "x"});
        assert!(mismatch(&blind, &["a".into()]).is_some());
        assert!(mismatch(&json!({}), &[]).is_some());
    }
}
