//! One host's line for the terminal UI: a thread that keeps the line up
//! (reconnecting with backoff, subscribed to events), asks the agent for
//! its state every few seconds, carries out what the person asked of
//! this host, and turns everything into the UI's [`Input`]s. The UI
//! never waits on a line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rackside_controller_ui::{Answer, Command as UiCommand, Input, Millis};
use rackside_protocol::{Command, Dest, Identify};
use serde_json::Value;

use crate::backoff::Backoff;
use crate::client::ClientError;
use crate::link::{chain, Link, Note};

/// How often the agent's status, VMs and jobs are asked for again.
const REFRESH: Duration = Duration::from_secs(5);
/// The longest wait for an event, so commands are not kept waiting.
const EVENT_WAIT: Duration = Duration::from_millis(200);

/// A moment as the UI counts it: milliseconds since the UI started.
#[derive(Debug, Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn now(&self) -> Millis {
        Millis(self.0.elapsed().as_millis() as u64)
    }
}

#[derive(Debug)]
pub struct Worker {
    pub link: Link,
    pub inputs: Sender<Input>,
    pub commands: Receiver<UiCommand>,
    pub clock: Clock,
    pub stop: Arc<AtomicBool>,
}

impl Worker {
    fn host(&self) -> String {
        self.link.host.clone()
    }

    fn send(&self, input: Input) {
        let _ = self.inputs.send(input);
    }

    fn dropped(&self, reason: String) {
        self.send(Input::LineDropped {
            host: self.host(),
            reason,
            at: self.clock.now(),
        });
    }

    pub fn run(mut self) {
        let mut failures = 0u32;
        let mut ever_up = false;
        let mut next_refresh = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if !self.link.is_up() {
                if ever_up && failures == 0 {
                    // Just dropped: a line that flaps is not hammered.
                    self.sleep(Backoff::DEFAULT.delay(1));
                }
                self.send(Input::LineConnecting {
                    host: self.host(),
                    at: self.clock.now(),
                });
                match self.link.connect() {
                    Ok(()) => {
                        failures = 0;
                        ever_up = true;
                        self.send(Input::LineUp {
                            host: self.host(),
                            at: self.clock.now(),
                        });
                        self.call(&Command::Subscribe);
                        next_refresh = Instant::now();
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let after = Backoff::DEFAULT.delay(failures);
                        self.dropped(format!(
                            "{}; trying again in {:.0} s",
                            chain(&e),
                            after.as_secs_f64().ceil()
                        ));
                        self.sleep(after);
                        continue;
                    }
                }
            }
            while let Ok(c) = self.commands.try_recv() {
                self.execute(c);
            }
            if Instant::now() >= next_refresh {
                self.refresh();
                next_refresh = Instant::now() + REFRESH;
            }
            let (tx, host, clock) = (self.inputs.clone(), self.host(), self.clock);
            let mut notify = |_: &str, note: Note| notify_ui(&tx, &host, clock, note);
            match self.link.next_event(EVENT_WAIT, &mut notify) {
                Ok(Some(ev)) => self.send(Input::Event {
                    host: self.host(),
                    name: ev.name,
                    data: ev.data,
                }),
                Ok(None) => {}
                // A drop was reported by `notify`; the loop reconnects.
                Err(_) => {}
            }
        }
    }

    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100).min(end - Instant::now()));
        }
    }

    fn refresh(&mut self) {
        for (cmd, wrap) in [
            (Command::Status, Answer::Status as fn(Value) -> Answer),
            (Command::Hosts, Answer::Hosts),
            (Command::Vms { long: false }, Answer::Vms),
            (Command::Jobs, Answer::Jobs),
        ] {
            if !self.link.is_up() {
                return;
            }
            if let Some(v) = self.call(&cmd) {
                self.answer(wrap(v));
            }
        }
    }

    fn answer(&self, answer: Answer) {
        self.send(Input::Answer {
            host: self.host(),
            answer,
        });
    }

    fn execute(&mut self, c: UiCommand) {
        match c {
            UiCommand::Evacuate { poweroff, .. } => {
                if let Some(v) = self.call(&Command::Evacuate {
                    dest: Dest::Auto,
                    poweroff,
                }) {
                    self.answer(Answer::Evacuate(v));
                }
            }
            UiCommand::Plan { .. } => {
                if let Some(v) = self.call(&Command::Plan { dest: Dest::Auto }) {
                    self.answer(Answer::Plan(v));
                }
            }
            UiCommand::Identify { .. } => {
                if self.call(&Command::Identify(Identify::On)).is_some() {
                    self.answer(Answer::Identify);
                }
            }
            UiCommand::Locate { vm } => {
                if let Some(v) = self.call(&Command::Locate { vm }) {
                    self.answer(Answer::Locate(v));
                }
            }
            UiCommand::Refresh => self.refresh(),
            UiCommand::Login { pin, .. } => {
                let login = Command::Login {
                    pin: pin.expose().to_owned(),
                };
                if self.call(&login).is_some() {
                    self.answer(Answer::LoggedIn);
                }
            }
            UiCommand::Quit => {}
        }
    }

    /// Sends `cmd`; what did not work is told to the UI, which shows it.
    fn call(&mut self, cmd: &Command) -> Option<Value> {
        let (tx, host, clock) = (self.inputs.clone(), self.host(), self.clock);
        let mut notify = |_: &str, note: Note| notify_ui(&tx, &host, clock, note);
        match self.link.call(cmd, &mut notify) {
            Ok(v) => Some(v),
            Err(ClientError::Refused { error, .. }) | Err(ClientError::Login(error)) => {
                self.send(Input::Refused {
                    host: self.host(),
                    code: error.code,
                    message: error.message,
                });
                None
            }
            Err(ClientError::NeedsPin { .. }) => {
                self.send(Input::PinNeeded { host: self.host() });
                None
            }
            Err(e) if e.is_down() => {
                if self.link.is_up() {
                    // Down without a drop noted (it never came up).
                    self.dropped(format!("{}; reconnecting", chain(&e)));
                }
                None
            }
            Err(e) => {
                self.send(Input::Refused {
                    host: self.host(),
                    code: "error".into(),
                    message: chain(&e),
                });
                None
            }
        }
    }
}

fn notify_ui(tx: &Sender<Input>, host: &str, clock: Clock, note: Note) {
    let input = match note {
        Note::Dropped { error } => Input::LineDropped {
            host: host.to_owned(),
            reason: format!("{error}; reconnecting"),
            at: clock.now(),
        },
        Note::Retrying { after, error } => Input::LineDropped {
            host: host.to_owned(),
            reason: format!(
                "{error}; trying again in {:.0} s",
                after.as_secs_f64().ceil()
            ),
            at: clock.now(),
        },
        Note::Up => Input::LineUp {
            host: host.to_owned(),
            at: clock.now(),
        },
    };
    let _ = tx.send(input);
}
