//! A console server's raw TCP port: the bytes on the socket are the bytes
//! on the serial line.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::{Line, LineError, WRITE_LIMIT};

/// How long a connect may take, per address the name resolves to.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct TcpLine {
    addr: String,
    stream: Option<TcpStream>,
}

impl TcpLine {
    pub fn new(addr: String) -> Self {
        TcpLine { addr, stream: None }
    }

    fn stream(&mut self) -> Result<&mut TcpStream, LineError> {
        self.stream.as_mut().ok_or(LineError::NotConnected)
    }

    fn connect(&self) -> Result<TcpStream, LineError> {
        let open_err = |source| LineError::Open {
            what: self.addr.clone(),
            source,
        };
        let mut last = None;
        for addr in self.addr.to_socket_addrs().map_err(open_err)? {
            match TcpStream::connect_timeout(&addr, CONNECT_LIMIT) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(open_err(last.unwrap_or_else(|| {
            std::io::Error::new(ErrorKind::NotFound, "the name has no address")
        })))
    }
}

impl Line for TcpLine {
    fn reconnect(&mut self) -> Result<(), LineError> {
        self.close();
        let stream = self.connect()?;
        let setup = |s: &TcpStream| -> std::io::Result<()> {
            s.set_nodelay(true)?;
            s.set_write_timeout(Some(WRITE_LIMIT))
        };
        setup(&stream).map_err(|source| LineError::Open {
            what: self.addr.clone(),
            source,
        })?;
        self.stream = Some(stream);
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, LineError> {
        let stream = self.stream()?;
        // A zero timeout means "block forever" to the socket.
        let timeout = timeout.max(Duration::from_millis(1));
        stream
            .set_read_timeout(Some(timeout))
            .map_err(LineError::Read)?;
        match stream.read(buf) {
            Ok(0) => Err(LineError::Closed),
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Err(LineError::Closed),
            Err(e) => Err(LineError::Read(e)),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), LineError> {
        let stream = self.stream()?;
        stream.write_all(bytes).map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => LineError::WriteStalled,
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset => LineError::Closed,
            _ => LineError::Write(e),
        })
    }

    fn close(&mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}
