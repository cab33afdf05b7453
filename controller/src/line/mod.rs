//! The management lines, behind one trait: a local serial device or pty
//! ([`serial`]), a console server's raw TCP port ([`tcp`]), and a console
//! server's telnet port ([`telnet`]). The protocol client above only reads
//! bytes, writes bytes and asks for a reconnect.

use std::fmt;
use std::time::Duration;

pub mod serial;
pub mod spec;
pub mod tcp;
pub mod telnet;

pub use spec::{LineSpec, SpecError};

/// How long a write may wait on a line that does not drain (flow
/// stopped, a console server that stopped reading) before the line counts
/// as dropped.
pub const WRITE_LIMIT: Duration = Duration::from_secs(5);

/// Why a line is not usable. Every variant means the same to the client
/// above: the line is down; reconnect.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("not connected")]
    NotConnected,
    #[error("cannot open {what}")]
    Open {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set {path} raw at {baud} baud")]
    Configure {
        path: String,
        baud: u32,
        #[source]
        source: std::io::Error,
    },
    /// Another program holds the device's lock (picocom, another
    /// controller): two readers would each take part of every answer.
    #[error(
        "{path} is in use by another program (it holds the line's lock); close that program first"
    )]
    Busy { path: String },
    #[error("the other end closed the line")]
    Closed,
    #[error("read from the line")]
    Read(#[source] std::io::Error),
    #[error("write to the line")]
    Write(#[source] std::io::Error),
    #[error("the line took no output for {} s", WRITE_LIMIT.as_secs())]
    WriteStalled,
}

/// One management line.
pub trait Line: Send + fmt::Debug {
    /// Opens the line, closing it first if it was open.
    fn reconnect(&mut self) -> Result<(), LineError>;

    /// Reads what arrives within `timeout` into `buf`: `Ok(0)` when
    /// nothing did; [`LineError::Closed`] when the other end went away.
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, LineError>;

    /// Writes all of `bytes`.
    fn write(&mut self, bytes: &[u8]) -> Result<(), LineError>;

    /// Closes the line (it stays closed until [`Line::reconnect`]).
    fn close(&mut self);
}

/// The line `spec` names, not yet connected.
pub fn for_spec(spec: &LineSpec) -> Box<dyn Line> {
    match spec {
        LineSpec::Serial { path, baud } => Box::new(serial::SerialLine::new(path.clone(), *baud)),
        LineSpec::Tcp { addr } => Box::new(tcp::TcpLine::new(addr.clone())),
        LineSpec::Telnet { addr } => Box::new(telnet::TelnetLine::new(addr.clone())),
    }
}
