//! The local libvirtd: one connection with keepalive, one bulk stats call
//! a period, lifecycle events applied at once; reconnect with backoff when
//! libvirtd goes away, serving the last known state meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use virt::connect::Connect;

use super::model::{self, VmState};
use super::procfs;
use super::{Inventory, Link};
use crate::events::{lifecycle_word, Bus, Payload, VmStateChange};
use crate::libvirt_ffi::{self, Lifecycle};
use crate::storage::{self, domxml, probe, Storage};

/// The second look after a lifecycle event.
const FOLLOW_UP: Duration = Duration::from_secs(1);

/// Exponential backoff, capped.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((500u64 << attempt.min(6)).min(30_000))
}

#[derive(Debug)]
pub struct LocalPoller {
    pub uri: String,
    pub inventory: Arc<Inventory>,
    pub bus: Bus,
    pub stop: Arc<AtomicBool>,
    /// Told the outcome of each poll attempt (the error of a failed one)
    /// until the first that succeeds: the daemon sends READY on that, and
    /// says why it waits meanwhile.
    pub first_poll: Option<mpsc::Sender<Result<(), String>>>,
    /// Where crashes the lifecycle events report go (crate::crash).
    pub crashes: Option<mpsc::Sender<crate::crash::handler::Crash>>,
}

struct CpuState {
    last: Option<(Instant, procfs::CpuTimes)>,
}

