//! A local serial device or pty, opened raw 8N1 with no flow control, as
//! the agent opens its end (agent/src/console/tty.rs), on termios through
//! nix so a hangup (POLLHUP, EIO, a read of 0) shows exactly as the kernel
//! reports it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use nix::sys::termios::{self, BaudRate, ControlFlags, FlushArg, SetArg, SpecialCharacterIndices};

use super::{Line, LineError, WRITE_LIMIT};

#[derive(Debug)]
pub struct SerialLine {
    path: PathBuf,
    baud: u32,
    fd: Option<OwnedFd>,
}

impl SerialLine {
    pub fn new(path: PathBuf, baud: u32) -> Self {
        SerialLine {
            path,
            baud,
            fd: None,
        }
    }

    fn fd(&self) -> Result<&OwnedFd, LineError> {
        self.fd.as_ref().ok_or(LineError::NotConnected)
    }
}

fn baud_rate(baud: u32) -> Option<BaudRate> {
    Some(match baud {
        1200 => BaudRate::B1200,
        2400 => BaudRate::B2400,
        4800 => BaudRate::B4800,
        9600 => BaudRate::B9600,
        19200 => BaudRate::B19200,
        38400 => BaudRate::B38400,
        57600 => BaudRate::B57600,
        115_200 => BaudRate::B115200,
        230_400 => BaudRate::B230400,
        460_800 => BaudRate::B460800,
        921_600 => BaudRate::B921600,
        _ => return None,
    })
}

/// Opens `path` read-write, non-blocking, not as our controlling terminal,
/// raw 8N1 at `baud`, no flow control, and drops whatever the agent wrote
/// before we were there (old events, a half answer).
fn open_raw(path: &PathBuf, baud: u32) -> Result<OwnedFd, LineError> {
    let fd = open(
        path,
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LineError::Open {
        what: path.display().to_string(),
        source: e.into(),
    })?;
    let cfg_err = |e: nix::Error| LineError::Configure {
        path: path.display().to_string(),
        baud,
        source: e.into(),
    };
    let rate = baud_rate(baud).ok_or(cfg_err(nix::Error::EINVAL))?;
    let mut t = termios::tcgetattr(&fd).map_err(cfg_err)?;
    termios::cfmakeraw(&mut t);
    termios::cfsetspeed(&mut t, rate).map_err(cfg_err)?;
    t.control_flags |= ControlFlags::CLOCAL | ControlFlags::CREAD | ControlFlags::CS8;
    t.control_flags &= !(ControlFlags::CRTSCTS | ControlFlags::CSTOPB | ControlFlags::PARENB);
    t.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
    t.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
    termios::tcsetattr(&fd, SetArg::TCSANOW, &t).map_err(cfg_err)?;
    termios::tcflush(&fd, FlushArg::TCIFLUSH).map_err(cfg_err)?;
    Ok(fd)
}

fn millis(d: Duration) -> PollTimeout {
    PollTimeout::from(d.as_millis().min(u16::MAX as u128) as u16)
}

impl Line for SerialLine {
    fn reconnect(&mut self) -> Result<(), LineError> {
        self.fd = None;
        self.fd = Some(open_raw(&self.path, self.baud)?);
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, LineError> {
        let fd = self.fd()?;
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, millis(timeout)) {
            Ok(0) | Err(nix::Error::EINTR) => return Ok(0),
            Ok(_) => {}
            Err(e) => return Err(LineError::Read(e.into())),
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if !revents.contains(PollFlags::POLLIN)
            && revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
        {
            return Err(LineError::Closed);
        }
        match nix::unistd::read(fd, buf) {
            Ok(0) | Err(nix::Error::EIO) => Err(LineError::Closed),
            Ok(n) => Ok(n),
            Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => Ok(0),
            Err(e) => Err(LineError::Read(e.into())),
        }
    }

    fn write(&mut self, mut bytes: &[u8]) -> Result<(), LineError> {
        let fd = self.fd()?;
        let deadline = Instant::now() + WRITE_LIMIT;
        while !bytes.is_empty() {
            match nix::unistd::write(fd, bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(LineError::WriteStalled);
                    }
                    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut fds, millis(left.min(Duration::from_millis(200))));
                }
                Err(nix::Error::EIO) => return Err(LineError::Closed),
                Err(e) => return Err(LineError::Write(e.into())),
            }
        }
        Ok(())
    }

    fn close(&mut self) {
        self.fd = None;
    }
}
