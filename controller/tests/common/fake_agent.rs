//! TEST FIXTURE ONLY: a fake rackside agent, so the controller can be
//! tested end to end without libvirt, root or the lab. It is not the
//! agent and proves nothing about it; it speaks enough of the console
//! protocol (docs/protocol.md) the way the agent does, with the protocol
//! crate's own line reader, parser and JSON writer, plus the things a real
//! line adds: a banner only after the first Enter, prompts, noise,
//! answers written in small pieces, telnet negotiation and, on request,
//! a line that drops in the middle of an evacuation and comes back.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rackside_protocol::{wire, Command, ErrorCode, LineEvent, LineReader, Mode};
use serde_json::{json, Value};

const IAC: u8 = 255;
const WILL: u8 = 251;
const DO: u8 = 253;
const SB: u8 = 250;
const SE: u8 = 240;
const NOP: u8 = 241;

/// What the fake agent does when asked to evacuate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Every VM moves; SAFE, announced by events.
    Safe,
    /// The first VM moves, the others cannot be placed; NOT SAFE.
    NotSafe,
    /// The line drops right after the answer; the run ends SAFE while it
    /// is down, so only `status`'s `last_result` can tell.
    DropThenStatus,
    /// The line drops right after the answer; the run is still going when
    /// the line is back, and its verdict comes as an event.
    DropThenEvent,
    /// The line drops before the answer is written; the run ends SAFE
    /// while it is down.
    DropBeforeAnswer,
    /// The line drops as the request comes, which is never read: nothing
    /// starts.
    DropUnheard,
}

/// The fake host, shared between its connections (and the test).
#[derive(Debug)]
pub struct World {
    pub name: String,
    pub vms: Vec<String>,
    pub pin: Option<String>,
    pub scenario: Scenario,
    pub evacuations: u64,
    pub last_result: Value,
    /// An `evacuation.done` to send after the next `status` on a
    /// subscribed line.
    pub pending_done: Option<Value>,
    /// Every `identify` carried out.
    pub identified: Vec<String>,
    /// Every byte the controller sent, across connections.
    pub received: Vec<u8>,
    pub connections: u32,
    pub dropped: u32,
}

pub type Shared = Arc<Mutex<World>>;

pub fn world(name: &str, vms: &[&str], scenario: Scenario) -> Shared {
    Arc::new(Mutex::new(World {
        name: name.into(),
        vms: vms.iter().map(|v| v.to_string()).collect(),
        pin: None,
        scenario,
        evacuations: 0,
        last_result: Value::Null,
        pending_done: None,
        identified: Vec::new(),
        received: Vec::new(),
        connections: 0,
        dropped: 0,
    }))
}

/// A byte stream to one controller.
trait Conn {
    /// `Ok(None)`: nothing within `timeout`; `Ok(Some(0))`: closed.
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>>;
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The controller went away.
    Closed,
    /// The scenario drops the line.
    Drop,
}

struct Session<'a> {
    conn: &'a mut dyn Conn,
    world: &'a Shared,
    telnet: bool,
    awake: bool,
    json: bool,
    subscribed: bool,
    logged_in: bool,
}

