//! Whether this host accepts an incoming VM, and the promise list that
//! keeps two concurrent admissions from taking the same room. Pure: state,
//! promises, clock and host name come in as values.

use std::fmt;

use serde::{Deserialize, Serialize};

use rackside_contract::Published;

/// How long room stays promised to an admitted VM that has not arrived.
pub const PROMISE_SECS: u64 = 600;

/// Room promised to an admitted VM until it arrives (or the promise
/// expires).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promise {
    pub vm: String,
    pub uuid: Option<String>,
    pub mem_mib: u64,
    pub until_unix: u64,
}

impl Promise {
    /// Same VM: same name, or same uuid when both have one.
    pub fn is_for(&self, vm: &str, uuid: Option<&str>) -> bool {
        self.vm == vm || (uuid.is_some() && self.uuid.as_deref() == uuid)
    }

    pub fn active(&self, now_unix: u64) -> bool {
        self.until_unix > now_unix
    }
}

/// `RUN_DIR/promises.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Promises {
    pub promises: Vec<Promise>,
}

impl Promises {
    /// Drops expired promises.
    pub fn prune(&mut self, now_unix: u64) {
        self.promises.retain(|p| p.active(now_unix));
    }

    /// Adds `p`, replacing any promise for the same VM.
    pub fn upsert(&mut self, p: Promise) {
        self.release(&p.vm, p.uuid.as_deref());
        self.promises.push(p);
    }

    /// Removes the promises for a VM; true when one was removed.
    pub fn release(&mut self, vm: &str, uuid: Option<&str>) -> bool {
        let before = self.promises.len();
        self.promises.retain(|p| !p.is_for(vm, uuid));
        self.promises.len() != before
    }

    /// Memory promised to other VMs, still valid at `now_unix`.
    pub fn promised_mib(&self, now_unix: u64, except_vm: &str, except_uuid: Option<&str>) -> u64 {
        self.promises
            .iter()
            .filter(|p| p.active(now_unix) && !p.is_for(except_vm, except_uuid))
            .fold(0u64, |sum, p| sum.saturating_add(p.mem_mib))
    }
}

/// Why a VM is not accepted. Its `Display` is the line the source host's
/// libvirt shows in the migration error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Maintenance {
        host: String,
    },
    /// The agent found the host's hardware degraded or faulty.
    Unhealthy {
        host: String,
        health: String,
        reasons: Vec<String>,
    },
    NoRoom {
        host: String,
        free_mib: u64,
        need_mib: u64,
    },
    /// The agent speaks for this host but the VM's size cannot be read:
    /// admitting would skip the capacity check.
    Unreadable {
        host: String,
        reason: String,
    },
    /// The VM fits, but the room could not be promised to it: admitting
    /// would let a concurrent migration take the same room.
    NoPromise {
        host: String,
        reason: String,
    },
}

/// Longest reason kept in a refusal line.
pub const REASON_MAX: usize = 200;

/// One line of printable text, at most [`REASON_MAX`] characters: a
/// reason may quote the XML, and the line ends up in the source host's
/// error message and the agent's report.
pub fn reason(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(REASON_MAX + 1)
        .collect();
    if out.chars().count() > REASON_MAX {
        out = out.chars().take(REASON_MAX - 3).collect();
        out.push_str("...");
    }
    out
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Maintenance { host } => {
                write!(f, "rackside: {host} is in maintenance; not accepting VM")
            }
            Refusal::Unhealthy {
                host,
                health,
                reasons,
            } => write!(
                f,
                "rackside: {host} is {health} ({}); not accepting VM",
                reason(&reasons.join("; "))
            ),
            Refusal::NoRoom {
                host,
                free_mib,
                need_mib,
            } => write!(
                f,
                "rackside: {host} has {free_mib} MiB free for VMs, VM needs {need_mib} MiB"
            ),
            Refusal::Unreadable { host, reason } => write!(
                f,
                "rackside: {host} cannot read the incoming domain XML ({reason}); not accepting VM"
            ),
            Refusal::NoPromise { host, reason } => write!(
                f,
                "rackside: {host} cannot promise room to the VM ({reason}); not accepting VM"
            ),
        }
    }
}

/// The incoming VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming<'a> {
    pub vm: &'a str,
    pub uuid: Option<&'a str>,
    /// `None`: unknown (no readable XML): the capacity check is skipped.
    pub mem_mib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Admit; with `Some`, promise this much memory.
    Admit {
        promise_mib: Option<u64>,
    },
    Refuse(Refusal),
}

