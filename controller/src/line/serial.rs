//! A local serial device or pty, opened raw 8N1 with no flow control, as
//! the agent opens its end (agent/src/console/tty.rs), on termios through
//! nix so a hangup (POLLHUP, EIO, a read of 0) shows exactly as the kernel
//! reports it. The device is locked while open (flock, as picocom does, and
//! TIOCEXCL against programs that do not lock): a second reader on the
//! same line would take part of every answer.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::fcntl::{open, Flock, FlockArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use nix::sys::termios::{self, BaudRate, ControlFlags, FlushArg, SetArg, SpecialCharacterIndices};

use super::{Line, LineError, WRITE_LIMIT};

#[derive(Debug)]
pub struct SerialLine {
    path: PathBuf,
    baud: u32,
    fd: Option<Flock<OwnedFd>>,
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
        self.fd.as_deref().ok_or(LineError::NotConnected)
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
/// locked, raw 8N1 at `baud`, no flow control, and drops whatever the agent
/// wrote before we were there (old events, a half answer).
fn open_raw(path: &PathBuf, baud: u32) -> Result<Flock<OwnedFd>, LineError> {
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
    // Locked before the line is touched: a line another program holds is
    // left exactly as it is.
    let fd = Flock::lock(fd, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| match e {
        nix::Error::EWOULDBLOCK => LineError::Busy {
            path: path.display().to_string(),
        },
        e => LineError::Open {
            what: path.display().to_string(),
            source: e.into(),
        },
    })?;
    let rate = baud_rate(baud).ok_or(cfg_err(nix::Error::EINVAL))?;
    let mut t = termios::tcgetattr(&*fd).map_err(cfg_err)?;
    termios::cfmakeraw(&mut t);
    termios::cfsetspeed(&mut t, rate).map_err(cfg_err)?;
    t.control_flags |= ControlFlags::CLOCAL | ControlFlags::CREAD | ControlFlags::CS8;
    t.control_flags &= !(ControlFlags::CRTSCTS | ControlFlags::CSTOPB | ControlFlags::PARENB);
    t.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
    t.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
    termios::tcsetattr(&*fd, SetArg::TCSANOW, &t).map_err(cfg_err)?;
    termios::tcflush(&*fd, FlushArg::TCIFLUSH).map_err(cfg_err)?;
    // SAFETY: TIOCEXCL takes no argument and only sets a flag on this fd's
    // terminal; fd is open for the duration of the call. Best effort: it
    // turns away other users' opens (minicom, screen), not root's.
    let _ = unsafe { nix::libc::ioctl(fd.as_raw_fd(), nix::libc::TIOCEXCL) };
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

#[cfg(test)]
mod tests {
    use super::*;
    use nix::pty::openpty;

    /// A pty's slave path, with the master kept open so the line exists.
    fn pty() -> (OwnedFd, PathBuf) {
        let p = openpty(None, None).expect("openpty");
        let path = std::fs::read_link(format!("/proc/self/fd/{}", p.slave.as_raw_fd()))
            .expect("slave path");
        (p.master, path)
    }

    #[test]
    fn a_second_opener_of_the_same_line_is_told_it_is_busy() {
        let (_master, path) = pty();
        let mut first = SerialLine::new(path.clone(), 115_200);
        first.reconnect().expect("first open");
        let mut second = SerialLine::new(path.clone(), 115_200);
        let err = second.reconnect().expect_err("second open must fail");
        assert!(
            matches!(&err, LineError::Busy { path: p } if *p == path.display().to_string()),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("in use by another program"),
            "{err}"
        );
        // Free once the first lets go; the second then holds it.
        first.close();
        second.reconnect().expect("open after the first closed");
        assert!(matches!(first.reconnect(), Err(LineError::Busy { .. })));
    }

    #[test]
    fn a_lock_taken_by_another_program_is_respected() {
        let (_master, path) = pty();
        // What picocom does with its device: flock on its own descriptor.
        let other = Flock::lock(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .expect("open"),
            FlockArg::LockExclusiveNonblock,
        )
        .expect("lock");
        let mut line = SerialLine::new(path.clone(), 115_200);
        assert!(matches!(line.reconnect(), Err(LineError::Busy { .. })));
        drop(other);
        line.reconnect()
            .expect("open once the other program is gone");
    }
}
