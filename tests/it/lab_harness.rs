//! The lab harness itself: three hosts with their own names, memory sizes,
//! UUIDs and addresses that reach each other; a second bring-up clears an
//! interrupted first one; teardown leaves nothing behind.

use std::process::Command;

use rackside_lab::{lab, names, net, HostDesc, Lab, LabSpec};

fn exec_out(lab: &Lab, host: &str, program: &str, args: &[&str]) -> String {
    let out = lab
        .exec(host, program)
        .unwrap()
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} in {host}: {out:?}"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn nothing_left(name: &str, pids: &[i32]) {
    assert!(
        net::list_netns(&names::lab_netns_prefix(name)).is_empty(),
        "namespaces left"
    );
    for p in pids {
        assert!(!rackside_lab::host::is_alive(*p), "process {p} left");
    }
    assert!(!names::lab_dir(name).exists(), "lab directory left");
}

fn libvirtd_pids(hosts: &[HostDesc]) -> Vec<i32> {
    hosts
        .iter()
        .filter_map(rackside_lab::host::libvirtd_pid)
        .chain(hosts.iter().map(|h| h.anchor_pid))
        .collect()
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn three_hosts_with_their_own_identity() {
    let spec = LabSpec::new("harness", 3)
        .with_mem("hb", 3072)
        .with_mem("hc", 6144);
    let lab = Lab::up(&spec).expect("lab up");
    let hosts = lab.desc().hosts.clone();
    let mut uuids = std::collections::HashSet::new();
    for h in &hosts {
        assert_eq!(exec_out(&lab, &h.name, "hostname", &[]), h.name);
        // Each libvirtd answers over TCP from another host, with its own name.
        let other = hosts.iter().find(|o| o.name != h.name).unwrap();
        let seen = exec_out(
            &lab,
            &other.name,
            "virsh",
            &["-q", "-c", &h.uri, "hostname"],
        );
        assert_eq!(seen, h.name);
        let caps = lab.virsh(&h.name, &["capabilities"]).unwrap();
        let uuid = caps
            .split("<uuid>")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap();
        assert!(uuids.insert(uuid.to_owned()), "host UUID {uuid} repeated");
        let info = lab.virsh(&h.name, &["nodeinfo"]).unwrap();
        let kib: u64 = rackside_lab::virsh::field(&info, "Memory size")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        if let Some(mib) = h.mem_mib {
            assert_eq!(kib, mib * 1024, "libvirt on {} sees {kib} KiB", h.name);
        }
    }
    // The lab network is not the machine's: no lab address in the root namespace.
    let root_addrs = String::from_utf8(
        Command::new("ip")
            .args(["-4", "addr"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !root_addrs.contains("10.77.0."),
        "lab address leaked into the root namespace"
    );

    // A link cut isolates a host; restoring it brings it back.
    lab.set_link("hc", false).unwrap();
    let cut = lab
        .exec("ha", "timeout")
        .unwrap()
        .args(["5", "virsh", "-q", "-c", &hosts[2].uri, "hostname"])
        .output()
        .unwrap();
    assert!(!cut.status.success(), "hc reachable with its link down");
    lab.set_link("hc", true).unwrap();
    assert_eq!(
        exec_out(
            &lab,
            "ha",
            "virsh",
            &["-q", "-c", &hosts[2].uri, "hostname"]
        ),
        "hc"
    );

    // libvirtd can be restarted inside a host (the anchor keeps its mounts).
    lab.stop_libvirtd("hb").unwrap();
    assert!(lab.virsh("hb", &["uri"]).is_err());
    lab.start_libvirtd("hb").unwrap();
    assert_eq!(lab.virsh("hb", &["hostname"]).unwrap().trim(), "hb");

    let pids = libvirtd_pids(&hosts);
    lab.teardown().expect("teardown");
    nothing_left("harness", &pids);
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn bring_up_clears_an_interrupted_run() {
    let first = Lab::up(&LabSpec::new("stale", 2)).expect("first lab up");
    first
        .start_guest("ha", &rackside_lab::GuestSpec::new("left1", 8))
        .expect("guest");
    let old = libvirtd_pids(&first.desc().hosts);
    // An interrupted run: the process went away without tearing down.
    first.detach();

    let second = Lab::up(&LabSpec::new("stale", 2)).expect("second lab up");
    for p in &old {
        assert!(
            !rackside_lab::host::is_alive(*p),
            "stale process {p} survived"
        );
    }
    assert!(second
        .virsh("ha", &["list", "--all", "--name"])
        .unwrap()
        .trim()
        .is_empty());
    let pids = libvirtd_pids(&second.desc().hosts);
    drop(second); // the guard tears down on drop, as after a panic
    nothing_left("stale", &pids);

    // Sweeping an absent lab is not an error.
    lab::clear("stale").expect("clear of nothing");
}
