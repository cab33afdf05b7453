//! Faults during evacuations, on the lab: real libvirtd, real QEMU, real
//! ptys, agents (and hooks) on the hosts. In each: every VM ends running
//! exactly once (running, not paused, alive), no sample ever shows a VM
//! active on two hosts outside a migration's own pause, and every verdict
//! is the truth libvirt tells about the evacuated host.
//! Needs root: run by `make test-lab`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rackside_lab::agent::AgentProcess;
use rackside_lab::pty::PtyLine;
use rackside_lab::{smoke, GuestDisk, GuestSpec, Lab, LabSpec, Sampler};
use serde_json::{json, Value};

const AGENT: &str = env!("CARGO_BIN_EXE_rackside-agent");
const T: Duration = Duration::from_secs(20);
/// Long enough for any lab evacuation to end (it always must).
const END: Duration = Duration::from_secs(300);

fn hook_binary() -> PathBuf {
    let p = Path::new(AGENT).with_file_name("rackside-hook");
    assert!(
        p.exists(),
        "{} missing: build the workspace first (make build)",
        p.display()
    );
    p
}

/// An agent on one lab host with its management line.
struct Node {
    host: String,
    dir: PathBuf,
    cfg: String,
    agent: AgentProcess,
    line: PtyLine,
    id: u64,
}

impl Node {
    fn start(lab: &Lab, host: &str, extra: &str) -> Node {
        let dir = lab.desc().dir.join(format!("agent-{host}"));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("tty");
        let mut cfg = format!(
            "[host]\nname = \"{host}\"\n[libvirt]\npoll_interval_s = 1\n[[console]]\npath = \"{}\"\n[state]\ndir = \"{}\"\n",
            link.display(),
            dir.join("state").display()
        );
        for h in lab.desc().hosts.iter().filter(|h| h.name != host) {
            cfg.push_str(&format!(
                "[[peer]]\nname = \"{}\"\nuri = \"{}\"\nmigrate_uri = \"{}\"\n",
                h.name, h.uri, h.migrate_uri
            ));
        }
        cfg.push_str(extra);
        // Lab hosts share the machine's CPUs: the load filter would judge
        // the lab, not the peer (see lab_evacuate.rs).
        cfg.push_str("[placement]\nload_threshold = 1.0\n");
        let line = PtyLine::open(&link).unwrap();
        let agent = AgentProcess::start(lab, host, Path::new(AGENT), &dir, &cfg).unwrap();
        let mut n = Node {
            host: host.to_owned(),
            dir,
            cfg,
            agent,
            line,
            id: 0,
        };
        n.wait_ready();
        n
    }

    /// Prompt seen and every peer polled once (placement needs them).
    fn wait_ready(&mut self) {
        let prompt = format!("{}> ", self.host);
        let banner = self
            .line
            .wake(T)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.agent.log_text()));
        assert!(banner.ends_with(&prompt), "{banner:?}");
        for _ in 0..60 {
            let r = self.req("hosts", json!({}));
            if r["data"]["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|x| x["reachable"] == json!(true))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn req(&mut self, cmd: &str, args: Value) -> Value {
        self.id += 1;
        self.line
            .request(self.id, cmd, args, T)
            .unwrap_or_else(|e| panic!("{cmd}: {e}\nagent log:\n{}", self.agent.log_text()))
    }

    /// Events until `evacuation.done`; returns them all.
    fn until_done(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let line = self
                .line
                .expect_line(END, |l| l.trim_start().starts_with("{\"event\""))
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: no evacuation.done: {e}\nagent log:\n{}",
                        self.host,
                        self.agent.log_text()
                    )
                });
            let v: Value = serde_json::from_str(line.trim_start()).unwrap();
            let done = v["event"] == "evacuation.done";
            events.push(v);
            if done {
                return events;
            }
        }
    }

    /// The same agent, same config, started again (after a crash).
    fn restart(&mut self, lab: &Lab) {
        // The dead agent's last prompt must not pass for the new one's: a
        // request sent before the new agent opens the line is discarded.
        self.line.clear();
        self.agent =
            AgentProcess::start(lab, &self.host, Path::new(AGENT), &self.dir, &self.cfg).unwrap();
        self.wait_ready();
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join("state/journal.jsonl")
    }

    /// The latest state of the newest run in the journal.
    fn journal_last_run(&self) -> Option<Value> {
        last_run(&std::fs::read_to_string(self.journal_path()).unwrap_or_default())
    }

    /// Waits until `jobs` says nothing runs any more, then returns the
    /// verdict the agent wrote for the newest run.
    fn wait_closed(&mut self) -> Value {
        let end = Instant::now() + END;
        loop {
            let j = self.req("jobs", json!({}));
            if j["data"]["running"] == json!(false) {
                break;
            }
            assert!(
                Instant::now() < end,
                "run never closed: {j}\n{}",
                self.agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let run = self.journal_last_run().expect("a run in the journal");
        assert_eq!(run["finished"], true, "{run}");
        run["verdict"].clone()
    }
}

/// The latest state of the newest run in a journal's text (torn lines
/// skipped).
fn last_run(text: &str) -> Option<Value> {
    let runs: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["type"] == "run")
        .map(|r| r["run"].clone())
        .collect();
    let newest = runs.iter().filter_map(|r| r["id"].as_u64()).max()?;
    runs.into_iter()
        .rev()
        .find(|r| r["id"].as_u64() == Some(newest))
}

