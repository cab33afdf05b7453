//! What the inventory knows, and the pure rules that turn libvirt's raw
//! figures into it.

use serde::Serialize;

/// A VM's state as the protocol names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Running,
    Paused,
    Shutoff,
    Crashed,
    Migrating,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Shutoff => "shutoff",
            VmState::Crashed => "crashed",
            VmState::Migrating => "migrating",
        }
    }

    /// Occupies the host: counts for "running", for capacity and for SAFE.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            VmState::Running | VmState::Paused | VmState::Migrating
        )
    }

    /// From libvirt's virDomainState and its reason.
    pub fn from_libvirt(state: i32, reason: i32) -> VmState {
        const PAUSED_MIGRATION: i32 = 2; // VIR_DOMAIN_PAUSED_MIGRATION
        const PAUSED_POSTCOPY: i32 = 12; // VIR_DOMAIN_PAUSED_POSTCOPY
        const SHUTOFF_CRASHED: i32 = 5; // VIR_DOMAIN_SHUTOFF_CRASHED
        match state {
            1 | 2 | 4 => VmState::Running, // running, blocked, shutting down
            3 if reason == PAUSED_MIGRATION || reason == PAUSED_POSTCOPY => VmState::Migrating,
            3 | 7 => VmState::Paused, // paused, pmsuspended
            5 if reason == SHUTOFF_CRASHED => VmState::Crashed,
            6 => VmState::Crashed,
            _ => VmState::Shutoff, // shutoff, nostate
        }
    }
}

/// One domain as the bulk stats call reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainRecord {
    pub name: String,
    pub uuid: String,
    pub state: i32,
    pub reason: i32,
    pub cpu_time_ns: Option<u64>,
    pub vcpus: Option<u32>,
    /// balloon.maximum, KiB.
    pub max_mem_kib: Option<u64>,
}

/// A VM as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vm {
    pub name: String,
    pub uuid: String,
    pub state: VmState,
    pub vcpus: u32,
    pub mem_mib: u64,
    /// Percent of one CPU since the previous poll (None on the first).
    pub cpu_pct: Option<f64>,
    #[serde(skip)]
    pub cpu_time_ns: Option<u64>,
    /// Its disks and passthrough devices as last read; None until read.
    #[serde(skip)]
    pub storage: Option<crate::storage::Storage>,
}

/// What a lifecycle event said about a VM and when: its new state, or
/// that it is gone (undefined). A poll that read libvirt before that
/// moment must not undo it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventMark {
    pub state: Option<VmState>,
    pub gone: bool,
    pub at: std::time::Instant,
}

/// Lays over a poll's VMs, read from libvirt at `read_at`, what events
/// said since (a VM destroyed while the poll was under way stays shut off,
/// not "running" until the next poll). Marks from before the read are in
/// it already and are dropped.
pub fn apply_newer_events(
    vms: &mut Vec<Vm>,
    marks: &mut std::collections::BTreeMap<String, EventMark>,
    read_at: std::time::Instant,
) {
    marks.retain(|_, m| m.at > read_at);
    vms.retain(|v| !marks.get(&v.uuid).is_some_and(|m| m.gone));
    for v in vms.iter_mut() {
        if let Some(st) = marks.get(&v.uuid).and_then(|m| m.state) {
            v.state = st;
        }
    }
}

/// Builds VMs from a fresh poll, computing CPU use against the previous.
pub fn vms_from_records(records: &[DomainRecord], previous: &[Vm], elapsed_s: f64) -> Vec<Vm> {
    let mut vms: Vec<Vm> = records
        .iter()
        .map(|r| {
            let state = VmState::from_libvirt(r.state, r.reason);
            let prev = previous.iter().find(|v| v.uuid == r.uuid);
            let cpu_pct = match (r.cpu_time_ns, prev.and_then(|p| p.cpu_time_ns)) {
                (Some(now), Some(before))
                    if elapsed_s > 0.0 && now >= before && state.is_active() =>
                {
                    Some(round1((now - before) as f64 / 1e9 / elapsed_s * 100.0))
                }
                _ => None,
            };
            Vm {
                name: r.name.clone(),
                uuid: r.uuid.clone(),
                state,
                // A busy domain (NOWAIT) may come without these: keep what
                // the last poll knew.
                vcpus: r.vcpus.or(prev.map(|p| p.vcpus)).unwrap_or(0),
                mem_mib: r
                    .max_mem_kib
                    .map(|k| k / 1024)
                    .or(prev.map(|p| p.mem_mib))
                    .unwrap_or(0),
                cpu_pct,
                cpu_time_ns: r.cpu_time_ns,
                storage: prev.and_then(|p| p.storage.clone()),
            }
        })
        .collect();
    vms.sort_by(|a, b| a.name.cmp(&b.name));
    vms
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Totals over a host's VMs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocation {
    pub running: u32,
    pub defined: u32,
    pub vcpus: u32,
    pub mem_mib: u64,
}

