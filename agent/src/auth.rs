//! PIN authentication: argon2 hashes and per-line lockout.
//!
//! The lockout is a pure state machine over caller-supplied instants so it
//! is tested without sleeping; it belongs to the line, not the session, so
//! unplugging and replugging the cable does not reset the count.

use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand_core::OsRng;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("not an argon2 PHC hash string (make one with `rackside-agent hash-pin`)")]
    BadHash,
    #[error("a PIN must be 4 to 64 printable characters")]
    BadPin,
    #[error("hashing the PIN failed: {0}")]
    Hash(String),
}

fn check_pin(pin: &str) -> Result<(), AuthError> {
    let ok = (4..=64).contains(&pin.chars().count())
        && pin.chars().all(|c| !c.is_control() && !c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(AuthError::BadPin)
    }
}

pub fn hash_pin(pin: &str) -> Result<String, AuthError> {
    check_pin(pin)?;
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(pin.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Accepts only argon2 PHC strings, so a plain PIN pasted into the config
/// is refused rather than never matching.
pub fn check_hash(hash: &str) -> Result<(), AuthError> {
    let parsed = PasswordHash::new(hash).map_err(|_| AuthError::BadHash)?;
    if parsed.algorithm.as_str().starts_with("argon2") {
        Ok(())
    } else {
        Err(AuthError::BadHash)
    }
}

/// Checks a PIN against a hash. Deliberately slow (argon2): call it off
/// the async runtime.
pub fn verify(pin: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(pin.as_bytes(), &parsed)
        .is_ok()
}

/// Failed-login bookkeeping for one line.
#[derive(Debug, Clone)]
pub struct Lockout {
    max_failures: u32,
    duration: Duration,
    failures: u32,
    locked_until: Option<Instant>,
}

impl Lockout {
    pub fn new(max_failures: u32, duration: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            duration,
            failures: 0,
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

    /// Records a failure; true when it started a lockout.
    pub fn fail(&mut self, now: Instant) -> bool {
        self.failures += 1;
        if self.failures >= self.max_failures {
            self.locked_until = Some(now + self.duration);
            true
        } else {
            false
        }
    }

    pub fn succeed(&mut self) {
        self.failures = 0;
        self.locked_until = None;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Wrong PINs still allowed before the line locks.
    pub fn tries_left(&self) -> u32 {
        self.max_failures.saturating_sub(self.failures)
    }

    /// How long a lockout lasts, in whole seconds.
    pub fn lockout_s(&self) -> u64 {
        self.duration.as_secs()
    }
}

/// What a person is told after a wrong PIN: how many tries are left
/// before the line locks and for how long, or that it just locked.
pub fn wrong_pin_message(tries_left: u32, lockout_s: u64) -> String {
    match tries_left {
        0 => format!("wrong PIN; this line is locked for {lockout_s} s"),
        1 => format!("wrong PIN; 1 more try before this line is locked for {lockout_s} s"),
        n => format!("wrong PIN; {n} more tries before this line is locked for {lockout_s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_pin_says_how_many_tries_are_left_and_for_how_long_it_locks() {
        let mut lo = Lockout::new(3, Duration::from_secs(300));
        let now = Instant::now();
        assert_eq!(lo.tries_left(), 3);
        lo.fail(now);
        assert_eq!(
            wrong_pin_message(lo.tries_left(), lo.lockout_s()),
            "wrong PIN; 2 more tries before this line is locked for 300 s"
        );
        lo.fail(now);
        assert_eq!(
            wrong_pin_message(lo.tries_left(), lo.lockout_s()),
            "wrong PIN; 1 more try before this line is locked for 300 s"
        );
        assert!(lo.fail(now));
        assert_eq!(
            wrong_pin_message(lo.tries_left(), lo.lockout_s()),
            "wrong PIN; this line is locked for 300 s"
        );
    }

    #[test]
    fn hash_then_verify() {
        let h = hash_pin("4711").unwrap();
        check_hash(&h).unwrap();
        assert!(verify("4711", &h));
        assert!(!verify("4712", &h));
        assert!(!verify("4711", "garbage"));
    }

    #[test]
    fn bad_pins_and_hashes_are_refused() {
        assert!(hash_pin("12").is_err());
        assert!(hash_pin("12 34").is_err());
        assert!(check_hash("1234").is_err());
        assert!(check_hash("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA").is_err());
    }

    #[test]
    fn five_failures_lock_for_the_duration() {
        let t0 = Instant::now();
        let mut l = Lockout::new(5, Duration::from_secs(300));
        for i in 0..4 {
            assert!(!l.fail(t0), "locked after {} failures", i + 1);
            assert_eq!(l.locked(t0), None);
        }
        assert!(l.fail(t0));
        assert_eq!(l.locked(t0), Some(300));
        assert_eq!(l.locked(t0 + Duration::from_secs(299)), Some(1));
        assert_eq!(l.locked(t0 + Duration::from_secs(300)), None);
        assert_eq!(l.failures(), 0, "the count starts again after a lockout");
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut l = Lockout::new(3, Duration::from_secs(60));
        l.fail(t0);
        l.fail(t0);
        l.succeed();
        assert!(!l.fail(t0));
    }
}
