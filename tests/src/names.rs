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

/// Namespace of the lab's storage server (NBD exports on the migration
/// network); `_` cannot clash with a host name.
pub fn storage_netns(lab: &str) -> String {
    format!("{}_st", lab_netns_prefix(lab))
}

/// Namespace of the lab's client: the guests' users, on the guests' network.
pub fn client_netns(lab: &str) -> String {
    format!("{}_cl", lab_netns_prefix(lab))
}

/// Switch-side end of the storage server's veth on the migration network.
pub const STORAGE_PORT: &str = "p-_storage";

/// Switch-side end of the client's veth on the guests' network.
pub const CLIENT_PORT: &str = "g-_client";

/// Bridge in every host namespace that its guests' NICs join.
pub const HOST_GUEST_BRIDGE: &str = "brvm";

/// Host-side end of the veth from [`HOST_GUEST_BRIDGE`] to the switch.
pub const HOST_GUEST_UPLINK: &str = "vmuplink";

/// Bridge in the switch namespace for the guests' network (the migration
/// network's bridge is `br0`).
pub const GUEST_SWITCH_BRIDGE: &str = "brguest";

/// Switch-side end of a host's veth on the guests' network (at most 15
/// bytes: IFNAMSIZ); names the host like [`switch_port`].
pub fn guest_switch_port(host: &str) -> String {
    format!("g-{host}")
}

/// The storage server's address on the migration network.
pub const STORAGE_ADDR: &str = "10.77.0.250";

/// The port the storage server serves NBD on.
pub const NBD_PORT: u16 = 10809;

/// The client's address on the guests' network.
pub const CLIENT_ADDR: &str = "10.78.0.254";

/// Prefix length of the guests' network (10.78.0.0/24).
pub const GUEST_PREFIX_LEN: u8 = 24;

/// A guest address on the guests' network: number `index` (0-based) gets
/// 10.78.0.(index + 10), clear of the client's .254.
pub fn guest_addr(index: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(10, 78, 0, index.min(200) + 10)
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
        assert!(guest_switch_port("abcdefgh").len() <= 15);
        for n in [
            STORAGE_PORT,
            CLIENT_PORT,
            HOST_GUEST_BRIDGE,
            HOST_GUEST_UPLINK,
            GUEST_SWITCH_BRIDGE,
        ] {
            assert!(n.len() <= 15, "{n}");
        }
    }

    #[test]
    fn switch_namespace_never_clashes_with_a_host() {
        for i in 0..60 {
            let h = default_host_name(i);
            validate(&h).unwrap();
            assert_ne!(host_netns("lab", &h), switch_netns("lab"));
            assert_ne!(host_netns("lab", &h), storage_netns("lab"));
            assert_ne!(host_netns("lab", &h), client_netns("lab"));
            assert_ne!(guest_switch_port(&h), CLIENT_PORT);
            assert_ne!(switch_port(&h), STORAGE_PORT);
        }
    }

    #[test]
    fn guest_addresses_stay_clear_of_the_client() {
        assert_eq!(guest_addr(0).to_string(), "10.78.0.10");
        assert!(guest_addr(255).to_string() != CLIENT_ADDR);
    }

    #[test]
    fn default_names_are_distinct() {
        let names: std::collections::HashSet<_> = (0..60).map(default_host_name).collect();
        assert_eq!(names.len(), 60);
    }
}