/// Maintenance and health: the checks that need neither XML nor
/// promises. `state` is `None` when missing, unreadable or stale: admit.
pub fn check_maintenance(state: Option<&Published>, host: &str) -> Option<Refusal> {
    let s = state?;
    if s.in_maintenance() {
        return Some(Refusal::Maintenance {
            host: host.to_owned(),
        });
    }
    s.unhealthy().then(|| Refusal::Unhealthy {
        host: host.to_owned(),
        health: s.health.clone().unwrap_or_default(),
        reasons: s.health_reasons.clone(),
    })
}

/// The whole decision. The VM fits when its memory is at most what is
/// left after committed memory, the reserve and other VMs' promises.
pub fn decide(
    state: Option<&Published>,
    promises: &Promises,
    vm: Incoming<'_>,
    now_unix: u64,
    host: &str,
) -> Decision {
    if let Some(r) = check_maintenance(state, host) {
        return Decision::Refuse(r);
    }
    let (Some(state), Some(need_mib)) = (state, vm.mem_mib) else {
        return Decision::Admit { promise_mib: None };
    };
    let free_mib = state
        .free_mib()
        .saturating_sub(promises.promised_mib(now_unix, vm.vm, vm.uuid));
    if need_mib > free_mib {
        return Decision::Refuse(Refusal::NoRoom {
            host: host.to_owned(),
            free_mib,
            need_mib,
        });
    }
    Decision::Admit {
        promise_mib: Some(need_mib),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn state(total: u64, committed: u64, reserve: u64) -> Published {
        Published {
            host: None,
            state: "active".into(),
            maintenance: false,
            mem_total_mib: total,
            mem_committed_mib: committed,
            mem_reserve_mib: reserve,
            updated_unix: NOW,
            health: None,
            health_reasons: Vec::new(),
        }
    }

    fn promise(vm: &str, uuid: Option<&str>, mem: u64, until: u64) -> Promise {
        Promise {
            vm: vm.into(),
            uuid: uuid.map(Into::into),
            mem_mib: mem,
            until_unix: until,
        }
    }

    fn vm(mem: u64) -> Incoming<'static> {
        Incoming {
            vm: "web1",
            uuid: Some("u1"),
            mem_mib: Some(mem),
        }
    }

    #[test]
    fn an_unhealthy_host_refuses_and_a_sound_or_older_one_admits() {
        let mut s = state(4096, 0, 0);
        s.health = Some("faulty".into());
        s.health_reasons = vec!["mc0: 3 uncorrected memory errors in the last 5 s".into()];
        let d = decide(Some(&s), &Promises::default(), vm(1), NOW, "kvm3");
        let Decision::Refuse(r) = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            r.to_string(),
            "rackside: kvm3 is faulty (mc0: 3 uncorrected memory errors in the last 5 s); \
             not accepting VM"
        );
        assert!(
            check_maintenance(Some(&s), "kvm3").is_some(),
            "refused without XML too"
        );
        for sound in [Some("ok"), None] {
            s.health = sound.map(String::from);
            assert!(matches!(
                decide(Some(&s), &Promises::default(), vm(1), NOW, "kvm3"),
                Decision::Admit { .. }
            ));
        }
    }

    #[test]
    fn maintenance_refuses() {
        let mut s = state(4096, 0, 0);
        s.maintenance = true;
        let d = decide(Some(&s), &Promises::default(), vm(1), NOW, "kvm3");
        let Decision::Refuse(r) = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            r.to_string(),
            "rackside: kvm3 is in maintenance; not accepting VM"
        );
        s.maintenance = false;
        s.state = "evacuating".into();
        assert!(matches!(
            decide(Some(&s), &Promises::default(), vm(1), NOW, "h"),
            Decision::Refuse(Refusal::Maintenance { .. })
        ));
    }

    #[test]
    fn maintenance_refuses_without_xml() {
        let mut s = state(4096, 0, 0);
        s.state = "maintenance".into();
        let incoming = Incoming {
            vm: "a",
            uuid: None,
            mem_mib: None,
        };
        assert!(matches!(
            decide(Some(&s), &Promises::default(), incoming, NOW, "h"),
            Decision::Refuse(Refusal::Maintenance { .. })
        ));
    }

    #[test]
    fn fits_exactly_at_the_boundary() {
        let s = state(4096, 1024, 1024); // 2048 free
        assert_eq!(
            decide(Some(&s), &Promises::default(), vm(2048), NOW, "h"),
            Decision::Admit {
                promise_mib: Some(2048)
            }
        );
        let d = decide(Some(&s), &Promises::default(), vm(2049), NOW, "kvm3");
        let Decision::Refuse(r) = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            r.to_string(),
            "rackside: kvm3 has 2048 MiB free for VMs, VM needs 2049 MiB"
        );
    }

    #[test]
    fn active_promises_take_room() {
        let s = state(4096, 1024, 1024); // 2048 free
        let p = Promises {
            promises: vec![promise("other", Some("u2"), 1000, NOW + 10)],
        };
        assert!(matches!(
            decide(Some(&s), &p, vm(1048), NOW, "h"),
            Decision::Admit { .. }
        ));
        assert!(matches!(
            decide(Some(&s), &p, vm(1049), NOW, "h"),
            Decision::Refuse(Refusal::NoRoom {
                free_mib: 1048,
                need_mib: 1049,
                ..
            })
        ));
    }

    #[test]
    fn expired_promises_are_ignored() {
        let s = state(4096, 1024, 1024);
        let p = Promises {
            promises: vec![
                promise("other", None, 2048, NOW),
                promise("x", None, 9999, NOW - 1),
            ],
        };
        assert!(matches!(
            decide(Some(&s), &p, vm(2048), NOW, "h"),
            Decision::Admit { .. }
        ));
        let mut p2 = p.clone();
        p2.prune(NOW);
        assert!(p2.promises.is_empty());
    }

    #[test]
    fn own_promise_does_not_count_against_itself() {
        let s = state(4096, 1024, 1024);
        let p = Promises {
            promises: vec![promise("web1", Some("u1"), 2048, NOW + 100)],
        };
        assert!(matches!(
            decide(Some(&s), &p, vm(2048), NOW, "h"),
            Decision::Admit { .. }
        ));
    }

    #[test]
    fn promise_replaced_for_the_same_vm() {
        let mut p = Promises::default();
        p.upsert(promise("web1", Some("u1"), 100, NOW + 600));
        p.upsert(promise("db", Some("u2"), 50, NOW + 600));
        p.upsert(promise("web1", Some("u1"), 200, NOW + 700));
        assert_eq!(p.promises.len(), 2);
        assert_eq!(p.promises[1], promise("web1", Some("u1"), 200, NOW + 700));
        // Same uuid under a new name (a rename) is the same VM.
        p.upsert(promise("web1-renamed", Some("u1"), 300, NOW + 700));
        assert_eq!(p.promises.len(), 2);
        assert_eq!(p.promised_mib(NOW, "nobody", None), 350);
    }

    #[test]
    fn release_by_name_or_uuid() {
        let mut p = Promises {
            promises: vec![
                promise("a", Some("ua"), 1, NOW + 1),
                promise("b", None, 1, NOW + 1),
            ],
        };
        assert!(p.release("zz", Some("ua")));
        assert!(p.release("b", None));
        assert!(!p.release("b", None));
        assert!(p.promises.is_empty());
        // Two VMs without a uuid are not the same VM.
        let q = promise("a", None, 1, NOW + 1);
        assert!(!q.is_for("b", None));
    }

    #[test]
    fn missing_state_admits_without_promise() {
        assert_eq!(
            decide(None, &Promises::default(), vm(1 << 40), NOW, "h"),
            Decision::Admit { promise_mib: None }
        );
    }

    #[test]
    fn unknown_memory_admits_without_promise() {
        let s = state(1, 1, 1);
        let incoming = Incoming {
            vm: "a",
            uuid: None,
            mem_mib: None,
        };
        assert_eq!(
            decide(Some(&s), &Promises::default(), incoming, NOW, "h"),
            Decision::Admit { promise_mib: None }
        );
    }

    #[test]
    fn reasons_are_one_bounded_line() {
        assert_eq!(reason("a\nb\u{1b}[2Jc"), "a b [2Jc");
        let long = reason(&"x".repeat(1000));
        assert_eq!(long.chars().count(), REASON_MAX);
        assert!(long.ends_with("..."));
        assert_eq!(reason(&"é".repeat(REASON_MAX)), "é".repeat(REASON_MAX));
        let r = Refusal::Unreadable {
            host: "kvm2".into(),
            reason: reason("cannot parse the domain XML"),
        };
        assert_eq!(
            r.to_string(),
            "rackside: kvm2 cannot read the incoming domain XML (cannot parse the domain XML); not accepting VM"
        );
        let r = Refusal::NoPromise {
            host: "kvm2".into(),
            reason: "promises.lock still held after 2s".into(),
        };
        assert_eq!(
            r.to_string(),
            "rackside: kvm2 cannot promise room to the VM (promises.lock still held after 2s); not accepting VM"
        );
    }

    #[test]
    fn promised_sum_saturates() {
        let p = Promises {
            promises: vec![
                promise("a", None, u64::MAX, NOW + 1),
                promise("b", None, u64::MAX, NOW + 1),
            ],
        };
        assert_eq!(p.promised_mib(NOW, "c", None), u64::MAX);
    }
}
