//! The lab network: a switch namespace holding a bridge, and one veth pair
//! per host. No interface of the lab is in the machine's own namespace, so
//! no lab traffic can leave the machine.

use std::path::Path;
use std::process::Command;

use crate::cmd::{self, CmdError};
use crate::names;

fn ip(args: &[&str]) -> Result<(), CmdError> {
    cmd::run(Command::new("ip").args(args)).map(|_| ())
}

pub fn add_netns(ns: &str) -> Result<(), CmdError> {
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])
}

pub fn create_switch(ns: &str) -> Result<(), CmdError> {
    add_netns(ns)?;
    ip(&["-n", ns, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", ns, "link", "set", "br0", "up"])
}

/// Plugs host namespace `host_ns` into the switch with address `addr`.
pub fn plug_host(switch_ns: &str, host: &str, host_ns: &str, addr: &str) -> Result<(), CmdError> {
    let port = names::switch_port(host);
    ip(&[
        "-n", switch_ns, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
        host_ns,
    ])?;
    ip(&["-n", switch_ns, "link", "set", &port, "master", "br0", "up"])?;
    let cidr = format!("{addr}/{}", names::PREFIX_LEN);
    ip(&["-n", host_ns, "addr", "add", &cidr, "dev", "eth0"])?;
    ip(&["-n", host_ns, "link", "set", "eth0", "up"])
}

/// Cuts (or restores) a host's link to the switch: the cable-pull of tests.
pub fn set_link(switch_ns: &str, host: &str, up: bool) -> Result<(), CmdError> {
    let port = names::switch_port(host);
    ip(&[
        "-n",
        switch_ns,
        "link",
        "set",
        &port,
        if up { "up" } else { "down" },
    ])
}

/// Every namespace whose name starts with `prefix`.
pub fn list_netns(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut v: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// Processes whose network namespace is `ns`.
pub fn netns_pids(ns: &str) -> Result<Vec<i32>, CmdError> {
    let out = cmd::stdout("ip", ["netns", "pids", ns])?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

pub fn del_netns(ns: &str) -> Result<(), CmdError> {
    if !Path::new("/run/netns").join(ns).exists() {
        return Ok(());
    }
    ip(&["netns", "del", ns])
}
