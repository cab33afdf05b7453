//! A lab host's hardware health as its agent reads it (EDAC counters in
//! a sysfs tree of the test's own), and what the agent publishes for its
//! hook, which admission of incoming VMs is decided from.
//!
//! A finding lasts the agent's hold time after its cause was last seen: a
//! test that needs a host to stay faulty while it does something slow
//! keeps the errors coming ([`ErrorStream`]) rather than counting on the
//! machine being quick.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lab::Lab;

/// Writes `value` and a newline to `path`, making its directory.
pub fn put(path: &Path, value: &str) {
    std::fs::create_dir_all(path.parent().expect("a file in a directory"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::write(path, format!("{value}\n"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A sysfs tree under `root` with one EDAC memory controller, both counts
/// at `ue` and `ce`; returns the file of its uncorrected count.
pub fn edac_tree(root: &Path, ce: u64, ue: u64) -> PathBuf {
    let mc = root.join("devices/system/edac/mc/mc0");
    put(&mc.join("ce_count"), &ce.to_string());
    put(&mc.join("ue_count"), &ue.to_string());
    mc.join("ue_count")
}

/// Uncorrected memory errors arriving, one more every half second from
/// `from + 1`, until stopped or dropped.
#[derive(Debug)]
pub struct ErrorStream {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ErrorStream {
    pub fn start(count_file: PathBuf, from: u64) -> ErrorStream {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = from;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                put(&count_file, &n.to_string());
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        ErrorStream {
            stop,
            thread: Some(thread),
        }
    }

    /// No more errors from now on.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ErrorStream {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What the agent on `host` last published for its hook, if anything.
pub fn published(lab: &Lab, host: &str) -> Option<Value> {
    let root = &lab.host(host).ok()?.root;
    let text = std::fs::read_to_string(root.join("run/rackside/state.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Waits until what the agent on `host` publishes satisfies `pred`;
/// returns it, or what was last seen.
pub fn wait_published(
    lab: &Lab,
    host: &str,
    limit: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value, String> {
    let end = Instant::now() + limit;
    let mut seen = None;
    while Instant::now() < end {
        seen = published(lab, host);
        if seen.as_ref().is_some_and(&pred) {
            return Ok(seen.unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "{host}: the published state did not turn as expected in {limit:?}; last: {}",
        seen.map_or("nothing".into(), |v| v.to_string())
    ))
}
