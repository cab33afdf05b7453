//! `RUN_DIR/promises.json`, read-modify-written under an exclusive lock
//! on `RUN_DIR/promises.lock`, so two migrations arriving at once cannot
//! both take the last room. Waiting for the lock is bounded: libvirt runs
//! us inside its own locks.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use rackside_contract::PROMISE_GRACE;

use crate::admission::Promises;

pub const FILE: &str = "promises.json";
pub const LOCK_FILE: &str = "promises.lock";
const TMP_FILE: &str = ".promises.json.tmp";
/// How long to wait for the lock before giving up (and admitting).
pub const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_POLL: Duration = Duration::from_millis(5);
/// A promise is ~150 bytes; a file beyond this is not ours to trust.
const MAX_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PromiseError {
    #[error("cannot open {LOCK_FILE}")]
    OpenLock(#[source] io::Error),
    #[error("cannot lock {LOCK_FILE}")]
    Lock(#[source] io::Error),
    #[error("{LOCK_FILE} still held after {0:?}")]
    LockTimeout(Duration),
    #[error("cannot read {FILE}")]
    Read(#[source] io::Error),
    #[error("cannot write {FILE}")]
    Write(#[source] io::Error),
}

fn lock(run_dir: &Path, wait: Duration) -> Result<File, PromiseError> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(run_dir.join(LOCK_FILE))
        .map_err(PromiseError::OpenLock)?;
    let deadline = Instant::now() + wait;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(LOCK_POLL)
            }
            Err(TryLockError::WouldBlock) => return Err(PromiseError::LockTimeout(wait)),
            Err(TryLockError::Error(e)) => return Err(PromiseError::Lock(e)),
        }
    }
}

/// A missing file is an empty list; so is an unparsable one (it is
/// rewritten on the next change).
fn read(run_dir: &Path) -> Result<Promises, PromiseError> {
    let f = match File::open(run_dir.join(FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Promises::default()),
        Err(e) => return Err(PromiseError::Read(e)),
    };
    let mut buf = Vec::new();
    f.take(MAX_BYTES)
        .read_to_end(&mut buf)
        .map_err(PromiseError::Read)?;
    Ok(serde_json::from_slice(&buf).unwrap_or_default())
}

/// Atomic replace: readers see the old or the new file, never half.
fn write(run_dir: &Path, p: &Promises) -> Result<(), PromiseError> {
    let tmp = run_dir.join(TMP_FILE);
    let body = serde_json::to_vec(p).map_err(|e| PromiseError::Write(e.into()))?;
    let mut f = File::create(&tmp).map_err(PromiseError::Write)?;
    f.write_all(&body).map_err(PromiseError::Write)?;
    drop(f);
    std::fs::rename(&tmp, run_dir.join(FILE)).map_err(PromiseError::Write)
}

/// Runs `f` on the current promises (expired ones already dropped) under
/// the lock, and writes the list back if it changed.
pub fn update<T>(
    run_dir: &Path,
    now_unix: u64,
    wait: Duration,
    f: impl FnOnce(&mut Promises) -> T,
) -> Result<T, PromiseError> {
    let _lock = lock(run_dir, wait)?;
    let before = read(run_dir)?;
    let mut list = before.clone();
    list.prune(now_unix);
    let out = f(&mut list);
    if list != before {
        write(run_dir, &list)?;
    }
    Ok(out)
}

/// Removes a VM's promise. Without a promises file there is nothing to
/// release and no lock is taken.
pub fn release(
    run_dir: &Path,
    vm: &str,
    uuid: Option<&str>,
    now_unix: u64,
) -> Result<bool, PromiseError> {
    if !run_dir.join(FILE).exists() {
        return Ok(false);
    }
    update(run_dir, now_unix, LOCK_WAIT, |p| p.release(vm, uuid))
}

/// The guest arrived: its promise ends [`PROMISE_GRACE`] from now, when
/// the agent has counted the guest as committed.
pub fn arrived(
    run_dir: &Path,
    vm: &str,
    uuid: Option<&str>,
    now_unix: u64,
) -> Result<bool, PromiseError> {
    if !run_dir.join(FILE).exists() {
        return Ok(false);
    }
    update(run_dir, now_unix, LOCK_WAIT, |list| {
        let mut found = false;
        for p in list.promises.iter_mut().filter(|p| p.is_for(vm, uuid)) {
            p.until_unix = p
                .until_unix
                .min(now_unix.saturating_add(PROMISE_GRACE.as_secs()));
            found = true;
        }
        found
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Promise;

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rackside-hook-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn p(vm: &str, until: u64) -> Promise {
        Promise {
            vm: vm.into(),
            uuid: None,
            mem_mib: 10,
            until_unix: until,
        }
    }

    #[test]
    fn update_writes_and_prunes() {
        let d = tmpdir("upd");
        update(&d, 100, LOCK_WAIT, |l| {
            l.upsert(p("a", 200));
            l.upsert(p("b", 150));
        })
        .unwrap();
        let n = update(&d, 160, LOCK_WAIT, |l| l.promises.len()).unwrap();
        assert_eq!(n, 1, "b expired");
        let on_disk: Promises =
            serde_json::from_slice(&std::fs::read(d.join(FILE)).unwrap()).unwrap();
        assert_eq!(
            on_disk.promises,
            vec![p("a", 200)],
            "expired dropped on write"
        );
        assert!(release(&d, "a", None, 160).unwrap());
        assert!(!release(&d, "a", None, 160).unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn release_without_file_touches_nothing() {
        let d = tmpdir("rel");
        assert!(!release(&d, "a", None, 1).unwrap());
        assert!(!d.join(LOCK_FILE).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn corrupt_file_reads_as_empty() {
        let d = tmpdir("corrupt");
        std::fs::write(d.join(FILE), b"{not json").unwrap();
        assert_eq!(update(&d, 1, LOCK_WAIT, |l| l.promises.len()).unwrap(), 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn held_lock_times_out() {
        let d = tmpdir("held");
        let holder = lock(&d, LOCK_WAIT).unwrap();
        let t = Instant::now();
        let r = update(&d, 1, Duration::from_millis(50), |_| ());
        assert!(matches!(r, Err(PromiseError::LockTimeout(_))), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(2));
        drop(holder);
        assert!(update(&d, 1, Duration::from_millis(50), |_| ()).is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_run_dir_is_an_error() {
        let r = update(Path::new("/nonexistent/rackside-run"), 1, LOCK_WAIT, |_| ());
        assert!(matches!(r, Err(PromiseError::OpenLock(_))));
    }
}
