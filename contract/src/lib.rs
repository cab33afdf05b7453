//! The contract between rackside-agent and rackside-hook, written once.
//!
//! The hook runs inside libvirt's locks and may neither call libvirt nor
//! wait on the agent: a file the agent publishes (`RUN_DIR/state.json`,
//! [`Published`]) and a datagram the hook fires (`RUN_DIR/hook.sock`,
//! [`Report`]) are the whole conversation. Both binaries build against
//! this crate, so a field renamed on one side no longer compiles on the
//! other, and both find `RUN_DIR` the same way ([`run_dir`]).
//!
//! The hook admits every migration when it cannot read the agent's state:
//! any drift here would silently let VMs into a host in maintenance.

use std::time::Duration;

pub mod published;
pub mod report;
pub mod run_dir;

pub use published::{Freshness, Published};
pub use report::Report;
pub use run_dir::{StateSection, DEFAULT_CONFIG, DEFAULT_RUN_DIR, DEFAULT_STATE_DIR};

/// The namespace of the marker an agent puts in `<metadata>` of a crashed
/// VM it starts on a peer (`<recovery from="HOST"/>`): the peer's hook
/// admits that start as it admits an incoming migration (maintenance,
/// health, room), so a crashed VM never lands on a host that is not fit.
pub const RECOVERY_NS: &str = "https://rackside.dev/xmlns/recovery/1";

/// The agent's published state, in `RUN_DIR`.
pub const STATE_FILE: &str = "state.json";
/// Where the agent writes [`STATE_FILE`] before renaming it into place.
pub const STATE_TMP_FILE: &str = ".state.json.tmp";
/// The agent's datagram socket for hook reports, in `RUN_DIR`.
pub const SOCKET: &str = "hook.sock";

/// How often the agent rewrites [`STATE_FILE`].
pub const PUBLISH_PERIOD: Duration = Duration::from_secs(1);

/// How long the hook keeps a promise of room after the guest arrived: the
/// agent must have counted the guest as committed by then (a lifecycle
/// event, a poll, then at most one [`PUBLISH_PERIOD`]). Ending it sooner
/// would let the same room be promised twice.
pub const PROMISE_GRACE: Duration = Duration::from_secs(5);

/// A [`STATE_FILE`] older than this means the agent is not there: the hook
/// admits. Long enough to ride out a stalled agent thread, short enough
/// that a dead agent does not keep a host closed.
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// The agent reads reports into a buffer of this size.
pub const RECV_BUFFER: usize = 64 << 10;
/// The hook sends nothing larger (headroom below [`RECV_BUFFER`]).
pub const MAX_DATAGRAM: usize = 60 << 10;

// The timing only works in this order; checked when the crate builds.
const _: () = assert!(PROMISE_GRACE.as_secs() > PUBLISH_PERIOD.as_secs());
const _: () = assert!(STALE_AFTER.as_secs() > 10 * PUBLISH_PERIOD.as_secs());
const _: () = assert!(MAX_DATAGRAM < RECV_BUFFER);
