//! What to do about a crashed VM, judged against its host's health in the
//! same period: what an operator does by hand at 3 a.m. Pure: the crash,
//! the health, the policy and the VM's restart history in; one decision
//! with its reason out. (Acting on it is the agent's; docs/protocol.md.)
//!
//! | host      | policy  | budget | disks  | healthy peer | decision                    |
//! |-----------|---------|--------|--------|--------------|-----------------------------|
//! | ok        | restart | left   | any    | any          | restart here                |
//! | ok        | restart | spent  | any    | any          | leave it (budget spent)     |
//! | any       | leave   | any    | any    | any          | leave it (policy)           |
//! | not ok    | restart | left   | shared | yes          | start it on the peer        |
//! | not ok    | restart | left   | shared | no           | leave it (no healthy peer)  |
//! | not ok    | restart | left   | local  | any          | leave it (disks stay here)  |
//! | not ok    | restart | left   | unread | any          | leave it (disks not known)  |
//! | not ok    | restart | spent  | any    | any          | leave it (budget spent)     |
//!
//! Never restarted on a host that is not ok. "Start it on the peer" is
//! the first peer placement offers; the handler tries the next when that
//! one's hook refuses it (a peer's health is known only to that peer).
//! Separately, a faulty host with `evacuate_on_faulty` evacuates its
//! other VMs, whatever this VM's decision.

use std::time::{Duration, Instant};

use crate::health::Level;

/// How the VM went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashKind {
    /// The guest kernel panicked (pvpanic: libvirt's crashed/panicked).
    Panicked,
    /// The guest crashed and libvirt stopped it (its on_crash action).
    Crashed,
    /// QEMU died under it (killed, crashed).
    QemuDied,
    /// Its watchdog device fired.
    Watchdog,
}

impl CrashKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CrashKind::Panicked => "guest panicked",
            CrashKind::Crashed => "guest crashed",
            CrashKind::QemuDied => "QEMU died",
            CrashKind::Watchdog => "watchdog fired",
        }
    }
}

/// A VM's crash policy: from its metadata, else the config's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Restart,
    Leave,
}

/// Restarts allowed per VM: `max` in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max: u32,
    pub window: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max: 3,
            window: Duration::from_secs(600),
        }
    }
}

/// Where the VM's disks are: whether another host can start it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disks {
    /// Every disk is shared storage (or there is none).
    Shared,
    /// At least one disk (or a passed-through device) is this host's.
    Local,
    /// Not read yet: it cannot be started elsewhere on a guess.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Situation<'a> {
    pub kind: CrashKind,
    pub health: Level,
    pub policy: Policy,
    pub budget: Budget,
    /// When this VM was restarted (here or elsewhere) before.
    pub restarts: &'a [Instant],
    pub disks: Disks,
    /// The peer placement chose for it, or why there is none.
    pub peer: Result<&'a str, &'a str>,
    pub evacuate_on_faulty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    RestartHere,
    StartOn(String),
    Leave,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// For people and the journal: why.
    pub reason: String,
    /// Move every other VM off this host (faulty, `evacuate_on_faulty`).
    pub evacuate_host: bool,
}

/// Restarts within the budget's window before `now`.
fn recent(restarts: &[Instant], window: Duration, now: Instant) -> u32 {
    restarts
        .iter()
        .filter(|t| now.saturating_duration_since(**t) < window)
        .count() as u32
}

pub fn decide(s: &Situation<'_>, now: Instant) -> Decision {
    let evacuate_host = s.health == Level::Faulty && s.evacuate_on_faulty;
    let (action, reason) = choose(s, now);
    Decision {
        action,
        reason: format!("{}: {reason}", s.kind.as_str()),
        evacuate_host,
    }
}

