//! Events for subscribed sessions (docs/protocol.md "Events"): one broadcast
//! bus; every line's session takes what it subscribed to. Each event is a
//! typed value; `Serialize` gives its JSON `data`, the console its text.

use serde::Serialize;
use tokio::sync::broadcast;

use crate::migration::announce::Announce;
use crate::migration::timeline::Timeline;
use crate::report::Verdict;

/// A VM's lifecycle, as libvirt's events tell it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmStateChange {
    pub vm: String,
    pub uuid: String,
    pub what: &'static str,
    pub state: Option<&'static str>,
}

/// What rackside-hook reported about a migration it admitted or refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HookReport {
    pub vm: String,
    pub uuid: Option<String>,
    pub what: &'static str,
    pub source: &'static str,
    pub op: String,
    pub subop: String,
    pub refused: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationProgress {
    pub job: u64,
    pub vm: String,
    pub dest: String,
    pub percent: f64,
    /// None until the size is known.
    pub remaining_mib: Option<f64>,
    pub rate_mib_s: Option<f64>,
    pub eta_s: Option<u64>,
    pub downtime_ms: u64,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationDone {
    pub job: u64,
    pub vm: String,
    pub dest: String,
    pub downtime_ms: Option<u64>,
    pub seconds: f64,
    pub data_mib: Option<f64>,
    /// Where the time went (docs/protocol.md "Timeline").
    pub timeline: Timeline,
    /// Whether the VM's traffic was seen to follow it, or what the agent
    /// did about it (docs/protocol.md "Announcement"); null for an
    /// offline move.
    pub announce: Option<Announce>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationFailed {
    pub job: u64,
    pub vm: String,
    pub dest: String,
    pub error: String,
    /// The host the VM is on now, when known.
    pub now_on: Option<String>,
    pub retrying_on: Option<String>,
    /// What the agent did about it (e.g. resumed a VM libvirt left paused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostName {
    pub host: String,
}

/// `vm.crash`: a VM on this host crashed, and what the agent did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmCrash {
    pub vm: String,
    pub uuid: String,
    pub crash: crate::crash::CrashKind,
    /// This host's health when it was judged.
    pub health: crate::health::Level,
    /// `restart`, `start_on`, `leave`, or `failed` (the restart was tried
    /// and libvirt refused it).
    pub action: &'static str,
    pub dest: Option<String>,
    pub reason: String,
}

/// `host.health`: this host's health changed (level or reasons).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostHealth {
    pub host: String,
    pub health: crate::health::Level,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Missed {
    pub missed: u64,
}

/// Every event the agent sends; serialises as its `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Payload {
    VmState(VmStateChange),
    Hook(HookReport),
    MigrationProgress(MigrationProgress),
    MigrationDone(MigrationDone),
    MigrationFailed(MigrationFailed),
    EvacuationDone(Box<Verdict>),
    HostEmpty(HostName),
    HostPoweroff(HostName),
    HostHealth(HostHealth),
    VmCrash(VmCrash),
    EventsMissed(Missed),
}

