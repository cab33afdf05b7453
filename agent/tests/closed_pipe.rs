//! `rackside-agent ... | head`: a reader that leaves early ends the command
//! quietly (exit 0, nothing on stderr), never with a panic (exit 101).

use std::io::{Read, Write};
use std::process::{Command, Stdio};

const AGENT: &str = env!("CARGO_BIN_EXE_rackside-agent");

/// A stdout whose reader is already gone: the first write gets EPIPE.
fn closed_pipe() -> Stdio {
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    Stdio::from(write)
}

#[test]
fn completions_into_a_closed_pipe_end_quietly() {
    let out = Command::new(AGENT)
        .args(["completions", "bash"])
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_console_answer_into_a_closed_pipe_ends_quietly() {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = nix::unistd::ttyname(&pty.slave).expect("ttyname");
    let child = Command::new(AGENT)
        .arg("console")
        .arg(&slave)
        .args(["--timeout", "20", "status"])
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Play the agent on the line: read the request, answer it.
    let mut master = std::fs::File::from(pty.master);
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let id = loop {
        let n = master.read(&mut buf).expect("read the request");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(line) = text.split(['\r', '\n']).find(|l| l.contains("\"id\"")) {
            let v: serde_json::Value =
                serde_json::from_str(line.trim_start_matches('\x15')).expect("a JSON request");
            break v["id"].clone();
        }
    };
    let answer = serde_json::json!({"id": id, "ok": true, "data": {"host": "ha"}});
    write!(master, "{answer}\r\n").expect("answer");
    let out = child.wait_with_output().expect("wait");
    drop(pty.slave);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
