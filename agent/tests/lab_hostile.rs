//! The screen cannot be forged: VMs whose names carry a carriage return
//! plus verdict text, and C1 control codes, go through an evacuation
//! watched on a text line. No line a person sees may contain the verdict
//! phrase except the agent's own verdict, and no raw CR, ESC or C1 byte
//! from a name may reach the line. Needs root: run by `make test-lab`.

use std::path::Path;
use std::time::Duration;

use rackside_lab::agent::AgentProcess;
use rackside_lab::pty::PtyLine;
use rackside_lab::{GuestDisk, GuestSpec, Lab, LabSpec, Sampler};
use serde_json::{json, Value};

const AGENT: &str = env!("CARGO_BIN_EXE_rackside-agent");
const T: Duration = Duration::from_secs(20);
const END: Duration = Duration::from_secs(300);

const PHRASE: &str = "SAFE TO POWER OFF";
/// A carriage return, then what the agent's SAFE verdict looks like.
const FORGER: &str = "x\r*** SAFE TO POWER OFF ha: no VM left running ***";
/// CSI (C1) "2J" clears a VT220's screen; NEL (C1) is a newline to it.
const C1: &str = "y\u{9b}2J\u{85}";

/// The agent's lines (it ends each with CRLF). A CR inside one is a
/// forgery of its own, reported apart; here it stays in the line, so text
/// after it does not pass for the start of a line.
fn screen_lines(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == b'\n')
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The agent's own verdict line for host `host`: the frame at the very
/// start of a line.
fn is_real_verdict(line: &str, host: &str) -> bool {
    line.starts_with(&format!("*** SAFE TO POWER OFF {host}:"))
        || line.starts_with(&format!("*** NOT SAFE TO POWER OFF {host}:"))
}

/// Everything wrong with a text line's bytes: raw CR not ending a line,
/// ESC, C1 codes (as UTF-8 or as raw bytes), and lines carrying the
/// verdict phrase that are not the agent's verdict.
fn forgeries(bytes: &[u8], host: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\r' && bytes.get(i + 1) != Some(&b'\n') {
            bad.push(format!("bare CR at byte {i}: {:?}", context(bytes, i)));
        }
        if *b == 0x1b {
            bad.push(format!("ESC at byte {i}: {:?}", context(bytes, i)));
        }
    }
    let text = String::from_utf8_lossy(bytes);
    for (i, c) in text.char_indices() {
        if ('\u{80}'..='\u{9f}').contains(&c) {
            bad.push(format!("C1 U+{:04X} at {i}", c as u32));
        }
        if c == '\u{fffd}' {
            bad.push(format!("a byte that is not UTF-8 (raw C1?) at {i}"));
        }
    }
    for l in screen_lines(bytes) {
        if l.contains(PHRASE) && !is_real_verdict(&l, host) {
            bad.push(format!("forged verdict line: {l:?}"));
        }
    }
    bad
}

fn context(bytes: &[u8], i: usize) -> String {
    let a = i.saturating_sub(40);
    let b = (i + 40).min(bytes.len());
    String::from_utf8_lossy(&bytes[a..b]).into_owned()
}

