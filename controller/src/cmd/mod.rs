//! The scriptable commands, one module each. Each gathers typed answers
//! from the hosts' links and renders them, for people or as JSON; the
//! rendering is pure and tested on its own.

pub mod evacuate;
pub mod identify;
pub mod locate;
pub mod status;

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
