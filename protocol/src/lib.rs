//! rackside console protocol v1 (docs/protocol.md): pure functions over bytes and lines, no I/O.
//!
//! The agent owns the serial lines, the clock and libvirt; everything here
//! is a function of its inputs, so every rule of the protocol can be tested
//! (and fuzzed) in microseconds, and the agent cannot bend a rule by
//! accident while doing I/O.
//!
//! The flow for one session: bytes -> [`LineReader`] -> [`LineEvent`]s ->
//! [`parse_line`] -> [`Request`] or [`RequestError`] -> the agent acts ->
//! [`wire`] (JSON) or [`table`] and [`screen`] (text) -> bytes.

pub mod error;
pub mod help;
pub mod line;
pub mod request;
pub mod screen;
pub mod table;
pub mod wire;

pub use error::ErrorCode;
pub use help::{CommandInfo, COMMANDS, HELP};
pub use line::{Echo, LineEvent, LineReader, MAX_LINE};
pub use request::{
    parse_line, validate_name, Command, Dest, Identify, Mode, Request, RequestError,
};
pub use screen::Text;