impl LocalPoller {
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("libvirt-local".into())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        let (nudge_tx, nudge_rx) = mpsc::channel::<()>();
        let mut cpu = CpuState { last: None };
        let mut attempt = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            match Connect::open(Some(&self.uri)) {
                Ok(conn) => {
                    attempt = 0;
                    if let Err(e) = conn.set_keep_alive(5, 3) {
                        tracing::warn!(cause = %e, "libvirt keepalive not enabled");
                    }
                    match libvirt_ffi::warm_capabilities(&conn) {
                        Ok(took) => tracing::debug!(
                            ms = took.as_millis() as u64,
                            "libvirt host capabilities ready"
                        ),
                        Err(e) => {
                            tracing::warn!(cause = %e, "libvirt host capabilities not built now; a later poll may wait for them")
                        }
                    }
                    let watch = self.watch(&conn, nudge_tx.clone());
                    tracing::info!(uri = %self.uri, "connected to libvirt");
                    self.serve(&conn, &nudge_rx, &mut cpu);
                    drop(watch);
                    libvirt_ffi::close(conn);
                }
                Err(e) => {
                    self.refresh_host(&mut cpu);
                    self.mark_down(e.message());
                    self.tell_first_poll(Err(e.message().to_owned()));
                    let wait = backoff(attempt);
                    attempt += 1;
                    tracing::warn!(uri = %self.uri, cause = %e.message(), retry_in_ms = wait.as_millis() as u64, "libvirt unavailable");
                    let _ = nudge_rx.recv_timeout(wait);
                }
            }
        }
    }

    fn watch(
        &self,
        conn: &Connect,
        nudge: mpsc::Sender<()>,
    ) -> Option<libvirt_ffi::LifecycleWatch> {
        let inv = self.inventory.clone();
        let bus = self.bus.clone();
        let crashes = self.crashes.clone();
        let sink = move |ev: Lifecycle| {
            let kind = crate::crash::kind_of(ev.event, ev.detail);
            // What the VM was doing here before: only one that ran here
            // can crash here. A failed incoming migration stops the
            // arriving copy the same way, and restarting that would run
            // the VM twice.
            let was = kind.and_then(|_| {
                inv.snapshot()
                    .local
                    .vms
                    .iter()
                    .find(|v| v.uuid == ev.uuid)
                    .map(|v| v.state)
            });
            apply_lifecycle(&inv, &bus, &ev);
            if let (Some(tx), Some(kind)) = (&crashes, kind) {
                if crate::crash::is_aftermath(kind, was) {
                    // libvirt stopping a panicked guest (its on_crash
                    // action): the panic was the crash, handled already.
                    tracing::info!(vm = %ev.name, "stopped after its panic: the same crash");
                } else if matches!(
                    was,
                    Some(VmState::Running | VmState::Paused | VmState::Crashed)
                ) {
                    let _ = tx.send(crate::crash::handler::Crash {
                        vm: ev.name.clone(),
                        uuid: ev.uuid.clone(),
                        kind,
                    });
                } else {
                    tracing::info!(vm = %ev.name, was = ?was, "stopped, but it was not running here (a failed incoming migration?): not a crash");
                }
            }
            let _ = nudge.send(());
        };
        match libvirt_ffi::register_lifecycle(conn, sink) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(cause = %e, "no lifecycle events; changes show at the next poll");
                None
            }
        }
    }

    /// Polls until the connection fails or the agent stops.
    fn serve(&mut self, conn: &Connect, nudge: &mpsc::Receiver<()>, cpu: &mut CpuState) {
        let mut last_poll: Option<Instant> = None;
        let mut follow_up: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let stats = libvirt_ffi::all_domain_stats(conn).map(with_guest_cpu);
            let storage = domain_storage(conn);
            self.refresh_host(cpu);
            match stats {
                Ok(records) => {
                    let elapsed = last_poll.map_or(0.0, |t| now.duration_since(t).as_secs_f64());
                    last_poll = Some(now);
                    self.inventory.update(|s| {
                        s.local.vms = model::vms_from_records(&records, &s.local.vms, elapsed);
                        model::apply_newer_events(&mut s.local.vms, &mut s.local.events, now);
                        for vm in &mut s.local.vms {
                            if let Some(st) = storage.get(&vm.uuid) {
                                vm.storage = Some(st.clone());
                            }
                        }
                        s.local.vms_at = Some(now);
                        s.local.link = Link::Up;
                    });
                    self.tell_first_poll(Ok(()));
                }
                Err(e) => {
                    self.mark_down(&e.to_string());
                    self.tell_first_poll(Err(e.to_string()));
                    return;
                }
            }
            // Sleep a period, or less when an event asks for a fresh look;
            // several events in a burst cause one poll. libvirt finishes
            // some changes after their event (the undefine that follows a
            // migration away), so an event also earns a second look a
            // moment later.
            let deadline = now + self.inventory.poll_interval;
            let deadline = follow_up.map_or(deadline, |f| f.min(deadline));
            follow_up = None;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || self.stop.load(Ordering::Relaxed) {
                    break;
                }
                match nudge.recv_timeout(left) {
                    Ok(()) => {
                        std::thread::sleep(Duration::from_millis(100));
                        while nudge.try_recv().is_ok() {}
                        follow_up = Some(Instant::now() + FOLLOW_UP);
                        break;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(left.min(Duration::from_millis(200)))
                    }
                }
            }
            if !conn.is_alive().unwrap_or(false) {
                self.mark_down("connection to libvirtd lost");
                return;
            }
        }
    }

    fn refresh_host(&self, cpu: &mut CpuState) {
        let stat = procfs::read("/proc/stat").unwrap_or_default();
        let now = Instant::now();
        let times = procfs::parse_stat(&stat);
        let cpu_pct = match (cpu.last, times) {
            (Some((_, before)), Some(after)) => procfs::cpu_pct(before, after),
            _ => None,
        };
        if let Some(t) = times {
            cpu.last = Some((now, t));
        }
        let (total, free) = procfs::read("/proc/meminfo")
            .and_then(|m| procfs::parse_meminfo(&m))
            .unwrap_or((0, 0));
        let load1 = procfs::read("/proc/loadavg").and_then(|l| procfs::parse_loadavg(&l));
        self.inventory.update(|s| {
            let f = &mut s.local.figures;
            f.cpus = procfs::cpus_online(&stat);
            f.load1 = load1;
            if cpu_pct.is_some() {
                f.cpu_pct = cpu_pct;
            }
            f.mem_total_mib = total;
            f.mem_free_mib = free;
        });
    }

    fn mark_down(&self, error: &str) {
        self.inventory.update(|s| {
            if !matches!(s.local.link, Link::Down { .. }) {
                s.local.link = Link::Down {
                    since: Instant::now(),
                    error: error.to_owned(),
                };
            }
        });
    }

    fn tell_first_poll(&mut self, outcome: Result<(), String>) {
        let done = outcome.is_ok();
        if let Some(tx) = &self.first_poll {
            if tx.send(outcome).is_err() || done {
                self.first_poll = None;
            }
        }
    }
}

/// Where libvirt's QEMU driver (system instance) keeps each running
/// guest's pid file.
const QEMU_RUN_DIR: &str = "/run/libvirt/qemu";

/// Fills in running guests' CPU time from /proc (see
/// [`procfs::guest_cpu_ns`]: libvirt's own figure would ask QEMU).
fn with_guest_cpu(mut records: Vec<model::DomainRecord>) -> Vec<model::DomainRecord> {
    for r in &mut records {
        if VmState::from_libvirt(r.state, r.reason).is_active() {
            r.cpu_time_ns = procfs::guest_cpu_ns(std::path::Path::new(QEMU_RUN_DIR), &r.name);
        }
    }
    records
}