fn choose(s: &Situation<'_>, now: Instant) -> (Action, String) {
    if s.policy == Policy::Leave {
        return (Action::Leave, "left as it is (crash policy: leave)".into());
    }
    let n = recent(s.restarts, s.budget.window, now);
    if n >= s.budget.max {
        return (
            Action::Leave,
            format!(
                "left as it is: restarted {n} times in the last {} min already",
                s.budget.window.as_secs().div_ceil(60)
            ),
        );
    }
    if s.health == Level::Ok {
        return (
            Action::RestartHere,
            format!(
                "restarted here (host ok; restart {} of {})",
                n + 1,
                s.budget.max
            ),
        );
    }
    let health = s.health.as_str();
    match (s.disks, s.peer) {
        (Disks::Local, _) => (
            Action::Leave,
            format!("left as it is: this host is {health} and its disks are local to it"),
        ),
        (Disks::Unknown, _) => (
            Action::Leave,
            format!("left as it is: this host is {health} and its disks are not known yet"),
        ),
        (Disks::Shared, Err(why)) => (
            Action::Leave,
            format!("left as it is: this host is {health} and no peer can take it ({why})"),
        ),
        (Disks::Shared, Ok(p)) => (
            Action::StartOn(p.to_owned()),
            format!("started on {p}: this host is {health}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn situation<'a>(health: Level, restarts: &'a [Instant]) -> Situation<'a> {
        Situation {
            kind: CrashKind::Panicked,
            health,
            policy: Policy::Restart,
            budget: Budget::default(),
            restarts,
            disks: Disks::Shared,
            peer: Ok("hb"),
            evacuate_on_faulty: false,
        }
    }

    /// Every row of the table in the module's documentation, in order.
    #[test]
    fn the_decision_table() {
        let now = Instant::now() + Duration::from_secs(3600);
        let two = [
            now - Duration::from_secs(60),
            now - Duration::from_secs(120),
        ];
        let spent = [now - Duration::from_secs(60); 3];
        let old = [now - Duration::from_secs(601); 5];
        let act = |s: Situation<'_>| decide(&s, now).action;

        assert_eq!(act(situation(Level::Ok, &two)), Action::RestartHere);
        assert_eq!(
            act(situation(Level::Ok, &old)),
            Action::RestartHere,
            "restarts older than the window do not count"
        );
        assert_eq!(act(situation(Level::Ok, &spent)), Action::Leave);
        for h in [Level::Ok, Level::Degraded, Level::Faulty] {
            let s = Situation {
                policy: Policy::Leave,
                ..situation(h, &[])
            };
            assert_eq!(act(s), Action::Leave, "{h:?}");
        }
        for h in [Level::Degraded, Level::Faulty] {
            assert_eq!(act(situation(h, &two)), Action::StartOn("hb".into()));
            let no_peer = Situation {
                peer: Err("hb: full"),
                ..situation(h, &[])
            };
            assert_eq!(act(no_peer), Action::Leave);
            let unknown = Situation {
                disks: Disks::Unknown,
                ..situation(h, &[])
            };
            assert_eq!(act(unknown), Action::Leave);
            let local = Situation {
                disks: Disks::Local,
                ..situation(h, &[])
            };
            assert_eq!(act(local), Action::Leave);
            assert_eq!(act(situation(h, &spent)), Action::Leave);
        }
    }

    #[test]
    fn each_decision_says_why() {
        let now = Instant::now() + Duration::from_secs(3600);
        let spent = [now - Duration::from_secs(5); 3];
        let reason = |s: Situation<'_>| decide(&s, now).reason;
        assert_eq!(
            reason(situation(Level::Ok, &[])),
            "guest panicked: restarted here (host ok; restart 1 of 3)"
        );
        assert_eq!(
            reason(situation(Level::Ok, &spent)),
            "guest panicked: left as it is: restarted 3 times in the last 10 min already"
        );
        assert_eq!(
            reason(Situation {
                kind: CrashKind::QemuDied,
                ..situation(Level::Faulty, &[])
            }),
            "QEMU died: started on hb: this host is faulty"
        );
        assert_eq!(
            reason(Situation {
                disks: Disks::Local,
                kind: CrashKind::Watchdog,
                ..situation(Level::Degraded, &[])
            }),
            "watchdog fired: left as it is: this host is degraded and its disks are local to it"
        );
        assert_eq!(
            reason(Situation {
                peer: Err("hb: full"),
                ..situation(Level::Faulty, &[])
            }),
            "guest panicked: left as it is: this host is faulty and no peer can take it (hb: full)"
        );
    }

    #[test]
    fn only_a_faulty_host_with_the_option_set_is_evacuated() {
        let now = Instant::now();
        for (h, opt, want) in [
            (Level::Faulty, true, true),
            (Level::Faulty, false, false),
            (Level::Degraded, true, false),
            (Level::Ok, true, false),
        ] {
            let s = Situation {
                evacuate_on_faulty: opt,
                policy: Policy::Leave,
                ..situation(h, &[])
            };
            assert_eq!(decide(&s, now).evacuate_host, want, "{h:?} {opt}");
        }
    }
}
