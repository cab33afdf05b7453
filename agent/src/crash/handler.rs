//! The crash thread: takes each crash the lifecycle events report, judges
//! it against this host's health now ([`super::decide`]), says what it
//! decided and why (a `vm.crash` event on every line, and the log), and
//! does it. Each VM's restarts are kept in the state directory
//! (`crashes.json`), so a restart of the agent does not refill a spent
//! budget.
//!
//! Starting a crashed VM on a peer is not done by this version: on a host
//! that is not ok a crashed VM is never restarted here and is left as it
//! is, with that said.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use virt::connect::Connect;

use super::{decide, Action, Budget, CrashKind, Disks, Policy, Situation};
use crate::events::{Bus, Payload, VmCrash};
use crate::health::{eval, Level};
use crate::inventory::Inventory;

/// The file in the state directory.
pub const FILE: &str = "crashes.json";

/// A crash a lifecycle event reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crash {
    pub vm: String,
    pub uuid: String,
    pub kind: CrashKind,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub uri: String,
    pub state_dir: PathBuf,
    pub policy: Policy,
    pub budget: Budget,
}

pub fn spawn(
    cfg: Config,
    inventory: Arc<Inventory>,
    bus: Bus,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(mpsc::Sender<Crash>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::Builder::new()
        .name("crash".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(c) = rx.recv_timeout(Duration::from_millis(200)) {
                    handle(&cfg, &inventory, &bus, &c);
                }
            }
        })?;
    Ok((tx, h))
}

/// Restart times per VM (UUID), seconds since the Unix epoch.
type History = BTreeMap<String, Vec<u64>>;

fn load(path: &Path) -> History {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), cause = %e, "crash history damaged; counting restarts from zero");
            History::new()
        }),
        Err(_) => History::new(),
    }
}

fn save(path: &Path, h: &History) {
    let tmp = path.with_extension("json.new");
    let r = serde_json::to_vec(h)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        tracing::warn!(file = %path.display(), cause = %e, "crash history not saved");
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn handle(cfg: &Config, inventory: &Inventory, bus: &Bus, c: &Crash) {
    let now = Instant::now();
    let wall = unix_now();
    let snap = inventory.snapshot();
    let health = eval::level(&snap.local.findings);
    // Exactly once: a copy active on a peer (a migration that ended there
    // after all) is the VM; this one must stay down.
    let elsewhere = snap.peers.iter().find(|p| {
        p.domains
            .iter()
            .any(|d| d.name == c.vm && d.state.is_active())
    });
    if let Some(p) = elsewhere {
        let reason = format!(
            "{}: left as it is: it is active on {}",
            c.kind.as_str(),
            p.name
        );
        tracing::warn!(vm = %c.vm, peer = %p.name, "crashed here but active on a peer: not restarted");
        bus.publish(Payload::VmCrash(VmCrash {
            vm: c.vm.clone(),
            uuid: c.uuid.clone(),
            crash: c.kind,
            health,
            action: "leave",
            dest: None,
            reason,
        }));
        return;
    }
    let path = cfg.state_dir.join(FILE);
    let mut history = load(&path);
    let past = history.entry(c.uuid.clone()).or_default();
    // Only what can still count: the budget's window.
    past.retain(|t| wall.saturating_sub(*t) < cfg.budget.window.as_secs());
    // (A restart from before this machine booted cannot be placed on its
    // monotonic clock, and the host was down in between: not counted.)
    let restarts: Vec<Instant> = past
        .iter()
        .filter_map(|t| now.checked_sub(Duration::from_secs(wall.saturating_sub(*t))))
        .collect();
    let d = decide(
        &Situation {
            kind: c.kind,
            health,
            policy: cfg.policy,
            budget: cfg.budget,
            restarts: &restarts,
            // Not read: only a host that is not ok would start it
            // elsewhere, and that is not done yet (module docs).
            disks: Disks::Local,
            peer: None,
            evacuate_on_faulty: false,
        },
        now,
    );
    let (action, reason) = match d.action {
        Action::RestartHere => {
            past.push(wall);
            save(&path, &history);
            match restart(&cfg.uri, &c.uuid) {
                Ok(()) => ("restart", d.reason),
                Err(e) => ("failed", format!("{}; the restart failed: {e}", d.reason)),
            }
        }
        Action::Leave if health != Level::Ok => (
            "leave",
            format!(
                "{}: left as it is: this host is {}, so it is not restarted here, \
                 and this version does not start crashed VMs on peers",
                c.kind.as_str(),
                health.as_str()
            ),
        ),
        Action::Leave | Action::StartOn(_) => ("leave", d.reason),
    };
    if action == "restart" {
        tracing::warn!(vm = %c.vm, crash = c.kind.as_str(), health = health.as_str(), reason = %reason, "crashed VM restarted");
    } else {
        tracing::error!(vm = %c.vm, crash = c.kind.as_str(), health = health.as_str(), action, reason = %reason, "crashed VM not restarted");
    }
    bus.publish(Payload::VmCrash(VmCrash {
        vm: c.vm.clone(),
        uuid: c.uuid.clone(),
        crash: c.kind,
        health,
        action,
        dest: None,
        reason,
    }));
}

/// Starts the VM again; one kept after a panic (crashed state) is
/// destroyed first.
fn restart(uri: &str, uuid: &str) -> Result<(), String> {
    let conn = Connect::open(Some(uri)).map_err(|e| e.message().to_owned())?;
    let r = (|| {
        let dom = conn
            .lookup_domain_by_uuid_string(uuid)
            .map_err(|e| format!("the VM is no longer defined here ({})", e.message()))?;
        if dom.is_active().unwrap_or(false) {
            dom.destroy().map_err(|e| e.message().to_owned())?;
        }
        dom.create().map_err(|e| e.message().to_owned())
    })();
    crate::libvirt_ffi::close(conn);
    r
}