impl Session<'_> {
    /// Writes in pieces of 5 bytes, so the controller's reads end in the
    /// middle of lines; on telnet with an `IAC NOP` between the pieces, so
    /// commands come in the middle of JSON.
    fn send(&mut self, text: &str) {
        for piece in text.as_bytes().chunks(5) {
            let _ = self.conn.write(piece);
            if self.telnet {
                let _ = self.conn.write(&[IAC, NOP]);
            }
        }
    }

    fn prompt(&self) -> String {
        format!("{}> ", self.world.lock().unwrap().name)
    }

    /// A JSON line: on its own line on a text session, then the prompt.
    fn answer(&mut self, line: String) {
        if self.json {
            self.send(&format!("{line}\r\n"));
        } else {
            let prompt = self.prompt();
            self.send(&format!("\r\n{line}\r\n{prompt}"));
        }
    }

    fn event(&mut self, name: &str, data: Value) {
        if self.subscribed {
            let line = wire::json_event(name, "2026-12-01T05:00:00Z", &data);
            self.answer(line);
        }
    }

    fn serve(&mut self) -> End {
        if self.telnet {
            // What console servers send: they echo, suppress go-ahead,
            // want a terminal type and window size, and announce a
            // COM-PORT subnegotiation.
            let mut hello = vec![IAC, WILL, 1, IAC, WILL, 3, IAC, DO, 24, IAC, DO, 31];
            hello.extend_from_slice(&[IAC, SB, 44, 1, IAC, IAC, 2, IAC, SE]);
            let _ = self.conn.write(&hello);
        }
        let mut reader = LineReader::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = match self.conn.read(&mut buf, Duration::from_millis(100)) {
                Ok(Some(0)) | Err(_) => return End::Closed,
                Ok(None) => continue,
                Ok(Some(n)) => n,
            };
            self.world
                .lock()
                .unwrap()
                .received
                .extend_from_slice(&buf[..n]);
            let (mut echo, mut events) = (Vec::new(), Vec::new());
            reader.feed(&buf[..n], false, &mut echo, &mut events);
            for event in events {
                let LineEvent::Line(line) = event else {
                    continue;
                };
                if self.line(&line) == Some(End::Drop) {
                    return End::Drop;
                }
            }
        }
    }

    fn line(&mut self, line: &str) -> Option<End> {
        if line.trim().is_empty() {
            if !self.json && !self.awake {
                self.awake = true;
                let name = self.world.lock().unwrap().name.clone();
                self.send(&format!(
                    "rackside-agent 0.1.0 on {name}\r\nlocation: rack 1\r\nno PIN set: every command is allowed; type help\r\n\x1b[0m{name}> "
                ));
            } else if !self.json {
                let prompt = self.prompt();
                self.send(&format!("\r\n{prompt}"));
            }
            return None;
        }
        let request = match rackside_protocol::parse_line(line) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                self.answer(wire::request_error(&e));
                return None;
            }
        };
        self.awake = true;
        let id = request.id.clone();
        let ok = |data: Value| wire::json_ok(id.as_ref(), &data);
        let refuse = |code, msg: &str| wire::json_error(id.as_ref(), code, msg);
        let needs_login = request.cmd.changes_state()
            && self.world.lock().unwrap().pin.is_some()
            && !self.logged_in;
        if needs_login {
            let msg = format!("'{}' changes this host: login first", request.cmd.name());
            self.answer(refuse(ErrorCode::AuthRequired, &msg));
            return None;
        }
        match request.cmd {
            Command::Mode(mode) => {
                self.json = mode == Mode::Json;
                self.answer(ok(json!({})));
            }
            Command::Subscribe => {
                self.subscribed = true;
                self.answer(ok(json!({})));
            }
            Command::Login { pin } => {
                let right = self.world.lock().unwrap().pin.as_deref() == Some(pin.as_str());
                if right {
                    self.logged_in = true;
                    self.answer(ok(json!({"role": "operator"})));
                } else {
                    self.answer(refuse(ErrorCode::AuthFailed, "wrong PIN"));
                }
            }
            Command::Status => {
                let data = {
                    let w = self.world.lock().unwrap();
                    let state = if w.pending_done.is_some() {
                        "evacuating"
                    } else {
                        "active"
                    };
                    json!({
                        "host": w.name, "location": "rack 1", "state": state,
                        "health": "ok", "health_reasons": [], "cpus": 8, "cpu_pct": 12.5,
                        "mem_total_mib": 32768, "mem_free_mib": 16000,
                        "vms_running": w.vms.len(), "vms_defined": w.vms.len(),
                        "libvirt": "up", "last_result": w.last_result,
                    })
                };
                self.answer(ok(data));
                let pending = self.world.lock().unwrap().pending_done.take();
                if let Some(done) = pending.filter(|_| self.subscribed) {
                    self.event("host.empty", json!({"host": done["host"]}));
                    self.event("evacuation.done", done);
                }
            }
            Command::Locate { vm } => {
                let w = self.world.lock().unwrap();
                let data = if w.vms.contains(&vm) {
                    json!({"vm": vm, "host": w.name, "location": "rack 1", "state": "live", "vm_state": "running"})
                } else {
                    json!({"vm": vm, "host": null, "location": null, "state": "unknown", "unreachable_peers": []})
                };
                drop(w);
                self.answer(ok(data));
            }
            Command::Identify(what) => {
                self.world
                    .lock()
                    .unwrap()
                    .identified
                    .push(format!("{what:?}"));
                self.answer(ok(json!({})));
            }
            Command::Evacuate { .. } => return self.evacuate(ok),
            _ => self.answer(refuse(ErrorCode::UnknownCommand, "not in the fake agent")),
        }
        None
    }

    fn evacuate(&mut self, ok: impl Fn(Value) -> String) -> Option<End> {
        if self.world.lock().unwrap().scenario == Scenario::DropUnheard {
            return Some(End::Drop);
        }
        let (id, name, vms, scenario) = {
            let mut w = self.world.lock().unwrap();
            w.evacuations += 1;
            (w.evacuations, w.name.clone(), w.vms.clone(), w.scenario)
        };
        let (moving, stuck) = match scenario {
            Scenario::NotSafe => vms.split_at(1.min(vms.len())),
            _ => (&vms[..], &[][..]),
        };
        let moves: Vec<Value> = moving
            .iter()
            .map(|vm| json!({"vm": vm, "dest": "hz"}))
            .collect();
        let unplaceable: Vec<Value> = stuck
            .iter()
            .map(|vm| json!({"vm": vm, "reason": "no candidate: hz: full"}))
            .collect();
        if scenario != Scenario::DropBeforeAnswer {
            self.answer(ok(json!({"evacuation": id, "moves": moves, "unplaceable": unplaceable, "peer_reasons": []})));
        }
        let safe = stuck.is_empty();
        let done = json!({
            "check_error": null, "evacuation": id, "host": name,
            "moved": moves.iter().map(|m| json!({"vm": m["vm"], "dest": "hz", "downtime_ms": 120, "seconds": 2.5})).collect::<Vec<_>>(),
            "failed": [], "unplaceable": unplaceable, "peer_reasons": [],
            "remaining": stuck,
            "still_here": stuck.iter().map(|vm| json!({"vm": vm, "state": "running"})).collect::<Vec<_>>(),
            "safe_to_power_off": safe,
        });
        let last = json!({"evacuation": id, "at": "2026-12-01T05:00:00Z", "safe_to_power_off": safe,
                          "moved": moving.len(), "still_here": stuck.len(), "checked": true});
        let mut w = self.world.lock().unwrap();
        w.vms = stuck.to_vec();
        match scenario {
            Scenario::DropThenStatus | Scenario::DropBeforeAnswer => {
                w.last_result = last;
                return Some(End::Drop);
            }
            Scenario::DropThenEvent => {
                w.pending_done = Some(done);
                return Some(End::Drop);
            }
            Scenario::Safe | Scenario::NotSafe => w.last_result = last,
            Scenario::DropUnheard => unreachable!("returned above"),
        }
        drop(w);
        for vm in moving {
            self.event(
                "migration.progress",
                json!({"job": 1, "vm": vm, "dest": "hz", "percent": 50.0, "remaining_mib": 512.0, "rate_mib_s": 100.0, "eta_s": 5, "downtime_ms": 100, "note": null}),
            );
            self.event(
                "migration.done",
                json!({"job": 1, "vm": vm, "dest": "hz", "downtime_ms": 120, "seconds": 2.5, "data_mib": 700.0, "timeline": [], "announce": null}),
            );
        }
        if safe {
            self.event("host.empty", json!({"host": name}));
        }
        self.event("evacuation.done", done);
        None
    }
}

