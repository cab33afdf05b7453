//! A production-shaped evacuation, judged the way the VMs' owners judge
//! it: an agent on every host, guests with a NIC on the guests' bridge and
//! a disk (one on shared NBD storage, one local and copied), a client that
//! pings each guest every 20 ms and holds a TCP connection to it through
//! the whole evacuation. After the verdict: each guest answers from its new
//! host, its connection survived, its disk counter carried on with nothing
//! lost, the destination announced its MAC, the source's agent heard that
//! announcement itself, and the switch follows it; and
//! its network policy (the hook's nftables tables on a bridged tap) let
//! real packets to allowed ports through and dropped the rest, on the
//! source before the move and on the destination after, with no table
//! left on the source. The silences are printed next to libvirt's
//! downtime, never judged.
//!
//! And when the source cannot hear the announcement (its bridge drops
//! RARP before its own stack sees it), the agent asks the destination's
//! QEMU to announce again, and says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rackside_lab::agent::{lab_config, AgentProcess};
use rackside_lab::capture::{self, RarpWatch};
use rackside_lab::judge::{
    assert_clients_did_not_notice, assert_disk_carried_on, tcp_reach, Reach,
};
use rackside_lab::probe::{Probe, ProbeTarget};
use rackside_lab::pty::PtyLine;
use rackside_lab::{names, GuestDisk, GuestSpec, Lab, LabSpec};
use serde_json::{json, Value};

const AGENT: &str = env!("CARGO_BIN_EXE_rackside-agent");
const T: Duration = Duration::from_secs(20);
const END: Duration = Duration::from_secs(400);
const HOSTS: [&str; 3] = ["ha", "hb", "hc"];

/// web1's policy: its page, its echo port and ping; nothing else in.
const POLICY: &str = "<rs:policy xmlns:rs='https://rackside.dev/xmlns/policy/1'>\
    <rs:allow proto='tcp' port='80'/><rs:allow proto='tcp' port='7'/>\
    <rs:allow proto='icmp'/></rs:policy>";
/// A port nothing in the guest listens on: without a policy the guest
/// refuses it (a reset comes back), under web1's policy the SYN is dropped.
const CLOSED_PORT: u16 = 81;

fn hook_binary() -> PathBuf {
    let p = Path::new(AGENT).with_file_name("rackside-hook");
    assert!(
        p.exists(),
        "{} missing: build the workspace first",
        p.display()
    );
    p
}

