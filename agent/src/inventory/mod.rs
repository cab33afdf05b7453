//! The inventory: this host, its VMs and its peers, as last seen.
//!
//! Pollers (one thread for the local libvirtd, one per peer) write here;
//! console sessions only read, so an answer never waits on libvirt, a slow
//! peer or a dead link. Every figure carries the time it was taken.

pub mod local;
pub mod model;
pub mod peers;
pub mod procfs;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use model::{Vm, VmState};

/// This host's own figures (from /proc, not libvirt).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HostFigures {
    pub cpus: u32,
    pub load1: Option<f64>,
    pub cpu_pct: Option<f64>,
    pub mem_total_mib: u64,
    pub mem_free_mib: u64,
    pub health: &'static str,
}

/// The local libvirtd connection as the poller last saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    Connecting,
    Up,
    Down { since: Instant, error: String },
}

#[derive(Debug, Clone)]
pub struct Local {
    pub link: Link,
    pub vms: Vec<Vm>,
    /// When `vms` was last refreshed from libvirt.
    pub vms_at: Option<Instant>,
    pub figures: HostFigures,
    /// VMs that left this host by migration: name -> when.
    pub departed: BTreeMap<String, Instant>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PeerDomain {
    pub name: String,
    pub state: VmState,
}

#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub uri: String,
    pub migrate_uri: Option<String>,
    pub location: String,
    pub ok_at: Option<Instant>,
    pub error: Option<String>,
    pub cpus: u32,
    pub cpu_pct: Option<f64>,
    pub mem_total_mib: u64,
    pub mem_free_mib: u64,
    pub mem_allocated_mib: u64,
    pub vcpus_allocated: u32,
    pub vms_running: u32,
    pub domains: Vec<PeerDomain>,
}

impl Peer {
    /// Reachable when the last poll succeeded recently enough.
    pub fn reachable(&self, now: Instant, stale_after: Duration) -> bool {
        self.error.is_none()
            && self
                .ok_at
                .is_some_and(|t| now.duration_since(t) <= stale_after)
    }
}

#[derive(Debug)]
pub struct Inventory {
    state: RwLock<State>,
    pub poll_interval: Duration,
    /// Bumped to make every peer poller poll now.
    peer_nudge: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct State {
    pub local: Local,
    pub peers: Vec<Peer>,
}

impl Inventory {
    pub fn new(peers: &[crate::config::PeerSection], poll_interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: RwLock::new(State {
                local: Local {
                    link: Link::Connecting,
                    vms: Vec::new(),
                    vms_at: None,
                    figures: HostFigures {
                        health: "ok",
                        ..Default::default()
                    },
                    departed: BTreeMap::new(),
                },
                peers: peers
                    .iter()
                    .map(|p| Peer {
                        name: p.name.clone(),
                        uri: p.uri.clone(),
                        migrate_uri: p.migrate_uri.clone(),
                        location: p.location.clone(),
                        ok_at: None,
                        error: Some("not polled yet".into()),
                        cpus: 0,
                        cpu_pct: None,
                        mem_total_mib: 0,
                        mem_free_mib: 0,
                        mem_allocated_mib: 0,
                        vcpus_allocated: 0,
                        vms_running: 0,
                        domains: Vec::new(),
                    })
                    .collect(),
            }),
            poll_interval,
            peer_nudge: AtomicU64::new(0),
        })
    }

    pub fn nudge_peers(&self) {
        self.peer_nudge.fetch_add(1, Ordering::Relaxed);
    }

    pub fn peer_nudges(&self) -> u64 {
        self.peer_nudge.load(Ordering::Relaxed)
    }

    /// A consistent copy for one answer.
    pub fn snapshot(&self) -> State {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut g = self.state.write().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// How old a peer's figures may be and still count as reachable.
    pub fn peer_stale_after(&self) -> Duration {
        (self.poll_interval * 3).max(Duration::from_secs(15))
    }
}
