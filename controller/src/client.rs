//! The console protocol spoken over one line: wake the agent, switch the
//! session to JSON, send requests with ids and match the answers by id,
//! keep the events that come in between, and log in with the caller's PIN
//! when a command answers `auth_required`.
//!
//! Everything that is not a JSON response or event (the banner, prompts,
//! echo, a person's text answers on a shared line, noise) is skipped, and
//! so is a response whose id is not the one awaited (the late answer to a
//! request that timed out).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use rackside_protocol::{Command, ErrorCode, Mode};
use serde_json::Value;

use crate::backoff::Backoff;
use crate::line::{Line, LineError};
use crate::lines::LineSplitter;
use crate::message::{self, AgentError, Event, Incoming, Response};

/// What we send to wake a line: Ctrl-U (drop whatever a person left
/// half typed) and Enter (the agent writes nothing before the first one).
pub const WAKE: &[u8] = b"\x15\r";

/// How long to wait for each wake before pressing Enter again: an Enter
/// that reached the line before the agent opened it was thrown away.
const WAKE_RETRY: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(2),
};

/// Events kept while nobody reads them; the oldest go first.
const MAX_EVENTS: usize = 4096;

/// A PIN, never shown in logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(String);

impl Pin {
    /// A PIN as read from a file or the environment: surrounding
    /// whitespace (the file's newline) is not part of it.
    pub fn new(pin: &str) -> Option<Pin> {
        let pin = pin.trim();
        (!pin.is_empty()).then(|| Pin(pin.to_owned()))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(..)")
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long to wait for each answer, and for the agent to wake.
    pub timeout: Duration,
    /// Used when a command answers `auth_required`.
    pub pin: Option<Pin>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(10),
            pin: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("line down")]
    Line(#[from] LineError),
    #[error("the agent does not answer on the line (nothing within {secs} s)")]
    Mute { secs: u64 },
    #[error("no answer to '{cmd}' within {secs} s")]
    Timeout { cmd: &'static str, secs: u64 },
    #[error("'{cmd}' refused")]
    Refused {
        cmd: &'static str,
        #[source]
        error: AgentError,
    },
    #[error("'{cmd}' needs a login and no PIN was given (RACKSIDE_PIN or --pin-file)")]
    NeedsPin { cmd: &'static str },
    #[error("login refused")]
    Login(#[source] AgentError),
}

impl ClientError {
    /// True when the line, or the agent behind it, is gone: worth a
    /// reconnect. A refusal is an answer, and is not.
    pub fn is_down(&self) -> bool {
        matches!(
            self,
            ClientError::Line(_) | ClientError::Mute { .. } | ClientError::Timeout { .. }
        )
    }
}

/// One agent on one line.
#[derive(Debug)]
pub struct Client {
    line: Box<dyn Line>,
    options: ClientOptions,
    splitter: LineSplitter,
    next_id: u64,
    responses: VecDeque<Response>,
    events: VecDeque<Event>,
}

impl Client {
    pub fn new(line: Box<dyn Line>, options: ClientOptions) -> Self {
        Client {
            line,
            options,
            splitter: LineSplitter::default(),
            next_id: 1,
            responses: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// (Re)opens the line, wakes the agent and switches the session to
    /// JSON. Events of an earlier connection are forgotten.
    pub fn connect(&mut self) -> Result<(), ClientError> {
        self.splitter.reset();
        self.responses.clear();
        self.events.clear();
        self.line.reconnect()?;
        self.wake()
    }

    /// Closes the line.
    pub fn close(&mut self) {
        self.line.close();
    }

    /// Presses Enter and asks for `mode json` until the agent answers.
    /// Its banner and prompt are skipped like any other text. An agent
    /// whose session is already in JSON (a console server's port the line
    /// stayed up behind) answers the same.
    fn wake(&mut self) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.options.timeout;
        let mut ids = Vec::new();
        for attempt in 1.. {
            self.write(WAKE)?;
            let id = self.send(&Command::Mode(Mode::Json))?;
            ids.push(id);
            let until = (Instant::now() + WAKE_RETRY.delay(attempt)).min(deadline);
            if let Some(response) = self.wait_for(&ids, until)? {
                return response
                    .outcome
                    .map(drop)
                    .map_err(|error| ClientError::Refused { cmd: "mode", error });
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(ClientError::Mute {
            secs: self.options.timeout.as_secs(),
        })
    }

    /// Sends `cmd` and returns its `data`; a command that needs a login
    /// logs in with the PIN given and is sent again, once.
    pub fn call(&mut self, cmd: &Command) -> Result<Value, ClientError> {
        let error = match self.request(cmd)? {
            Ok(data) => return Ok(data),
            Err(error) => error,
        };
        if !error.is(ErrorCode::AuthRequired) {
            return Err(ClientError::Refused {
                cmd: cmd.name(),
                error,
            });
        }
        let Some(pin) = self.options.pin.clone() else {
            return Err(ClientError::NeedsPin { cmd: cmd.name() });
        };
        self.request(&Command::Login { pin: pin.0 })?
            .map_err(ClientError::Login)?;
        self.request(cmd)?.map_err(|error| ClientError::Refused {
            cmd: cmd.name(),
            error,
        })
    }

    /// Sends `cmd` and returns the agent's answer, whatever it is.
    pub fn request(&mut self, cmd: &Command) -> Result<Result<Value, AgentError>, ClientError> {
        let id = self.send(cmd)?;
        let until = Instant::now() + self.options.timeout;
        match self.wait_for(&[id], until)? {
            Some(response) => Ok(response.outcome),
            None => Err(ClientError::Timeout {
                cmd: cmd.name(),
                secs: self.options.timeout.as_secs(),
            }),
        }
    }

    /// The next event, waiting at most `timeout` for one.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>, ClientError> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.pump(left)?;
        }
    }

    fn send(&mut self, cmd: &Command) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = message::encode(id, cmd).into_bytes();
        line.push(b'\r');
        self.write(&line)?;
        Ok(id)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.line.write(bytes).map_err(|e| {
            self.line.close();
            e.into()
        })
    }

    /// The response to one of `ids`, reading until `until`.
    fn wait_for(&mut self, ids: &[u64], until: Instant) -> Result<Option<Response>, ClientError> {
        loop {
            while let Some(response) = self.responses.pop_front() {
                let id = response.id.as_ref().and_then(Value::as_u64);
                if id.is_some_and(|id| ids.contains(&id)) {
                    return Ok(Some(response));
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.pump(left)?;
        }
    }

    /// One read: whatever arrives within `wait`, sorted into responses and
    /// events.
    fn pump(&mut self, wait: Duration) -> Result<(), ClientError> {
        let mut buf = [0u8; 4096];
        let n = self.line.read(&mut buf, wait).map_err(|e| {
            self.line.close();
            ClientError::from(e)
        })?;
        for line in self.splitter.push(&buf[..n]) {
            match message::classify(&line) {
                Some(Incoming::Response(r)) => self.responses.push_back(r),
                Some(Incoming::Event(e)) => {
                    if self.events.len() == MAX_EVENTS {
                        self.events.pop_front();
                    }
                    self.events.push_back(e);
                }
                None => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::json;

    use super::*;

    /// A line that plays back canned chunks and records what is written.
    #[derive(Debug, Default)]
    struct Canned {
        input: VecDeque<Vec<u8>>,
        written: Arc<Mutex<Vec<u8>>>,
        closed_at_end: bool,
    }

    impl Line for Canned {
        fn reconnect(&mut self) -> Result<(), LineError> {
            Ok(())
        }
        fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, LineError> {
            match self.input.pop_front() {
                Some(chunk) => {
                    buf[..chunk.len()].copy_from_slice(&chunk);
                    Ok(chunk.len())
                }
                None if self.closed_at_end => Err(LineError::Closed),
                None => {
                    std::thread::sleep(timeout.min(Duration::from_millis(2)));
                    Ok(0)
                }
            }
        }
        fn write(&mut self, bytes: &[u8]) -> Result<(), LineError> {
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(())
        }
        fn close(&mut self) {}
    }

    fn client(chunks: &[&str], pin: Option<&str>) -> (Client, Arc<Mutex<Vec<u8>>>) {
        let line = Canned {
            input: chunks.iter().map(|c| c.as_bytes().to_vec()).collect(),
            ..Canned::default()
        };
        let written = line.written.clone();
        let options = ClientOptions {
            timeout: Duration::from_millis(300),
            pin: pin.and_then(Pin::new),
        };
        (Client::new(Box::new(line), options), written)
    }

    fn sent_lines(written: &Arc<Mutex<Vec<u8>>>) -> Vec<String> {
        let w = written.lock().unwrap();
        String::from_utf8_lossy(&w)
            .split('\r')
            .map(|l| l.trim_start_matches('\x15').to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    }

    #[test]
    fn wake_skips_the_banner_and_switches_to_json() {
        let (mut c, written) = client(
            &[
                "rackside-agent 0.1.0 on ha\r\nlocation: r1\r\nno PIN set: every ",
                "command is allowed; type help\r\nha> \r\n{\"id\":1,\"ok\":tr",
                "ue,\"data\":{}}\r\n",
            ],
            None,
        );
        c.connect().unwrap();
        let w = written.lock().unwrap().clone();
        assert!(
            w.starts_with(b"\x15\r{"),
            "{:?}",
            String::from_utf8_lossy(&w)
        );
        assert_eq!(
            sent_lines(&written),
            [r#"{"args":{"mode":"json"},"cmd":"mode","id":1}"#]
        );
    }

    /// An agent that was not reading yet when the first Enter and
    /// request came: it answers only what is sent after them.
    #[derive(Debug, Default)]
    struct LateAgent {
        requests: Vec<u64>,
        out: Vec<u8>,
    }

    impl Line for LateAgent {
        fn reconnect(&mut self) -> Result<(), LineError> {
            Ok(())
        }
        fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, LineError> {
            if self.out.is_empty() {
                std::thread::sleep(timeout.min(Duration::from_millis(2)));
                return Ok(0);
            }
            let n = self.out.len().min(buf.len());
            buf[..n].copy_from_slice(&self.out[..n]);
            self.out.drain(..n);
            Ok(n)
        }
        fn write(&mut self, bytes: &[u8]) -> Result<(), LineError> {
            let text = String::from_utf8_lossy(bytes);
            let id = serde_json::from_str::<Value>(text.trim_matches(['\x15', '\r']))
                .ok()
                .and_then(|v| v["id"].as_u64());
            if let Some(req) = id {
                self.requests.push(req);
                if self.requests.len() > 1 {
                    self.out.extend_from_slice(
                        format!("banner\r\nha> \r\n{{\"id\":{req},\"ok\":true,\"data\":{{}}}}\r\n")
                            .as_bytes(),
                    );
                }
            }
            Ok(())
        }
        fn close(&mut self) {}
    }

    #[test]
    fn wake_presses_enter_again_until_the_agent_answers() {
        let mut c = Client::new(
            Box::new(LateAgent::default()),
            ClientOptions {
                timeout: Duration::from_secs(5),
                pin: None,
            },
        );
        c.connect().unwrap();
        assert_eq!(c.next_id, 3, "answered on the second try");
    }

    #[test]
    fn a_silent_line_is_mute() {
        let (mut c, _) = client(&["ha> "], None);
        assert!(matches!(c.connect(), Err(ClientError::Mute { .. })));
    }

    #[test]
    fn responses_are_matched_by_id_and_everything_else_skipped() {
        let (mut c, _) = client(
            &[
                "{\"id\":1,\"ok\":true,\"data\":{}}\r\n",
                // A late answer to some earlier request, noise, echo, an
                // event, a response without id, then ours.
                "{\"id\":99,\"ok\":true,\"data\":{\"host\":\"old\"}}\r\n",
                "\x07garbage \x1b[2J\r\n{\"id\":2,\"cmd\":\"status\"}\r\n",
                "{\"event\":\"host.empty\",\"ts\":\"T\",\"data\":{\"host\":\"ha\"}}\r\n",
                "{\"ok\":true,\"data\":{}}\r\n",
                "{\"id\":2,\"ok\":true,\"data\":{\"host\":\"ha\"}}\r\n",
            ],
            None,
        );
        c.connect().unwrap();
        let data = c.call(&Command::Status).unwrap();
        assert_eq!(data, json!({"host": "ha"}));
        let event = c.next_event(Duration::from_millis(50)).unwrap().unwrap();
        assert_eq!(event.name, "host.empty");
        assert_eq!(c.next_event(Duration::from_millis(10)).unwrap(), None);
    }

    #[test]
    fn an_unanswered_request_times_out() {
        let (mut c, _) = client(&["{\"id\":1,\"ok\":true,\"data\":{}}\r\n"], None);
        c.connect().unwrap();
        assert!(matches!(
            c.call(&Command::Status),
            Err(ClientError::Timeout { cmd: "status", .. })
        ));
    }

    #[test]
    fn a_refusal_is_returned_with_its_code() {
        let (mut c, _) = client(
            &[
                "{\"id\":1,\"ok\":true,\"data\":{}}\r\n",
                "{\"id\":2,\"ok\":false,\"error\":{\"code\":\"busy\",\"message\":\"a run is active\"}}\r\n",
            ],
            None,
        );
        c.connect().unwrap();
        let err = c
            .call(&Command::Evacuate {
                dest: rackside_protocol::Dest::Auto,
                poweroff: false,
            })
            .unwrap_err();
        let ClientError::Refused { cmd, error } = err else {
            panic!("{err:?}")
        };
        assert_eq!((cmd, error.code.as_str()), ("evacuate", "busy"));
    }

    const AUTH_REQUIRED: &str = "{\"id\":2,\"ok\":false,\"error\":{\"code\":\"auth_required\",\"message\":\"'identify' changes this host: login first\"}}\r\n";

    #[test]
    fn auth_required_logs_in_with_the_pin_and_sends_again() {
        let (mut c, written) = client(
            &[
                "{\"id\":1,\"ok\":true,\"data\":{}}\r\n",
                AUTH_REQUIRED,
                "{\"id\":3,\"ok\":true,\"data\":{\"role\":\"operator\"}}\r\n",
                "{\"id\":4,\"ok\":true,\"data\":{}}\r\n",
            ],
            Some("123456\n"),
        );
        c.connect().unwrap();
        let cmd = Command::Identify(rackside_protocol::Identify::On);
        assert_eq!(c.call(&cmd).unwrap(), json!({}));
        let sent = sent_lines(&written);
        assert_eq!(
            &sent[1..],
            [
                r#"{"args":{"on":true},"cmd":"identify","id":2}"#,
                r#"{"args":{"pin":"123456"},"cmd":"login","id":3}"#,
                r#"{"args":{"on":true},"cmd":"identify","id":4}"#,
            ]
        );
    }

    #[test]
    fn auth_required_without_a_pin_says_so() {
        let (mut c, _) = client(
            &["{\"id\":1,\"ok\":true,\"data\":{}}\r\n", AUTH_REQUIRED],
            None,
        );
        c.connect().unwrap();
        let err = c
            .call(&Command::Identify(rackside_protocol::Identify::On))
            .unwrap_err();
        assert!(matches!(err, ClientError::NeedsPin { cmd: "identify" }));
    }

    #[test]
    fn a_wrong_pin_is_a_login_error() {
        let (mut c, _) = client(
            &[
                "{\"id\":1,\"ok\":true,\"data\":{}}\r\n",
                AUTH_REQUIRED,
                "{\"id\":3,\"ok\":false,\"error\":{\"code\":\"auth_failed\",\"message\":\"wrong PIN\"}}\r\n",
            ],
            Some("000000"),
        );
        c.connect().unwrap();
        let err = c
            .call(&Command::Identify(rackside_protocol::Identify::On))
            .unwrap_err();
        let ClientError::Login(e) = err else {
            panic!("{err:?}")
        };
        assert_eq!(e.code, "auth_failed");
    }

    #[test]
    fn a_closed_line_is_down() {
        let line = Canned {
            input: VecDeque::from([b"{\"id\":1,\"ok\":true,\"data\":{}}\r\n".to_vec()]),
            closed_at_end: true,
            ..Canned::default()
        };
        let mut c = Client::new(Box::new(line), ClientOptions::default());
        c.connect().unwrap();
        let err = c.call(&Command::Status).unwrap_err();
        assert!(err.is_down(), "{err:?}");
        assert!(matches!(err, ClientError::Line(LineError::Closed)));
    }

    #[test]
    fn the_pin_is_not_shown() {
        let pin = Pin::new(" 123456\n").unwrap();
        assert_eq!(format!("{pin:?}"), "Pin(..)");
        assert_eq!(pin.0, "123456");
        assert!(Pin::new(" \n").is_none());
    }
}
