//! The agent on a lab host, over real ptys, against real libvirtd and QEMU.
//! Needs root: ignored by plain `cargo test`, run by `make test-lab`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rackside_lab::agent::AgentProcess;
use rackside_lab::pty::PtyLine;
use rackside_lab::{virsh, GuestSpec, Lab, LabSpec};
use serde_json::{json, Value};

const AGENT: &str = env!("CARGO_BIN_EXE_rackside-agent");
const T: Duration = Duration::from_secs(20);

fn work_dir(lab: &Lab) -> PathBuf {
    lab.desc().dir.join("agent-test")
}

fn config(lab: &Lab, lines: &[&Path], extra: &str) -> String {
    let hb = lab.host("hb").unwrap();
    let mut c = format!(
        "[host]\nname = \"ha\"\nlocation = \"lab / rack 1 / U01\"\n\
         [libvirt]\nuri = \"qemu:///system\"\npoll_interval_s = 1\n\
         [[peer]]\nname = \"hb\"\nuri = \"{}\"\nmigrate_uri = \"{}\"\nlocation = \"lab / rack 1 / U02\"\n\
         [state]\ndir = \"{}\"\n",
        hb.uri,
        hb.migrate_uri,
        work_dir(lab).join("state").display()
    );
    for l in lines {
        c.push_str(&format!("[[console]]\npath = \"{}\"\n", l.display()));
    }
    c.push_str(extra);
    // Lab hosts share the machine's CPUs (see lab_evacuate.rs).
    c.push_str("[placement]\nload_threshold = 1.0\n");
    c
}

fn ok(resp: &Value) -> &Value {
    assert_eq!(resp["ok"], json!(true), "{resp}");
    &resp["data"]
}

/// The names, states, vCPUs and MiB virsh reports for every domain.
fn virsh_view(lab: &Lab, host: &str) -> Vec<(String, String, u64, u64)> {
    let uri = lab.host(host).unwrap().local_uri.clone();
    let mut v: Vec<_> = virsh::all(&uri)
        .unwrap()
        .into_iter()
        .map(|n| {
            let info = virsh::run(&uri, &["dominfo", &n]).unwrap();
            let state = match virsh::field(&info, "State").unwrap().as_str() {
                "running" => "running",
                "paused" => "paused",
                "shut off" => "shutoff",
                "crashed" => "crashed",
                other => panic!("unexpected virsh state {other}"),
            }
            .to_string();
            let vcpus = virsh::field(&info, "CPU(s)").unwrap().parse().unwrap();
            let kib: u64 = virsh::field(&info, "Max memory")
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            (n, state, vcpus, kib / 1024)
        })
        .collect();
    v.sort();
    v
}