/// Each domain's storage by UUID, from its definition (libvirt answers
/// that without QEMU's monitor or a job, so a migrating domain does not
/// hold the poll) and a look at its image files on this host. A domain
/// whose definition cannot be read is left out (its last reading stands).
fn domain_storage(conn: &Connect) -> BTreeMap<String, Storage> {
    let mut out = BTreeMap::new();
    let doms = match conn.list_all_domains(0) {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(cause = %e, "cannot list domains for their disks");
            return out;
        }
    };
    for d in doms {
        if let (Ok(uuid), Ok(xml)) = (d.uuid_string(), d.xml_desc(0)) {
            match domxml::devices(&xml) {
                Ok(devs) => {
                    out.insert(uuid, storage::assess(&devs, &mut probe::file_facts));
                }
                Err(e) => tracing::warn!(cause = %e, uuid = %uuid, "unreadable domain XML"),
            }
        }
        libvirt_ffi::free_domain(d);
    }
    out
}

/// Applies one lifecycle event to the inventory at once and tells
/// subscribers; the poll it triggers fills in the figures.
pub fn apply_lifecycle(inv: &Inventory, bus: &Bus, ev: &Lifecycle) {
    let what = lifecycle_word(ev.event, ev.detail);
    let new_state = match what {
        "started" | "resumed" | "arrived" => Some(VmState::Running),
        "arriving" | "migrating" => Some(VmState::Migrating),
        "paused" => Some(VmState::Paused),
        "stopped" | "left" => Some(VmState::Shutoff),
        "crashed" => Some(VmState::Crashed),
        _ => None,
    };
    let mut migrating = false;
    inv.update(|s| {
        if let Some(vm) = s.local.vms.iter_mut().find(|v| v.uuid == ev.uuid) {
            migrating = vm.state == VmState::Migrating;
            if let Some(st) = new_state {
                vm.state = st;
            }
        }
        // A poll under way read libvirt before this: it must not undo it.
        if new_state.is_some() || what == "undefined" {
            s.local.events.insert(
                ev.uuid.clone(),
                model::EventMark {
                    state: new_state,
                    gone: what == "undefined",
                    at: Instant::now(),
                },
            );
        }
        match what {
            "undefined" | "left" => {
                if what == "left" {
                    s.local.departed.insert(ev.name.clone(), Instant::now());
                }
                if what == "undefined" || s.local.vms.iter().all(|v| v.uuid != ev.uuid) {
                    s.local.vms.retain(|v| v.uuid != ev.uuid);
                }
            }
            "arrived" | "arriving" | "started" => {
                s.local.departed.remove(&ev.name);
            }
            _ => {}
        }
    });
    if what == "left" {
        // Where did it go? Ask the peers now rather than at their next poll.
        inv.nudge_peers();
    }
    if what == "shutting_down" && migrating {
        // QEMU quitting at the end of a move, not the guest shutting
        // down: `left` follows, and saying "shutting down" would alarm
        // whoever watches the line for nothing.
        tracing::debug!(vm = %ev.name, "QEMU quits after the migration");
        return;
    }
    bus.publish(Payload::VmState(VmStateChange {
        vm: ev.name.clone(),
        uuid: ev.uuid.clone(),
        what,
        state: new_state.map(VmState::as_str),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At the end of an outgoing migration QEMU quits (a shutdown event)
    /// and the VM leaves: the line hears `migrating` and `left`, never
    /// that the VM is shutting down. A VM that shuts down is said so.
    #[test]
    fn qemu_quitting_after_a_move_is_not_a_shutdown() {
        let inv = Inventory::new(&[], Duration::from_secs(5));
        let bus = Bus::new();
        let mut rx = bus.subscribe();
        inv.update(|s| {
            for (name, uuid) in [("web1", "u1"), ("db1", "u2")] {
                s.local.vms.push(model::Vm {
                    name: name.into(),
                    uuid: uuid.into(),
                    state: VmState::Running,
                    vcpus: 1,
                    mem_mib: 128,
                    cpu_pct: None,
                    cpu_time_ns: None,
                    storage: None,
                });
            }
        });
        let ev = |name: &str, uuid: &str, event, detail| Lifecycle {
            name: name.into(),
            uuid: uuid.into(),
            event,
            detail,
        };
        // migrating (suspended/migrated), shutdown by the host, stopped/migrated.
        for (event, detail) in [(3, 1), (6, 2), (5, 3)] {
            apply_lifecycle(&inv, &bus, &ev("web1", "u1", event, detail));
        }
        apply_lifecycle(&inv, &bus, &ev("db1", "u2", 6, 1));
        let mut heard = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if let Payload::VmState(v) = e.data {
                heard.push(format!("{}: {}", v.vm, v.what));
            }
        }
        assert_eq!(
            heard,
            ["web1: migrating", "web1: left", "db1: shutting_down"]
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_millis(1000));
        assert_eq!(backoff(6), Duration::from_millis(30_000));
        assert_eq!(backoff(60), Duration::from_millis(30_000));
    }
}