fn serve(conn: &mut dyn Conn, world: &Shared, telnet: bool) -> End {
    world.lock().unwrap().connections += 1;
    let end = Session {
        conn,
        world,
        telnet,
        awake: false,
        json: false,
        subscribed: false,
        logged_in: false,
    }
    .serve();
    if end == End::Drop {
        world.lock().unwrap().dropped += 1;
    }
    end
}

// --- over a pty -------------------------------------------------------

struct PtyConn(OwnedFd);

impl Conn for PtyConn {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        let ms = timeout.as_millis().min(u16::MAX as u128) as u16;
        if poll(&mut fds, PollTimeout::from(ms))? == 0 {
            return Ok(None);
        }
        match nix::unistd::read(&self.0, buf) {
            Ok(n) => Ok(Some(n)),
            Err(nix::Error::EAGAIN) => Ok(None),
            Err(nix::Error::EIO) => Ok(Some(0)),
            Err(e) => Err(e.into()),
        }
    }

    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            match nix::unistd::write(&self.0, bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(nix::Error::EAGAIN) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// A new pty whose slave `link` points to: (master, slave).
fn open_pty(link: &Path) -> (OwnedFd, OwnedFd) {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    let pty = nix::pty::openpty(None, None).unwrap();
    // Not inherited by the controller we start: closing ours must hang
    // the line up.
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
    }
    let flags = OFlag::from_bits_truncate(fcntl(&pty.master, FcntlArg::F_GETFL).unwrap());
    fcntl(&pty.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).unwrap();
    let mut t = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t).unwrap();
    let slave = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).unwrap();
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(slave, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
    (pty.master, pty.slave)
}

/// Serves `world` on a pty reachable at `dir/NAME.tty` (a symlink, as
/// /dev/serial/by-id names are); a dropped line is a closed master and a
/// new pty behind the same link. Returns the link.
pub fn on_pty(dir: &Path, world: &Shared) -> PathBuf {
    let link = dir.join(format!("{}.tty", world.lock().unwrap().name));
    let (master, slave) = open_pty(&link);
    let (world, path) = (world.clone(), link.clone());
    std::thread::spawn(move || {
        let (mut master, mut slave) = (master, slave);
        loop {
            let mut conn = PtyConn(master);
            // Our own slave stays open, so a controller that exits is not
            // a hangup; a drop closes both, and that is one.
            match serve(&mut conn, &world, false) {
                End::Drop => {
                    drop(conn);
                    drop(slave);
                    (master, slave) = open_pty(&path);
                }
                End::Closed => master = conn.0,
            }
        }
    });
    link
}

// --- over TCP ---------------------------------------------------------

struct TcpConn(TcpStream);

impl Conn for TcpConn {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
        self.0.set_read_timeout(Some(timeout))?;
        match self.0.read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes)
    }
}

/// Serves `world` on a TCP port of 127.0.0.1, one connection at a time,
/// as a console server does; with `telnet`, speaking telnet. A dropped
/// line is a closed connection. Returns the port.
pub fn on_tcp(world: &Shared, telnet: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let world = world.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut conn = TcpConn(stream);
            serve(&mut conn, &world, telnet);
            let _ = conn.0.shutdown(Shutdown::Both);
        }
    });
    port
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
