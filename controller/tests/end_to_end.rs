//! The controller binary against fake agents (tests/common/fake_agent.rs,
//! a test fixture) over a real pty pair and real TCP sockets, raw and
//! telnet: status, locate, identify and evacuate end to end, and a line
//! that drops in the middle of an evacuation and comes back. No root, no
//! libvirt; no assertion on how long anything took.

mod common;

use common::fake_agent::{self, Scenario};
use common::{controller, json_lines, scratch};

const IAC: u8 = 255;
const DO: u8 = 253;
const DONT: u8 = 254;
const WONT: u8 = 252;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Three hosts, one on each kind of line: (args, worlds).
fn three_hosts(test: &str) -> (Vec<String>, Vec<fake_agent::Shared>) {
    let dir = scratch(test);
    let ha = fake_agent::world("ha", &["web1", "db1"], Scenario::Safe);
    let hb = fake_agent::world("hb", &["app1"], Scenario::Safe);
    let hc = fake_agent::world("hc", &[], Scenario::Safe);
    let link = fake_agent::on_pty(&dir, &ha);
    let tcp = fake_agent::on_tcp(&hb, false);
    let telnet = fake_agent::on_tcp(&hc, true);
    let args = vec![
        "--line".into(),
        format!("ha={}", link.display()),
        "--line".into(),
        format!("hb=tcp://127.0.0.1:{tcp}"),
        "--line".into(),
        format!("hc=telnet://127.0.0.1:{telnet}"),
    ];
    (args, vec![ha, hb, hc])
}

