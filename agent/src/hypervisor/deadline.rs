//! A call that may hang (a peer's libvirt), bounded by a deadline.
//!
//! libvirt calls cannot be cancelled, so the call runs on a helper thread
//! and the caller waits with a timeout. On timeout (or abort) the thread is
//! left detached: it holds only its own connection, and ends when libvirt
//! finally answers or drops the connection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::HvError;

/// How a bounded call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Waited<T> {
    Done(T),
    /// The deadline passed first.
    TimedOut,
    /// `abort` was raised while waiting.
    Aborted,
    /// The call never ran, or died: why.
    Lost(String),
}

/// The shortest wait between two looks at `abort` (a zero poll would spin).
const MIN_TICK: Duration = Duration::from_millis(1);

/// Runs `f` on a thread named `name`; waits at most `limit`, looking at
/// `abort` (if any) every `poll`.
pub fn call<T: Send + 'static>(
    name: &str,
    limit: Duration,
    abort: Option<&AtomicBool>,
    poll: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Waited<T> {
    // Room for the answer, so a late thread never blocks on a gone caller.
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || {
            let _ = tx.send(f());
        });
    if let Err(e) = spawned {
        return Waited::Lost(format!("cannot start a thread: {e}"));
    }
    let started = Instant::now();
    let tick = match abort {
        Some(_) => poll.max(MIN_TICK),
        None => limit.max(MIN_TICK),
    };
    loop {
        if abort.is_some_and(|a| a.load(Ordering::Relaxed)) {
            return Waited::Aborted;
        }
        let left = limit.saturating_sub(started.elapsed());
        match rx.recv_timeout(left.min(tick)) {
            Ok(v) => return Waited::Done(v),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Waited::Lost("the call panicked".into())
            }
            Err(mpsc::RecvTimeoutError::Timeout) if left <= tick => return Waited::TimedOut,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// [`call`] without abort, for a call that answers `Result<T, HvError>`:
/// a timeout becomes [`HvError::TimedOut`] naming `what`.
pub fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> Result<T, HvError> + Send + 'static,
) -> Result<T, HvError> {
    match call("hv-peer", limit, None, limit, f) {
        Waited::Done(r) => r,
        Waited::TimedOut => Err(HvError::TimedOut {
            what: what.to_owned(),
            after: limit,
        }),
        Waited::Aborted => Err(HvError::Call("aborted".into())),
        Waited::Lost(why) => Err(HvError::Call(why)),
    }
}

/// Calls still running, per peer. A libvirtd that accepts a connection and
/// never answers keeps a detached thread forever (TCP sees nothing wrong);
/// this bounds how many one peer can hold.
#[derive(Debug, Clone)]
pub struct InFlight {
    max: usize,
    running: Arc<Mutex<BTreeMap<String, usize>>>,
}

/// One call in flight; counted until dropped (when its thread ends).
#[derive(Debug)]
pub struct Ticket {
    key: String,
    running: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl InFlight {
    pub fn new(max: usize) -> InFlight {
        InFlight {
            max: max.max(1),
            running: Arc::default(),
        }
    }

    /// A ticket for one more call to `key`, or the number already running
    /// if that is the most allowed.
    pub fn enter(&self, key: &str) -> Result<Ticket, usize> {
        let mut m = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(key.to_owned()).or_insert(0);
        if *n >= self.max {
            return Err(*n);
        }
        *n += 1;
        Ok(Ticket {
            key: key.to_owned(),
            running: self.running.clone(),
        })
    }

    /// Calls to `key` still running.
    pub fn running(&self, key: &str) -> usize {
        let m = self.running.lock().unwrap_or_else(|e| e.into_inner());
        m.get(key).copied().unwrap_or(0)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut m = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn in_flight_calls_are_bounded_per_key() {
        let f = InFlight::new(2);
        let a = f.enter("hb");
        let b = f.enter("hb");
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(f.enter("hb").map(drop), Err(2));
        assert!(f.enter("hc").is_ok(), "other peers are not affected");
        drop(a);
        assert_eq!(f.running("hb"), 1);
        assert!(f.enter("hb").is_ok());
    }

    #[test]
    fn a_prompt_call_answers() {
        assert_eq!(
            call("t", Duration::from_secs(60), None, Duration::ZERO, || 7),
            Waited::Done(7)
        );
    }

    #[test]
    fn a_hung_call_times_out_and_is_left_behind() {
        let gate = Arc::new(Barrier::new(2));
        let g = gate.clone();
        let r = call(
            "t",
            Duration::from_millis(5),
            None,
            Duration::ZERO,
            move || {
                g.wait();
            },
        );
        assert_eq!(r, Waited::TimedOut);
        gate.wait(); // let the detached thread end
    }

    #[test]
    fn abort_ends_the_wait_before_the_deadline() {
        let abort = AtomicBool::new(true);
        let gate = Arc::new(Barrier::new(2));
        let g = gate.clone();
        let r = call(
            "t",
            Duration::from_secs(3600),
            Some(&abort),
            Duration::from_millis(1),
            move || {
                g.wait();
            },
        );
        assert_eq!(r, Waited::Aborted);
        gate.wait();
    }

    #[test]
    fn a_panicking_call_is_lost_not_propagated() {
        let r: Waited<()> = call("t", Duration::from_secs(60), None, Duration::ZERO, || {
            panic!("binding panicked")
        });
        assert_eq!(r, Waited::Lost("the call panicked".into()));
    }

    #[test]
    fn bounded_names_what_did_not_answer() {
        let gate = Arc::new(Barrier::new(2));
        let g = gate.clone();
        let r: Result<(), HvError> =
            bounded("libvirt on hb", Duration::from_millis(5), move || {
                g.wait();
                Ok(())
            });
        assert_eq!(
            r.map_err(|e| e.to_string()),
            Err("libvirt on hb did not answer within 5 ms".into())
        );
        gate.wait();
    }
}
