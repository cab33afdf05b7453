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

/// Names of domains in a `virsh list --name` output.
pub fn parse_names(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
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
        let info =
            "Job type:         Completed\nMemory processed: 70.520 MiB\nTotal downtime:   31 ms\n";
        assert_eq!(field(info, "Total downtime").as_deref(), Some("31 ms"));
        assert_eq!(parse_mib("70.5 MiB"), Some(70.5));
        assert_eq!(parse_mib("2 GiB"), Some(2048.0));
        assert_eq!(parse_mib("x MiB"), None);
    }
}
