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
    /// What lifecycle events said since the last poll read libvirt, by
    /// UUID ([`model::apply_newer_events`]).
    pub events: BTreeMap<String, model::EventMark>,
    /// The hardware's findings this period ([`crate::health`]).
    pub findings: Vec<crate::health::Finding>,
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
    /// Its storage pools with a target path, and their free bytes.
    pub pools: Vec<crate::storage::PoolRoom>,
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

/// The local libvirt is not answering: nothing the agent knows about this
/// host's VMs is live, and no decision may be taken from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blind {
    /// For a person: "libvirt unreachable for 12 s: <error>".
    pub reason: String,
    /// When libvirt stopped answering; None when it never has.
    pub since: Option<Instant>,
}

pub use crate::health::Level as HealthLevel;

/// This host's health with every reason that is not ok.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub level: HealthLevel,
    pub reasons: Vec<String>,
}

impl Health {
    fn add(&mut self, level: HealthLevel, reason: String) {
        self.level = self.level.max(level);
        self.reasons.push(reason);
    }
}

impl State {
    /// Why the local libvirt's view is not live, or None when its last
    /// poll answered. Everything that decides from this host's VMs (plan,
    /// migrate, evacuate, "empty") must refuse while this is Some.
    pub fn local_blind(&self, now: Instant) -> Option<Blind> {
        match &self.local.link {
            Link::Up => None,
            Link::Connecting => Some(Blind {
                reason: "libvirt has not answered yet".into(),
                since: None,
            }),
            Link::Down { since, error } => Some(Blind {
                reason: format!(
                    "libvirt unreachable for {} s: {error}",
                    now.saturating_duration_since(*since).as_secs()
                ),
                since: Some(*since),
            }),
        }
    }

    /// Seconds since the VM list was last refreshed from libvirt, when one
    /// exists but is not live: what a stale answer carries.
    pub fn vms_stale_age(&self, now: Instant) -> Option<u64> {
        match (&self.local.link, self.local.vms_at) {
            (Link::Up, _) | (_, None) => None,
            (_, Some(t)) => Some(now.saturating_duration_since(t).as_secs()),
        }
    }

    /// Active VMs on this host as libvirt's last poll counted them; None
    /// while blind, so a stale list never makes the host read "empty".
    pub fn live_vms_running(&self, now: Instant) -> Option<u32> {
        match (self.local_blind(now), self.local.vms_at) {
            (None, Some(_)) => Some(model::allocation(&self.local.vms).running),
            _ => None,
        }
    }

    /// This host's health: the hardware's findings and the agent's own
    /// sight of libvirt. A blind agent is never `ok`.
    pub fn health(&self, now: Instant) -> Health {
        let mut h = Health {
            level: HealthLevel::Ok,
            reasons: Vec::new(),
        };
        for f in &self.local.findings {
            h.add(f.level, f.reason.clone());
        }
        if let Some(b) = self.local_blind(now) {
            h.add(HealthLevel::Degraded, b.reason);
        }
        h
    }
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
                        ..Default::default()
                    },
                    departed: BTreeMap::new(),
                    events: BTreeMap::new(),
                    findings: Vec::new(),
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
                        pools: Vec::new(),
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

    /// Reads under the lock without copying: for a value looked at often
    /// (the publisher's glance), where a snapshot would clone every list.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.read().unwrap_or_else(|e| e.into_inner()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(link: Link, vms_at: Option<Instant>) -> State {
        State {
            local: Local {
                link,
                vms: Vec::new(),
                vms_at,
                figures: HostFigures {
                    ..Default::default()
                },
                departed: BTreeMap::new(),
                events: BTreeMap::new(),
                findings: Vec::new(),
            },
            peers: Vec::new(),
        }
    }

    #[test]
    fn blind_until_libvirt_answers_and_again_when_it_stops() {
        let now = Instant::now();
        let since = now - Duration::from_secs(7);
        let down = Link::Down {
            since,
            error: "connection refused".into(),
        };
        let connecting = state(Link::Connecting, None);
        assert_eq!(
            connecting.local_blind(now),
            Some(Blind {
                reason: "libvirt has not answered yet".into(),
                since: None
            })
        );
        assert_eq!(connecting.live_vms_running(now), None);
        let up = state(Link::Up, Some(now));
        assert_eq!(up.local_blind(now), None);
        assert_eq!(up.live_vms_running(now), Some(0));
        assert_eq!(up.vms_stale_age(now), None);
        assert_eq!(up.health(now).level, HealthLevel::Ok);
        // A host whose libvirt went away with an empty last list is not
        // "empty": it is unknown.
        let stale = state(down, Some(now - Duration::from_secs(9)));
        let b = stale.local_blind(now).unwrap();
        assert_eq!(b.reason, "libvirt unreachable for 7 s: connection refused");
        assert_eq!(b.since, Some(since));
        assert_eq!(stale.live_vms_running(now), None);
        assert_eq!(stale.vms_stale_age(now), Some(9));
        let h = stale.health(now);
        assert_eq!(
            (h.level, h.reasons),
            (HealthLevel::Degraded, vec![b.reason])
        );
    }
}
