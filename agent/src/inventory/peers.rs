//! Peer hosts, polled in the background through their libvirt: capacity
//! for placement, domain lists for `locate`. One thread a peer, so a peer
//! whose link is cut (a connect that hangs for minutes) delays nobody.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virt::connect::Connect;

use super::local::backoff;
use super::model::{self, VmState};
use super::procfs::{self, CpuTimes};
use super::{Inventory, PeerDomain};
use crate::libvirt_ffi;

/// What one poll of a peer returns.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerPoll {
    pub cpus: u32,
    pub mem_total_mib: u64,
    pub mem_free_mib: u64,
    pub cpu: Option<CpuTimes>,
    pub domains: Vec<model::DomainRecord>,
    pub pools: Vec<crate::storage::PoolRoom>,
}

fn poll(conn: &Connect) -> Result<PeerPoll, String> {
    let info = conn.node_info().map_err(|e| e.message().to_owned())?;
    let free = conn.free_memory().map_err(|e| e.message().to_owned())?;
    let domains = libvirt_ffi::all_domain_stats(conn).map_err(|e| e.to_string())?;
    Ok(PeerPoll {
        cpus: info.cpus,
        mem_total_mib: info.memory / 1024,
        mem_free_mib: free / (1024 * 1024),
        cpu: libvirt_ffi::node_cpu_times(conn).ok(),
        domains,
        // Pool metadata only (no refresh): cheap, and never waits on a
        // domain. A peer without a storage driver has no room for copies.
        pools: crate::hypervisor::volumes::pools(conn).unwrap_or_else(|e| {
            tracing::debug!(cause = %e, "peer storage pools unknown");
            Vec::new()
        }),
    })
}

pub fn spawn_all(
    inv: &Arc<Inventory>,
    stop: &Arc<AtomicBool>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let peers = inv.snapshot().peers;
    peers
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let inv = inv.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("peer-{}", p.name))
                .spawn(move || run(i, p.uri, inv, stop))
        })
        .collect()
}

fn run(index: usize, uri: String, inv: Arc<Inventory>, stop: Arc<AtomicBool>) {
    let mut attempt = 0u32;
    let mut last_cpu: Option<CpuTimes> = None;
    while !stop.load(Ordering::Relaxed) {
        let conn = match Connect::open(Some(&uri)) {
            Ok(c) => c,
            Err(e) => {
                record_error(&inv, index, e.message());
                sleep_unless_stopped(&stop, backoff(attempt));
                attempt += 1;
                continue;
            }
        };
        let _ = conn.set_keep_alive(5, 3);
        attempt = 0;
        while !stop.load(Ordering::Relaxed) {
            // Taken before the poll: a nudge that arrives during it still
            // earns another poll straight after.
            let nudges = inv.peer_nudges();
            let started = Instant::now();
            match poll(&conn) {
                Ok(p) => {
                    tracing::debug!(peer = %uri, domains = p.domains.len(), ms = started.elapsed().as_millis() as u64, "peer polled");
                    let cpu_pct = match (last_cpu, p.cpu) {
                        (Some(a), Some(b)) => procfs::cpu_pct(a, b),
                        _ => None,
                    };
                    last_cpu = p.cpu.or(last_cpu);
                    record(&inv, index, &p, cpu_pct);
                }
                Err(e) => {
                    record_error(&inv, index, &e);
                    break;
                }
            }
            sleep_until_due(&inv, &stop, inv.poll_interval, nudges);
        }
        libvirt_ffi::close(conn);
    }
}

/// Sleeps a period, cut short when the agent stops or asks peers to poll
/// now (a VM just left: which peer has it?).
fn sleep_until_due(inv: &Inventory, stop: &AtomicBool, d: Duration, seen: u64) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) && inv.peer_nudges() == seen {
        std::thread::sleep(Duration::from_millis(100).min(end - Instant::now()));
    }
}

fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100).min(end - Instant::now()));
    }
}

fn record(inv: &Inventory, index: usize, p: &PeerPoll, cpu_pct: Option<f64>) {
    let vms = model::vms_from_records(&p.domains, &[], 0.0);
    let alloc = model::allocation(&vms);
    inv.update(|s| {
        let Some(peer) = s.peers.get_mut(index) else {
            return;
        };
        peer.ok_at = Some(Instant::now());
        peer.error = None;
        peer.cpus = p.cpus;
        if cpu_pct.is_some() {
            peer.cpu_pct = cpu_pct;
        }
        peer.mem_total_mib = p.mem_total_mib;
        peer.mem_free_mib = p.mem_free_mib;
        peer.mem_allocated_mib = alloc.mem_mib;
        peer.vcpus_allocated = alloc.vcpus;
        peer.vms_running = alloc.running;
        peer.pools = p.pools.clone();
        peer.domains = vms
            .iter()
            .map(|v| PeerDomain {
                name: v.name.clone(),
                state: v.state,
            })
            .collect();
    });
}

fn record_error(inv: &Inventory, index: usize, error: &str) {
    tracing::debug!(peer = index, cause = %error, "peer poll failed");
    inv.update(|s| {
        if let Some(peer) = s.peers.get_mut(index) {
            peer.error = Some(error.to_owned());
        }
    });
}

/// Where a VM lives among the peers, if any peer has it.
pub fn find_on_peers<'a>(peers: &'a [super::Peer], vm: &str) -> Option<(&'a super::Peer, VmState)> {
    // A VM active somewhere wins over a stale shut-off definition elsewhere.
    let mut found: Option<(&super::Peer, VmState)> = None;
    for p in peers {
        if let Some(d) = p.domains.iter().find(|d| d.name == vm) {
            if found.is_none_or(|(_, s)| !s.is_active() && d.state.is_active()) {
                found = Some((p, d.state));
            }
        }
    }
    found
}
