//! Crashed VMs judged against their host's health: on a sound host
//! restarted within a budget, then left alone; on a faulty host started on
//! a peer that admits it, and the host emptied. Every decision is said on
//! the line. Real libvirtd, real QEMU (killed with SIGKILL, or a guest
//! kernel panicking through its pvpanic device), rackside-hook on the
//! peers. Needs root: run by `make test-lab`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rackside_lab::agent::LineAgent;
use rackside_lab::health::{self, ErrorStream};
use rackside_lab::{smoke, GuestDisk, GuestSpec, Lab, LabSpec};
use serde_json::{json, Value};

const AGENT: &str = env!("CARGO_BIN_EXE_rackside-agent");
const T: Duration = Duration::from_secs(20);

/// rackside-hook is built beside the agent (`make build` builds both).
fn hook_binary() -> PathBuf {
    let p = Path::new(AGENT).with_file_name("rackside-hook");
    assert!(p.exists(), "{} missing: make build", p.display());
    p
}

/// An agent on `host` with its line, subscribed to events; `tag` keeps
/// a restarted agent's files apart.
fn agent(lab: &Lab, host: &str, tag: &str, extra: &str) -> LineAgent {
    let dir = lab.desc().dir.join(format!("agent-{host}-{tag}"));
    let mut a = LineAgent::start(lab, host, Path::new(AGENT), &dir, extra);
    assert_eq!(a.req("subscribe", json!({}))["ok"], true);
    a
}

/// A sysfs tree for a host's health with one EDAC controller; returns
/// its root and the file of its uncorrected error count.
fn edac_fixture(lab: &Lab, host: &str) -> (PathBuf, PathBuf) {
    let root = lab.desc().dir.join(format!("{host}-health"));
    let ue = health::edac_tree(&root, 0, 0);
    (root, ue)
}

fn health_config(root: &Path, evacuate_on_faulty: bool) -> String {
    format!(
        "[health]\nsysfs_root = \"{}\"\nperiod_s = 1\nhold_s = 3\nevacuate_on_faulty = {evacuate_on_faulty}\n",
        root.display()
    )
}

/// Waits until the agent on `host` has published `level` for its hook.
fn published_health(lab: &Lab, host: &str, level: &str) {
    health::wait_published(lab, host, T, |v| v["health"] == level).unwrap();
}

fn defined_on(lab: &Lab, host: &str, guest: &str) -> bool {
    lab.virsh(host, &["list", "--all", "--name"])
        .unwrap()
        .lines()
        .any(|l| l.trim() == guest)
}

