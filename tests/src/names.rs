//! Names and paths of lab objects, derived from the lab's and hosts' names.
//!
//! Everything the lab creates on the machine is named from here, so that
//! cleanup of an interrupted run can find exactly its own objects and
//! nothing else.

use std::path::PathBuf;

/// Root under which every lab keeps its directory.
pub const DEFAULT_BASE_DIR: &str = "/var/tmp/rackside-lab";

/// Prefix of every network namespace any lab creates.
pub const NETNS_PREFIX: &str = "rslab-";

/// Longest lab or host name: keeps namespace and interface names short.
const MAX_NAME: usize = 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("name {0:?} must be 1 to 8 characters of a-z and 0-9, starting with a letter")]
    Invalid(String),
}

/// Checks a lab or host name: it ends up in namespace, interface and file names.
pub fn validate(name: &str) -> Result<(), NameError> {
    let mut chars = name.chars();
    let ok = name.len() <= MAX_NAME
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(NameError::Invalid(name.to_owned()))
    }
}

/// Base directory of all labs; `RACKSIDE_LAB_DIR` overrides it.
pub fn base_dir() -> PathBuf {
    std::env::var_os("RACKSIDE_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BASE_DIR))
}

pub fn lab_dir(lab: &str) -> PathBuf {
    base_dir().join(lab)
}

pub fn host_root(lab: &str, host: &str) -> PathBuf {
    lab_dir(lab).join("hosts").join(host)
}

/// Namespace prefix shared by every namespace of one lab.
pub fn lab_netns_prefix(lab: &str) -> String {
    format!("{NETNS_PREFIX}{lab}-")
}

pub fn host_netns(lab: &str, host: &str) -> String {
    format!("{}{host}", lab_netns_prefix(lab))
}

/// The switch namespace holds the bridge; `_` cannot clash with a host name.
pub fn switch_netns(lab: &str) -> String {
    format!("{}_sw", lab_netns_prefix(lab))
}

/// Switch-side end of a host's veth pair (at most 15 bytes: IFNAMSIZ).
pub fn switch_port(host: &str) -> String {
    format!("p-{host}")
}

/// Address of host number `index` (0-based) on the lab network.
pub fn host_addr(index: usize) -> String {
    format!("10.77.0.{}", index + 1)
}

pub const PREFIX_LEN: u8 = 24;

/// Default host names: ha, hb, hc, ...
pub fn default_host_name(index: usize) -> String {
    let letter = (b'a' + (index % 26) as u8) as char;
    if index < 26 {
        format!("h{letter}")
    } else {
        format!("h{letter}{}", index / 26)
    }
}

/// The directories each host gets a private copy of.
pub const PRIVATE_DIRS: [&str; 6] = [
    "etc/libvirt",
    "run/libvirt",
    "run/rackside",
    "var/lib/libvirt",
    "var/log/libvirt",
    "var/cache/libvirt",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate("ha").is_ok());
        assert!(validate("smoke1").is_ok());
        for bad in ["", "1a", "Ha", "a-b", "a_b", "abcdefghi", "a b", "é"] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn interface_names_fit_ifnamsiz() {
        assert!(switch_port("abcdefgh").len() <= 15);
    }

    #[test]
    fn switch_namespace_never_clashes_with_a_host() {
        for i in 0..60 {
            let h = default_host_name(i);
            validate(&h).unwrap();
            assert_ne!(host_netns("lab", &h), switch_netns("lab"));
        }
    }

    #[test]
    fn default_names_are_distinct() {
        let names: std::collections::HashSet<_> = (0..60).map(default_host_name).collect();
        assert_eq!(names.len(), 60);
    }
}