fn with<'a>(args: &'a [String], more: &[&'a str]) -> Vec<&'a str> {
    args.iter()
        .map(String::as_str)
        .chain(more.iter().copied())
        .collect()
}

#[test]
fn status_over_a_pty_tcp_and_telnet() {
    let (args, worlds) = three_hosts("status");
    let run = controller(&with(&args, &["status", "--json"]), &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    let v = &json_lines(&run)[0];
    let hosts = v["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ha", "hb", "hc"]);
    for (h, vms) in hosts.iter().zip([2, 1, 0]) {
        assert_eq!(h["up"], true, "{h}");
        assert_eq!(h["status"]["host"], h["name"], "{h}");
        assert_eq!(h["status"]["vms_running"], vms, "{h}");
    }

    // The telnet line answered the console server's negotiation: it asked
    // for SGA, refused remote echo, terminal type and window size.
    let received = worlds[2].lock().unwrap().received.clone();
    for want in [
        [IAC, DO, 3],
        [IAC, DONT, 1],
        [IAC, WONT, 24],
        [IAC, WONT, 31],
    ] {
        assert!(contains(&received, &want), "{want:?} not in {received:?}");
    }

    // And as text, one row per host.
    let run = controller(&with(&args, &["status"]), &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("HOST  LINE  STATE"), "{}", run.stdout);
    for (line, host) in lines[1..].iter().zip(["ha", "hb", "hc"]) {
        assert!(
            line.starts_with(&format!("{host}    up    active  ok")),
            "{line}"
        );
    }
    assert!(lines.iter().all(|l| l.chars().count() <= 80));
}

#[test]
fn status_reports_a_line_that_is_down_and_exits_1() {
    let (mut args, _worlds) = three_hosts("status-down");
    let port = fake_agent::closed_port();
    args.extend(["--line".into(), format!("hd=tcp://127.0.0.1:{port}")]);
    args.extend(["--line".into(), "he=/nonexistent/ttyUSB9".into()]);
    let run = controller(&with(&args, &["status", "--timeout", "2"]), &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    let rows: Vec<&str> = run.stdout.lines().collect();
    assert!(rows[4].starts_with("hd    down  -"), "{}", run.stdout);
    assert!(rows[5].starts_with("he    down  -"), "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "note: he (/nonexistent/ttyUSB9): line down: cannot open /nonexistent/ttyUSB9"
        ),
        "{}",
        run.stdout
    );
    assert!(rows[1].starts_with("ha    up"), "{}", run.stdout);
}

#[test]
fn locate_asks_every_host() {
    let (args, _worlds) = three_hosts("locate");
    let run = controller(&with(&args, &["locate", "app1"]), &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.stdout, "app1: live on hb (rack 1), running\n");

    let run = controller(&with(&args, &["locate", "db1", "--json"]), &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    let v = &json_lines(&run)[0];
    assert_eq!(v["where"]["host"], "ha");
    assert_eq!(v["asked"].as_array().unwrap().len(), 3);

    let run = controller(&with(&args, &["locate", "nosuch"]), &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.stdout, "nosuch: not found on any host that answered\n");
}

#[test]
fn identify_logs_in_with_the_pin_when_asked() {
    let hc = fake_agent::world("hc", &[], Scenario::Safe);
    hc.lock().unwrap().pin = Some("246810".into());
    let port = fake_agent::on_tcp(&hc, true);
    let line = format!("hc=telnet://127.0.0.1:{port}");

    let run = controller(&["--line", &line, "identify", "hc"], &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr
            .contains("'identify' needs a login and no PIN was given"),
        "{}",
        run.stderr
    );
    assert!(hc.lock().unwrap().identified.is_empty());

    let run = controller(
        &["--line", &line, "identify", "hc", "--seconds", "60"],
        &[("RACKSIDE_PIN", "246810")],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.stdout, "hc: identify on for 60 s\n");
    assert_eq!(hc.lock().unwrap().identified, ["Seconds(60)"]);

    let dir = scratch("pin");
    let pin = dir.join("pin");
    std::fs::write(&pin, "000000\n").unwrap();
    let run = controller(
        &[
            "--line",
            &line,
            "identify",
            "hc",
            "--pin-file",
            pin.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.contains("login refused: auth_failed: wrong PIN"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("000000"), "{}", run.stderr);
}

#[test]
fn evacuate_safe_over_a_pty() {
    let dir = scratch("evac-pty");
    let ha = fake_agent::world("ha", &["web1", "db1"], Scenario::Safe);
    let link = fake_agent::on_pty(&dir, &ha);
    let line = format!("ha={}", link.display());
    let run = controller(&["--line", &line, "evacuate", "ha"], &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    let want = "\
ha: evacuation 1 started: 2 to move, 0 cannot be placed
  web1 -> hz
  db1 -> hz
ha: web1 -> hz: 50%, 512 MiB left, eta 5 s
ha: web1 -> hz: done in 2.5 s, downtime 120 ms
ha: db1 -> hz: 50%, 512 MiB left, eta 5 s
ha: db1 -> hz: done in 2.5 s, downtime 120 ms
ha: the host is empty
*********************************************************
*** SAFE TO POWER OFF ha: no VM left running; 2 moved ***
*********************************************************
";
    assert_eq!(run.stdout, want);
}

#[test]
fn evacuate_not_safe_over_tcp_exits_2() {
    let hb = fake_agent::world("hb", &["app1", "app2"], Scenario::NotSafe);
    let port = fake_agent::on_tcp(&hb, false);
    let line = format!("hb=tcp://127.0.0.1:{port}");
    let run = controller(&["--line", &line, "evacuate", "hb"], &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stdout
            .contains("  app2: cannot be placed: no candidate: hz: full\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("  still here (running): app2: cannot be placed: no candidate: hz: full\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\n*** NOT SAFE TO POWER OFF hb: 1 moved ***\n"),
        "{}",
        run.stdout
    );

    // --json: the start, each event, then the verdict (of a host that
    // has both VMs again).
    hb.lock().unwrap().vms = vec!["app1".into(), "app2".into()];
    let run = controller(&["--line", &line, "evacuate", "hb", "--json"], &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    let values = json_lines(&run);
    assert_eq!(values[0]["started"]["evacuation"], 2);
    let last = values.last().unwrap();
    assert_eq!(last["safe_to_power_off"], false);
    assert_eq!(last["from"], "event");
    assert!(values.iter().any(|v| v["event"] == "evacuation.done"));
}

/// The line drops right after `evacuate` is accepted and comes back; the
/// verdict is read from `status` (the run ended while the line was down).
fn drop_and_status(test: &str, line: String, world: &fake_agent::Shared) {
    let name = world.lock().unwrap().name.clone();
    let run = controller(&["--line", &line, "evacuate", &name], &[]);
    assert_eq!(run.code, 0, "{test}: {run:#?}");
    assert!(
        run.stderr.contains(": line dropped: line down"),
        "{test}: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains(": line up again"),
        "{test}: {}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains("(from the host's status after the line came back: 2 moved, 0 still here)"),
        "{test}: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains("*** SAFE TO POWER OFF"),
        "{test}: {}",
        run.stdout
    );
    let w = world.lock().unwrap();
    assert_eq!(w.dropped, 1, "{test}");
    assert!(w.connections >= 2, "{test}");
}

#[test]
fn a_dropped_pty_line_comes_back_and_the_verdict_is_read_from_status() {
    let dir = scratch("drop-pty");
    let ha = fake_agent::world("ha", &["web1", "db1"], Scenario::DropThenStatus);
    let link = fake_agent::on_pty(&dir, &ha);
    drop_and_status("pty", format!("ha={}", link.display()), &ha);
}

#[test]
fn a_dropped_tcp_line_comes_back_and_the_verdict_is_read_from_status() {
    let hb = fake_agent::world("hb", &["web1", "db1"], Scenario::DropThenStatus);
    let port = fake_agent::on_tcp(&hb, false);
    drop_and_status("tcp", format!("hb=tcp://127.0.0.1:{port}"), &hb);
}

#[test]
fn a_dropped_telnet_line_comes_back_and_the_verdict_comes_as_an_event() {
    let hc = fake_agent::world("hc", &["web1", "db1"], Scenario::DropThenEvent);
    let port = fake_agent::on_tcp(&hc, true);
    let line = format!("hc=telnet://127.0.0.1:{port}");
    let run = controller(&["--line", &line, "evacuate", "hc", "--json"], &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stderr.contains("hc: line dropped: line down"),
        "{}",
        run.stderr
    );
    let values = json_lines(&run);
    let last = values.last().unwrap();
    assert_eq!(last["from"], "event", "{last}");
    assert_eq!(last["safe_to_power_off"], true);
    assert_eq!(last["verdict"]["moved"].as_array().unwrap().len(), 2);
    assert_eq!(hc.lock().unwrap().dropped, 1);
}

#[test]
fn a_config_file_is_read_and_its_errors_name_the_key() {
    let dir = scratch("config");
    let hb = fake_agent::world("hb", &["app1"], Scenario::Safe);
    let port = fake_agent::on_tcp(&hb, false);
    let path = dir.join("controller.toml");
    std::fs::write(
        &path,
        format!("[[host]]\nname = \"hb\"\nline = \"tcp://127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let run = controller(&["--config", path.to_str().unwrap(), "status"], &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.lines().nth(1).unwrap().starts_with("hb    up"),
        "{}",
        run.stdout
    );

    std::fs::write(
        &path,
        "[[host]]\nname = \"hb\"\nline = \"tcp://127.0.0.1\"\n",
    )
    .unwrap();
    let run = controller(&["--config", path.to_str().unwrap(), "status"], &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr
            .contains("host 'hb', key 'line': 'tcp://127.0.0.1' needs HOST:PORT"),
        "{}",
        run.stderr
    );

    let run = controller(&["--config", path.to_str().unwrap(), "evacuate", "hx"], &[]);
    assert_eq!(run.code, 1, "{run:#?}");
}

#[test]
fn an_answer_lost_with_the_line_is_recovered_from_status() {
    let hb = fake_agent::world("hb", &["web1", "db1"], Scenario::DropBeforeAnswer);
    let port = fake_agent::on_tcp(&hb, false);
    let line = format!("hb=tcp://127.0.0.1:{port}");
    let run = controller(&["--line", &line, "evacuate", "hb"], &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout
            .starts_with("hb: the line dropped before the answer to evacuate"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("*** SAFE TO POWER OFF hb: no VM left running; 2 moved ***"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_request_lost_with_the_line_is_not_a_verdict() {
    let dir = scratch("unheard");
    let ha = fake_agent::world("ha", &["web1"], Scenario::DropUnheard);
    let link = fake_agent::on_pty(&dir, &ha);
    let line = format!("ha={}", link.display());
    let run = controller(&["--line", &line, "evacuate", "ha"], &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr
            .contains("its status shows no evacuation since: it did not start"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("POWER OFF"), "{}", run.stdout);
}