fn kill_qemu(lab: &Lab, guest: &str) {
    let pids = smoke::qemu_pids(lab, "ha", guest).unwrap();
    assert_eq!(pids.len(), 1, "{guest}: QEMU processes {pids:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

fn domstate(lab: &Lab, guest: &str) -> String {
    lab.virsh("ha", &["domstate", guest])
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn a_vm_killed_under_qemu_on_a_sound_host_is_restarted_within_its_budget() {
    let lab = Lab::up(&LabSpec::new("crash", 1)).expect("lab up");
    lab.start_guest("ha", &GuestSpec::new("c1", 8)).unwrap();
    let mut a = agent(
        &lab,
        "ha",
        "k",
        "[crash]\nmax_restarts = 2\nwindow_s = 600\n",
    );
    assert_eq!(lab.assert_runs_once("c1"), "ha");

    let crash = |a: &mut LineAgent| a.event("vm.crash", T, |e| e["data"]["vm"] == "c1");
    for n in 1..=2 {
        kill_qemu(&lab, "c1");
        let e = crash(&mut a);
        let d = &e["data"];
        assert_eq!(d["action"], "restart", "{e}");
        assert_eq!(d["health"], "ok", "{e}");
        assert_eq!(d["crash"], "qemu_died", "{e}");
        let why = d["reason"].as_str().unwrap();
        assert!(
            why.ends_with(&format!("restarted here (host ok; restart {n} of 2)")),
            "{e}"
        );
        // Running once, in state running, and alive again.
        assert_eq!(lab.assert_runs_once("c1"), "ha");
    }

    // The budget is spent: the third crash is left as it is, and says so.
    kill_qemu(&lab, "c1");
    let e = crash(&mut a);
    assert_eq!(e["data"]["action"], "leave", "{e}");
    let why = e["data"]["reason"].as_str().unwrap();
    assert!(
        why.contains("left as it is: restarted 2 times in the last 10 min"),
        "{e}"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(domstate(&lab, "c1"), "shut off");
    assert!(smoke::qemu_pids(&lab, "ha", "c1").unwrap().is_empty());

    // The budget is kept in the state directory, where a restarted agent
    // reads it.
    let file = lab.desc().dir.join("agent-ha-k/state/crashes.json");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let times: Vec<&Value> = saved.as_object().unwrap().values().collect();
    assert_eq!(times.len(), 1, "{saved}");
    assert_eq!(
        times[0].as_array().unwrap().len(),
        2,
        "two restarts: {saved}"
    );
    assert_eq!(a.agent.stop(), Some(0), "{}", a.agent.log_text());
    lab.teardown().expect("teardown");
}

/// A guest kernel that panics tells QEMU through its pvpanic device;
/// libvirt reports the guest crashed (panicked), then stops it (its
/// on_crash action). That is one crash: restarted once, said once.
#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn a_guest_that_panics_on_a_sound_host_is_restarted_there_once() {
    let lab = Lab::up(&LabSpec::new("crashp", 1)).expect("lab up");
    lab.start_guest("ha", &GuestSpec::new("p1", 8).with_panic_device())
        .unwrap();
    let mut a = agent(&lab, "ha", "p", "");
    assert_eq!(lab.assert_runs_once("p1"), "ha");

    lab.virsh("ha", &["inject-nmi", "p1"]).unwrap();
    let e = a.event("vm.crash", T, |e| e["data"]["vm"] == "p1");
    let d = &e["data"];
    assert_eq!(d["crash"], "panicked", "{e}");
    assert_eq!(d["action"], "restart", "{e}");
    assert_eq!(
        d["reason"], "guest panicked: restarted here (host ok; restart 1 of 3)",
        "{e}"
    );
    assert_eq!(lab.assert_runs_once("p1"), "ha");
    // libvirt's stop after the panic is the same crash, not a second one.
    let again = a
        .line
        .expect_event("vm.crash", Duration::from_secs(5), |_| true);
    assert!(again.is_err(), "a second vm.crash: {again:?}");
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(lab.desc().dir.join("agent-ha-p/state/crashes.json")).unwrap(),
    )
    .unwrap();
    let restarts: usize = saved
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_array().unwrap().len())
        .sum();
    assert_eq!(restarts, 1, "{saved}");
    assert_eq!(a.agent.stop(), Some(0), "{}", a.agent.log_text());
    lab.teardown().expect("teardown");
}

/// On a faulty host a crashed VM is never restarted there. With shared
/// disks it is started on a peer, but only one whose hook admits it: a
/// faulty peer refuses c1 (QEMU killed), which is left as it is, saying
/// why. Once the peer is sound it takes c2 (its kernel panics through
/// pvpanic), which then runs and is defined there alone, and with
/// `evacuate_on_faulty` the host's other VMs follow and the verdict is
/// SAFE.
#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn a_vm_that_crashes_on_a_faulty_host_starts_on_a_sound_peer_and_the_host_is_emptied() {
    let lab = Lab::up(&LabSpec::new("crashf", 2).with_hook(&hook_binary())).expect("lab up");
    let shared = GuestDisk::Shared { mib: 16 };
    std::thread::scope(|s| {
        for g in [
            GuestSpec::new("c1", 8).with_disk(shared),
            GuestSpec::new("c2", 8)
                .with_disk(shared)
                .with_panic_device(),
            GuestSpec::new("w1", 8),
        ] {
            let lab = &lab;
            s.spawn(move || lab.start_guest("ha", &g).expect("guest"));
        }
    });
    let (ha_root, ha_ue) = edac_fixture(&lab, "ha");
    let (hb_root, hb_ue) = edac_fixture(&lab, "hb");
    let mut hb = agent(&lab, "hb", "1", &health_config(&hb_root, false));
    let mut ha = agent(&lab, "ha", "1", &health_config(&ha_root, false));
    for g in ["c1", "c2", "w1"] {
        assert_eq!(lab.assert_runs_once(g), "ha");
    }

    // Both hosts faulty: c1's crash is not handled on ha, and hb's hook
    // refuses it. Their errors keep coming until then: a single one would
    // be forgotten after the hold time, whenever the machine is slow.
    let hb_errors = ErrorStream::start(hb_ue.clone(), 0);
    hb.event("host.health", T, |e| e["data"]["health"] == "faulty");
    published_health(&lab, "hb", "faulty");
    let ha_errors = ErrorStream::start(ha_ue.clone(), 0);
    ha.event("host.health", T, |e| e["data"]["health"] == "faulty");
    kill_qemu(&lab, "c1");
    let e = ha.event("vm.crash", T, |e| e["data"]["vm"] == "c1");
    let d = &e["data"];
    assert_eq!(d["action"], "leave", "{e}");
    assert_eq!(d["health"], "faulty", "{e}");
    let why = d["reason"].as_str().unwrap();
    assert!(
        why.starts_with("QEMU died: left as it is: this host is faulty and no peer took it (hb: rackside: hb is faulty"),
        "{e}"
    );
    assert_eq!(domstate(&lab, "c1"), "shut off");
    assert!(defined_on(&lab, "ha", "c1") && !defined_on(&lab, "hb", "c1"));

    // hb is sound again (no new errors for its hold time); ha's agent is
    // restarted with evacuate_on_faulty, and ha turns faulty once more.
    hb_errors.stop();
    ha_errors.stop();
    hb.event("host.health", T, |e| e["data"]["health"] == "ok");
    published_health(&lab, "hb", "ok");
    assert_eq!(ha.agent.stop(), Some(0), "{}", ha.agent.log_text());
    // (The new agent takes the count it finds as history.)
    let mut ha = agent(&lab, "ha", "2", &health_config(&ha_root, true));
    let ha_errors = ErrorStream::start(ha_ue.clone(), 1000);
    ha.event("host.health", T, |e| e["data"]["health"] == "faulty");
    let disk_before = lab.wait_disk("ha", "c2", 0, T).unwrap();
    // Its guest kernel panics (pvpanic); libvirt stops it (on_crash).
    lab.virsh("ha", &["inject-nmi", "c2"]).unwrap();
    let e = ha.event("vm.crash", T, |e| e["data"]["vm"] == "c2");
    let d = &e["data"];
    assert_eq!(d["action"], "start_on", "{e}");
    assert_eq!(d["dest"], "hb", "{e}");
    assert_eq!(
        d["reason"], "guest panicked: started on hb: this host is faulty",
        "{e}"
    );
    let done = ha.event("evacuation.done", Duration::from_secs(300), |_| true);
    assert_eq!(done["data"]["safe_to_power_off"], true, "{done}");
    ha_errors.stop();

    // Exactly once, running, alive; defined on hb alone, persistently;
    // the counter on its shared disk goes on from where it was.
    for g in ["c2", "w1"] {
        assert_eq!(lab.assert_runs_once(g), "hb", "{g}");
    }
    assert!(!defined_on(&lab, "ha", "c2") && defined_on(&lab, "hb", "c2"));
    let info = lab.virsh("hb", &["dominfo", "c2"]).unwrap();
    assert!(
        info.lines()
            .any(|l| l.starts_with("Persistent:") && l.ends_with("yes")),
        "{info}"
    );
    let xml = lab.virsh("hb", &["dumpxml", "--inactive", "c2"]).unwrap();
    assert!(!xml.contains("xmlns/recovery"), "the marker stayed: {xml}");
    lab.wait_disk("hb", "c2", disk_before, T).unwrap();
    // c1 was never started again: the evacuation moved its definition
    // (a shut-off VM goes offline), and it is shut off there.
    assert!(!defined_on(&lab, "ha", "c1") && defined_on(&lab, "hb", "c1"));
    assert_eq!(
        lab.virsh("hb", &["domstate", "c1"]).unwrap().trim(),
        "shut off"
    );

    assert_eq!(ha.agent.stop(), Some(0), "{}", ha.agent.log_text());
    assert_eq!(hb.agent.stop(), Some(0), "{}", hb.agent.log_text());
    lab.teardown().expect("teardown");
}
