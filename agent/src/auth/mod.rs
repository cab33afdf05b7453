//! PIN authentication: argon2 hashes, and failed logins counted for the
//! whole host ([`lockout`], pure) and kept across restarts ([`logins`]).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand_core::OsRng;

pub mod lockout;
pub mod logins;

pub use lockout::{wrong_pin_message, Lockout};
pub use logins::Logins;

/// The shortest PIN accepted: at 6 characters even an all-digit PIN has a
/// million values, which the growing lockout puts out of reach.
pub const MIN_PIN: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("not an argon2 PHC hash string (make one with `rackside-agent hash-pin`)")]
    BadHash,
    #[error("a PIN must be 6 to 64 printable characters, without spaces")]
    BadPin,
    #[error("hashing the PIN failed: {0}")]
    Hash(String),
}

fn check_pin(pin: &str) -> Result<(), AuthError> {
    let ok = (MIN_PIN..=64).contains(&pin.chars().count())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash_pin("471147").unwrap();
        check_hash(&h).unwrap();
        assert!(verify("471147", &h));
        assert!(!verify("471148", &h));
        assert!(!verify("471147", "garbage"));
    }

    #[test]
    fn bad_pins_and_hashes_are_refused() {
        assert!(hash_pin("12").is_err());
        assert!(hash_pin("12345").is_err(), "5 characters are too few");
        assert!(hash_pin("123456").is_ok());
        assert!(hash_pin("12 34").is_err());
        assert!(check_hash("1234").is_err());
        assert!(check_hash("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA").is_err());
    }
}
