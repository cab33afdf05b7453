//! rackside-agent: the host agent.
//!
//! The shape (docs/design.md): `inventory` (libvirt and /proc, kept current by
//! polls and lifecycle events), `console` (one session per management line,
//! docs/protocol.md), `peers` (inside inventory), `auth`, `config`; placement,
//! migration and journal arrive with the evacuation issue. Pure logic is
//! kept apart from I/O so it is tested in microseconds.

pub mod auth;
pub mod backend;
pub mod cli;
pub mod config;
pub mod console;
pub mod daemon;
pub mod evacuation;
pub mod events;
pub mod hookio;
pub mod hypervisor;
pub mod inventory;
pub mod libvirt_ffi;
pub mod migration;
pub mod placement;
pub mod report;
