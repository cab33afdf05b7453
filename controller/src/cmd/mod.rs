//! The scriptable commands, one module each. Each gathers typed answers
//! from the hosts' links and renders them, for people or as JSON; the
//! rendering is pure and tested on its own.

pub mod evacuate;
pub mod identify;
pub mod locate;
pub mod status;

use serde::de::DeserializeOwned;

use crate::backoff::Backoff;
use crate::client::{ClientError, ClientOptions};
use crate::config::Config;
use crate::link::{chain, Link, Note};
use crate::model::{self, ShapeError};

#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Shape(#[from] ShapeError),
}

/// Sends `cmd` to every host at once, each on its own thread (a dead
/// line costs its timeout once, not once per host), and reads each
/// answer as `T`: per host in config order, its name and its answer or
/// why there is none (the error chain).
pub fn ask_all<T: DeserializeOwned + Send>(
    config: &Config,
    options: &ClientOptions,
    cmd: &rackside_protocol::Command,
) -> Vec<(String, Result<T, String>)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = config
            .hosts
            .iter()
            .map(|host| {
                scope.spawn(move || {
                    let mut link = Link::new(host, options.clone(), Backoff::DEFAULT);
                    let mut ignore = |_: &str, _: Note| {};
                    let answer = (|| -> Result<T, AskError> {
                        Ok(model::read(cmd.name(), link.call(cmd, &mut ignore)?)?)
                    })();
                    (host.name.clone(), answer.map_err(|e| chain(&e)))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a thread asking a host panicked"))
            .collect()
    })
}

/// How a command ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 2: the evacuation ended NOT SAFE.
    NotSafe,
    /// Exit 1: the command ran but did not get what it asked for (a host
    /// whose line is down, a VM found nowhere).
    Incomplete,
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::NotSafe => 2,
            Outcome::Incomplete => 1,
        }
    }
}
