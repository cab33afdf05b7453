//! The lab networks, both in one switch namespace: the migration network
//! (bridge `br0`: hosts, the storage server) and the guests' network
//! (bridge `brguest`: each host's `brvm` bridge, the client). No interface
//! of the lab is in the machine's own namespace, so no lab traffic can
//! leave the machine.

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
    for br in ["br0", names::GUEST_SWITCH_BRIDGE] {
        ip(&["-n", ns, "link", "add", br, "type", "bridge"])?;
        ip(&["-n", ns, "link", "set", br, "up"])?;
    }
    Ok(())
}

/// A veth from `switch_ns` (port `port` on `bridge`) to `ns` (as `eth0`,
/// holding `cidr`): how the storage server and the client join.
fn plug_endpoint(
    switch_ns: &str,
    bridge: &str,
    port: &str,
    ns: &str,
    cidr: &str,
) -> Result<(), CmdError> {
    ip(&[
        "-n", switch_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ])?;
    ip(&["-n", switch_ns, "link", "set", port, "master", bridge, "up"])?;
    ip(&["-n", ns, "addr", "add", cidr, "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])
}

/// The storage server's namespace, on the migration network.
pub fn add_storage(switch_ns: &str, ns: &str) -> Result<(), CmdError> {
    add_netns(ns)?;
    let cidr = format!("{}/{}", names::STORAGE_ADDR, names::PREFIX_LEN);
    plug_endpoint(switch_ns, "br0", names::STORAGE_PORT, ns, &cidr)
}

/// The client's namespace, on the guests' network.
pub fn add_client(switch_ns: &str, ns: &str) -> Result<(), CmdError> {
    add_netns(ns)?;
    let cidr = format!("{}/{}", names::CLIENT_ADDR, names::GUEST_PREFIX_LEN);
    plug_endpoint(
        switch_ns,
        names::GUEST_SWITCH_BRIDGE,
        names::CLIENT_PORT,
        ns,
        &cidr,
    )
}

/// The host's bridge for its guests (`brvm`), with a veth to the guests'
/// network in the switch. The host itself has no address there: only its
/// guests do.
pub fn plug_host_guests(switch_ns: &str, host: &str, host_ns: &str) -> Result<(), CmdError> {
    let br = names::HOST_GUEST_BRIDGE;
    let uplink = names::HOST_GUEST_UPLINK;
    ip(&["-n", host_ns, "link", "add", br, "type", "bridge"])?;
    ip(&["-n", host_ns, "link", "set", br, "up"])?;
    let port = names::guest_switch_port(host);
    ip(&[
        "-n", switch_ns, "link", "add", &port, "type", "veth", "peer", "name", uplink, "netns",
        host_ns,
    ])?;
    ip(&[
        "-n",
        switch_ns,
        "link",
        "set",
        &port,
        "master",
        names::GUEST_SWITCH_BRIDGE,
        "up",
    ])?;
    ip(&["-n", host_ns, "link", "set", uplink, "master", br, "up"])
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
