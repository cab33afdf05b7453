//! The rack as the agents describe it: typed values built from their JSON
//! (missing fields and nulls read as unknown; nothing here panics on bad
//! data), and the rules by which answers and events change it.

pub mod evacuation;
pub mod event;
pub mod host;
pub mod locate;
pub mod plan;
pub mod progress;
pub mod rack;
pub mod verdict;
pub mod vm;

pub use evacuation::Evacuation;
pub use event::{Event, Progress};
pub use host::{Health, HostState, HostsEntry, LineState, Status};
pub use locate::Located;
pub use plan::{Move, PeerReason, Plan, PlanFor, Unplaceable};
pub use progress::{jobs_from_json, Job, Phase};
pub use rack::{Host, Rack, VmMatch};
pub use verdict::Verdict;
pub use vm::{Vm, VmList, VmState};