pub fn allocation(vms: &[Vm]) -> Allocation {
    let mut a = Allocation {
        defined: vms.len() as u32,
        ..Default::default()
    };
    for v in vms.iter().filter(|v| v.state.is_active()) {
        a.running += 1;
        a.vcpus += v.vcpus;
        a.mem_mib += v.mem_mib;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_newer_than_the_poll_wins_and_older_ones_are_dropped() {
        use std::collections::BTreeMap;
        use std::time::{Duration, Instant};
        let vm = |uuid: &str, state| Vm {
            name: uuid.into(),
            uuid: uuid.into(),
            state,
            vcpus: 1,
            mem_mib: 64,
            cpu_pct: None,
            cpu_time_ns: None,
            storage: None,
        };
        let read_at = Instant::now();
        let (before, after) = (
            read_at - Duration::from_millis(5),
            read_at + Duration::from_millis(5),
        );
        let mark = |state, gone, at| EventMark { state, gone, at };
        let mut marks = BTreeMap::from([
            (
                "web1".to_string(),
                mark(Some(VmState::Shutoff), false, after),
            ),
            (
                "db1".to_string(),
                mark(Some(VmState::Paused), false, before),
            ),
            ("tmp".to_string(), mark(None, true, after)),
        ]);
        let mut vms = vec![
            vm("web1", VmState::Running),
            vm("db1", VmState::Running),
            vm("tmp", VmState::Shutoff),
        ];
        apply_newer_events(&mut vms, &mut marks, read_at);
        let got: Vec<(&str, VmState)> = vms.iter().map(|v| (v.uuid.as_str(), v.state)).collect();
        // web1 was destroyed after the read; db1's pause is in the read
        // already (libvirt said running since); tmp was undefined.
        assert_eq!(got, [("web1", VmState::Shutoff), ("db1", VmState::Running)]);
        assert_eq!(marks.keys().collect::<Vec<_>>(), ["tmp", "web1"]);
        // The next poll, read later, takes libvirt's word again.
        let mut vms = vec![vm("web1", VmState::Running)];
        apply_newer_events(&mut vms, &mut marks, after + Duration::from_millis(1));
        assert_eq!(vms[0].state, VmState::Running);
        assert!(marks.is_empty());
    }

    fn rec(name: &str, state: i32, cpu: Option<u64>) -> DomainRecord {
        DomainRecord {
            name: name.into(),
            uuid: format!("uuid-{name}"),
            state,
            reason: 0,
            cpu_time_ns: cpu,
            vcpus: Some(2),
            max_mem_kib: Some(262_144),
        }
    }

    #[test]
    fn states_map_as_the_protocol_says() {
        assert_eq!(VmState::from_libvirt(1, 0), VmState::Running);
        assert_eq!(VmState::from_libvirt(3, 1), VmState::Paused);
        assert_eq!(VmState::from_libvirt(3, 2), VmState::Migrating);
        assert_eq!(VmState::from_libvirt(5, 5), VmState::Crashed);
        assert_eq!(VmState::from_libvirt(5, 1), VmState::Shutoff);
        assert_eq!(VmState::from_libvirt(6, 0), VmState::Crashed);
        assert_eq!(VmState::from_libvirt(99, 0), VmState::Shutoff);
    }

    #[test]
    fn cpu_percent_is_a_delta_over_the_period() {
        let first = vms_from_records(&[rec("a", 1, Some(1_000_000_000))], &[], 5.0);
        assert_eq!(first[0].cpu_pct, None);
        let second = vms_from_records(&[rec("a", 1, Some(3_500_000_000))], &first, 5.0);
        assert_eq!(second[0].cpu_pct, Some(50.0));
        // A counter that went backwards (VM restarted) gives no figure, not a negative one.
        let third = vms_from_records(&[rec("a", 1, Some(10))], &second, 5.0);
        assert_eq!(third[0].cpu_pct, None);
    }

    #[test]
    fn a_busy_domain_keeps_its_last_known_size() {
        let first = vms_from_records(&[rec("a", 1, None)], &[], 0.0);
        let mut busy = rec("a", 1, None);
        busy.max_mem_kib = None;
        busy.vcpus = None;
        let second = vms_from_records(&[busy], &first, 1.0);
        assert_eq!((second[0].mem_mib, second[0].vcpus), (256, 2));
    }

    #[test]
    fn allocation_counts_only_active_vms() {
        let vms = vms_from_records(
            &[rec("a", 1, None), rec("b", 5, None), rec("c", 3, None)],
            &[],
            0.0,
        );
        let a = allocation(&vms);
        assert_eq!((a.running, a.defined, a.vcpus, a.mem_mib), (2, 3, 4, 512));
        assert_eq!(vms[0].name, "a");
    }
}
