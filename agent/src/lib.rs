//! rackside-agent: the host agent.
//!
//! The shape (docs/design.md): `inventory` (libvirt and /proc, kept current by
//! polls and lifecycle events), `console` (one session per management line,
//! docs/protocol.md), `peers` (inside inventory), `auth`, `config`;
//! `evacuation` (a pure state machine per run, and the controller that
//! carries out its actions through `hypervisor`), `placement`, `migration`;
//! `report` and `events`, the typed values between the domain and the
//! console; `backend`, the glue that answers sessions. Pure logic is kept
//! apart from I/O so it is tested in microseconds.

pub mod auth;
pub mod backend;
pub mod cli;
pub mod config;
pub mod console;
pub mod crash;
pub mod daemon;
pub mod evacuation;
pub mod events;
pub mod health;
pub mod hookio;
pub mod hypervisor;
pub mod inventory;
pub mod libvirt_ffi;
pub mod migration;
pub mod placement;
pub mod report;
pub mod storage;