fn phases(run: &Value) -> Vec<String> {
    run["jobs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|j| j["phase"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn start_guests(lab: &Lab, host: &str, guests: &[GuestSpec]) {
    std::thread::scope(|s| {
        for g in guests {
            s.spawn(move || lab.start_guest(host, g).expect("guest"));
        }
    });
}

fn verdict(events: &[Value]) -> &Value {
    &events.last().unwrap()["data"]
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn source_libvirtd_restarted_mid_migration() {
    let lab = Lab::up(&LabSpec::new("frestart", 2)).expect("lab up");
    start_guests(
        &lab,
        "ha",
        &[GuestSpec::new("m1", 32), GuestSpec::new("m2", 16)],
    );
    let extra = "[migration]\nbandwidth_mib_s = 8\nmax_parallel = 1\n";
    let mut ha = Node::start(&lab, "ha", extra);
    ha.req("subscribe", json!({}));
    let watch = Sampler::start(&lab, &["m1", "m2"]);
    assert_eq!(ha.req("evacuate", json!({}))["ok"], true);
    let first = ha
        .line
        .expect_event("migration.progress", T, |e| {
            e["data"]["percent"].as_f64().unwrap_or(0.0) > 10.0
        })
        .unwrap_or_else(|e| panic!("no progress: {e}\n{}", ha.agent.log_text()));
    // The source's libvirtd goes away in the middle and comes back.
    lab.stop_libvirtd("ha").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    lab.start_libvirtd("ha").unwrap();
    let events = ha.until_done();
    let v = verdict(&events).clone();
    let at = watch.finish().assert_clean();
    lab.assert_verdict_true("ha", &v);
    let at2 = lab.assert_each_runs_once(&["m1", "m2"]);
    assert_eq!(at, at2);
    // The job cut by the restart ended (done or failed), never hung.
    let vm = first["data"]["vm"].as_str().unwrap();
    let jobs = ha.req("jobs", json!({}));
    let job = jobs["data"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|j| j["vm"] == vm)
        .cloned()
        .unwrap();
    // ... and says what happened: done if the VM ended on the destination
    // (libvirt may finish a migration its restarted daemon recovered).
    let expect = if at[vm] == "ha" { "failed" } else { "done" };
    assert_eq!(job["phase"], expect, "{vm} ended on {}: {jobs}", at[vm]);
    ha.agent.stop();
    lab.teardown().expect("teardown");
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn two_hosts_evacuating_onto_each_other_at_once() {
    let spec = LabSpec::new("fcross", 2).with_hook(&hook_binary());
    let lab = Lab::up(&spec).expect("lab up");
    std::thread::scope(|s| {
        let lab = &lab;
        s.spawn(move || lab.start_guest("ha", &GuestSpec::new("a1", 16)).unwrap());
        s.spawn(move || lab.start_guest("hb", &GuestSpec::new("b1", 16)).unwrap());
    });
    let extra = "[migration]\nbandwidth_mib_s = 8\n";
    let mut ha = Node::start(&lab, "ha", extra);
    let mut hb = Node::start(&lab, "hb", extra);
    ha.req("subscribe", json!({}));
    hb.req("subscribe", json!({}));
    let watch = Sampler::start(&lab, &["a1", "b1"]);
    let gate = std::sync::Barrier::new(2);
    let (va, vb) = std::thread::scope(|s| {
        let gate = &gate;
        let run = move |n: &mut Node| {
            gate.wait();
            let r = n.req("evacuate", json!({}));
            assert_eq!(r["ok"], true, "{}: {r}", n.host);
            verdict(&n.until_done()).clone()
        };
        let (ha, hb) = (&mut ha, &mut hb);
        let a = s.spawn(move || run(ha));
        let b = s.spawn(move || run(hb));
        (a.join().unwrap(), b.join().unwrap())
    });
    watch.finish().assert_clean();
    lab.assert_verdict_true("ha", &va);
    lab.assert_verdict_true("hb", &vb);
    lab.assert_each_runs_once(&["a1", "b1"]);
    // Neither host can be empty while the other's VM had nowhere else to go.
    assert!(
        va["safe_to_power_off"] == false || vb["safe_to_power_off"] == false,
        "{va}\n{vb}"
    );
    ha.agent.stop();
    hb.agent.stop();
    lab.teardown().expect("teardown");
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn management_line_unplugged_mid_evacuation() {
    let lab = Lab::up(&LabSpec::new("funplug", 2)).expect("lab up");
    let names = ["u1", "u2"];
    let specs: Vec<GuestSpec> = names.iter().map(|n| GuestSpec::new(n, 16)).collect();
    start_guests(&lab, "ha", &specs);
    let extra = "[migration]\nbandwidth_mib_s = 8\nmax_parallel = 1\n";
    let mut ha = Node::start(&lab, "ha", extra);
    ha.req("subscribe", json!({}));
    let watch = Sampler::start(&lab, &names);
    let started = ha.req("evacuate", json!({}));
    assert_eq!(started["ok"], true, "{started}");
    ha.line
        .expect_event("migration.progress", T, |_| true)
        .unwrap_or_else(|e| panic!("no progress: {e}\n{}", ha.agent.log_text()));

    // Unplugged: the pty is gone for a few seconds, then back at its path.
    let link = ha.line.link.clone();
    drop(std::mem::replace(
        &mut ha.line,
        PtyLine::open(&ha.dir.join("elsewhere")).unwrap(),
    ));
    std::thread::sleep(Duration::from_secs(3));
    ha.line = PtyLine::open(&link).unwrap();
    ha.line
        .wake(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("no banner after replug: {e}\n{}", ha.agent.log_text()));
    assert!(ha.agent.running(), "the agent died with its line");

    // The new session sees the evacuation's jobs, still going...
    let jobs = ha.req("jobs", json!({}));
    let list = jobs["data"]["jobs"].as_array().unwrap();
    assert_eq!(list.len(), names.len(), "{jobs}");
    assert_eq!(
        jobs["data"]["running"], true,
        "the evacuation ended while unplugged (too fast to test): {jobs}"
    );
    assert!(
        list.iter().any(|j| j["phase"] != "queued"),
        "nothing started: {jobs}"
    );
    // ... and its verdict.
    ha.req("subscribe", json!({}));
    let events = ha.until_done();
    let v = verdict(&events);
    assert_eq!(v["evacuation"], started["data"]["evacuation"], "{v}");
    assert_eq!(v["safe_to_power_off"], true, "{v}\n{}", ha.agent.log_text());
    let at = watch.finish().assert_clean();
    assert!(at.values().all(|h| h == "hb"), "{at:?}");
    lab.assert_verdict_true("ha", v);
    lab.assert_each_runs_once(&names);
    ha.agent.stop();
    lab.teardown().expect("teardown");
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn a_vm_that_cannot_move_is_named_at_once_while_the_others_move() {
    let lab = Lab::up(&LabSpec::new("fstuck", 2)).expect("lab up");
    // A qcow2 disk on the host's own filesystem, with copying local disks
    // off: it cannot move. The largest VM, so it would go first.
    let mut stuck = GuestSpec::new("stuck", 16);
    stuck.mem_mib = 200;
    stuck.disk = Some(GuestDisk::Local { mib: 8 });
    start_guests(
        &lab,
        "ha",
        &[
            stuck,
            GuestSpec::new("free1", 16),
            GuestSpec::new("free2", 16),
        ],
    );
    let extra = "[migration]\nbandwidth_mib_s = 16\nmax_parallel = 2\ncopy_local_disks = false\n";
    let mut ha = Node::start(&lab, "ha", extra);
    ha.req("subscribe", json!({}));
    let watch = Sampler::start(&lab, &["stuck", "free1", "free2"]);
    // Named at once, in the evacuation's answer, with the reason; never
    // tried.
    let started = ha.req("evacuate", json!({}));
    assert_eq!(started["ok"], true, "{started}");
    assert_eq!(
        started["data"]["unplaceable"][0]["vm"], "stuck",
        "{started}"
    );
    let reason = started["data"]["unplaceable"][0]["reason"]
        .as_str()
        .unwrap_or("");
    assert!(reason.contains("copy_local_disks is off"), "{started}");
    let events = ha.until_done();
    let v = verdict(&events);
    assert!(
        !events.iter().any(|e| e["event"]
            .as_str()
            .is_some_and(|n| n.starts_with("migration."))
            && e["data"]["vm"] == "stuck"),
        "stuck was tried: {events:?}"
    );
    assert_eq!(v["safe_to_power_off"], false, "{v}");
    assert_eq!(v["remaining"], json!(["stuck"]), "{v}");
    assert_eq!(v["unplaceable"][0]["vm"], "stuck", "{v}");
    let at = watch.finish().assert_clean();
    assert_eq!(at["stuck"], "ha");
    assert_eq!((at["free1"].as_str(), at["free2"].as_str()), ("hb", "hb"));
    lab.assert_verdict_true("ha", v);
    lab.assert_each_runs_once(&["stuck", "free1", "free2"]);
    ha.agent.stop();
    lab.teardown().expect("teardown");
}

/// Polls the journal and SIGKILLs the agent the moment its newest run
/// matches `phase`; returns the run as the journal showed it then.
fn kill_when(node: &mut Node, what: &str, phase: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + END;
    loop {
        if let Some(run) = node.journal_last_run().filter(|r| phase(r)) {
            node.agent.kill();
            return run;
        }
        assert!(
            Instant::now() < end,
            "journal never showed {what}: {:?}\n{}",
            node.journal_last_run(),
            node.agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// After a crash: the restarted agent closes the run with a true verdict
/// and every VM runs exactly once.
fn restart_and_check(lab: &Lab, ha: &mut Node, watch: Sampler, guests: &[&str]) -> Value {
    ha.restart(lab);
    let v = ha.wait_closed();
    watch.finish().assert_clean();
    lab.assert_verdict_true("ha", &v);
    lab.assert_each_runs_once(guests);
    let run = ha.journal_last_run().unwrap();
    assert!(
        phases(&run)
            .iter()
            .all(|p| ["done", "failed", "aborted"].contains(&p.as_str())),
        "{run}"
    );
    v
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn agent_killed_at_each_journal_phase() {
    let lab = Lab::up(&LabSpec::new("fkill", 2)).expect("lab up");
    let names = ["k1", "k2", "k3"];
    let specs: Vec<GuestSpec> = names.iter().map(|n| GuestSpec::new(n, 16)).collect();
    start_guests(&lab, "ha", &specs);
    let extra = "[migration]\nbandwidth_mib_s = 8\nmax_parallel = 1\n";
    let mut ha = Node::start(&lab, "ha", extra);

    // 1. Jobs queued behind a running one.
    let watch = Sampler::start(&lab, &names);
    assert_eq!(ha.req("evacuate", json!({}))["ok"], true);
    let seen = kill_when(&mut ha, "a queued job", |r| {
        phases(r).iter().any(|p| p == "queued")
    });
    eprintln!("killed with the journal at {:?}", phases(&seen));
    let v = restart_and_check(&lab, &mut ha, watch, &names);
    eprintln!("verdict after a kill with jobs queued: {v}");

    // 2. The last job running, none queued.
    let left = lab.active_names("ha");
    assert!(left.len() >= 2, "nothing left for phase 2: {left:?}");
    let watch = Sampler::start(&lab, &names);
    assert_eq!(ha.req("evacuate", json!({}))["ok"], true);
    let seen = kill_when(&mut ha, "one job running and none queued", |r| {
        let p = phases(r);
        !p.iter().any(|p| p == "queued")
            && p.iter().filter(|p| *p == "running").count() == 1
            && r["finished"] == false
    });
    eprintln!("killed with the journal at {:?}", phases(&seen));
    let v = restart_and_check(&lab, &mut ha, watch, &names);
    eprintln!("verdict after a kill with a job running: {v}");

    // 3. Every job ended, the verdict not yet written: a window of at
    // most one controller tick, so a few tries with one VM brought back.
    let mut caught = None;
    for attempt in 1..=4 {
        let back = "k1";
        if lab.active_names("ha").is_empty() {
            smoke::virsh_migrate(&lab, "hb", "ha", back).expect("bring k1 back");
        }
        let watch = Sampler::start(&lab, &names);
        assert_eq!(ha.req("evacuate", json!({}))["ok"], true);
        let seen = kill_when(&mut ha, "all jobs ended", |r| {
            phases(r)
                .iter()
                .all(|p| ["done", "failed", "aborted"].contains(&p.as_str()))
        });
        let unfinished = seen["finished"] == false;
        eprintln!(
            "attempt {attempt}: killed with the journal at {:?}, finished {}",
            phases(&seen),
            seen["finished"]
        );
        let v = restart_and_check(&lab, &mut ha, watch, &names);
        if unfinished {
            caught = Some(v);
            break;
        }
    }
    let v = caught.expect("never caught the journal between the last job and the verdict");
    eprintln!("verdict after a kill before the verdict: {v}");
    ha.agent.stop();
    lab.teardown().expect("teardown");
}
