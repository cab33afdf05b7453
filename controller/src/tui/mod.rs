//! `rackside-controller` with no command: the rack on the laptop's
//! screen (rackside-controller-ui draws it and decides what keys mean).
//! One [`worker`] thread per host's line feeds it; this loop reads keys,
//! hands the UI everything that arrived, routes what it asks for to the
//! host concerned, and draws. The terminal is put back however it ends.

pub mod worker;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rackside_controller_ui::{App, Command as UiCommand, Input, Key};
use ratatui::crossterm::event::{self, Event};

use crate::backoff::Backoff;
use crate::client::ClientOptions;
use crate::config::Config;
use crate::link::Link;
use worker::{Clock, Worker};

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("the terminal")]
    Terminal(#[from] std::io::Error),
    #[error("cannot start a line's thread")]
    Thread(#[source] std::io::Error),
}

/// How long a key is waited for before the screen is brought up to date.
const FRAME: Duration = Duration::from_millis(100);

pub fn run(config: &Config, options: &ClientOptions) -> Result<(), TuiError> {
    let clock = Clock(Instant::now());
    let stop = Arc::new(AtomicBool::new(false));
    let (inputs, arrived) = mpsc::channel();
    let mut routes = BTreeMap::new();
    let mut threads = Vec::new();
    for host in &config.hosts {
        let (tx, rx) = mpsc::channel();
        routes.insert(host.name.clone(), tx);
        let w = Worker {
            link: Link::new(host, options.clone(), Backoff::DEFAULT),
            inputs: inputs.clone(),
            commands: rx,
            clock,
            stop: stop.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("line-{}", host.name))
                .spawn(move || w.run())
                .map_err(TuiError::Thread)?,
        );
    }
    // What the lines brought, one Input a line (a PIN is never in it):
    // for finding out what a screen was made from.
    let mut trace =
        std::env::var_os("RACKSIDE_CONTROLLER_TRACE").and_then(|p| std::fs::File::create(p).ok());
    let mut terminal = ratatui::init();
    let result = (|| -> Result<(), TuiError> {
        let mut app = App::new();
        loop {
            terminal.draw(|f| app.render(f))?;
            let mut asked = Vec::new();
            if event::poll(FRAME)? {
                if let Event::Key(k) = event::read()? {
                    if let Some(key) = Key::from_crossterm(k) {
                        asked.extend(app.handle(Input::Key(key)));
                    }
                }
            }
            while let Ok(input) = arrived.try_recv() {
                if let Some(t) = trace.as_mut() {
                    let _ = writeln!(t, "{} {input:?}", clock.now().0);
                }
                asked.extend(app.handle(input));
            }
            asked.extend(app.handle(Input::Tick { now: clock.now() }));
            for c in asked {
                if !route(&routes, c) {
                    return Ok(());
                }
            }
        }
    })();
    ratatui::restore();
    stop.store(true, Ordering::Relaxed);
    // A line in the middle of a call ends it within its timeout; a person
    // who pressed q does not wait for that. The lines hold nothing to save
    // (their locks and connections end with the process).
    let end = Instant::now() + QUIT_GRACE;
    while Instant::now() < end && !threads.iter().all(|t| t.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for t in threads.into_iter().filter(|t| t.is_finished()) {
        let _ = t.join();
    }
    result
}

/// How long quitting waits for the lines' threads.
const QUIT_GRACE: Duration = Duration::from_secs(1);

/// Sends `c` to the line(s) it concerns; false on Quit.
fn route(routes: &BTreeMap<String, mpsc::Sender<UiCommand>>, c: UiCommand) -> bool {
    let to_one = |host: &str, c: UiCommand| {
        if let Some(tx) = routes.get(host) {
            let _ = tx.send(c);
        }
    };
    match c {
        UiCommand::Quit => return false,
        UiCommand::Evacuate { ref host, .. }
        | UiCommand::Plan { ref host }
        | UiCommand::Identify { ref host }
        | UiCommand::Login { ref host, .. } => to_one(&host.clone(), c),
        UiCommand::Refresh | UiCommand::Locate { .. } => {
            for tx in routes.values() {
                let _ = tx.send(c.clone());
            }
        }
    }
    true
}
