//! Opening a serial line or pty raw, non-blocking and exclusive.
//!
//! Written on termios directly (nix) rather than through tokio-serial: the
//! same code then serves real UARTs, USB serial adapters and ptys, and the
//! agent sees hangups (POLLHUP, EIO, a read of 0) exactly as the kernel
//! reports them, which is what reopen-with-backoff needs.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use nix::sys::termios::{self, BaudRate, ControlFlags, FlushArg, SetArg, SpecialCharacterIndices};

#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    #[error("cannot open {path}")]
    Open {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot discard input queued on {path} before it was opened")]
    Flush {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot set {path} raw at {baud} baud")]
    Configure {
        path: String,
        baud: u32,
        #[source]
        source: nix::Error,
    },
}

pub fn baud_rate(baud: u32) -> Option<BaudRate> {
    Some(match baud {
        1200 => BaudRate::B1200,
        2400 => BaudRate::B2400,
        4800 => BaudRate::B4800,
        9600 => BaudRate::B9600,
        19200 => BaudRate::B19200,
        38400 => BaudRate::B38400,
        57600 => BaudRate::B57600,
        115200 => BaudRate::B115200,
        230400 => BaudRate::B230400,
        460800 => BaudRate::B460800,
        921600 => BaudRate::B921600,
        _ => return None,
    })
}

/// Opens `path` read-write, non-blocking, not as our controlling
/// terminal, exclusive (a getty or a second agent cannot share it), raw
/// 8N1 at `baud`, no flow control, with every byte that arrived before
/// this open thrown away: a command typed while the agent was not reading
/// must not run later, when nobody is watching.
pub fn open_raw(path: &Path, baud: u32) -> Result<OwnedFd, TtyError> {
    let name = path.display().to_string();
    let fd = open(
        path,
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| TtyError::Open {
        path: name.clone(),
        source,
    })?;
    let cfg_err = |source| TtyError::Configure {
        path: name.clone(),
        baud,
        source,
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
    // After raw mode is set, so that nothing the switch released survives.
    // On a pty this also empties what the master wrote before the open
    // (the flip buffer and the line discipline's queue): tests/stale_input.rs.
    termios::tcflush(&fd, FlushArg::TCIFLUSH).map_err(|source| TtyError::Flush {
        path: name.clone(),
        source,
    })?;
    // SAFETY: TIOCEXCL takes no argument and only sets a flag on this fd's
    // terminal; fd is open for the duration of the call.
    let _ = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCEXCL) };
    Ok(fd)
}

/// What waiting on a line found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    Readable,
    Timeout,
    /// The other end is gone (pty closed, cable pulled): reopen.
    HungUp,
}

pub fn wait_readable(fd: &OwnedFd, timeout: Duration) -> Ready {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = timeout.as_millis().min(u16::MAX as u128) as u16;
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(0) => Ready::Timeout,
        Ok(_) => {
            let r = fds[0].revents().unwrap_or(PollFlags::empty());
            if r.contains(PollFlags::POLLIN) {
                Ready::Readable
            } else if r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                Ready::HungUp
            } else {
                Ready::Timeout
            }
        }
        Err(nix::Error::EINTR) => Ready::Timeout,
        Err(_) => Ready::HungUp,
    }
}

/// Reads what is there. `Ok(None)`: the line hung up.
pub fn read_some(fd: &OwnedFd, buf: &mut [u8]) -> Result<Option<usize>, nix::Error> {
    match nix::unistd::read(fd, buf) {
        Ok(0) => Ok(None),
        Ok(n) => Ok(Some(n)),
        Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => Ok(Some(0)),
        Err(nix::Error::EIO) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes all of `data`, waiting at most `limit` for a line that does not
/// drain (flow stopped, nobody reading a pty): then the rest is dropped,
/// so one stuck line never holds up the agent. Returns bytes written.
pub fn write_all(fd: &OwnedFd, mut data: &[u8], limit: Duration) -> Result<usize, nix::Error> {
    let deadline = Instant::now() + limit;
    let mut written = 0;
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => {
                written += n;
                data = &data[n..];
            }
            Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(written);
                }
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
                let ms = left.as_millis().min(200) as u16;
                let _ = poll(&mut fds, PollTimeout::from(ms));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// The modem status lines a port reports (a null-modem cable wires the
/// other end's DTR to them): present while a terminal holds the port open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modem {
    pub cd: bool,
    pub dsr: bool,
}

/// The port's modem status; `None` where it has none (a pty, an adapter
/// without the lines).
pub fn modem_status(fd: &OwnedFd) -> Option<Modem> {
    let mut bits: libc::c_int = 0;
    // SAFETY: TIOCMGET writes one c_int through the pointer, which points
    // at a live local; fd is open for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCMGET, &mut bits) };
    (rc == 0).then_some(Modem {
        cd: bits & libc::TIOCM_CD != 0,
        dsr: bits & libc::TIOCM_DSR != 0,
    })
}

/// Watches the carrier (CD or DSR) of a port that reports one. Only a
/// carrier that was seen and then went away counts as a drop: a port whose
/// lines are not wired never shows one, and must not end every session.
#[derive(Debug, Default)]
pub struct CarrierWatch {
    seen: bool,
}

impl CarrierWatch {
    /// True once, when a carrier seen before has gone.
    pub fn dropped(&mut self, status: Option<Modem>) -> bool {
        match status {
            Some(Modem { cd, dsr }) if cd || dsr => {
                self.seen = true;
                false
            }
            Some(_) => std::mem::take(&mut self.seen),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: Option<Modem> = Some(Modem {
        cd: true,
        dsr: false,
    });
    const DOWN: Option<Modem> = Some(Modem {
        cd: false,
        dsr: false,
    });

    #[test]
    fn a_carrier_that_goes_away_ends_the_session_once() {
        let mut w = CarrierWatch::default();
        assert!(!w.dropped(DOWN), "never seen: lines not wired");
        assert!(!w.dropped(UP));
        assert!(
            !w.dropped(Some(Modem {
                cd: false,
                dsr: true
            })),
            "DSR alone is a carrier"
        );
        assert!(w.dropped(DOWN));
        assert!(!w.dropped(DOWN), "once");
    }

    #[test]
    fn a_port_without_modem_status_never_drops() {
        let mut w = CarrierWatch::default();
        for _ in 0..3 {
            assert!(!w.dropped(None));
        }
    }

    #[test]
    fn a_pty_reports_no_modem_status() {
        let pty = nix::pty::openpty(None, None).unwrap();
        assert_eq!(modem_status(&pty.slave), None);
    }
}