fn nft_tables(lab: &Lab, host: &str) -> String {
    let out = lab
        .exec(host, "nft")
        .unwrap()
        .args(["list", "tables"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The VM's policy tables' name, from its UUID as libvirt reports it.
fn policy_table(lab: &Lab, host: &str, vm: &str) -> String {
    let uuid = lab.virsh(host, &["domuuid", vm]).unwrap();
    let uuid = rackside_hook::policy::parse_uuid(uuid.trim()).unwrap();
    rackside_hook::ruleset::table_name(&uuid)
}

/// The policy holds on the host web1 runs on: the bridge table is there,
/// an allowed port answers, a closed one is silent (dropped, not refused),
/// and loc1 (no policy) refuses the same closed port.
fn assert_policy_filters(lab: &Lab, host: &str, table: &str, web: &GuestSpec, loc: &GuestSpec) {
    let ns = &lab.desc().guest_net.client_netns;
    let tables = nft_tables(lab, host);
    assert!(
        tables.contains(&format!("table bridge {table}\n")),
        "no bridge policy table on {host}: {tables}"
    );
    let web_addr = web.net_addr.unwrap();
    assert_eq!(
        tcp_reach(ns, web_addr, 80),
        Ok(Reach::Answered),
        "web1:80 on {host}"
    );
    assert_eq!(
        tcp_reach(ns, web_addr, CLOSED_PORT),
        Ok(Reach::Silent),
        "web1:{CLOSED_PORT} on {host}"
    );
    assert_eq!(
        tcp_reach(ns, loc.net_addr.unwrap(), CLOSED_PORT),
        Ok(Reach::Refused),
        "loc1:{CLOSED_PORT} (no policy)"
    );
}

fn target(g: &GuestSpec) -> ProbeTarget {
    ProbeTarget {
        guest: g.name.clone(),
        addr: g.net_addr.expect("a networked guest"),
    }
}

/// Events on `line` up to and including `evacuation.done`.
fn until_done(line: &mut PtyLine, agent: &AgentProcess) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let l = line
            .expect_line(END, |l| l.trim_start().starts_with("{\"event\""))
            .unwrap_or_else(|e| panic!("no evacuation.done: {e}\n{}", agent.log_text()));
        let v: Value = serde_json::from_str(l.trim_start()).unwrap();
        let done = v["event"] == "evacuation.done";
        events.push(v);
        if done {
            return events;
        }
    }
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn clients_do_not_notice_an_evacuation() {
    let lab = Lab::up(&LabSpec::new("prod", 3).with_hook(&hook_binary())).expect("lab up");
    let d = lab.desc().clone();
    let mut web = GuestSpec::new("web1", 32)
        .with_net(names::guest_addr(1))
        .with_disk(GuestDisk::Shared { mib: 16 });
    web.metadata = Some(POLICY.to_owned());
    let local = GuestSpec::new("loc1", 16)
        .with_net(names::guest_addr(2))
        .with_disk(GuestDisk::Local { mib: 16 });
    let guests = [&web, &local];
    std::thread::scope(|s| {
        for g in guests {
            let lab = &lab;
            s.spawn(move || lab.start_guest("ha", g).expect("guest"));
        }
    });
    let before: Vec<u64> = guests
        .iter()
        .map(|g| {
            lab.wait_disk("ha", &g.name, 1, T * 6)
                .expect("disk counter")
        })
        .collect();

    let table = policy_table(&lab, "ha", "web1");
    assert_policy_filters(&lab, "ha", &table, &web, &local);

    // An agent on every host, each polling the others: what a real rack
    // runs, and what once stretched a guest's pause to seconds.
    let mut agents = Vec::new();
    let mut lines = Vec::new();
    for h in HOSTS {
        let dir = d.dir.join(format!("agent-{h}"));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("tty");
        let mut line = PtyLine::open(&link).unwrap();
        let cfg = lab_config(&lab, h, &dir, &link, "");
        let a = AgentProcess::start(&lab, h, Path::new(AGENT), &dir, &cfg).unwrap();
        line.wake(T)
            .unwrap_or_else(|e| panic!("{e}\n{}", a.log_text()));
        agents.push(a);
        lines.push(line);
    }
    let (agent, line) = (&agents[0], &mut lines[0]);
    let mut id = 0;
    let mut req = |line: &mut PtyLine, cmd: &str, args: Value| {
        id += 1;
        line.request(id, cmd, args, T)
            .unwrap_or_else(|e| panic!("{cmd}: {e}\n{}", agent.log_text()))
    };
    // Placement needs every peer's first poll and both guests' disks.
    for _ in 0..60 {
        let plan = req(line, "plan", json!({}));
        if plan["data"]["moves"].as_array().map(Vec::len) == Some(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    let probe = Probe::start(&d.guest_net.client_netns, &[target(&web), target(&local)])
        .expect("client probe");
    let rarp = RarpWatch::start(&d.switch_netns).expect("capture");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(req(line, "subscribe", json!({}))["ok"], true);
    let started = req(line, "evacuate", json!({}));
    assert_eq!(started["ok"], true, "{started}");
    let events = until_done(line, agent);
    let moved_at = probe.elapsed();
    let verdict = &events.last().unwrap()["data"];
    assert_eq!(
        verdict["safe_to_power_off"],
        true,
        "{verdict}\n{}",
        agent.log_text()
    );
    let jobs = req(line, "jobs", json!({}));
    let jobs = jobs["data"]["jobs"].as_array().cloned().unwrap_or_default();
    let dest_of = |vm: &str| -> String {
        jobs.iter()
            .find(|j| j["vm"] == vm)
            .and_then(|j| j["dest"].as_str())
            .unwrap_or_else(|| panic!("no job for {vm}: {jobs:?}"))
            .to_owned()
    };
    // Each move's traffic followed it, and the agent saw so itself: the
    // destination's RARP reached the source's bridge.
    for g in guests {
        let job = jobs.iter().find(|j| j["vm"] == g.name.as_str()).unwrap();
        let done = events
            .iter()
            .find(|e| e["event"] == "migration.done" && e["data"]["vm"] == g.name.as_str())
            .unwrap_or_else(|| panic!("no migration.done for {}", g.name));
        assert_eq!(done["data"]["announce"], job["announce"], "{}", g.name);
        assert_eq!(
            job["announce"]["result"],
            "seen",
            "{}: {job}\n{}",
            g.name,
            agent.log_text()
        );
        let at = |step: &str| {
            job["timeline"]
                .as_array()
                .and_then(|t| t.iter().find(|m| m["step"] == step))
                .map_or("-".to_owned(), |m| m["at_s"].to_string())
        };
        eprintln!(
            "{}: RARP seen on ha's bridge {} ms from libvirt's end of the migration \
             (timeline: switchover {}, announced {}, ended {} s; downtime {} ms)",
            g.name,
            job["announce"]["from_end_ms"],
            at("switchover"),
            at("announced"),
            at("ended"),
            job["downtime_ms"]
        );
    }
    for g in guests {
        lab.wait_tick(&dest_of(&g.name), &g.name, 0, T * 6)
            .expect("ticks on the destination");
    }
    std::thread::sleep(Duration::from_secs(2));
    let seen = probe.finish();
    let frames = rarp.finish().expect("capture");

    let at = lab.assert_each_runs_once(&["web1", "loc1"]);
    for g in guests {
        assert_eq!(at[&g.name], dest_of(&g.name), "{}", g.name);
        assert_ne!(at[&g.name], "ha");
    }
    for p in &seen {
        let job = jobs.iter().find(|j| j["vm"] == p.guest.as_str()).unwrap();
        eprintln!(
            "{}: libvirt downtime {} ms, client's longest ping silence {:.0} ms",
            p.guest, job["downtime_ms"], p.ping_silence.longest_ms
        );
        assert_clients_did_not_notice(p, moved_at);
    }
    for g in guests {
        let dst = dest_of(&g.name);
        let port = &lab.host(&dst).unwrap().guest_port;
        let mac = g.mac();
        assert!(
            capture::saw_rarp(&frames, port, &mac),
            "{}: no RARP from {mac} on {port}: {frames:?}",
            g.name
        );
        eprintln!(
            "{}: {} RARP frames from {mac} came in on the switch's port {port}",
            g.name,
            capture::rarps_from(&frames, port, &mac).len()
        );
        let fdb = capture::fdb_port(&d.switch_netns, &d.guest_net.switch_bridge, &mac)
            .expect("bridge fdb");
        assert_eq!(fdb.as_deref(), Some(port.as_str()), "{}", g.name);
    }
    // The policy moved with web1 and left nothing behind.
    assert_policy_filters(&lab, &dest_of("web1"), &table, &web, &local);
    let left = nft_tables(&lab, "ha");
    assert!(!left.contains(&table), "web1's table left on ha: {left}");

    for (i, g) in guests.into_iter().enumerate() {
        assert_disk_carried_on(&lab, g, "ha", &dest_of(&g.name), before[i]);
    }
    for mut a in agents {
        a.stop();
    }
    lab.teardown().expect("teardown");
}

/// Drops every RARP frame coming to `host`'s bridges' own stack (the
/// bridge family's `input` hook); frames a bridge forwards to its other
/// ports, and so to the switch, are untouched.
fn deafen_to_rarp(lab: &Lab, host: &str) {
    let rules = "table bridge rsdeaf {\n chain input {\n  \
                 type filter hook input priority 0; policy accept;\n  \
                 ether type 0x8035 drop\n }\n}\n";
    let mut child = lab
        .exec(host, "nft")
        .unwrap()
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nft");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("nft stdin");
        stdin.write_all(rules.as_bytes()).expect("nft rules");
    }
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft on {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn an_announcement_the_source_cannot_hear_is_requested() {
    let lab = Lab::up(&LabSpec::new("prodrarp", 2)).expect("lab up");
    let d = lab.desc().clone();
    let g = GuestSpec::new("rarp1", 16).with_net(names::guest_addr(3));
    let mac = g.mac();
    lab.start_guest("ha", &g).expect("guest");
    deafen_to_rarp(&lab, "ha");

    let dir = d.dir.join("agent-ha");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("tty");
    let mut line = PtyLine::open(&link).unwrap();
    let cfg = lab_config(&lab, "ha", &dir, &link, "");
    let mut agent = AgentProcess::start(&lab, "ha", Path::new(AGENT), &dir, &cfg).unwrap();
    line.wake(T)
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));
    assert_eq!(
        line.request(1, "subscribe", json!({}), T).unwrap()["ok"],
        true
    );
    // The client hears every announcement.
    let rarp = RarpWatch::start(&d.guest_net.client_netns).expect("capture");
    let begun = Instant::now();
    // The agent needs hb's first poll before it places anything there.
    let mut started = json!(null);
    for i in 0..60 {
        started = line
            .request(10 + i, "migrate", json!({"vm": g.name, "dest": "hb"}), T)
            .unwrap();
        if started["ok"] == true {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(started["ok"], true, "{started}\n{}", agent.log_text());
    let done = line
        .expect_event("migration.done", Duration::from_secs(180), |_| true)
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));
    let done_at = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let frames = rarp.finish().expect("capture");

    let announce = &done["data"]["announce"];
    assert_eq!(
        announce["result"],
        "requested",
        "{done}\n{}",
        agent.log_text()
    );
    let why = announce["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!(
            "no RARP from {mac} seen on {}",
            d.guest_net.host_bridge
        )),
        "{why}"
    );
    let jobs = line.request(100, "jobs", json!({}), T).unwrap();
    let job = &jobs["data"]["jobs"][0];
    assert_eq!(&job["announce"], announce, "{jobs}");
    assert_eq!(lab.assert_runs_once(&g.name), "hb");
    lab.wait_tick("hb", &g.name, 0, T * 6)
        .expect("ticks on the destination");

    // QEMU's own announcement is five rounds; the one asked for, five more.
    // The client's only interface.
    let from_vm = capture::rarps_from(&frames, "eth0", &mac);
    let after_done = from_vm.iter().filter(|f| f.at > done_at).count();
    let ms = |t: Instant| t.saturating_duration_since(begun).as_millis();
    eprintln!(
        "client saw {} RARP frames from {mac}, {after_done} after the agent's migration.done \
         (at {} ms from the capture's start; frames at {:?} ms)",
        from_vm.len(),
        ms(done_at),
        from_vm.iter().map(|f| ms(f.at)).collect::<Vec<_>>()
    );
    assert!(
        from_vm.len() > 5,
        "only QEMU's own announcement reached the client: {from_vm:?}"
    );
    // The request went through the destination's QEMU monitor, and libvirt
    // says so in the guest's log.
    let qemu_log = std::fs::read_to_string(
        lab.host("hb")
            .unwrap()
            .outside_path(&format!("/var/log/libvirt/qemu/{}.log", g.name)),
    )
    .unwrap_or_default();
    assert!(
        qemu_log.contains("custom-monitor"),
        "no custom-monitor taint in hb's log of {}:\n{qemu_log}",
        g.name
    );
    agent.stop();
    lab.teardown().expect("teardown");
}
