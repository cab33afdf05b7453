//! Evacuations on the lab: real libvirtd, real QEMU guests with real
//! memory, real ptys. Each test is one of the field's complaints
//! (ANCHORS.md). Needs root: run by `make test-lab`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rackside_lab::agent::AgentProcess;
use rackside_lab::pty::PtyLine;
use rackside_lab::{virsh, GuestDisk, GuestSpec, Lab, LabSpec, Sampler};
use serde_json::{json, Value};

const AGENT: &str = env!("CARGO_BIN_EXE_rackside-agent");
const T: Duration = Duration::from_secs(20);
/// Long enough for any lab evacuation to end (it always must).
const END: Duration = Duration::from_secs(300);

fn dir(lab: &Lab) -> PathBuf {
    lab.desc().dir.join("evac")
}

fn config(lab: &Lab, lines: &[&Path], extra: &str) -> String {
    let mut c = format!(
        "[host]\nname = \"ha\"\n[libvirt]\npoll_interval_s = 1\n[state]\ndir = \"{}\"\n",
        dir(lab).join("state").display()
    );
    for h in lab.desc().hosts.iter().filter(|h| h.name != "ha") {
        c.push_str(&format!(
            "[[peer]]\nname = \"{}\"\nuri = \"{}\"\nmigrate_uri = \"{}\"\n",
            h.name, h.uri, h.migrate_uri
        ));
    }
    for l in lines {
        c.push_str(&format!("[[console]]\npath = \"{}\"\n", l.display()));
    }
    c.push_str(extra);
    // Lab hosts share the machine's CPUs: every peer's CPU use is the
    // whole machine's, so the load filter would judge the lab, not the
    // peer. Tests that are not about load switch it off.
    if !extra.contains("load_threshold") {
        if extra.contains("[placement]") {
            c = c.replacen("[placement]\n", "[placement]\nload_threshold = 1.0\n", 1);
        } else {
            c.push_str("[placement]\nload_threshold = 1.0\n");
        }
    }
    c
}

struct Rig {
    lab: Lab,
    agent: AgentProcess,
    line: PtyLine,
    id: u64,
}

impl Rig {
    fn new(name: &str, spec: LabSpec, guests: &[(&str, u64)], extra: &str) -> Rig {
        let specs: Vec<GuestSpec> = guests
            .iter()
            .map(|(n, fill)| GuestSpec::new(n, *fill))
            .collect();
        Rig::with_guests(name, spec, &specs, extra)
    }

