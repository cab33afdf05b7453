//! Events for subscribed sessions (docs/protocol.md "Events"): one broadcast
//! bus; every line's session takes what it subscribed to.

use serde_json::Value;
use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: &'static str,
    /// RFC 3339, UTC.
    pub ts: String,
    pub data: Value,
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

    pub fn publish(&self, name: &'static str, data: Value) {
        let _ = self.tx.send(Event {
            name,
            ts: now_rfc3339(),
            data,
        });
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

    #[tokio::test]
    async fn subscribers_get_published_events() {
        let bus = Bus::new();
        let mut rx = bus.subscribe();
        bus.publish("vm.state", serde_json::json!({"vm": "a"}));
        let e = rx.recv().await.unwrap();
        assert_eq!(e.name, "vm.state");
        assert_eq!(e.data["vm"], "a");
    }
}
