//! rackside's lab: several libvirt "hosts" on one machine.
//!
//! Each host is a network namespace with private mounts of libvirt's
//! directories, its own hostname, its own libvirtd (distinct host UUID) and
//! an address on a bridge that lives in a lab-private "switch" namespace.
//! Nothing here is connected to the machine's own network.
//!
//! The test process stays in the root namespaces and reaches each host's
//! libvirtd through the host's unix socket (visible under the host's root
//! directory); libvirtds reach each other over TCP inside the lab network,
//! which is what peer-to-peer migration needs.
//!
//! [`Lab`] is a guard: dropping it tears the lab down, so a failing or
//! panicking test still leaves nothing behind.

pub mod agent;
pub mod bench;
pub mod capture;
pub mod cmd;
pub mod cpio;
pub mod demo;
pub mod desc;
pub mod guest;
pub mod health;
pub mod host;
pub mod judge;
pub mod lab;
pub mod meminfo;
pub mod names;
pub mod net;
pub mod netns;
pub mod probe;
pub mod pty;
pub mod sampler;
pub mod smoke;
pub mod storage;
pub mod teardown;
pub mod terminal;
pub mod tls;
pub mod verdict;
pub mod virsh;
pub mod whereabouts;

pub use desc::{GuestNetDesc, HostDesc, LabDesc, StorageDesc};
pub use guest::{GuestDisk, GuestSpec};
pub use lab::{HostSpec, Lab, LabError, LabSpec};
pub use sampler::Sampler;
pub use teardown::{TeardownError, TeardownErrors};
