//! A console server's telnet port: TCP with the telnet state machine of
//! [`crate::telnet`] in between. Option answers go out as soon as the
//! commands asking for them are read.

use std::time::{Duration, Instant};

use super::tcp::TcpLine;
use super::{Line, LineError};
use crate::telnet::Telnet;

#[derive(Debug)]
pub struct TelnetLine {
    tcp: TcpLine,
    telnet: Telnet,
}

impl TelnetLine {
    pub fn new(addr: String) -> Self {
        TelnetLine {
            tcp: TcpLine::new(addr),
            telnet: Telnet::new(),
        }
    }
}

impl Line for TelnetLine {
    fn reconnect(&mut self) -> Result<(), LineError> {
        self.tcp.reconnect()?;
        self.telnet = Telnet::new();
        let hello = self.telnet.start();
        self.tcp.write(&hello)
    }

    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, LineError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = self.tcp.read(buf, left)?;
            if n == 0 {
                return Ok(0);
            }
            let got = self.telnet.receive(&buf[..n]);
            if !got.reply.is_empty() {
                self.tcp.write(&got.reply)?;
            }
            if !got.data.is_empty() {
                // Never longer than what was read: commands only shrink.
                buf[..got.data.len()].copy_from_slice(&got.data);
                return Ok(got.data.len());
            }
            if left.is_zero() {
                return Ok(0);
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), LineError> {
        let wire = self.telnet.encode(bytes);
        self.tcp.write(&wire)
    }

    fn close(&mut self) {
        self.tcp.close();
    }
}
