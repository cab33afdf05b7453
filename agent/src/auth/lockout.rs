//! Failed-login bookkeeping: a pure state machine over caller-supplied
//! instants, so it is tested without sleeping.
//!
//! One count for the whole host, not per line: two lines must not double
//! the guessing rate. Each lockout in a row lasts twice as long as the one
//! before (capped at [`MAX_LOCKOUT`]); only a right PIN starts the
//! doubling again. What it knows can be saved and restored
//! ([`Saved`]), so restarting the agent resets nothing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The longest a lockout grows to. With the default five tries per
/// lockout, guessing a 6-digit PIN then takes on the order of twenty years.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Lockout {
    max_failures: u32,
    base: Duration,
    /// Wrong PINs since the last lockout ended or the last right PIN.
    failures: u32,
    /// Lockouts in a row without a right PIN in between.
    lockouts: u32,
    locked_until: Option<Instant>,
}

/// What survives a restart. The lockout's end is wall-clock time, since an
/// `Instant` means nothing to the next process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub failures: u32,
    pub lockouts: u32,
    /// Seconds since the Unix epoch.
    pub locked_until_unix_s: Option<u64>,
}

impl Lockout {
    pub fn new(max_failures: u32, base: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            base,
            failures: 0,
            lockouts: 0,
            locked_until: None,
        }
    }

    /// Seconds left of a lockout in force at `now`, if any.
    pub fn locked(&mut self, now: Instant) -> Option<u64> {
        match self.locked_until {
            Some(t) if now < t => Some((t - now).as_secs().max(1)),
            Some(_) => {
                self.locked_until = None;
                self.failures = 0;
                None
            }
            None => None,
        }
    }

    /// Records a wrong PIN; the length of the lockout it started, if it
    /// started one.
    pub fn fail(&mut self, now: Instant) -> Option<Duration> {
        self.failures += 1;
        if self.failures < self.max_failures {
            return None;
        }
        let d = self.next_lockout();
        self.lockouts = self.lockouts.saturating_add(1);
        self.locked_until = Some(now + d);
        Some(d)
    }

    pub fn succeed(&mut self) {
        self.failures = 0;
        self.lockouts = 0;
        self.locked_until = None;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Wrong PINs still allowed before the next lockout.
    pub fn tries_left(&self) -> u32 {
        self.max_failures.saturating_sub(self.failures)
    }

    /// How long the next lockout will last.
    pub fn next_lockout(&self) -> Duration {
        let factor = 1u32 << self.lockouts.min(16);
        self.base
            .saturating_mul(factor)
            .min(MAX_LOCKOUT.max(self.base))
    }

    pub fn save(&self, now: Instant, wall: SystemTime) -> Saved {
        let until = self.locked_until.filter(|t| *t > now).map(|t| {
            let at = wall + (t - now);
            // Rounded up: a lockout restored from the file never ends early.
            let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
            d.as_secs() + u64::from(d.subsec_nanos() > 0)
        });
        Saved {
            failures: self.failures,
            lockouts: self.lockouts,
            locked_until_unix_s: until,
        }
    }

    /// The state a previous process saved. A lockout's end further away
    /// than any lockout can last (a clock set back, a hand-edited file) is
    /// cut to the longest one.
    pub fn restore(&mut self, saved: Saved, now: Instant, wall: SystemTime) {
        self.failures = saved.failures.min(self.max_failures.saturating_sub(1));
        self.lockouts = saved.lockouts.min(64);
        self.locked_until = saved.locked_until_unix_s.and_then(|s| {
            let left = (UNIX_EPOCH + Duration::from_secs(s))
                .duration_since(wall)
                .ok()?;
            Some(now + left.min(MAX_LOCKOUT.max(self.base)))
        });
    }
}

