//! The management lines: one session per line, the protocol of
//! docs/protocol.md, text for people and JSON for machines.

pub mod answer;
pub mod client;
pub mod clock;
#[cfg(test)]
pub(crate) mod fit;
pub mod journal;
pub mod line;
pub mod reason;
pub mod session;
pub mod text;
pub mod tty;
