//! rackside-controller: drives rackside agents over their management
//! lines (docs/protocol.md), for scripts now and for a TUI later.
//!
//! Layers, bottom up, each with one job:
//! - [`line`]: the transports behind one trait (serial/pty, raw TCP,
//!   telnet), with the pure [`telnet`] state machine;
//! - [`lines`]: bytes into lines; [`message`]: lines into typed responses
//!   and events, and commands into request lines;
//! - [`client`]: the protocol over one line (wake, JSON mode, ids, events,
//!   login); [`link`]: a client kept up, reconnected with [`backoff`];
//! - [`model`]: the agent's answers typed; [`config`]: which hosts;
//! - [`cmd`]: the scriptable commands, [`cli`] and [`run`] around them.

pub mod backoff;
pub mod cli;
pub mod client;
pub mod cmd;
pub mod config;
pub mod line;
pub mod lines;
pub mod link;
pub mod message;
pub mod model;
pub mod out;
pub mod run;
pub mod telnet;
pub mod tui;
