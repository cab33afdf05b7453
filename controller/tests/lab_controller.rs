//! The controller at a rack of three lab hosts, each with a real
//! rackside-agent on its management line: ha's line reaches the
//! controller through a console server's raw TCP port (a relay in front
//! of a pty, as a terminal server fronts a serial port), hb's and
//! hc's are null-modem pty pairs. The controller evacuates ha end to end
//! and reads SAFE; ha's line is cut in the middle of the move (the
//! console server's connection killed) and comes back. Then the same on
//! screen: the controller's terminal UI in an 80x24 tmux window shows the
//! rack, the dropped line and its return, and empties web1's new host from
//! the keyboard to a SAFE banner. Real libvirtd,
//! real QEMU, rackside-hook on every host. Needs root, socat and tmux: run by
//! `make test-lab`.

use std::io::{BufRead, BufReader};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rackside_lab::agent::{lab_config, AgentProcess};
use rackside_lab::terminal::{NullModem, Tmux};
use rackside_lab::{GuestSpec, Lab, LabSpec};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_rackside-controller");

/// The agent and the hook are built beside the controller (`make build`).
fn sibling(name: &str) -> PathBuf {
    let p = Path::new(CONTROLLER).with_file_name(name);
    assert!(p.exists(), "{} missing: make build", p.display());
    p
}

/// A console server's raw TCP port in front of the serial line `tty`,
/// as a terminal server gives one: one session at a time, the line open
/// only while a session is, every byte relayed both ways. (socat's
/// `fork` relays were tried first: one whose client had left went on
/// reading the line until its next write failed, taking the agent's
/// answers meant for the next session.)
struct ConsolePort {
    port: u16,
    stop: Arc<AtomicBool>,
    session: Arc<Mutex<Option<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ConsolePort {
    fn open(tty: &Path) -> ConsolePort {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        ConsolePort::serve(tty, listener)
    }

    /// The port back after [`ConsolePort::stop`], at the same address.
    fn open_on(tty: &Path, port: u16) -> ConsolePort {
        ConsolePort::serve(tty, TcpListener::bind(("127.0.0.1", port)).unwrap())
    }

    fn serve(tty: &Path, listener: TcpListener) -> ConsolePort {
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let session: Arc<Mutex<Option<TcpStream>>> = Arc::new(Mutex::new(None));
        let (tty, stop2, session2) = (tty.to_owned(), stop.clone(), session.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let tcp = match listener.accept() {
                    Ok((tcp, _)) => tcp,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                tcp.set_nonblocking(false).unwrap();
                *session2.lock().unwrap() = Some(tcp.try_clone().unwrap());
                relay(&tty, tcp, &stop2);
                *session2.lock().unwrap() = None;
            }
        });
        ConsolePort {
            port,
            stop,
            session,
            thread: Some(thread),
        }
    }

    /// Ends the session in use, as a console server does when its port
    /// is reset; the port still listens.
    fn cut(&self) -> bool {
        match self.session.lock().unwrap().as_ref() {
            Some(s) => s.shutdown(Shutdown::Both).is_ok(),
            None => false,
        }
    }

