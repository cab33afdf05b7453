//! The host's one failed-login count, shared by every line and kept in the
//! state directory, so neither a second cable nor a restart of the agent
//! buys anyone more guesses.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::lockout::{Lockout, Saved};

/// The file in the state directory.
pub const FILE: &str = "logins.json";

#[derive(Debug, thiserror::Error)]
pub enum LoginsError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged ({why}); counting failed logins from zero")]
    Damaged { path: String, why: String },
}

/// A wrong PIN's consequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The lockout it started, if it started one.
    pub locked: Option<Duration>,
    pub failures: u32,
    pub tries_left: u32,
    pub next_lockout: Duration,
}

#[derive(Debug)]
pub struct Logins {
    lockout: Mutex<Lockout>,
    /// None: kept in memory only (tests, and a host without a state dir).
    file: Option<PathBuf>,
}

impl Logins {
    pub fn in_memory(max_failures: u32, lockout: Duration) -> Self {
        Self {
            lockout: Mutex::new(Lockout::new(max_failures, lockout)),
            file: None,
        }
    }

    /// The count kept in `dir`. A missing file is a clean start; a damaged
    /// one is reported and replaced at the next failure (the lockout can
    /// only be reset by someone who can already write the state dir).
    pub fn open(dir: &Path, max_failures: u32, lockout: Duration) -> (Self, Option<LoginsError>) {
        let path = dir.join(FILE);
        let mut lo = Lockout::new(max_failures, lockout);
        let name = path.display().to_string();
        let problem = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Saved>(&bytes) {
                Ok(saved) => {
                    lo.restore(saved, Instant::now(), SystemTime::now());
                    None
                }
                Err(e) => Some(LoginsError::Damaged {
                    path: name,
                    why: e.to_string(),
                }),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => Some(LoginsError::Read { path: name, source }),
        };
        let me = Self {
            lockout: Mutex::new(lo),
            file: Some(path),
        };
        (me, problem)
    }

    fn with<R>(&self, now: Instant, f: impl FnOnce(&mut Lockout) -> R) -> R {
        // A thread that panicked holding the lock left a consistent count
        // (every change is one assignment): go on with it.
        let mut lo = self.lockout.lock().unwrap_or_else(|p| p.into_inner());
        let wall = SystemTime::now();
        let before = lo.save(now, wall);
        let r = f(&mut lo);
        let after = lo.save(now, wall);
        if after != before {
            self.persist(&after);
        }
        r
    }

    fn persist(&self, saved: &Saved) {
        let Some(path) = &self.file else { return };
        if let Err(e) = write_private(path, saved) {
            tracing::warn!(file = %path.display(), cause = %e, "failed logins not saved: a restart would forget them");
        }
    }

    /// Seconds left of a lockout in force, if any.
    pub fn locked(&self, now: Instant) -> Option<u64> {
        self.with(now, |lo| lo.locked(now))
    }

    pub fn fail(&self, now: Instant) -> Failure {
        self.with(now, |lo| {
            let locked = lo.fail(now);
            Failure {
                locked,
                failures: lo.failures(),
                tries_left: lo.tries_left(),
                next_lockout: lo.next_lockout(),
            }
        })
    }

    pub fn succeed(&self, now: Instant) {
        self.with(now, Lockout::succeed)
    }
}

/// Temporary file (0600), fsync, rename: a crash leaves the old count or
/// the new one, never half of either.
fn write_private(path: &Path, saved: &Saved) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(saved).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(300);

    /// A fresh directory of this test's own.
    struct Dir(PathBuf);
    impl Dir {
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir() -> Dir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "rackside-logins-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    #[test]
    fn failures_on_any_line_and_before_a_restart_count_together() {
        let d = dir();
        let (a, problem) = Logins::open(d.path(), 3, BASE);
        assert!(problem.is_none());
        let now = Instant::now();
        assert_eq!(a.fail(now).tries_left, 2);
        assert_eq!(a.fail(now).tries_left, 1);
        drop(a);
        // The agent restarts: one try left, and it locks.
        let (b, _) = Logins::open(d.path(), 3, BASE);
        let f = b.fail(Instant::now());
        assert_eq!(f.locked, Some(BASE));
        drop(b);
        let (c, _) = Logins::open(d.path(), 3, BASE);
        let left = c
            .locked(Instant::now())
            .expect("still locked after a restart");
        assert!((299..=300).contains(&left), "{left}");
        let mode = std::fs::metadata(d.path().join(FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_file_is_reported_and_counting_starts_over() {
        let d = dir();
        std::fs::write(d.path().join(FILE), b"{not json").unwrap();
        let (l, problem) = Logins::open(d.path(), 3, BASE);
        let msg = problem.expect("damage is reported").to_string();
        assert!(msg.contains("logins.json is damaged"), "{msg}");
        assert_eq!(l.fail(Instant::now()).tries_left, 2);
        let (_, problem) = Logins::open(d.path(), 3, BASE);
        assert!(problem.is_none(), "the next failure rewrote it");
    }

    #[test]
    fn a_right_pin_clears_the_saved_count() {
        let d = dir();
        let (l, _) = Logins::open(d.path(), 3, BASE);
        let now = Instant::now();
        l.fail(now);
        l.succeed(now);
        let (l, _) = Logins::open(d.path(), 3, BASE);
        assert_eq!(l.fail(now).tries_left, 2);
    }
}
