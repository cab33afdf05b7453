//! `rackside-agent hash-pin` on a terminal asks twice and never echoes the
//! PIN; piped, it reads one line (scripts keep working).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_rackside-agent");

/// Reads the pty until `want` appears (or the child closed it); returns
/// all that was read.
fn read_until(master: &mut std::fs::File, seen: &mut Vec<u8>, want: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(seen).contains(want) {
        assert!(
            Instant::now() < end,
            "no {want:?} in {:?}",
            String::from_utf8_lossy(seen)
        );
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// `rackside-agent hash-pin` with its stdin and stderr on a pty.
fn hash_pin_on(tty: &std::os::fd::OwnedFd) -> std::process::Child {
    Command::new(AGENT)
        .arg("hash-pin")
        .stdin(Stdio::from(tty.try_clone().unwrap()))
        .stderr(Stdio::from(tty.try_clone().unwrap()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn")
}

fn on_a_terminal(first: &str, second: &str) -> (std::process::Output, String) {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let child = hash_pin_on(&pty.slave);
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut seen = Vec::new();
    // Typed only once asked: echo is off by then.
    read_until(&mut master, &mut seen, "PIN: ");
    write!(master, "{first}\r").unwrap();
    read_until(&mut master, &mut seen, "PIN again: ");
    write!(master, "{second}\r").unwrap();
    let out = child.wait_with_output().expect("wait");
    // What the terminal showed, until the child closed it.
    let mut buf = [0u8; 256];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    (out, String::from_utf8_lossy(&seen).into_owned())
}

#[test]
fn on_a_terminal_the_pin_is_asked_twice_and_never_shown() {
    let (out, screen) = on_a_terminal("493817", "493817");
    assert_eq!(out.status.code(), Some(0), "{out:?} {screen:?}");
    assert!(!screen.contains("493817"), "the PIN was shown: {screen:?}");
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2"), "{hash:?}");

    let (out, screen) = on_a_terminal("493817", "493818");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(screen.contains("the two PINs differ"), "{screen:?}");
    assert!(out.stdout.is_empty());
}

#[test]
fn piped_it_reads_one_line() {
    let mut child = Command::new(AGENT)
        .arg("hash-pin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(b"493817\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("$argon2"));
    assert!(out.stderr.is_empty(), "{out:?}");
}

/// Ctrl-C while the PIN is asked (SIGINT) leaves the terminal as it was:
/// echo back on, not a shell the person can no longer see.
#[test]
fn interrupted_it_gives_the_terminal_its_echo_back() {
    use nix::sys::termios::{tcgetattr, LocalFlags};
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = pty.slave.try_clone().unwrap();
    assert!(tcgetattr(&slave)
        .unwrap()
        .local_flags
        .contains(LocalFlags::ECHO));
    let mut child = hash_pin_on(&pty.slave);
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut seen = Vec::new();
    read_until(&mut master, &mut seen, "PIN: ");
    assert!(
        !tcgetattr(&slave)
            .unwrap()
            .local_flags
            .contains(LocalFlags::ECHO),
        "echo is on while the PIN is asked"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(
        tcgetattr(&slave)
            .unwrap()
            .local_flags
            .contains(LocalFlags::ECHO),
        "the terminal was left without echo"
    );
}
