//! One host's line kept usable: a line that drops (EOF, an error, an
//! agent that stops answering) is reported as dropped and reconnected,
//! with capped exponential backoff between the tries ([`Backoff`]).

use std::time::{Duration, Instant};

use rackside_protocol::Command;
use serde_json::Value;

use crate::backoff::Backoff;
use crate::client::{Client, ClientError, ClientOptions};
use crate::config::HostConfig;
use crate::line::{self, Line, LineSpec};
use crate::message::Event;

/// What happened to a line, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The line was up and went down.
    Dropped { error: String },
    /// A try failed; the next comes after `after`.
    Retrying { after: Duration, error: String },
    /// The line is up (again).
    Up,
}

/// Receives the [`Note`]s of a host's line.
pub type Notify<'a> = &'a mut dyn FnMut(&str, Note);

#[derive(Debug)]
pub struct Link {
    pub host: String,
    pub spec: LineSpec,
    client: Client,
    backoff: Backoff,
    /// Failed tries in a row.
    failures: u32,
    up: bool,
    /// A drop or a failed try was reported and the line is not back yet.
    reported_down: bool,
}

/// An error and its causes on one line: `a: b: c`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        s.push_str(": ");
        s.push_str(&e.to_string());
        source = e.source();
    }
    s
}

impl Link {
    pub fn new(host: &HostConfig, options: ClientOptions, backoff: Backoff) -> Link {
        Link::with_line(host, line::for_spec(&host.line), options, backoff)
    }

    /// A link over a line made elsewhere (tests).
    pub fn with_line(
        host: &HostConfig,
        line: Box<dyn Line>,
        options: ClientOptions,
        backoff: Backoff,
    ) -> Link {
        Link {
            host: host.name.clone(),
            spec: host.line.clone(),
            client: Client::new(line, options),
            backoff,
            failures: 0,
            up: false,
            reported_down: false,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// One try to open the line and wake the agent.
    pub fn connect(&mut self) -> Result<(), ClientError> {
        match self.client.connect() {
            Ok(()) => {
                self.up = true;
                self.failures = 0;
                Ok(())
            }
            Err(e) => {
                self.up = false;
                self.failures = self.failures.saturating_add(1);
                self.client.close();
                Err(e)
            }
        }
    }

    /// Tries until the line is up or `deadline` passes, waiting as
    /// [`Backoff`] says between tries; the last error when it never came up.
    pub fn connect_until(&mut self, deadline: Instant, notify: Notify) -> Result<(), ClientError> {
        loop {
            match self.connect() {
                Ok(()) => {
                    if std::mem::take(&mut self.reported_down) {
                        notify(&self.host, Note::Up);
                    }
                    return Ok(());
                }
                Err(e) => {
                    let after = self.backoff.delay(self.failures);
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !e.is_down() || left <= after {
                        return Err(e);
                    }
                    self.reported_down = true;
                    notify(
                        &self.host,
                        Note::Retrying {
                            after,
                            error: chain(&e),
                        },
                    );
                    std::thread::sleep(after);
                }
            }
        }
    }

    /// Sends `cmd` (see [`Client::call`]), connecting first if the line is
    /// down. A line that drops on the way is marked down and reported.
    pub fn call(&mut self, cmd: &Command, notify: Notify) -> Result<Value, ClientError> {
        if !self.up {
            self.connect()?;
        }
        let result = self.client.call(cmd);
        self.check(result, notify)
    }

    /// The next event within `timeout` (see [`Client::next_event`]).
    pub fn next_event(
        &mut self,
        timeout: Duration,
        notify: Notify,
    ) -> Result<Option<Event>, ClientError> {
        if !self.up {
            return Err(ClientError::Line(line::LineError::NotConnected));
        }
        let result = self.client.next_event(timeout);
        self.check(result, notify)
    }

    fn check<T>(
        &mut self,
        result: Result<T, ClientError>,
        notify: Notify,
    ) -> Result<T, ClientError> {
        if let Err(e) = &result {
            if e.is_down() && self.up {
                self.up = false;
                self.client.close();
                self.reported_down = true;
                notify(&self.host, Note::Dropped { error: chain(e) });
            }
        }
        result
    }
}
