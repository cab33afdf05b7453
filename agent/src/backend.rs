//! The agent's answers to sessions: reading commands from the inventory,
//! the rest through the evacuation controller, rendered by the console.
//! The glue between the two, so neither imports the other.

use std::sync::Arc;
use std::time::Instant;

use rackside_protocol::{Command, ErrorCode};

use crate::console::answer::{self, Answer, Backend, HostInfo, Refusal};
use crate::console::{journal, text};
use crate::evacuation::journal::Journal;
use crate::evacuation::Controller;
use crate::inventory::{Inventory, State};

#[derive(Debug)]
pub struct AgentBackend {
    pub inventory: Arc<Inventory>,
    pub host: HostInfo,
    pub controller: Arc<Controller>,
}

impl AgentBackend {
    fn status_now(&self, s: &State, now: Instant) -> Answer {
        // A blind host is never called "empty" from a stale VM list.
        let running = s.live_vms_running(now);
        let hs = self.controller.host_state(running);
        let warning = self.controller.warning();
        let last = self.controller.last_result();
        let control = answer::Control {
            state: hs,
            maintenance: self.controller.maintenance_on(),
            journal_note: warning.as_deref(),
            last_result: last.as_ref(),
            utc_offset_s: crate::console::clock::local_utc_offset_s(),
        };
        answer::status(s, &self.host, now, &control)
    }
}

impl Backend for AgentBackend {
    fn warnings(&self) -> Vec<String> {
        self.controller.warning().into_iter().collect()
    }

    fn answer(&self, cmd: &Command, line: &str) -> Result<Answer, Refusal> {
        let now = Instant::now();
        let s = self.inventory.snapshot();
        let c = &self.controller;
        match cmd {
            Command::Help { command } => Ok(answer::help(*command)),
            Command::Status => Ok(self.status_now(&s, now)),
            Command::Vms { long } => answer::vms(&s, now, *long),
            Command::Hosts => {
                let me = self.status_now(&s, now);
                Ok(answer::hosts(
                    &s,
                    &self.host,
                    now,
                    self.inventory.peer_stale_after(),
                    &me,
                ))
            }
            Command::Locate { vm } => {
                answer::locate(&s, &self.host, vm, now, self.inventory.peer_stale_after())
            }
            Command::Plan { dest } => c.plan(dest).map(|d| Answer::of(&d, text::plan(&d))),
            Command::Evacuate { dest, poweroff } => c
                .evacuate(dest, *poweroff, line)
                .map(|d| Answer::of(&d, text::evacuation_started(&d))),
            Command::Migrate { vm, dest } => c
                .migrate(vm, dest, line)
                .map(|d| Answer::of(&d, text::migration_started(&d))),
            Command::Jobs => {
                let d = c.jobs();
                Ok(Answer::of(&d, text::jobs(&d)))
            }
            Command::Abort { vm } => c
                .abort(vm.as_deref(), line)
                .map(|d| Answer::of(&d, text::aborted(&d))),
            Command::Maintenance { on } => c
                .maintenance(*on, line)
                .map(|d| Answer::of(&d, text::maintenance(&d))),
            Command::Poweroff => c.poweroff(line).map(|d| Answer::of(&d, "powering off")),
            Command::Identify(what) => c.identify(what).map(|d| Answer::of(&d, "ok")),
            Command::Journal { ack } => journal_answer(c.journal(), *ack, line),
            other => Err((
                ErrorCode::BadRequest,
                format!("'{}' is handled by the session", other.name()),
            )),
        }
    }
}

/// `journal` (`ack` false) or `journal ack`, from the line named `line`.
fn journal_answer(journal: &Journal, ack: bool, line: &str) -> Result<Answer, Refusal> {
    if !ack {
        return Ok(journal::show(&journal.status()));
    }
    match journal.acknowledge(line) {
        Ok(d) => Ok(journal::acknowledged(d.as_ref())),
        Err(e) => {
            let cause = std::error::Error::source(&e).map_or(String::new(), |s| format!(": {s}"));
            Err((ErrorCode::Internal, format!("{e}{cause}")))
        }
    }
}
