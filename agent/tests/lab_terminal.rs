//! A field engineer at the rack, with a real terminal program: picocom in
//! an 80x24 terminal (a detached tmux window), on a null-modem cable (two
//! ptys joined by socat) to the agent's management line. They press Enter,
//! read `status`, log in at the unseen `PIN: ` prompt and evacuate the
//! host. The test asserts what that person sees, and where the guest ends
//! up.
//!
//! The agent opens its end of the cable by path, as the tty it is, the way
//! it opens `/dev/ttyS0` in production; picocom opens the other end as it
//! opens a laptop's USB adapter.
//!
//! The last 80x24 screen is printed (`--nocapture`) and written to
//! `<lab dir>/line/screen-80x24.txt`, the whole scrollback beside it
//! (kept after the run with `RACKSIDE_LAB_KEEP=1`).
//!
//! Needs root, picocom, tmux and socat: ignored by plain `cargo test`, run
//! by `make test-lab`.

use std::path::Path;
use std::time::Duration;

use rackside_lab::agent::{lab_config, AgentProcess};
use rackside_lab::terminal::{last_line, wide_lines, NullModem, Tmux};
use rackside_lab::{GuestSpec, Lab, LabSpec};

const AGENT: &str = env!("CARGO_BIN_EXE_rackside-agent");
const COLS: u16 = 80;
const ROWS: u16 = 24;
/// Letters and a dash: no figure the console prints (memory, load, a
/// time of day) can contain it by chance.
const PIN: &str = "qZ-mW7xK";
const T: Duration = Duration::from_secs(30);
/// Long enough for any lab evacuation to end (it always must).
const END: Duration = Duration::from_secs(600);

/// Lines that start with the host's prompt, logged in or not.
fn prompts(history: &str) -> usize {
    history
        .lines()
        .filter(|l| l.starts_with("ha>") || l.starts_with("ha#"))
        .count()
}

/// The line a verdict is written on: framed by `*** `, saying power off.
fn verdict(history: &str) -> Option<&str> {
    history
        .lines()
        .find(|l| l.starts_with("*** ") && l.contains("TO POWER OFF"))
}

