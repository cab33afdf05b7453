//! rackside-agent: the host agent.
//!
//! The shape (../shared/docs/DESIGN.md): inventory (libvirt and /proc),
//! console (one session per management line, PROTOCOL.md), peers,
//! placement (pure), migration, journal, health, locate. Modules arrive
//! with the issues that build them; pure logic stays apart from I/O.

pub mod cli;