impl Payload {
    /// The protocol's event name.
    pub fn name(&self) -> &'static str {
        match self {
            Payload::VmState(_) | Payload::Hook(_) => "vm.state",
            Payload::MigrationProgress(_) => "migration.progress",
            Payload::MigrationDone(_) => "migration.done",
            Payload::MigrationFailed(_) => "migration.failed",
            Payload::EvacuationDone(_) => "evacuation.done",
            Payload::HostEmpty(_) => "host.empty",
            Payload::HostPoweroff(_) => "host.poweroff",
            Payload::HostHealth(_) => "host.health",
            Payload::VmCrash(_) => "vm.crash",
            Payload::EventsMissed(_) => "events.missed",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: &'static str,
    /// RFC 3339, UTC.
    pub ts: String,
    pub data: Payload,
}

impl Event {
    pub fn now(data: Payload) -> Event {
        Event {
            name: data.name(),
            ts: now_rfc3339(),
            data,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<Event>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    pub fn new() -> Self {
        // A slow serial line that falls this far behind gets told it
        // missed events (Lagged) rather than holding everyone back.
        let (tx, _) = broadcast::channel(1024);
        Self { tx }
    }

    pub fn publish(&self, data: Payload) {
        let _ = self.tx.send(Event::now(data));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What a libvirt lifecycle event means to a person (`vm.state` "what").
pub fn lifecycle_word(event: i32, detail: i32) -> &'static str {
    // virDomainEventType and its per-type detail enums.
    match (event, detail) {
        (0, _) => "defined",
        (1, _) => "undefined",
        (2, 1) => "arriving",
        (2, _) => "started",
        (3, 1) => "migrating",
        (3, _) => "paused",
        (4, 1) => "arrived",
        (4, _) => "resumed",
        (5, 2) => "crashed",
        (5, 3) => "left",
        (5, _) => "stopped",
        (6, _) => "shutting_down",
        (7, _) => "paused",
        (8, _) => "crashed",
        _ => "changed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::timeline::Step;

    #[test]
    fn lifecycle_words() {
        assert_eq!(lifecycle_word(5, 1), "stopped");
        assert_eq!(lifecycle_word(5, 3), "left");
        assert_eq!(lifecycle_word(4, 1), "arrived");
        assert_eq!(lifecycle_word(8, 0), "crashed");
        assert_eq!(lifecycle_word(42, 0), "changed");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert!(t.ends_with('Z') && t.contains('T'), "{t}");
    }

    /// Each event's `data` is the JSON the protocol has always sent.
    #[test]
    fn payloads_serialise_to_the_protocol_shapes() {
        use serde_json::json;
        let v = |p: Payload| serde_json::to_value(&p).unwrap();
        assert_eq!(
            v(Payload::VmState(VmStateChange {
                vm: "a".into(),
                uuid: "u".into(),
                what: "started",
                state: Some("running"),
            })),
            json!({"vm": "a", "uuid": "u", "what": "started", "state": "running"})
        );
        assert_eq!(
            v(Payload::Hook(HookReport {
                vm: "a".into(),
                uuid: None,
                what: "refused",
                source: "hook",
                op: "migrate".into(),
                subop: "begin".into(),
                refused: Some("full".into()),
            })),
            json!({"vm": "a", "uuid": null, "what": "refused", "source": "hook",
                   "op": "migrate", "subop": "begin", "refused": "full"})
        );
        assert_eq!(
            v(Payload::MigrationProgress(MigrationProgress {
                job: 1,
                vm: "a".into(),
                dest: "hb".into(),
                percent: 50.0,
                remaining_mib: Some(10.0),
                rate_mib_s: None,
                eta_s: Some(3),
                downtime_ms: 100,
                note: None,
            })),
            json!({"job": 1, "vm": "a", "dest": "hb", "percent": 50.0, "remaining_mib": 10.0,
                   "rate_mib_s": null, "eta_s": 3, "downtime_ms": 100, "note": null})
        );
        assert_eq!(
            v(Payload::MigrationDone(MigrationDone {
                job: 1,
                vm: "a".into(),
                dest: "hb".into(),
                downtime_ms: Some(20),
                seconds: 1.5,
                data_mib: None,
                timeline: {
                    let mut t = Timeline::default();
                    t.mark(Step::Accepted, std::time::Duration::ZERO);
                    t.mark(Step::Done, std::time::Duration::from_millis(1500));
                    t
                },
                announce: Some(Announce::Seen { from_end_ms: -40 }),
            })),
            json!({"job": 1, "vm": "a", "dest": "hb", "downtime_ms": 20, "seconds": 1.5,
                   "data_mib": null, "timeline": [{"step": "accepted", "at_s": 0.0},
                   {"step": "done", "at_s": 1.5}],
                   "announce": {"result": "seen", "from_end_ms": -40}})
        );
        let failed = MigrationFailed {
            job: 1,
            vm: "a".into(),
            dest: "hb".into(),
            error: "no".into(),
            now_on: Some("ha".into()),
            retrying_on: None,
            note: None,
        };
        assert_eq!(
            v(Payload::MigrationFailed(failed.clone())),
            json!({"job": 1, "vm": "a", "dest": "hb", "error": "no", "now_on": "ha",
                   "retrying_on": null})
        );
        // New: what the agent did about it, only when it did something.
        let resumed = MigrationFailed {
            note: Some("resumed".into()),
            ..failed
        };
        assert_eq!(v(Payload::MigrationFailed(resumed))["note"], "resumed");
        let host = || HostName { host: "ha".into() };
        assert_eq!(v(Payload::HostEmpty(host())), json!({"host": "ha"}));
        assert_eq!(v(Payload::HostPoweroff(host())), json!({"host": "ha"}));
        assert_eq!(
            v(Payload::EventsMissed(Missed { missed: 3 })),
            json!({"missed": 3})
        );
        assert_eq!(Payload::HostPoweroff(host()).name(), "host.poweroff");
    }

    #[tokio::test]
    async fn subscribers_get_published_events() {
        let bus = Bus::new();
        let mut rx = bus.subscribe();
        bus.publish(Payload::HostEmpty(HostName { host: "a".into() }));
        let e = rx.recv().await.unwrap();
        assert_eq!(e.name, "host.empty");
        assert_eq!(serde_json::to_value(&e.data).unwrap()["host"], "a");
    }
}