#[test]
#[ignore = "lab: needs root, libvirtd, QEMU, picocom, tmux, socat (make test-lab)"]
fn an_engineer_with_picocom_at_80x24_logs_in_and_evacuates() {
    let lab = Lab::up(&LabSpec::new("term", 2)).expect("lab up");
    let dir = lab.desc().dir.join("line");
    std::fs::create_dir_all(&dir).unwrap();
    lab.start_guest("ha", &GuestSpec::new("web1", 8))
        .expect("guest web1 on ha");
    let hash = rackside_lab::agent::hash_pin(Path::new(AGENT), PIN);

    // The cable: the host's serial port at one end, the laptop's adapter
    // at the other.
    let cable = NullModem::open(
        &dir.join("ttyS0"),
        &dir.join("ttyUSB0"),
        &dir.join("socat.log"),
    )
    .expect("null-modem cable");
    let picocom_log = dir.join("picocom.log");
    let person_end = cable.person_end.to_string_lossy().into_owned();
    let log_arg = picocom_log.to_string_lossy().into_owned();
    let term = Tmux::start(
        &format!("rackside-lab-term-{}", std::process::id()),
        COLS,
        ROWS,
        &dir.join("tmux.conf"),
        &[
            "picocom",
            "-b",
            "115200",
            "--logfile",
            &log_arg,
            &person_end,
        ],
    )
    .expect("picocom in an 80x24 tmux window");
    term.wait_for("picocom's 'Terminal ready'", T, |h| {
        h.contains("Terminal ready")
    })
    .expect("picocom");

    let extra = format!("[auth]\npin_hash = \"{hash}\"\n");
    // Where the host is, as the banner tells the person at the rack.
    let config = lab_config(&lab, "ha", &dir, &cable.agent_end, &extra).replacen(
        "name = \"ha\"\n",
        "name = \"ha\"\nlocation = \"rack 12 / U07\"\n",
        1,
    );
    assert!(config.contains("U07"), "{config}");
    let agent = AgentProcess::start(&lab, "ha", Path::new(AGENT), &dir, &config).unwrap();
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        let log = agent.log_text();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        panic!(
            "{what}: {e}\nsocat: {}\nagent log (last 40 lines):\n{}",
            cable.said(),
            tail
        )
    };

    // The agent writes nothing until someone presses Enter; then the
    // banner says where this is and that a PIN guards it. Enter is
    // pressed until it answers, as a person does after plugging in
    // (Enters that arrive before the agent opens the line are dropped).
    let banner = |h: &str| {
        h.contains("location: rack 12 / U07")
            && h.contains("PIN set: login to change things; type help")
            && last_line(h) == "ha>"
    };
    let mut shown = false;
    for _ in 0..60 {
        term.press("Enter")
            .unwrap_or_else(|e| fail("send-keys", &e));
        if term
            .wait_for("the banner", Duration::from_secs(1), banner)
            .is_ok()
        {
            shown = true;
            break;
        }
    }
    if !shown {
        fail("no banner", &term.history().unwrap_or_default());
    }
    // Placement needs the peer's figures; a person would see hb in
    // `hosts`, the test reads the agent's log.
    if !agent.wait_log("peer polled", Duration::from_secs(60)) {
        fail("hb was never polled", &"no 'peer polled' in the log");
    }

    // Types a line the way a person does: the keys, Enter, then waits
    // until the answer is on the screen and the cursor sits after `want`.
    let enter = |keys: &str, want: &str, more_prompts: bool| -> String {
        let before = term.history().unwrap_or_else(|e| fail("capture", &e));
        let n = prompts(&before);
        if !keys.is_empty() {
            term.type_text(keys)
                .unwrap_or_else(|e| fail("send-keys", &e));
        }
        term.press("Enter")
            .unwrap_or_else(|e| fail("send-keys", &e));
        let what = format!("{want:?} after typing {:?}", keys.replace(PIN, "<PIN>"));
        term.wait_for(&what, T, |h| {
            last_line(h) == want && (!more_prompts || prompts(h) > n)
        })
        .unwrap_or_else(|e| fail("typing", &e))
    };

    enter("", "ha>", true);
    let h = enter("status", "ha>", true);
    assert!(
        h.lines().any(|l| l.trim() == "host:  ha"),
        "status shows no host row:\n{h}"
    );
    let h = enter("login", "PIN:", false);
    assert!(
        h.lines().any(|l| l.trim_end() == "ha> login"),
        "login not echoed:\n{h}"
    );
    let h = enter(PIN, "ha#", true);
    let lines: Vec<&str> = h.lines().collect();
    let pin_row = lines
        .iter()
        .rposition(|l| l.trim_end() == "PIN:")
        .unwrap_or_else(|| panic!("no PIN: row:\n{h}"));
    let rows: Vec<&str> = lines[pin_row + 1..].iter().map(|l| l.trim_end()).collect();
    assert_eq!(
        rows.first().copied(),
        Some("logged in"),
        "the line after PIN: is not the answer:\n{h}"
    );
    assert_eq!(
        rows.get(1).copied(),
        Some("ha#"),
        "prompt after login:\n{h}"
    );

    // Events on this line too: progress and each VM's result must fit.
    enter("subscribe", "ha#", true);
    enter("vms", "ha#", true);
    // No confirmation is asked: evacuate starts at once and the verdict
    // comes to every line, subscribed or not.
    term.type_text("evacuate")
        .unwrap_or_else(|e| fail("send-keys", &e));
    term.press("Enter")
        .unwrap_or_else(|e| fail("send-keys", &e));
    let h = term
        .wait_for("the verdict", END, |h| verdict(h).is_some())
        .unwrap_or_else(|e| fail("no verdict", &e));
    // The prompt is redrawn after the verdict: output has stopped.
    let h = term
        .wait_for("'ha# ' after the verdict", T, |h2| {
            last_line(h2) == "ha#" && h2.len() >= h.len()
        })
        .unwrap_or_else(|e| fail("no prompt after the verdict", &e));

    let screen = term.screen().unwrap_or_else(|e| fail("capture", &e));
    // The verdict is the last thing printed: its frame, then the prompt.
    let rows: Vec<&str> = screen
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = &rows[rows.len().saturating_sub(3)..];
    assert!(
        tail.len() == 3
            && tail[0].starts_with("*** SAFE TO POWER OFF ha")
            && !tail[1].is_empty()
            && tail[1].chars().all(|c| c == '*')
            && tail[2] == "ha#",
        "something was printed after the verdict:\n{screen}"
    );
    // After the verdict a person looks around: the last result stays in
    // status; Up arrow brings back the last command (Ctrl-U drops it).
    let st = enter("status", "ha#", true);
    assert!(
        st.lines()
            .any(|l| l.contains("last result:") && l.contains("SAFE")),
        "status keeps no last result:\n{st}"
    );
    enter("jobs", "ha#", true);
    enter("hosts", "ha#", true);
    term.press("Up").unwrap_or_else(|e| fail("send-keys", &e));
    term.wait_for("'ha# hosts' recalled", T, |h| last_line(h) == "ha# hosts")
        .unwrap_or_else(|e| fail("Up arrow", &e));
    term.press("C-u").unwrap_or_else(|e| fail("send-keys", &e));
    term.wait_for("the line cleared", T, |h| last_line(h) == "ha#")
        .unwrap_or_else(|e| fail("Ctrl-U", &e));
    let history = term.history().unwrap_or_else(|e| fail("capture", &e));
    std::fs::write(dir.join("screen-80x24.txt"), &screen).unwrap();
    std::fs::write(dir.join("scrollback.txt"), &history).unwrap();
    let rule = "-".repeat(COLS as usize);
    println!("final {COLS}x{ROWS} screen:\n{rule}\n{screen}{rule}");
    println!("whole scrollback (lines joined):\n{history}{rule}");

    // What the person saw.
    let v = verdict(&h).unwrap().to_owned();
    assert!(
        v.starts_with("*** SAFE TO POWER OFF ha"),
        "verdict: {v}\n{history}"
    );
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("*** SAFE TO POWER OFF ha")),
        "the verdict is not on the screen at the end:\n{screen}"
    );
    assert!(
        !history.contains(PIN),
        "the PIN is on the screen:\n{history}"
    );
    let logged = std::fs::read(&picocom_log).unwrap_or_default();
    assert!(
        !logged.is_empty(),
        "picocom logged nothing to {}",
        picocom_log.display()
    );
    assert!(
        !logged.windows(PIN.len()).any(|w| w == PIN.as_bytes()),
        "the PIN is in picocom's log"
    );
    let before_login: Vec<&str> = history
        .lines()
        .take_while(|l| l.trim_end() != "PIN:")
        .filter(|l| l.starts_with("ha>") || l.starts_with("ha#"))
        .collect();
    assert!(
        before_login
            .iter()
            .all(|l| l.starts_with("ha> ") || *l == "ha>"),
        "a '#' prompt before login: {before_login:?}"
    );
    assert!(
        history.lines().any(|l| l.starts_with("ha# evacuate")),
        "evacuate was not typed at 'ha# ':\n{history}"
    );

    // Where the guest is: running exactly once, on hb, and alive.
    assert_eq!(lab.assert_runs_once("web1"), "hb");

    // Every line as written fits the 80 columns (-J joined what the
    // terminal wrapped). Checked last, so the evacuation's outcome above
    // is known either way.
    let wide = wide_lines(&history, COLS as usize);
    let report: Vec<String> = wide
        .iter()
        .map(|(n, w, l)| format!("  line {n}, {w} columns: {l}"))
        .collect();
    if !wide.is_empty() {
        println!("lines wider than {COLS} columns:\n{}", report.join("\n"));
    }
    assert!(
        wide.is_empty(),
        "{} line(s) wider than {COLS} columns:\n{}",
        wide.len(),
        report.join("\n")
    );

    let mut errs = Vec::new();
    if let Err(e) = term.close() {
        errs.push(e.to_string());
    }
    drop(agent);
    if let Err(e) = cable.close() {
        errs.push(e.to_string());
    }
    if let Err(e) = lab.teardown() {
        errs.push(e.to_string());
    }
    assert!(errs.is_empty(), "cleanup: {}", errs.join("\n"));
}
