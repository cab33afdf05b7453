//! One management line's thread: open it, run a session on it, and when
//! the line goes away (USB unplug, pty closed, a modem status line
//! dropped) reopen it with backoff without busy-looping and without
//! touching any other line.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::TryRecvError;

use super::answer::Backend;
use super::session::{Session, SessionConfig};
use super::tty::{self, CarrierWatch, Ready};
use crate::auth::Logins;
use crate::events::Bus;

#[derive(Debug, Clone)]
pub struct LineConfig {
    pub path: PathBuf,
    pub baud: u32,
    pub session: SessionConfig,
}

/// The longest wait before reopening, so a cable plugged back in after
/// however long an absence is served within seconds.
pub const MAX_REOPEN_DELAY: Duration = Duration::from_millis(2000);

/// Delay before reopening: grows while sessions end at once (a line that
/// opens but hangs up straight away), resets after a session that lasted.
/// An open that fails (no such device) costs a system call, so a line
/// that is away is tried every two seconds for as long as it is away.
pub fn reopen_delay(quick_failures: u32) -> Duration {
    Duration::from_millis(250u64 << quick_failures.min(7)).min(MAX_REOPEN_DELAY)
}

pub fn spawn(
    cfg: LineConfig,
    backend: Arc<dyn Backend>,
    logins: Arc<Logins>,
    bus: Bus,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = format!("line-{}", cfg.path.display());
    std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || run(cfg, backend.as_ref(), &logins, &bus, &stop))
}

fn run(cfg: LineConfig, backend: &dyn Backend, logins: &Logins, bus: &Bus, stop: &AtomicBool) {
    let mut quick = 0u32;
    let mut last_error: Option<String> = None;
    let mut events = bus.subscribe();
    while !stop.load(Ordering::Relaxed) {
        let fd = match tty::open_raw(&cfg.path, cfg.baud) {
            Ok(fd) => fd,
            Err(e) => {
                let msg = format!(
                    "{e}: {}",
                    std::error::Error::source(&e).map_or(String::new(), |s| s.to_string())
                );
                if last_error.as_deref() != Some(&msg) {
                    tracing::warn!(line = %cfg.path.display(), cause = %msg, "line unavailable; retrying with backoff");
                    last_error = Some(msg);
                }
                sleep_unless(stop, reopen_delay(quick));
                quick += 1;
                continue;
            }
        };
        last_error = None;
        tracing::info!(line = %cfg.path.display(), baud = cfg.baud, "line open");
        // Events from before this session are not its business.
        events = events.resubscribe();
        let started = Instant::now();
        let why = serve(&cfg, &fd, backend, &mut events, logins, stop);
        drop(fd);
        tracing::info!(line = %cfg.path.display(), reason = why, "line closed");
        if started.elapsed() > Duration::from_secs(5) {
            quick = 0;
        }
        sleep_unless(stop, reopen_delay(quick));
        quick += 1;
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

const WRITE_LIMIT: Duration = Duration::from_secs(3);

fn serve(
    cfg: &LineConfig,
    fd: &std::os::fd::OwnedFd,
    backend: &dyn Backend,
    events: &mut tokio::sync::broadcast::Receiver<crate::events::Event>,
    logins: &Logins,
    stop: &AtomicBool,
) -> &'static str {
    let mut session = Session::new(cfg.session.clone(), Instant::now());
    let mut carrier = CarrierWatch::default();
    let write = |bytes: &[u8]| -> Result<(), &'static str> {
        if bytes.is_empty() {
            return Ok(());
        }
        tty::write_all(fd, bytes, WRITE_LIMIT)
            .map(|_| ())
            .map_err(|_| "write failed")
    };
    // Nothing is written until someone presses Enter: the banner then
    // reaches whoever is there (Session::banner).
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        match tty::wait_readable(fd, Duration::from_millis(200)) {
            Ready::HungUp => return "hung up",
            Ready::Timeout => {}
            Ready::Readable => match tty::read_some(fd, &mut buf) {
                Ok(None) => return "hung up",
                Ok(Some(0)) => {}
                Ok(Some(n)) => {
                    let out = session.feed(&buf[..n], Instant::now(), backend, logins);
                    if let Err(e) = write(&out) {
                        return e;
                    }
                }
                Err(_) => return "read failed",
            },
        }
        loop {
            match events.try_recv() {
                Ok(ev) => {
                    if let Err(e) = write(&session.event(&ev)) {
                        return e;
                    }
                }
                Err(TryRecvError::Lagged(n)) => {
                    if let Err(e) = write(&session.missed(n)) {
                        return e;
                    }
                }
                Err(_) => break,
            }
        }
        if let Err(e) = write(&session.tick(Instant::now())) {
            return e;
        }
        // A UART is opened with CLOCAL, so pulling its cable ends nothing
        // by itself; where the port reports modem status, the carrier
        // going away ends the session, and with it the login.
        if carrier.dropped(tty::modem_status(fd)) {
            return "carrier lost";
        }
    }
    let _ = write(&session.goodbye());
    "agent stopping"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_backoff_grows_and_caps() {
        assert_eq!(reopen_delay(0), Duration::from_millis(250));
        assert_eq!(reopen_delay(2), Duration::from_millis(1000));
        assert_eq!(reopen_delay(3), MAX_REOPEN_DELAY);
        assert!(
            reopen_delay(100) < Duration::from_secs(3),
            "back within 3 s"
        );
    }
}
