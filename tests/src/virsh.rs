//! virsh, the administrator's own tool: the lab uses it both as the
//! reference truth the agent is checked against and as the sequential
//! baseline evacuations are compared with.

use std::process::Command;

use crate::cmd::{self, CmdError};

/// Runs virsh against `uri`, bounded in time so a wedged libvirtd cannot
/// hang a test or a teardown.
pub fn run(uri: &str, args: &[&str]) -> Result<String, CmdError> {
    let out = cmd::run(
        Command::new("timeout")
            .args(["--kill-after=5", "120", "virsh", "-q", "-c", uri])
            .args(args),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Names of domains in a `virsh list --name` output: one a line, taken
/// verbatim (a name may end in a CR or a C1 code such as NEL, which
/// trimming would eat).
pub fn parse_names(out: &str) -> Vec<String> {
    out.split('\n')
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Running (or paused: anything active) domains.
pub fn active(uri: &str) -> Result<Vec<String>, CmdError> {
    Ok(parse_names(&run(uri, &["list", "--name"])?))
}

/// Every domain, defined or running.
pub fn all(uri: &str) -> Result<Vec<String>, CmdError> {
    Ok(parse_names(&run(uri, &["list", "--all", "--name"])?))
}

/// `virsh domstate`, or None when the domain does not exist there.
pub fn domstate(uri: &str, name: &str) -> Option<String> {
    run(uri, &["domstate", name])
        .ok()
        .map(|s| s.trim().to_owned())
}

/// A domain's state and its reason, as libvirt numbers them
/// (`virDomainState`, `virDomain*Reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomState {
    pub state: u32,
    pub reason: u32,
}

impl DomState {
    pub const RUNNING: u32 = 1;
    pub const PAUSED: u32 = 3;
    pub const SHUTOFF: u32 = 5;
    /// `VIR_DOMAIN_PAUSED_MIGRATION`, `_STARTING_UP`, `_POSTCOPY`: paused
    /// because a migration is under way (either end; an incoming domain
    /// starts up paused).
    const PAUSED_BY_MIGRATION: [u32; 3] = [2, 11, 12];

    /// Anything but shut off: running, paused, crashed, in shutdown...
    /// An active domain holds a QEMU and counts as "still here".
    pub fn is_active(self) -> bool {
        self.state != Self::SHUTOFF
    }

    pub fn is_running(self) -> bool {
        self.state == Self::RUNNING
    }

    /// Paused by an ongoing migration (the incoming end, or the source
    /// during switch-over): legitimately active beside a running twin.
    pub fn is_migration_pause(self) -> bool {
        self.state == Self::PAUSED && Self::PAUSED_BY_MIGRATION.contains(&self.reason)
    }

    /// Like virsh's `domstate --reason`, for messages.
    pub fn describe(self) -> String {
        let state = match self.state {
            0 => "nostate",
            1 => "running",
            2 => "blocked",
            3 => "paused",
            4 => "shutdown",
            5 => "shutoff",
            6 => "crashed",
            7 => "pmsuspended",
            _ => "state?",
        };
        let reason = match (self.state, self.reason) {
            (1, 1) => "booted",
            (1, 2) => "migrated",
            (1, 5) => "unpaused",
            (1, 6) => "migration-canceled",
            (3, 1) => "user",
            (3, 2) => "migration",
            (3, 5) => "ioerror",
            (3, 10) => "crashed",
            (3, 11) => "starting-up",
            (3, 12) => "postcopy",
            (3, 13) => "postcopy-failed",
            (3, 14) => "api-error",
            _ => "",
        };
        if reason.is_empty() {
            format!("{state}({})", self.reason)
        } else {
            format!("{state}({reason})")
        }
    }
}

/// Every domain's state from `virsh domstats --state`: one virsh call
/// for the whole host, names taken verbatim (they may hold any byte
/// libvirt accepts, a CR or C1 codes included).
pub fn parse_domstats(out: &str) -> std::collections::BTreeMap<String, DomState> {
    let mut map = std::collections::BTreeMap::new();
    let mut current: Option<(String, Option<u32>, Option<u32>)> = None;
    let mut flush = |c: Option<(String, Option<u32>, Option<u32>)>| {
        if let Some((name, Some(state), reason)) = c {
            map.insert(
                name,
                DomState {
                    state,
                    reason: reason.unwrap_or(0),
                },
            );
        }
    };
    for line in out.split('\n') {
        if let Some(rest) = line.strip_prefix("Domain: '") {
            flush(current.take());
            let name = rest.strip_suffix('\'').unwrap_or(rest);
            current = Some((name.to_owned(), None, None));
        } else if let Some(c) = current.as_mut() {
            let l = line.trim_matches(' ');
            if let Some(v) = l.strip_prefix("state.state=") {
                c.1 = v.trim().parse().ok();
            } else if let Some(v) = l.strip_prefix("state.reason=") {
                c.2 = v.trim().parse().ok();
            }
        }
    }
    flush(current);
    map
}

/// The state of every domain defined or running on the host at `uri`.
pub fn states(uri: &str) -> Result<std::collections::BTreeMap<String, DomState>, CmdError> {
    Ok(parse_domstats(&run(uri, &["domstats", "--state"])?))
}

/// A field of `virsh dominfo` / `domjobinfo` style "Key:   value" output.
pub fn field(out: &str, key: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

/// A size such as "64.027 MiB" or "1.5 GiB" in MiB.
pub fn parse_mib(s: &str) -> Option<f64> {
    let mut it = s.split_whitespace();
    let n: f64 = it.next()?.parse().ok()?;
    let factor = match it.next()? {
        "B" => 1.0 / (1024.0 * 1024.0),
        "KiB" => 1.0 / 1024.0,
        "MiB" => 1.0,
        "GiB" => 1024.0,
        "TiB" => 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_virsh_outputs() {
        assert_eq!(parse_names("vm1\n\nvm2\n"), vec!["vm1", "vm2"]);
        assert_eq!(parse_names("x\r\ny\u{85}\n"), vec!["x\r", "y\u{85}"]);
        let info =
            "Job type:         Completed\nMemory processed: 70.520 MiB\nTotal downtime:   31 ms\n";
        assert_eq!(field(info, "Total downtime").as_deref(), Some("31 ms"));
        assert_eq!(parse_mib("70.5 MiB"), Some(70.5));
        assert_eq!(parse_mib("2 GiB"), Some(2048.0));
        assert_eq!(parse_mib("x MiB"), None);
    }

    #[test]
    fn domstats_keep_names_verbatim() {
        let out = "Domain: 'vm1'\n  state.state=1\n  state.reason=1\n\nDomain: 'x\r*** it's\u{85}'\n  state.state=3\n  state.reason=2\n\nDomain: 'off'\n  state.state=5\n  state.reason=0\n\n";
        let m = parse_domstats(out);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m["vm1"].is_running());
        let odd = m["x\r*** it's\u{85}"];
        assert!(odd.is_active() && odd.is_migration_pause(), "{odd:?}");
        assert!(!m["off"].is_active());
        assert_eq!(odd.describe(), "paused(migration)");
        let user = DomState {
            state: 3,
            reason: 1,
        };
        assert!(user.is_active() && !user.is_migration_pause() && !user.is_running());
    }
}