/// What a person is told after a wrong PIN: how many tries are left and
/// how long the next lockout lasts, or that the lockout just began.
pub fn wrong_pin_message(tries_left: u32, lockout: Duration) -> String {
    let s = lockout.as_secs();
    match tries_left {
        0 => format!("wrong PIN; logins are locked for {s} s"),
        1 => format!("wrong PIN; 1 more try before logins are locked for {s} s"),
        n => format!("wrong PIN; {n} more tries before logins are locked for {s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(300);

    #[test]
    fn a_wrong_pin_says_how_many_tries_are_left_and_for_how_long_it_locks() {
        let mut lo = Lockout::new(3, BASE);
        let now = Instant::now();
        assert_eq!(lo.tries_left(), 3);
        lo.fail(now);
        assert_eq!(
            wrong_pin_message(lo.tries_left(), lo.next_lockout()),
            "wrong PIN; 2 more tries before logins are locked for 300 s"
        );
        lo.fail(now);
        assert_eq!(
            wrong_pin_message(lo.tries_left(), lo.next_lockout()),
            "wrong PIN; 1 more try before logins are locked for 300 s"
        );
        let d = lo.fail(now).expect("the third wrong PIN locks");
        assert_eq!(
            wrong_pin_message(lo.tries_left(), d),
            "wrong PIN; logins are locked for 300 s"
        );
    }

    #[test]
    fn five_failures_lock_for_the_duration() {
        let t0 = Instant::now();
        let mut l = Lockout::new(5, BASE);
        for i in 0..4 {
            assert_eq!(l.fail(t0), None, "locked after {} failures", i + 1);
            assert_eq!(l.locked(t0), None);
        }
        assert_eq!(l.fail(t0), Some(BASE));
        assert_eq!(l.locked(t0), Some(300));
        assert_eq!(l.locked(t0 + Duration::from_secs(299)), Some(1));
        assert_eq!(l.locked(t0 + Duration::from_secs(300)), None);
        assert_eq!(l.failures(), 0, "the count starts again after a lockout");
    }

    #[test]
    fn each_lockout_in_a_row_lasts_twice_as_long_up_to_an_hour() {
        let mut t = Instant::now();
        let mut l = Lockout::new(2, BASE);
        let mut seen = Vec::new();
        for _ in 0..6 {
            l.fail(t);
            let d = l.fail(t).unwrap();
            seen.push(d.as_secs());
            t += d;
            assert_eq!(l.locked(t), None);
        }
        assert_eq!(seen, [300, 600, 1200, 2400, 3600, 3600]);
        l.succeed();
        assert_eq!(l.next_lockout(), BASE, "a right PIN starts over");
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut l = Lockout::new(3, Duration::from_secs(60));
        l.fail(t0);
        l.fail(t0);
        l.succeed();
        assert_eq!(l.fail(t0), None);
    }

    #[test]
    fn a_lockout_survives_a_restart_and_never_ends_early() {
        let (t0, w0) = (Instant::now(), UNIX_EPOCH + Duration::from_secs(1_000_000));
        let mut l = Lockout::new(2, BASE);
        l.fail(t0);
        l.fail(t0);
        let saved = l.save(t0 + Duration::from_millis(500), w0);
        assert_eq!(saved.locked_until_unix_s, Some(1_000_300));
        assert_eq!(saved.lockouts, 1);

        // A new process 100 s later, its own Instant clock.
        let (t1, w1) = (Instant::now(), w0 + Duration::from_secs(100));
        let mut back = Lockout::new(2, BASE);
        back.restore(saved, t1, w1);
        assert_eq!(back.locked(t1), Some(200));
        assert_eq!(back.next_lockout(), BASE * 2, "the doubling carries over");
    }

    #[test]
    fn a_restored_file_cannot_lock_for_ever_or_grant_extra_tries() {
        let (t, w) = (Instant::now(), UNIX_EPOCH + Duration::from_secs(1_000_000));
        let mut l = Lockout::new(5, BASE);
        l.restore(
            Saved {
                failures: 99,
                lockouts: 1000,
                locked_until_unix_s: Some(u64::MAX / 2),
            },
            t,
            w,
        );
        assert_eq!(l.locked(t), Some(MAX_LOCKOUT.as_secs()));
        assert_eq!(l.locked(t + MAX_LOCKOUT), None);
        assert_eq!(l.tries_left(), 5, "the count restarts after the lockout");
        let mut l = Lockout::new(5, BASE);
        l.restore(
            Saved {
                failures: 9,
                lockouts: 0,
                locked_until_unix_s: None,
            },
            t,
            w,
        );
        assert_eq!(l.tries_left(), 1, "saved failures still count");
    }
}
