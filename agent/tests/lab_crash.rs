//! A crashed VM on a sound host: restarted within its budget, then left
//! alone, and every decision said on the line. Real libvirtd, real QEMU
//! killed with SIGKILL. Needs root: run by `make test-lab`.

use std::path::Path;
use std::time::Duration;

use rackside_lab::agent::{lab_config, AgentProcess};
use rackside_lab::pty::PtyLine;
use rackside_lab::{smoke, GuestSpec, Lab, LabSpec};
use serde_json::{json, Value};

const AGENT: &str = env!("CARGO_BIN_EXE_rackside-agent");
const T: Duration = Duration::from_secs(20);

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
    let dir = lab.desc().dir.join("agent-ha");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("tty");
    let mut line = PtyLine::open(&link).unwrap();
    let cfg = lab_config(
        &lab,
        "ha",
        &dir,
        &link,
        "[crash]\nmax_restarts = 2\nwindow_s = 600\n",
    );
    let mut agent = AgentProcess::start(&lab, "ha", Path::new(AGENT), &dir, &cfg).unwrap();
    line.wake(T)
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));
    assert_eq!(
        line.request(1, "subscribe", json!({}), T).unwrap()["ok"],
        true
    );
    assert_eq!(lab.assert_runs_once("c1"), "ha");

    let crash = |line: &mut PtyLine, agent: &AgentProcess| -> Value {
        line.expect_event("vm.crash", T, |e| e["data"]["vm"] == "c1")
            .unwrap_or_else(|e| panic!("no vm.crash: {e}\n{}", agent.log_text()))
    };
    for n in 1..=2 {
        kill_qemu(&lab, "c1");
        let e = crash(&mut line, &agent);
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
    let e = crash(&mut line, &agent);
    assert_eq!(e["data"]["action"], "leave", "{e}");
    let why = e["data"]["reason"].as_str().unwrap();
    assert!(
        why.contains("left as it is: restarted 2 times in the last 10 min"),
        "{e}"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(domstate(&lab, "c1"), "shut off");
    assert!(smoke::qemu_pids(&lab, "ha", "c1").unwrap().is_empty());

    // The budget is kept across a restart of the agent.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state/crashes.json")).unwrap())
            .unwrap();
    let times: Vec<&Value> = saved.as_object().unwrap().values().collect();
    assert_eq!(times.len(), 1, "{saved}");
    assert_eq!(
        times[0].as_array().unwrap().len(),
        2,
        "two restarts: {saved}"
    );
    assert_eq!(agent.stop(), Some(0), "{}", agent.log_text());
    lab.teardown().expect("teardown");
}