fn agent_view(data: &Value) -> Vec<(String, String, u64, u64)> {
    let mut v: Vec<_> = data["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["name"].as_str().unwrap().to_string(),
                x["state"].as_str().unwrap().to_string(),
                x["vcpus"].as_u64().unwrap(),
                x["mem_mib"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn agent_tells_the_truth_and_survives_its_world() {
    let lab = Lab::up(&LabSpec::new("console", 2)).expect("lab up");
    let dir = work_dir(&lab);
    std::fs::create_dir_all(&dir).unwrap();
    lab.start_guest("ha", &GuestSpec::new("web1", 16)).unwrap();
    lab.define_guest("ha", &GuestSpec::new("db1", 32)).unwrap();
    lab.start_guest("hb", &GuestSpec::new("far1", 8)).unwrap();

    let link = dir.join("ttyRS0");
    let mut line = PtyLine::open(&link).unwrap();
    let mut agent = AgentProcess::start(
        &lab,
        "ha",
        Path::new(AGENT),
        &dir,
        &config(&lab, &[&link], ""),
    )
    .unwrap();
    let mut id = 0u64;
    let mut req = |line: &mut PtyLine, cmd: &str, args: Value| {
        id += 1;
        line.request(id, cmd, args, T).unwrap_or_else(|e| {
            panic!(
                "{cmd}: {e}\nagent log:\n{}",
                std::fs::read_to_string(agent_log(&dir)).unwrap_or_default()
            )
        })
    };
    fn agent_log(dir: &Path) -> PathBuf {
        dir.join("agent-ha.log")
    }

    // A person's view first: the line stays quiet until Enter, then the
    // banner says where this is and whether a PIN guards it.
    line.pump(Duration::from_secs(2));
    assert_eq!(
        line.tail(100),
        "",
        "the agent wrote before anyone pressed Enter"
    );
    let banner = line.wake(T).expect("banner and prompt");
    assert!(
        banner.contains("location: lab / rack 1 / U01"),
        "{banner:?}"
    );
    assert!(banner.contains("no PIN set"), "{banner:?}");
    assert!(banner.ends_with("ha> "), "{banner:?}");

    // status and vms agree with virsh.
    let status = req(&mut line, "status", json!({}));
    let s = ok(&status);
    assert_eq!(s["host"], "ha");
    assert_eq!(s["location"], "lab / rack 1 / U01");
    assert_eq!(s["vms_running"], 1, "{s}");
    assert_eq!(s["vms_defined"], 2, "{s}");
    assert_eq!(s["mem_allocated_mib"], 16 + 96, "{s}");
    assert_eq!(s["state"], "active");
    let vms = req(&mut line, "vms", json!({}));
    assert_eq!(agent_view(ok(&vms)), virsh_view(&lab, "ha"));

    // The peer is seen through its libvirt, and locate finds VMs there.
    let mut hosts = Value::Null;
    for _ in 0..20 {
        hosts = req(&mut line, "hosts", json!({}));
        if ok(&hosts)["hosts"][1]["reachable"] == json!(true) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let hb = &ok(&hosts)["hosts"][1];
    assert_eq!(hb["name"], "hb");
    assert_eq!(hb["reachable"], true, "{hosts}");
    assert_eq!(hb["vms_running"], 1, "{hosts}");
    let far = req(&mut line, "locate", json!({"vm": "far1"}));
    assert_eq!(ok(&far)["host"], "hb");
    assert_eq!(ok(&far)["state"], "live");
    let local = req(&mut line, "locate", json!({"vm": "db1"}));
    assert_eq!(ok(&local)["state"], "inactive");
    let none = req(&mut line, "locate", json!({"vm": "nosuch"}));
    assert_eq!(ok(&none)["state"], "unknown");

    // A dry run moves nothing: both VMs stay, and hb is where they would go.
    let plan = req(&mut line, "plan", json!({}));
    let moves = ok(&plan)["moves"].as_array().unwrap().clone();
    assert_eq!(moves.len(), 2, "{plan}");
    assert!(moves.iter().all(|m| m["dest"] == "hb"), "{plan}");
    assert_eq!(
        agent_view(ok(&req(&mut line, "vms", json!({})))),
        virsh_view(&lab, "ha")
    );

    // A lifecycle event reaches a subscribed line within seconds.
    ok(&req(&mut line, "subscribe", json!({})));
    lab.virsh("ha", &["destroy", "web1"]).unwrap();
    let e = line
        .expect_event("vm.state", T, |v| {
            v["data"]["vm"] == "web1" && v["data"]["what"] == "stopped"
        })
        .expect("vm.state for web1");
    assert_eq!(e["data"]["what"], "stopped", "{e}");
    assert!(e["ts"].as_str().unwrap().contains('T'));
    let vms = req(&mut line, "vms", json!({}));
    assert_eq!(agent_view(ok(&vms)), virsh_view(&lab, "ha"));

    // libvirtd restarts: the agent says its figures are stale, then is
    // right again without being restarted.
    lab.stop_libvirtd("ha").unwrap();
    let mut stale = Value::Null;
    for _ in 0..40 {
        stale = req(&mut line, "vms", json!({}));
        if ok(&stale)["stale"] == json!(true) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(ok(&stale)["stale"], true, "{stale}");
    let st = req(&mut line, "status", json!({}));
    assert_eq!(ok(&st)["libvirt"], "down");
    lab.start_libvirtd("ha").unwrap();
    lab.virsh("ha", &["start", "web1"]).unwrap();
    let mut fresh = Value::Null;
    for _ in 0..80 {
        fresh = req(&mut line, "vms", json!({}));
        if ok(&fresh)["stale"] == json!(false) && agent_view(ok(&fresh)) == virsh_view(&lab, "ha") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(ok(&fresh)["stale"], false, "{fresh}");
    assert_eq!(agent_view(ok(&fresh)), virsh_view(&lab, "ha"));
    // Through the restart each guest kept running exactly once, alive.
    assert_eq!(lab.assert_runs_once("web1"), "ha");
    assert_eq!(lab.assert_runs_once("far1"), "hb");

    // Garbage on the line: 20 kB of random bytes, a 5000-byte line, telnet
    // negotiation. The line still works afterwards.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..20_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // No CR/LF: those would end lines and make answers of their own.
            match (seed >> 24) as u8 {
                b'\r' | b'\n' => b'x',
                b => b,
            }
        })
        .collect();
    line.write(&noise).unwrap();
    line.write(b"\r").unwrap();
    line.write(&vec![b'a'; 5000]).unwrap();
    line.write(b"\r").unwrap();
    line.write(&[
        255, 251, 1, 255, 253, 3, 255, 250, 24, 0, b'x', b't', 255, 240, 255, 241,
    ])
    .unwrap();
    line.write(b"\x15").unwrap();
    let after = req(&mut line, "status", json!({}));
    assert_eq!(ok(&after)["host"], "ha");
    assert!(agent.running(), "agent died on garbage");

    // The pty goes away and comes back (a USB adapter unplugged and
    // replugged): the agent reopens the line by its path.
    drop(line);
    std::thread::sleep(Duration::from_secs(1));
    let mut line = PtyLine::open(&link).unwrap();
    line.wake(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("no banner after reopen: {e}\n{}", agent.log_text()));
    let again = line.request(1000, "status", json!({}), T).unwrap();
    assert_eq!(ok(&again)["host"], "ha");

    // Text mode for people: prompt, echo, aligned table.
    line.clear();
    line.write(b"vms\r").unwrap();
    let table = line.expect_text(T, "ha> ").unwrap();
    assert!(table.contains("vms\r\n"), "no echo: {table:?}");
    assert!(table.contains("NAME"), "{table:?}");
    assert!(table.contains("web1") && table.contains("db1"), "{table:?}");

    assert_eq!(
        agent.stop(),
        Some(0),
        "clean exit on SIGTERM:\n{}",
        agent.log_text()
    );
    lab.teardown().expect("teardown");
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn wrong_pins_on_any_line_lock_every_line_and_a_restart_keeps_the_lock() {
    let lab = Lab::up(&LabSpec::new("pin", 2)).expect("lab up");
    let dir = work_dir(&lab);
    std::fs::create_dir_all(&dir).unwrap();
    let hash = rackside_lab::agent::hash_pin(Path::new(AGENT), "471147");
    let (l1, l2) = (dir.join("ttyRS1"), dir.join("ttyRS2"));
    let mut one = PtyLine::open(&l1).unwrap();
    let mut two = PtyLine::open(&l2).unwrap();
    let extra = format!("[auth]\npin_hash = \"{hash}\"\n");
    let cfg = config(&lab, &[&l1, &l2], &extra);
    let mut agent = AgentProcess::start(&lab, "ha", Path::new(AGENT), &dir, &cfg).unwrap();
    let banner = one
        .wake(T)
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));
    assert!(
        banner.contains("PIN set: login to change things"),
        "{banner:?}"
    );
    two.wake(T).unwrap();

    // Reading is allowed without login; changing is not.
    assert_eq!(one.request(1, "status", json!({}), T).unwrap()["ok"], true);
    let r = one
        .request(2, "maintenance", json!({"on": true}), T)
        .unwrap();
    assert_eq!(r["error"]["code"], "auth_required", "{r}");

    // Wrong PINs count for the host, whichever line they come from: a
    // second cable does not double anyone's guesses.
    for i in 0..4 {
        let line = if i % 2 == 0 { &mut one } else { &mut two };
        let r = line
            .request(10 + i, "login", json!({"pin": "000000"}), T)
            .unwrap();
        assert_eq!(r["error"]["code"], "auth_failed", "{r}");
        let left = 4 - i;
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("{left} more tr")),
            "{r}"
        );
    }
    let r = two
        .request(20, "login", json!({"pin": "000000"}), T)
        .unwrap();
    assert_eq!(r["error"]["code"], "locked_out", "{r}");
    // Locked out: even the right PIN is refused, on both lines.
    for (i, line) in [&mut one, &mut two].into_iter().enumerate() {
        let r = line
            .request(21 + i as u64, "login", json!({"pin": "471147"}), T)
            .unwrap();
        assert_eq!(r["error"]["code"], "locked_out", "{r}");
    }

    // A restart of the agent does not lift the lockout.
    assert_eq!(agent.stop(), Some(0), "{}", agent.log_text());
    let goodbye = one.expect_text(T, "is back").unwrap();
    assert!(
        goodbye.contains("rackside-agent on ha is stopping"),
        "{goodbye:?}"
    );
    agent = AgentProcess::start(&lab, "ha", Path::new(AGENT), &dir, &cfg).unwrap();
    one.clear();
    one.wake(T)
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));
    let r = one
        .request(30, "login", json!({"pin": "471147"}), T)
        .unwrap();
    assert_eq!(r["error"]["code"], "locked_out", "{r}");
    let saved = std::fs::metadata(dir.join("state/logins.json")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(saved.permissions().mode() & 0o777, 0o600);

    let log = agent.log_text();
    assert!(
        log.contains("login attempt while locked out") && log.contains("ttyRS1"),
        "refusals not logged with the line:\n{log}"
    );
    drop(agent);
    lab.teardown().expect("teardown");
}