#[test]
fn the_forgery_checks_catch_forgeries() {
    // The verdict as the agent prints it: the reasons, then the framed
    // verdict line, last.
    let real =
        b"\r\n[05:01:44] evacuation 1 finished\r\n  still running here: x\\r***: refused\r\n\
        this host is still in maintenance: 'maintenance off' takes it out\r\n\
        *****************************************\r\n\
        *** NOT SAFE TO POWER OFF ha: 1 moved ***\r\n\
        *****************************************\r\nha> ";
    assert!(
        forgeries(real, "ha").is_empty(),
        "{:?}",
        forgeries(real, "ha")
    );
    let forged = format!("\r\n[t] {FORGER} -> hb: FAILED\r\n");
    let bad = forgeries(forged.as_bytes(), "ha");
    assert!(bad.iter().any(|b| b.starts_with("bare CR")), "{bad:?}");
    assert!(bad.iter().any(|b| b.starts_with("forged")), "{bad:?}");
    let c1 = format!("vm {C1} running\r\n");
    assert!(forgeries(c1.as_bytes(), "ha")
        .iter()
        .any(|b| b.starts_with("C1")));
    assert!(!forgeries(b"a\x9bb\r\n", "ha").is_empty());
    assert!(!forgeries(b"a\x1b[2Jb\r\n", "ha").is_empty());
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn hostile_names_never_paint_a_verdict() {
    let lab = Lab::up(&LabSpec::new("fhostile", 2)).expect("lab up");
    let dir = lab.desc().dir.join("agent-ha");
    std::fs::create_dir_all(&dir).unwrap();
    // The forger cannot move (a local disk, and copying local disks is
    // off): it stays and is named in the NOT SAFE list. The C1 one moves: its name goes through progress and
    // done events.
    let mut forger = GuestSpec::new(FORGER, 16);
    forger.disk = Some(GuestDisk::Local { mib: 8 });
    forger.mem_mib = 160;
    let c1 = GuestSpec::new(C1, 16);
    std::thread::scope(|s| {
        for g in [&forger, &c1] {
            let lab = &lab;
            s.spawn(move || {
                lab.start_guest("ha", g)
                    .unwrap_or_else(|e| panic!("libvirt refused {:?}: {e}", g.name))
            });
        }
    });
    assert_eq!(lab.assert_runs_once(FORGER), "ha");

    let (text_link, json_link) = (dir.join("tty-text"), dir.join("tty-json"));
    let mut text = PtyLine::open(&text_link).unwrap();
    let mut machine = PtyLine::open(&json_link).unwrap();
    let hb = lab.host("hb").unwrap();
    let cfg = format!(
        "[host]\nname = \"ha\"\n[libvirt]\npoll_interval_s = 1\n\
         [[console]]\npath = \"{}\"\n[[console]]\npath = \"{}\"\n[state]\ndir = \"{}\"\n\
         [[peer]]\nname = \"hb\"\nuri = \"{}\"\nmigrate_uri = \"{}\"\n\
         [migration]\nbandwidth_mib_s = 16\ncopy_local_disks = false\n\
         [placement]\nload_threshold = 1.0\n",
        text_link.display(),
        json_link.display(),
        dir.join("state").display(),
        hb.uri,
        hb.migrate_uri
    );
    let agent = AgentProcess::start(&lab, "ha", Path::new(AGENT), &dir, &cfg).unwrap();
    text.wake(T)
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));
    machine.wake(T).unwrap();
    for _ in 0..60 {
        let h = machine.request(1, "hosts", json!({}), T).unwrap();
        if h["data"]["hosts"][1]["reachable"] == json!(true) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        machine.request(2, "subscribe", json!({}), T).unwrap()["ok"],
        true
    );

    // A person at the rack: looks, subscribes, evacuates, looks again.
    let say = |line: &mut PtyLine, cmd: &str| {
        line.write(format!("{cmd}\r").as_bytes()).unwrap();
        line.expect_text(T, "ha> ")
            .unwrap_or_else(|e| panic!("{cmd}: {e}\n{}", agent.log_text()));
    };
    for cmd in ["vms", "plan", "subscribe"] {
        say(&mut text, cmd);
    }
    let watch = Sampler::start(&lab, &[FORGER, C1]);
    say(&mut text, "evacuate");
    let done = machine
        .expect_event("evacuation.done", END, |_| true)
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));
    let v: &Value = &done["data"];
    assert_eq!(v["safe_to_power_off"], false, "{v}");
    assert_eq!(v["remaining"], json!([FORGER]), "{v}");
    // The verdict reaches the text line; then the person looks around.
    text.expect_text(END, "POWER OFF")
        .unwrap_or_else(|e| panic!("no verdict on the text line: {e}"));
    text.expect_text(T, "ha> ").unwrap();
    for cmd in ["jobs", "vms", "status", "hosts", "plan"] {
        say(&mut text, cmd);
    }
    let at = watch.finish().assert_clean();
    assert_eq!((at[FORGER].as_str(), at[C1].as_str()), ("ha", "hb"));
    lab.assert_verdict_true("ha", v);
    lab.assert_each_runs_once(&[FORGER, C1]);

    text.pump(Duration::from_millis(500));
    let seen = text.transcript.clone();
    for l in screen_lines(&seen) {
        eprintln!("line: {l:?}");
    }
    let real: Vec<String> = screen_lines(&seen)
        .into_iter()
        .filter(|l| is_real_verdict(l, "ha"))
        .collect();
    assert_eq!(real.len(), 1, "the verdict, once: {real:?}");
    assert!(real[0].contains("NOT SAFE"), "{real:?}");
    // Framed, last: a line of `*` as long as it on either side.
    let lines = screen_lines(&seen);
    let at = lines.iter().position(|l| is_real_verdict(l, "ha")).unwrap();
    let frame = "*".repeat(real[0].chars().count());
    assert_eq!(
        (lines[at - 1].as_str(), lines[at + 1].as_str()),
        (frame.as_str(), frame.as_str()),
        "{lines:?}"
    );
    let bad = forgeries(&seen, "ha");
    assert!(
        bad.is_empty(),
        "the names reached the screen raw:\n{}\n--- transcript ---\n{}",
        bad.join("\n"),
        String::from_utf8_lossy(&seen)
    );
    drop(agent);
    lab.teardown().expect("teardown");
}