    fn with_guests(name: &str, spec: LabSpec, starts: &[GuestSpec], extra: &str) -> Rig {
        let mut spec = spec;
        spec.name = name.into();
        let lab = Lab::up(&spec).expect("lab up");
        let d = dir(&lab);
        std::fs::create_dir_all(&d).unwrap();
        std::thread::scope(|s| {
            for g in starts {
                let lab = &lab;
                s.spawn(move || lab.start_guest("ha", g).expect("guest"));
            }
        });
        let link = d.join("ttyRS0");
        let mut line = PtyLine::open(&link).unwrap();
        let agent = AgentProcess::start(
            &lab,
            "ha",
            Path::new(AGENT),
            &d,
            &config(&lab, &[&link], extra),
        )
        .unwrap();
        line.wake(T)
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));
        let mut rig = Rig {
            lab,
            agent,
            line,
            id: 0,
        };
        // Wait for every peer's first poll: placement needs their figures.
        for _ in 0..60 {
            let h = rig.req("hosts", json!({}));
            if h["data"]["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|h| h["reachable"] == json!(true))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        rig
    }

    fn req(&mut self, cmd: &str, args: Value) -> Value {
        self.id += 1;
        self.line
            .request(self.id, cmd, args, T)
            .unwrap_or_else(|e| panic!("{cmd}: {e}\nagent log:\n{}", self.agent.log_text()))
    }

    /// Collects events until `evacuation.done`; returns them all.
    fn until_done(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let line = self
                .line
                .expect_line(END, |l| l.trim_start().starts_with("{\"event\""))
                .unwrap_or_else(|e| {
                    panic!(
                        "no evacuation.done: {e}\nagent log:\n{}",
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

    /// Running exactly once, each (see rackside_lab::whereabouts).
    fn assert_each_runs_once(&self, guests: &[&str]) -> BTreeMap<String, String> {
        self.lab.assert_each_runs_once(guests)
    }
}

fn verdict(events: &[Value]) -> &Value {
    &events.last().unwrap()["data"]
}

/// The moments a migration reports (agent/src/migration/timeline.rs) in
/// the order they happen.
const STEPS: [&str; 7] = [
    "accepted",
    "prepared",
    "dest_started",
    "first_byte",
    "switchover",
    "ended",
    "done",
];

/// A finished migration's timeline: its steps in order, times never going
/// back, and at least the moments every live migration has. Returns
/// `step at_s` pairs for printing.
fn assert_timeline_ordered(t: &Value) -> String {
    let marks = t.as_array().unwrap_or_else(|| panic!("no timeline: {t}"));
    let mut last = (0, 0.0);
    for m in marks {
        let step = m["step"].as_str().unwrap();
        let at = m["at_s"].as_f64().unwrap();
        let i = STEPS.iter().position(|s| *s == step).unwrap();
        assert!(i >= last.0 && at >= last.1, "out of order at {step}: {t}");
        last = (i, at);
    }
    for must in ["accepted", "prepared", "first_byte", "ended", "done"] {
        assert!(marks.iter().any(|m| m["step"] == must), "no {must}: {t}");
    }
    marks
        .iter()
        .map(|m| format!("{} {}", m["step"].as_str().unwrap(), m["at_s"]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Percent per job never went down in the progress events.
fn assert_progress_monotone(events: &[Value]) {
    let mut last: BTreeMap<u64, f64> = BTreeMap::new();
    for e in events.iter().filter(|e| e["event"] == "migration.progress") {
        let job = e["data"]["job"].as_u64().unwrap();
        let p = e["data"]["percent"].as_f64().unwrap();
        let prev = last.insert(job, p).unwrap_or(0.0);
        assert!(p >= prev, "job {job} progress went from {prev} to {p}");
    }
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn evacuation_moves_every_vm_once_within_capacity_and_says_safe() {
    let guests = [("big", 96), ("mid", 64), ("small", 32), ("tiny", 8)];
    let names: Vec<&str> = guests.iter().map(|g| g.0).collect();
    // hb and hc differ in size; a 1 GiB reserve each.
    let spec = LabSpec::new("evac", 3)
        .with_mem("hb", 1536)
        .with_mem("hc", 2048);
    let text_link_extra = "";
    let mut rig = Rig::new("evac", spec, &guests, text_link_extra);
    let plan = rig.req("plan", json!({}));
    assert_eq!(plan["data"]["moves"].as_array().unwrap().len(), 4, "{plan}");
    let ticks_before: BTreeMap<String, u64> = names
        .iter()
        .map(|g| {
            (
                g.to_string(),
                rackside_lab::guest::last_tick(&rig.lab.serial_log("ha", g).unwrap()).unwrap(),
            )
        })
        .collect();

    assert_eq!(rig.req("subscribe", json!({}))["ok"], true);
    let watch = Sampler::start(&rig.lab, &names);
    let started = rig.req("evacuate", json!({}));
    assert_eq!(started["ok"], true, "{started}");
    // A second evacuate while one runs: busy.
    let again = rig.req("evacuate", json!({}));
    assert_eq!(again["error"]["code"], "busy", "{again}");
    let status = rig.req("status", json!({}));
    assert_eq!(status["data"]["state"], "evacuating");

    let events = rig.until_done();
    let v = verdict(&events);
    assert_eq!(
        v["safe_to_power_off"],
        true,
        "{v}\n{}",
        rig.agent.log_text()
    );
    assert_eq!(v["moved"].as_array().unwrap().len(), 4, "{v}");
    assert!(events.iter().any(|e| e["event"] == "migration.done"));
    for e in events.iter().filter(|e| e["event"] == "migration.done") {
        let d = &e["data"];
        eprintln!(
            "migration.done {} ({} s): {}",
            d["vm"],
            d["seconds"],
            assert_timeline_ordered(&d["timeline"])
        );
    }
    // Before libvirt knows the size, progress says nothing is known
    // (null), never 0 MiB left; with the size, it counts down.
    for e in events.iter().filter(|e| e["event"] == "migration.progress") {
        let d = &e["data"];
        if d["remaining_mib"].is_null() {
            assert_eq!(d["percent"], 0.0, "{e}");
        }
    }
    let between = events
        .iter()
        .filter(|e| e["event"] == "migration.progress")
        .filter(|e| (1.0..100.0).contains(&e["data"]["percent"].as_f64().unwrap()))
        .count();
    eprintln!("progress events with a percentage between 1 and 99: {between}");
    assert_progress_monotone(&events);
    // host.empty comes just before the verdict, so that on a person's
    // screen the verdict is the last thing printed.
    let order: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        order[order.len().saturating_sub(2)..],
        ["host.empty", "evacuation.done"],
        "{order:?}"
    );

    // Every VM runs exactly once, none here, and alive: its tick counter
    // carries on where it was.
    assert_eq!(watch.finish().assert_clean().len(), names.len());
    rig.lab.assert_verdict_true("ha", v);
    let at = rig.assert_each_runs_once(&names);
    assert!(at.values().all(|h| h != "ha"), "{at:?}");
    for (g, h) in &at {
        rig.lab
            .wait_tick(h, g, ticks_before[g], Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{g} not ticking on {h}: {e}"));
    }
    // No destination over capacity (memory with the reserve).
    for h in rig.lab.desc().hosts.iter().filter(|h| h.name != "ha") {
        let total = h.mem_mib.unwrap();
        let used: u64 = at
            .iter()
            .filter(|(_, host)| **host == h.name)
            .map(|(g, _)| {
                GuestSpec::new(g, guests.iter().find(|x| x.0 == g.as_str()).unwrap().1).mem_mib
            })
            .sum();
        assert!(
            used + 1024 <= total,
            "{}: {used} MiB + reserve > {total}",
            h.name
        );
    }
    let status = rig.req("status", json!({}));
    assert_eq!(status["data"]["state"], "empty", "{status}");
    assert_eq!(status["data"]["maintenance"], true);
    let jobs = rig.req("jobs", json!({}));
    for j in jobs["data"]["jobs"].as_array().unwrap() {
        assert_eq!(j["phase"], "done", "{j}");
        assert_eq!(j["percent"], 100.0);
        assert!(j["downtime_ms"].is_u64(), "{j}");
        // At least the guest's random data crossed the wire.
        let fill = guests.iter().find(|g| j["vm"] == g.0).unwrap().1 as f64;
        assert!(j["data_mib"].as_f64().unwrap_or(0.0) >= fill, "{j}");
        assert_timeline_ordered(&j["timeline"]);
    }
    // A person on a text line saw the verdict, with a BEL.
    rig.line.write(b"mode text\r").unwrap();
    rig.line.write(b"jobs\r").unwrap();
    rig.line.write(b"status\r").unwrap();
    let transcript = String::from_utf8_lossy(&rig.line.transcript).into_owned();
    assert!(
        transcript.contains("\"safe_to_power_off\":true"),
        "{transcript}"
    );
    // `jobs` as text: a timeline line per finished job.
    rig.line
        .expect_text(T, " (s): prep ")
        .unwrap_or_else(|e| panic!("jobs shows no timeline: {e}"));
    std::thread::sleep(Duration::from_millis(500));
    rig.line.pump(Duration::from_millis(200));
    let transcript = String::from_utf8_lossy(&rig.line.transcript).into_owned();
    let jobs_text: Vec<&str> = transcript
        .lines()
        .filter(|l| l.contains(" (s): prep "))
        .collect();
    eprintln!("jobs, as text:\n{}", jobs_text.join("\n"));
    assert_eq!(jobs_text.len(), names.len(), "{transcript}");
    assert!(
        jobs_text
            .iter()
            .all(|l| l.contains(" data ") && l.contains(" done ")),
        "{jobs_text:?}"
    );
    rig.agent.stop();
    rig.lab.teardown().expect("teardown");
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn a_vm_that_fits_nowhere_stays_running_and_is_named() {
    // Peers of 1.5 GiB with a 1 GiB reserve: 512 MiB of room each.
    let spec = LabSpec::new("nofit", 3)
        .with_mem("hb", 1536)
        .with_mem("hc", 1536);
    let mut rig = Rig::new("nofit", spec, &[("huge", 8), ("ok1", 8)], "");
    // Make `huge` need more than any peer has: redefine with 700 MiB.
    rig.lab.virsh("ha", &["destroy", "huge"]).unwrap();
    rig.lab.virsh("ha", &["undefine", "huge"]).unwrap();
    let mut g = GuestSpec::new("huge", 8);
    g.mem_mib = 700;
    rig.lab.start_guest("ha", &g).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let plan = rig.req("plan", json!({}));
    let unpl = plan["data"]["unplaceable"].as_array().unwrap();
    assert_eq!(unpl.len(), 1, "{plan}");
    assert_eq!(unpl[0]["vm"], "huge");
    assert!(
        unpl[0]["reason"].as_str().unwrap().contains("700"),
        "{plan}"
    );

    // A text line, as a person uses it, and a subscribed JSON line.
    rig.req("subscribe", json!({}));
    let watch = Sampler::start(&rig.lab, &["huge", "ok1"]);
    assert_eq!(rig.req("evacuate", json!({}))["ok"], true);
    let events = rig.until_done();
    let v = verdict(&events);
    watch.finish().assert_clean();
    rig.lab.assert_verdict_true("ha", v);
    assert_eq!(v["safe_to_power_off"], false, "{v}");
    assert_eq!(v["remaining"], json!(["huge"]), "{v}");
    assert_eq!(v["unplaceable"][0]["vm"], "huge");
    let at = rig.assert_each_runs_once(&["huge", "ok1"]);
    assert_eq!(at["huge"], "ha");
    assert_ne!(at["ok1"], "ha");
    rig.agent.stop();
    rig.lab.teardown().expect("teardown");
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn abort_mid_migration_leaves_every_vm_running_once() {
    // 4 MiB/s: a 64 MiB guest takes half a minute, time to abort.
    let mut rig = Rig::new(
        "abort",
        LabSpec::new("abort", 2),
        &[("slow1", 64), ("slow2", 64), ("slow3", 16)],
        "[migration]\nbandwidth_mib_s = 4\nmax_parallel = 1\n",
    );
    rig.req("subscribe", json!({}));
    let watch = Sampler::start(&rig.lab, &["slow1", "slow2", "slow3"]);
    assert_eq!(rig.req("evacuate", json!({}))["ok"], true);
    rig.line
        .expect_event("migration.progress", T, |e| {
            e["data"]["percent"].as_f64().unwrap_or(0.0) > 5.0
        })
        .unwrap_or_else(|e| panic!("no progress: {e}\n{}", rig.agent.log_text()));
    let aborted = rig.req("abort", json!({}));
    assert_eq!(aborted["ok"], true, "{aborted}");
    let events = rig.until_done();
    let v = verdict(&events);
    assert_eq!(v["safe_to_power_off"], false);
    // An aborted migration must not leave its VM paused on the source.
    watch.finish().assert_clean();
    rig.lab.assert_verdict_true("ha", v);
    let at = rig.assert_each_runs_once(&["slow1", "slow2", "slow3"]);
    assert!(
        at.values().all(|h| h == "ha"),
        "nothing should have moved: {at:?}"
    );
    let jobs = rig.req("jobs", json!({}));
    let phases: Vec<&str> = jobs["data"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["phase"].as_str().unwrap())
        .collect();
    assert!(phases.iter().all(|p| *p == "aborted"), "{jobs}");
    // The abort sticks: nothing starts afterwards.
    std::thread::sleep(Duration::from_secs(3));
    let at2 = rig.assert_each_runs_once(&["slow1", "slow2", "slow3"]);
    assert_eq!(at, at2);
    rig.agent.stop();
    rig.lab.teardown().expect("teardown");
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn agent_killed_mid_migration_recovers_the_truth() {
    let mut rig = Rig::new(
        "kill9",
        LabSpec::new("kill9", 2),
        &[("mover", 64)],
        "[migration]\nbandwidth_mib_s = 8\n",
    );
    rig.req("subscribe", json!({}));
    let watch = Sampler::start(&rig.lab, &["mover"]);
    assert_eq!(rig.req("evacuate", json!({}))["ok"], true);
    rig.line
        .expect_event("migration.progress", T, |e| {
            e["data"]["percent"].as_f64().unwrap_or(0.0) > 10.0
        })
        .unwrap_or_else(|e| panic!("no progress: {e}\n{}", rig.agent.log_text()));
    rig.agent.kill();
    // What the dead agent wrote (its last prompt) must not pass for the new
    // one's: a request sent before the new agent opens the line is
    // discarded, as stale input must be.
    rig.line.clear();
    // libvirt carries on with a peer-to-peer migration whose client died.
    let d = dir(&rig.lab);
    let link = d.join("ttyRS0");
    let extra = "[migration]\nbandwidth_mib_s = 8\n";
    rig.agent = AgentProcess::start(
        &rig.lab,
        "ha",
        Path::new(AGENT),
        &d,
        &config(&rig.lab, &[&link], extra),
    )
    .unwrap();
    rig.line
        .wake(T)
        .unwrap_or_else(|e| panic!("{e}\n{}", rig.agent.log_text()));
    rig.req("subscribe", json!({}));
    let events = rig.until_done();
    let v = verdict(&events);
    watch.finish().assert_clean();
    rig.lab.assert_verdict_true("ha", v);
    let at = rig.assert_each_runs_once(&["mover"]);
    assert_eq!(at["mover"], "hb", "{v}");
    assert_eq!(v["safe_to_power_off"], true, "{v}");
    let jobs = rig.req("jobs", json!({}));
    assert_eq!(jobs["data"]["jobs"][0]["phase"], "done", "{jobs}");
    rig.agent.stop();
    rig.lab.teardown().expect("teardown");
}

/// The first destination is lost mid-migration (its libvirtd stopped, or
/// its cable pulled): the job fails, is retried once on the other peer, and
/// once the lost host is back every VM runs exactly once.
fn destination_lost(name: &str, lose: impl Fn(&Lab, &str), restore: impl Fn(&Lab, &str)) {
    let extra = "[migration]\nbandwidth_mib_s = 6\nno_progress_timeout_s = 15\n[placement]\nstrategy = \"pack\"\n";
    let mut rig = Rig::new(name, LabSpec::new(name, 3), &[("wanderer", 64)], extra);
    rig.req("subscribe", json!({}));
    let watch = Sampler::start(&rig.lab, &["wanderer"]);
    let started = rig.req("evacuate", json!({}));
    let first = started["data"]["moves"][0]["dest"]
        .as_str()
        .unwrap()
        .to_string();
    rig.line
        .expect_event("migration.progress", T, |e| {
            e["data"]["percent"].as_f64().unwrap_or(0.0) > 10.0
        })
        .unwrap_or_else(|e| panic!("no progress: {e}\n{}", rig.agent.log_text()));
    lose(&rig.lab, &first);
    let events = rig.until_done();
    restore(&rig.lab, &first);
    let v = verdict(&events).clone();
    let failed = events
        .iter()
        .find(|e| e["event"] == "migration.failed")
        .expect("a failure event");
    assert_eq!(failed["data"]["now_on"], "ha", "{failed}");
    let other = failed["data"]["retrying_on"]
        .as_str()
        .expect("a retry")
        .to_string();
    assert_ne!(other, first);
    assert_eq!(
        v["safe_to_power_off"],
        true,
        "{v}\n{}",
        rig.agent.log_text()
    );
    rig.lab.assert_verdict_true("ha", &v);
    // The lost host cleans up its half of the migration once it is back.
    for _ in 0..60 {
        if rig
            .lab
            .whereabouts("wanderer")
            .is_ok_and(|w| w.runs_once().is_ok())
        {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    watch.finish().assert_clean();
    assert_eq!(rig.lab.assert_runs_once("wanderer"), other);
    let jobs = rig.req("jobs", json!({}));
    assert_eq!(
        jobs["data"]["jobs"][0]["tried"],
        json!([first, other]),
        "{jobs}"
    );
    rig.agent.stop();
    rig.lab.teardown().expect("teardown");
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn destination_libvirtd_stopped_mid_migration() {
    destination_lost(
        "dlost",
        |lab, h| lab.stop_libvirtd(h).unwrap(),
        |lab, h| lab.start_libvirtd(h).unwrap(),
    );
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn destination_link_cut_mid_migration() {
    destination_lost(
        "cut",
        |lab, h| lab.set_link(h, false).unwrap(),
        |lab, h| lab.set_link(h, true).unwrap(),
    );
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn a_guest_that_never_converges_is_given_up_on_and_keeps_running() {
    // Rewrites 24 MiB a second over a link capped at 4 MiB/s: no amount of
    // downtime makes that converge.
    let mut g = GuestSpec::new("writer", 48);
    g.dirty_mib = 24;
    let extra = "[migration]\nbandwidth_mib_s = 4\ndowntime_steps_ms = [100, 200]\nno_progress_timeout_s = 120\n";
    let mut rig = Rig::with_guests("noconv", LabSpec::new("noconv", 2), &[g], extra);
    rig.req("subscribe", json!({}));
    let watch = Sampler::start(&rig.lab, &["writer"]);
    assert_eq!(rig.req("evacuate", json!({}))["ok"], true);
    let events = rig.until_done();
    let v = verdict(&events);
    watch.finish().assert_clean();
    rig.lab.assert_verdict_true("ha", v);
    assert_eq!(v["safe_to_power_off"], false, "{v}");
    let failed = &v["failed"][0];
    assert_eq!(failed["vm"], "writer", "{v}");
    let err = failed["error"].as_str().unwrap();
    assert!(err.contains("does not converge"), "{err}");
    // The downtime was raised before giving up, and people were told why.
    let raised = events
        .iter()
        .filter(|e| e["event"] == "migration.progress")
        .any(|e| e["data"]["downtime_ms"] == 200);
    assert!(raised, "downtime never raised to 200 ms");
    assert_progress_monotone(&events);
    let at = rig.assert_each_runs_once(&["writer"]);
    assert_eq!(at["writer"], "ha");
    rig.agent.stop();
    rig.lab.teardown().expect("teardown");
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn poweroff_only_when_empty_and_allowed() {
    let lab_dir = rackside_lab::names::lab_dir("power");
    let marker = lab_dir.join("powered-off");
    let extra = format!(
        "[power]\nallow = true\ncommand = [\"touch\", \"{}\"]\n",
        marker.display()
    );
    let mut rig = Rig::new("power", LabSpec::new("power", 2), &[("p1", 8)], &extra);
    // A shut-off definition: evacuations move it too (offline migration).
    rig.lab
        .define_guest("ha", &GuestSpec::new("parked", 8))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let r = rig.req("poweroff", json!({}));
    assert_eq!(r["error"]["code"], "busy", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("p1"),
        "{r}"
    );
    assert!(!marker.exists());
    rig.req("subscribe", json!({}));
    let watch = Sampler::start(&rig.lab, &["p1"]);
    assert_eq!(rig.req("evacuate", json!({"poweroff": true}))["ok"], true);
    let events = rig.until_done();
    assert_eq!(verdict(&events)["safe_to_power_off"], true);
    assert_eq!(watch.finish().assert_clean()["p1"], "hb");
    rig.lab.assert_verdict_true("ha", verdict(&events));
    rig.lab.assert_runs_once("p1");
    // The definition moved: defined (not running) on hb, gone from ha.
    let hb = rig.lab.host("hb").unwrap().local_uri.clone();
    let ha = rig.lab.host("ha").unwrap().local_uri.clone();
    assert!(
        virsh::all(&hb).unwrap().contains(&"parked".to_string()),
        "parked not defined on hb"
    );
    assert!(
        !virsh::active(&hb).unwrap().contains(&"parked".to_string()),
        "parked was started"
    );
    assert!(
        !virsh::all(&ha).unwrap().contains(&"parked".to_string()),
        "parked still defined on ha"
    );
    for _ in 0..50 {
        if marker.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(marker.exists(), "the power-off command did not run");
    rig.agent.stop();
    rig.lab.teardown().expect("teardown");
}

/// 64 KiB no image starts with by chance, written 1 MiB into a disk.
fn disk_pattern() -> Vec<u8> {
    (0..65_536u32)
        .map(|i| (i.wrapping_mul(7) % 251) as u8 ^ 0x5a)
        .collect()
}

const PATTERN_AT: u64 = 1 << 20;

/// An image's virtual size and `len` bytes of its content at `at`, read
/// through a raw copy (the lab's local disks are qcow2; `-U`: the source
/// may still be running the guest).
fn image_at(img: &Path, at: u64, len: usize) -> (u64, Vec<u8>) {
    use std::io::{Read, Seek, SeekFrom};
    let raw = std::env::temp_dir().join(format!("rackside-image-{}.raw", std::process::id()));
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-U", "-O", "raw"])
        .arg(img)
        .arg(&raw)
        .output()
        .expect("qemu-img");
    assert!(
        out.status.success(),
        "qemu-img convert {}: {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut f = std::fs::File::open(&raw).unwrap();
    let size = f.metadata().unwrap().len();
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    let _ = std::fs::remove_file(&raw);
    (size, buf)
}

/// Writes [`disk_pattern`] into a (stopped) guest's image.
fn write_pattern(img: &Path) {
    let pat = std::env::temp_dir().join(format!("rackside-pattern-{}", std::process::id()));
    std::fs::write(&pat, disk_pattern()).unwrap();
    let out = std::process::Command::new("qemu-io")
        .arg("-c")
        .arg(format!("write -s {} {PATTERN_AT} 65536", pat.display()))
        .arg(img)
        .output()
        .expect("qemu-io");
    let _ = std::fs::remove_file(&pat);
    assert!(
        out.status.success(),
        "qemu-io write {}: {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 2-host rig whose `hb` has a storage pool at the images directory,
/// and `disky` running on `ha` with a qcow2 local disk holding
/// [`disk_pattern`]. Returns the image inside a host, its file on `ha`
/// and on `hb` (seen from outside), and disky's last tick.
fn disky_rig(name: &str, extra: &str) -> (Rig, String, PathBuf, PathBuf, u64) {
    let rig = Rig::with_guests(name, LabSpec::new(name, 2), &[], extra);
    let images = "/var/lib/libvirt/images";
    // The destination's storage pool at the images directory: where the
    // agent creates the copy's volume. (A lab that already has one there
    // keeps its own.)
    let has_pool = |lab: &Lab| {
        lab.virsh("hb", &["pool-list", "--name"])
            .map(|l| !l.trim().is_empty())
            .unwrap_or(false)
    };
    if !has_pool(&rig.lab) {
        for args in [
            &["pool-define-as", "rs-images", "dir", "--target", images][..],
            &["pool-build", "rs-images"][..],
            &["pool-start", "rs-images"][..],
        ] {
            rig.lab.virsh("hb", args).expect("pool on hb");
        }
    }
    assert!(has_pool(&rig.lab));

    // `disky`: a raw local disk holding a known pattern, then started.
    let mut disky = GuestSpec::new("disky", 16);
    disky.disk = Some(GuestDisk::Local { mib: 8 });
    rig.lab.define_guest("ha", &disky).expect("define disky");
    let inside = disky.local_disk_in_host().unwrap();
    let src_img = rig.lab.host("ha").unwrap().outside_path(&inside);
    let dst_img = rig.lab.host("hb").unwrap().outside_path(&inside);
    write_pattern(&src_img);
    rig.lab
        .virsh("ha", &["start", "disky"])
        .expect("start disky");
    let tick = rig
        .lab
        .wait_tick("ha", "disky", 0, Duration::from_secs(120))
        .expect("disky ticks");
    // The agent has read disky's disks (its poll is 1 s).
    let mut rig = rig;
    for _ in 0..40 {
        let plan = rig.req("plan", json!({}));
        if plan["data"]["moves"].to_string().contains("disky") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    (rig, inside, src_img, dst_img, tick)
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn a_local_disk_is_copied_and_an_unmovable_vm_is_not_tried() {
    let (mut rig, inside, src_img, dst_img, tick) = disky_rig("evstor", "");
    // `pinned`: a host block device disk, defined (shut off): neither
    // shared nor copyable. Without the check an offline migration would
    // happily move its definition away from the device.
    let pinned = GuestSpec::new("pinned", 8);
    let xml = pinned
        .domain_xml(&rig.lab.desc().kernel, &rig.lab.desc().initrd, None)
        .replacen(
            "</devices>",
            "<disk type='block' device='disk'><driver name='qemu' type='raw'/>\
             <source dev='/dev/rackside-lab-nodisk'/><target dev='vdb' bus='virtio'/></disk></devices>",
            1,
        );
    let xml_path = rig.lab.desc().dir.join("pinned.xml");
    std::fs::write(&xml_path, xml).unwrap();
    rig.lab
        .virsh("ha", &["define", &xml_path.to_string_lossy()])
        .expect("define pinned");

    // The agent sees both (its poll is 1 s) and plans accordingly.
    let mut plan = Value::Null;
    for _ in 0..40 {
        plan = rig.req("plan", json!({}));
        let n = |k: &str| plan["data"][k].as_array().map_or(0, Vec::len);
        if n("moves") + n("unplaceable") == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        plan["data"]["moves"],
        json!([{"vm": "disky", "dest": "hb"}]),
        "{plan}"
    );
    let why = plan["data"]["unplaceable"][0]["reason"]
        .as_str()
        .unwrap_or("");
    assert_eq!(plan["data"]["unplaceable"][0]["vm"], "pinned", "{plan}");
    assert!(why.contains("host block device"), "{plan}");

    assert_eq!(rig.req("subscribe", json!({}))["ok"], true);
    let started = rig.req("evacuate", json!({}));
    assert_eq!(started["ok"], true, "{started}");
    let events = rig.until_done();
    let v = verdict(&events);
    eprintln!("verdict: {v}");
    assert_eq!(
        v["moved"][0]["vm"],
        "disky",
        "{v}\n{}",
        rig.agent.log_text()
    );
    assert_eq!(v["unplaceable"][0]["vm"], "pinned", "{v}");
    assert_progress_monotone(&events);
    // The copy showed in the progress: more than the guest's memory moved.
    let jobs = rig.req("jobs", json!({}));
    let job = &jobs["data"]["jobs"][0];
    eprintln!("job: {job}");
    assert_eq!(
        jobs["data"]["jobs"].as_array().map(Vec::len),
        Some(1),
        "{jobs}"
    );
    assert_eq!(job["vm"], "disky");
    assert_eq!(job["phase"], "done", "{job}");

    // Running exactly once, on hb, and alive.
    let at = rig.assert_each_runs_once(&["disky"]);
    assert_eq!(at["disky"], "hb");
    rig.lab
        .wait_tick("hb", "disky", tick, Duration::from_secs(60))
        .expect("disky ticks on hb");
    // The destination's image: the same size, the pattern where it was.
    assert_eq!(
        image_at(&dst_img, PATTERN_AT, 65_536),
        (8 << 20, disk_pattern())
    );
    let vol = rig
        .lab
        .virsh("hb", &["vol-info", "--bytes", &inside])
        .expect("the volume is libvirt's on hb");
    eprintln!("destination volume: {}", vol.trim());
    assert!(vol.contains(&(8u64 << 20).to_string()), "{vol}");
    // The source image is left as it was.
    assert_eq!(
        image_at(&src_img, PATTERN_AT, 65_536),
        (8 << 20, disk_pattern())
    );

    // `pinned` was never tried: still defined here, unknown on hb.
    let here = rig.lab.virsh("ha", &["list", "--all", "--name"]).unwrap();
    let there = rig.lab.virsh("hb", &["list", "--all", "--name"]).unwrap();
    assert!(here.lines().any(|l| l.trim() == "pinned"), "{here}");
    assert!(!there.lines().any(|l| l.trim() == "pinned"), "{there}");
    let log = rig.agent.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains("migration starting") && l.contains("pinned")),
        "pinned was tried:\n{log}"
    );
    rig.agent.stop();
    rig.lab.teardown().expect("teardown");
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn an_aborted_disk_copy_deletes_the_volume_it_created() {
    // 2 MiB/s: the guest's memory alone takes most of a minute.
    let (mut rig, inside, src_img, dst_img, _) =
        disky_rig("evabort", "[migration]\nbandwidth_mib_s = 2\n");
    rig.req("subscribe", json!({}));
    let started = rig.req("evacuate", json!({}));
    assert_eq!(started["ok"], true, "{started}");
    let p = rig
        .line
        .expect_event("migration.progress", T, |e| {
            e["data"]["percent"].as_f64().unwrap_or(0.0) > 5.0
        })
        .unwrap_or_else(|e| panic!("no progress: {e}\n{}", rig.agent.log_text()));
    eprintln!("progress before the abort: {p}");
    // libvirt copies the disk first; that alone is not "nearly done"
    // while the memory (most of a minute at 2 MiB/s) is still to come.
    assert!(p["data"]["percent"].as_f64().unwrap_or(100.0) < 90.0, "{p}");
    // The agent made the volume before the copy started.
    assert!(dst_img.exists(), "no volume on hb at {}", dst_img.display());
    assert_eq!(rig.req("abort", json!({}))["ok"], true);
    let events = rig.until_done();
    let v = verdict(&events);
    eprintln!("verdict: {v}");
    assert_eq!(v["safe_to_power_off"], false, "{v}");
    let jobs = rig.req("jobs", json!({}));
    let job = &jobs["data"]["jobs"][0];
    eprintln!("job: {job}");
    assert_eq!(job["phase"], "aborted", "{job}");
    let error = job["error"].as_str().unwrap_or("");
    assert!(
        error.contains("were deleted"),
        "{job}\n{}",
        rig.agent.log_text()
    );
    // disky runs here only; hb has neither the VM nor the volume; the
    // source image is as it was.
    let at = rig.assert_each_runs_once(&["disky"]);
    assert_eq!(at["disky"], "ha");
    assert!(!dst_img.exists(), "{} left on hb", dst_img.display());
    assert!(rig.lab.virsh("hb", &["vol-info", &inside]).is_err());
    assert_eq!(image_at(&src_img, PATTERN_AT, 65_536).1, disk_pattern());
    rig.agent.stop();
    rig.lab.teardown().expect("teardown");
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn a_destination_without_certificates_is_named_and_the_vm_stays() {
    // Migration is encrypted by default; hb was never given certificates.
    let spec = LabSpec::new("nocert", 2).without_certs("hb");
    let mut rig = Rig::new("nocert", spec, &[("sealed", 8)], "");
    let tick =
        rackside_lab::guest::last_tick(&rig.lab.serial_log("ha", "sealed").unwrap()).unwrap();
    rig.req("subscribe", json!({}));
    let watch = Sampler::start(&rig.lab, &["sealed"]);
    assert_eq!(rig.req("evacuate", json!({}))["ok"], true);
    let events = rig.until_done();
    watch.finish().assert_clean();
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "migration.failed")
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    let error = failed[0]["data"]["error"].as_str().unwrap();
    let pki = rig.lab.host("hb").unwrap().tls_dir();
    assert!(
        error.starts_with(&format!(
            "migration TLS: host hb has no certificates in {}",
            pki.display()
        )),
        "{error}"
    );
    eprintln!("the engineer reads: {error}");
    // Nothing moved: no progress beyond 0 %, no data on hb, the VM here.
    assert!(
        events
            .iter()
            .filter(|e| e["event"] == "migration.progress")
            .all(|e| e["data"]["percent"] == 0.0),
        "{events:?}"
    );
    let v = verdict(&events);
    assert_eq!(v["safe_to_power_off"], false, "{v}");
    assert_eq!(v["remaining"], json!(["sealed"]), "{v}");
    rig.lab.assert_verdict_true("ha", v);
    let at = rig.assert_each_runs_once(&["sealed"]);
    assert_eq!(at["sealed"], "ha");
    rig.lab
        .wait_tick("ha", "sealed", tick, Duration::from_secs(60))
        .expect("the guest still ticks on ha");
    rig.agent.stop();
    rig.lab.teardown().expect("teardown");
}