    /// The console server switched off: its session and its port.
    fn stop(mut self) -> u16 {
        self.halt();
        self.port
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ConsolePort {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One session: the line opened, bytes both ways until the client
/// leaves (or the port stops), the line closed.
fn relay(tty: &Path, mut tcp: TcpStream, stop: &AtomicBool) {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(line) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK)
        .open(tty)
    else {
        return;
    };
    let done = Arc::new(AtomicBool::new(false));
    let (mut to_line, mut from_tcp) = (line.try_clone().unwrap(), tcp.try_clone().unwrap());
    let done2 = done.clone();
    let inbound = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from_tcp.read(&mut buf) {
            if n == 0 || to_line.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        done2.store(true, Ordering::Relaxed);
    });
    let mut from_line = line;
    let mut buf = [0u8; 4096];
    while !done.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
        match from_line.read(&mut buf) {
            Ok(n) if n > 0 => {
                if tcp.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    let _ = tcp.shutdown(Shutdown::Both);
    let _ = inbound.join();
}

#[test]
#[ignore = "lab: needs root, libvirtd, QEMU, socat and tmux (make test-lab)"]
fn the_controller_empties_a_host_over_a_console_server_and_a_dropped_line_comes_back() {
    let lab =
        Lab::up(&LabSpec::new("ctl", 3).with_hook(&sibling("rackside-hook"))).expect("lab up");
    lab.start_guest("ha", &GuestSpec::new("web1", 48)).unwrap();
    let dir = lab.desc().dir.join("controller");
    std::fs::create_dir_all(&dir).unwrap();

    // One cable per host; ha's far end behind a console server port.
    let mut modems = Vec::new();
    let mut agents = Vec::new();
    for h in ["ha", "hb", "hc"] {
        let adir = dir.join(format!("agent-{h}"));
        std::fs::create_dir_all(&adir).unwrap();
        let modem = NullModem::open(
            &adir.join("ttyS0"),
            &adir.join("far-end"),
            &adir.join("socat.log"),
        )
        .unwrap();
        // A capped rate makes ha's move last long enough to cut its line
        // in the middle of it.
        let extra = if h == "ha" {
            "[migration]\nbandwidth_mib_s = 8\n"
        } else {
            ""
        };
        let cfg = lab_config(&lab, h, &adir, &modem.agent_end, extra);
        agents.push(AgentProcess::start(&lab, h, &sibling("rackside-agent"), &adir, &cfg).unwrap());
        modems.push(modem);
    }
    let console = ConsolePort::open(&modems[0].person_end);
    let lines = [
        format!("ha=tcp://127.0.0.1:{}", console.port),
        format!("hb={}", modems[1].person_end.display()),
        format!("hc={}", modems[2].person_end.display()),
    ];
    let mut args: Vec<String> = Vec::new();
    for l in &lines {
        args.push("--line".into());
        args.push(l.clone());
    }
    let log_of = |agents: &[AgentProcess]| {
        agents
            .iter()
            .map(AgentProcess::log_text)
            .collect::<Vec<_>>()
            .join("\n---\n")
    };

    // The rack at a glance: every line up, web1 on ha.
    let mut status_ok = false;
    let mut last = String::new();
    for _ in 0..20 {
        let out = Command::new(CONTROLLER)
            .args(&args)
            .args(["status", "--json"])
            .output()
            .unwrap();
        last = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let hosts = v["hosts"].as_array().cloned().unwrap_or_default();
        if out.status.success()
            && hosts.len() == 3
            && hosts.iter().all(|h| h["up"] == true)
            && hosts[0]["status"]["vms_running"] == 1
        {
            status_ok = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        status_ok,
        "status never showed the rack: {last}\n{}",
        log_of(&agents)
    );

    // Evacuate ha; cut its line once web1 is on its way.
    let mut ctl = Command::new(CONTROLLER)
        .args(&args)
        .args(["evacuate", "ha"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<(bool, String)>();
    let out = ctl.stdout.take().unwrap();
    let err = ctl.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send((true, l));
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send((false, l));
        }
    });
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut cut = false;
    while let Ok((is_out, l)) = rx.recv_timeout(Duration::from_secs(300)) {
        if !cut && is_out && l.contains("web1 ->") && l.contains('%') {
            assert!(console.cut(), "no session to cut");
            cut = true;
        }
        if is_out {
            stdout.push(l);
        } else {
            stderr.push(l);
        }
    }
    let code = ctl.wait().unwrap().code();
    let (stdout, stderr) = (stdout.join("\n"), stderr.join("\n"));
    let said = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(cut, "web1's move was never seen under way: {said}");
    assert_eq!(code, Some(0), "{said}\n{}", log_of(&agents));
    assert!(stdout.contains("*** SAFE TO POWER OFF ha"), "{said}");
    assert!(stderr.contains("ha: line dropped"), "{said}");
    assert!(stderr.contains("ha: line up again"), "{said}");
    let now_on = lab.assert_runs_once("web1");
    assert_ne!(now_on, "ha", "{said}");

    // Where is web1 now, asked of the whole rack.
    let out = Command::new(CONTROLLER)
        .args(&args)
        .args(["locate", "web1"])
        .output()
        .unwrap();
    let located = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{located}");
    assert!(located.contains(&now_on), "{located}");

    // The same rack on screen: the controller with no command, in an
    // 80x24 terminal (tmux). Cut ha's line and see it down and back; then
    // empty web1's host from the keyboard and read the banner.
    let argv: Vec<&str> = std::iter::once(CONTROLLER)
        .chain(args.iter().map(String::as_str))
        .collect();
    let trace = dir.join("tui-trace.txt");
    let env_argv: Vec<String> = [
        "env".to_owned(),
        format!("RACKSIDE_CONTROLLER_TRACE={}", trace.display()),
    ]
    .into_iter()
    .chain(argv.iter().map(|s| (*s).to_owned()))
    .collect();
    let argv: Vec<&str> = env_argv.iter().map(String::as_str).collect();
    let term = Tmux::start("rackside-ctl", 80, 24, &dir.join("tmux.conf"), &argv).unwrap();
    let fail =
        |what: &str, e: &dyn std::fmt::Display| -> ! { panic!("{what}: {e}\n{}", log_of(&agents)) };
    let every_line_up = |h: &str| {
        let rows: Vec<&str> = h
            .lines()
            .filter(|l| ["ha ", "hb ", "hc "].iter().any(|n| l.starts_with(n)))
            .collect();
        rows.len() >= 3 && rows.iter().rev().take(3).all(|l| l.contains(" up "))
    };
    let rack = term
        .wait_for("every line up", Duration::from_secs(60), |_| {
            term.screen().is_ok_and(|s| every_line_up(&s))
        })
        .map(|_| term.screen().unwrap())
        .unwrap_or_else(|e| fail("the rack", &e));
    println!("--- the rack, 80x24 ---\n{rack}");
    std::fs::write(dir.join("tui-rack.txt"), &rack).unwrap();
    // The console server goes away (its port closed) and comes back.
    let port = console.stop();
    let down = term
        .wait_for("ha's line down", Duration::from_secs(30), |_| {
            term.screen().is_ok_and(|s| s.contains("LINE DOWN"))
        })
        .map(|_| term.screen().unwrap())
        .unwrap_or_else(|e| fail("a dropped line", &e));
    println!("--- a line down, 80x24 ---\n{down}");
    std::fs::write(dir.join("tui-line-down.txt"), &down).unwrap();
    let console = ConsolePort::open_on(&modems[0].person_end, port);
    term.wait_for("ha's line back", Duration::from_secs(60), |_| {
        term.screen()
            .is_ok_and(|s| every_line_up(&s) && !s.contains("LINE DOWN"))
    })
    .unwrap_or_else(|e| fail("the line back", &e));
    // Rows in config order: ha, hb, hc.
    let row = ["ha", "hb", "hc"]
        .iter()
        .position(|h| *h == now_on)
        .unwrap();
    for _ in 0..row {
        term.press("Down").unwrap();
    }
    term.press("Enter").unwrap();
    term.type_text("e").unwrap();
    term.type_text("y").unwrap();
    let banner = term
        .wait_for("the verdict", Duration::from_secs(300), |_| {
            term.screen().is_ok_and(|s| s.contains("SAFE TO POWER OFF"))
        })
        .map(|_| term.screen().unwrap())
        .unwrap_or_else(|e| fail("the verdict", &e));
    println!("--- the verdict, 80x24 ---\n{banner}");
    std::fs::write(dir.join("tui-verdict.txt"), &banner).unwrap();
    assert!(
        banner.contains("*** SAFE TO POWER OFF ***") && !banner.contains("NOT SAFE"),
        "{banner}"
    );
    let last_on = lab.assert_runs_once("web1");
    assert!(last_on != now_on && last_on != "ha", "web1 on {last_on}");
    term.press("Enter").unwrap();
    // Back to the rack (from progress, then the host; Esc on the rack
    // does nothing), with a person's pause after each: ESC and a key
    // within a few ms read as Alt+key.
    for _ in 0..3 {
        term.press("Escape").unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    term.type_text("q").unwrap();
    let mut ended = String::new();
    term.wait_for("the controller to quit", Duration::from_secs(30), |_| {
        ended = term.program();
        ended.starts_with("dead")
    })
    .unwrap_or_else(|e| fail("quit", &e));
    assert_eq!(ended, "dead 0");
    term.close().expect("tmux");

    drop(console);
    for mut a in agents {
        assert_eq!(a.stop(), Some(0), "{}", a.log_text());
    }
    for m in modems {
        m.close().expect("socat");
    }
    lab.teardown().expect("teardown");
}
