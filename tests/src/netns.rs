//! Running code inside a lab namespace from the test process: a thread of
//! its own joins the namespace (setns affects only the calling thread), so
//! sockets it makes belong to the lab network while the process stays in
//! the machine's namespaces. A socket keeps its namespace for life: any
//! thread may use it afterwards.

use std::fs::File;
use std::path::PathBuf;

use nix::sched::{setns, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("could not open namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not enter namespace {ns}")]
    Enter {
        ns: String,
        #[source]
        source: nix::Error,
    },
}

/// Runs `f` on a fresh thread inside network namespace `ns` (as `ip netns`
/// names it) and returns its result.
pub fn run_in<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let path = PathBuf::from("/run/netns").join(ns);
    let file = File::open(&path).map_err(|source| NetnsError::Open { path, source })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                ns: ns.to_owned(),
                source,
            })?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
