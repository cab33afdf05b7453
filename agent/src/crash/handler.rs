//! The crash thread: takes each crash the lifecycle events report, judges
//! it against this host's health now ([`super::decide`]), says what it
//! decided and why (a `vm.crash` event on every line, and the log), and
//! does it: restart it here, start it on a peer (shared disks only; the
//! peer's hook admits it or not, and the next peer is tried), or leave
//! it. Each VM's restarts are kept in the state directory
//! (`crashes.json`), so a restart of the agent does not refill a spent
//! budget. A faulty host with `[health] evacuate_on_faulty` is then
//! evacuated like `evacuate` would, and ends with the usual verdict.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use virt::connect::Connect;

use super::{decide, Action, Budget, CrashKind, Disks, Policy, Situation};
use crate::evacuation::Controller;
use crate::events::{Bus, Payload, VmCrash};
use crate::health::{eval, Level};
use crate::inventory::Inventory;
use crate::placement::VmDemand;

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
    pub host: String,
    pub uri: String,
    pub state_dir: PathBuf,
    /// For a VM whose metadata names none.
    pub policy: Policy,
    pub budget: Budget,
    pub evacuate_on_faulty: bool,
}

/// Handles the crashes `rx` brings until `stop`. Started once the
/// controller exists; crashes reported before wait in the channel.
pub fn spawn(
    cfg: Config,
    rx: mpsc::Receiver<Crash>,
    inventory: Arc<Inventory>,
    controller: Arc<Controller>,
    bus: Bus,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("crash".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(c) = rx.recv_timeout(Duration::from_millis(200)) {
                    handle(&cfg, &inventory, &controller, &bus, &c);
                }
            }
        })
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

fn publish(
    bus: &Bus,
    c: &Crash,
    health: Level,
    action: &'static str,
    dest: Option<String>,
    reason: String,
) {
    if action == "restart" || action == "start_on" {
        tracing::warn!(vm = %c.vm, crash = c.kind.as_str(), health = health.as_str(), action, reason = %reason, "crashed VM started again");
    } else {
        tracing::error!(vm = %c.vm, crash = c.kind.as_str(), health = health.as_str(), action, reason = %reason, "crashed VM not started again");
    }
    bus.publish(Payload::VmCrash(VmCrash {
        vm: c.vm.clone(),
        uuid: c.uuid.clone(),
        crash: c.kind,
        health,
        action,
        dest,
        reason,
    }));
}

fn handle(cfg: &Config, inventory: &Inventory, controller: &Arc<Controller>, bus: &Bus, c: &Crash) {
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
        publish(bus, c, health, "leave", None, reason);
        return;
    }
    let vm = snap.local.vms.iter().find(|v| v.uuid == c.uuid);
    let disks = match vm.and_then(|v| v.storage.as_ref()) {
        Some(st) if st.local.is_empty() && st.blockers.is_empty() => Disks::Shared,
        Some(_) => Disks::Local,
        None => Disks::Unknown,
    };
    let demand = VmDemand {
        name: c.vm.clone(),
        vcpus: vm.map_or(1, |v| v.vcpus),
        mem_mib: vm.map_or(0, |v| v.mem_mib),
        disks: Vec::new(),
        unmovable: None,
    };
    let (policy, policy_note) = vm_policy(&cfg.uri, &c.uuid, cfg.policy);
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
    // Placement only matters where the VM may go elsewhere.
    let placed = if health != Level::Ok && disks == Disks::Shared {
        controller.recovery_dest(&demand, &[])
    } else {
        Err("not looked for".into())
    };
    let d = decide(
        &Situation {
            kind: c.kind,
            health,
            policy,
            budget: cfg.budget,
            restarts: &restarts,
            disks,
            peer: placed.as_deref().map_err(String::as_str),
            evacuate_on_faulty: cfg.evacuate_on_faulty,
        },
        now,
    );
    let with_note = |r: String| match &policy_note {
        Some(n) => format!("{r} ({n})"),
        None => r,
    };
    match d.action {
        Action::RestartHere => {
            past.push(wall);
            save(&path, &history);
            match restart(&cfg.uri, &c.uuid) {
                Ok(()) => publish(bus, c, health, "restart", None, with_note(d.reason)),
                Err(e) => publish(
                    bus,
                    c,
                    health,
                    "failed",
                    None,
                    format!("{}; the restart failed: {e}", d.reason),
                ),
            }
        }
        Action::StartOn(first) => {
            past.push(wall);
            save(&path, &history);
            let (action, dest, reason) =
                start_elsewhere(cfg, inventory, controller, c, &demand, first, health);
            publish(bus, c, health, action, dest, with_note(reason));
        }
        Action::Leave => publish(bus, c, health, "leave", None, with_note(d.reason)),
    }
    if d.evacuate_host {
        let why = format!("{} crashed on this faulty host", c.vm);
        match controller.evacuate(&rackside_protocol::Dest::Auto, false, "crash handler") {
            Ok(e) => {
                tracing::warn!(evacuation = e.evacuation, reason = %why, "evacuating: [health] evacuate_on_faulty")
            }
            Err(r) => tracing::warn!(reason = %why, refused = %r.1, "no evacuation on this crash"),
        }
    }
}

/// The VM's own policy from its metadata, else `default`; a policy that
/// cannot be read leaves the default, with a note saying so.
fn vm_policy(uri: &str, uuid: &str, default: Policy) -> (Policy, Option<String>) {
    let xml = Connect::open(Some(uri))
        .map_err(|e| e.message().to_owned())
        .and_then(|conn| {
            let r = conn
                .lookup_domain_by_uuid_string(uuid)
                .and_then(|d| d.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE))
                .map_err(|e| e.message().to_owned());
            crate::libvirt_ffi::close(conn);
            r
        });
    let read = xml
        .map_err(|e| e.to_string())
        .and_then(|x| super::domxml::policy_of(&x).map_err(|e| e.to_string()));
    match read {
        Ok(Some(p)) => (p, None),
        Ok(None) => (default, None),
        Err(e) => {
            tracing::warn!(uuid, cause = %e, "crash policy not read; the config's default holds");
            (
                default,
                Some(format!("its own crash policy could not be read: {e}")),
            )
        }
    }
}

/// Tries `first`, then each next peer placement offers, until one starts
/// the VM or none is left. Returns the event's action, dest and reason.
fn start_elsewhere(
    cfg: &Config,
    inventory: &Inventory,
    controller: &Controller,
    c: &Crash,
    demand: &VmDemand,
    first: String,
    health: Level,
) -> (&'static str, Option<String>, String) {
    let crash = c.kind.as_str();
    let health = health.as_str();
    let mut tried: Vec<String> = Vec::new();
    let mut refusals: Vec<String> = Vec::new();
    let mut next = Ok(first);
    while let Ok(peer) = next {
        let uri = inventory
            .snapshot()
            .peers
            .iter()
            .find(|p| p.name == peer)
            .map(|p| p.uri.clone());
        let Some(uri) = uri else {
            refusals.push(format!("{peer}: not a configured peer"));
            tried.push(peer);
            next = controller.recovery_dest(demand, &tried);
            continue;
        };
        match start_on(&cfg.uri, &uri, &c.uuid, &cfg.host) {
            Ok(Started {
                undefined_here: Ok(()),
            }) => {
                return (
                    "start_on",
                    Some(peer.clone()),
                    format!("{crash}: started on {peer}: this host is {health}"),
                )
            }
            Ok(Started {
                undefined_here: Err(e),
            }) => {
                return (
                    "start_on",
                    Some(peer.clone()),
                    format!(
                        "{crash}: started on {peer}: this host is {health}; its definition \
                         stays here too ({e}): never start it here"
                    ),
                )
            }
            Err(StartError::Refused(why)) => {
                tracing::warn!(vm = %c.vm, peer = %peer, cause = %why, "crashed VM refused by a peer; trying the next");
                refusals.push(format!("{peer}: {}", hook_words(&why)));
                tried.push(peer);
                next = controller.recovery_dest(demand, &tried);
            }
            Err(StartError::Here(why)) => {
                return (
                    "failed",
                    None,
                    format!("{crash}: not started on {peer}: {why}"),
                )
            }
        }
    }
    let last = next.err().unwrap_or_default();
    (
        "leave",
        None,
        format!(
            "{crash}: left as it is: this host is {health} and no peer took it ({})",
            refusals
                .into_iter()
                .chain(std::iter::once(last).filter(|s| !s.is_empty()))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    )
}

/// A refusal by rackside-hook, as its own words: libvirt wraps them in a
/// line about the child process and its command line.
fn hook_words(libvirt_error: &str) -> &str {
    match libvirt_error.find("rackside: ") {
        Some(i) => libvirt_error[i..].lines().next().unwrap_or("").trim_end(),
        None => libvirt_error,
    }
}

struct Started {
    undefined_here: Result<(), String>,
}

#[derive(Debug)]
enum StartError {
    /// The peer did not start it (its hook refused, it failed there):
    /// another peer may.
    Refused(String),
    /// Something here failed: no peer is tried.
    Here(String),
}

/// Starts the crashed VM `uuid` on the peer at `peer_uri` from its
/// definition here, then removes that definition, so it runs and is
/// defined once. Shared disks only (the caller's check): nothing is
/// copied.
///
/// The definition goes to the peer with the recovery marker, so the
/// peer's hook judges the start as it judges a migration; once it runs,
/// the definition is written again without the marker.
fn start_on(
    local_uri: &str,
    peer_uri: &str,
    uuid: &str,
    host: &str,
) -> Result<Started, StartError> {
    let here =
        Connect::open(Some(local_uri)).map_err(|e| StartError::Here(e.message().to_owned()))?;
    let r = (|| {
        let dom = here
            .lookup_domain_by_uuid_string(uuid)
            .map_err(|e| StartError::Here(format!("no longer defined here ({})", e.message())))?;
        // A VM kept after a panic (on_crash preserve) is still active.
        if dom.is_active().unwrap_or(false) {
            dom.destroy()
                .map_err(|e| StartError::Here(e.message().to_owned()))?;
        }
        let xml = dom
            .xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE | virt::sys::VIR_DOMAIN_XML_SECURE)
            .map_err(|e| StartError::Here(e.message().to_owned()))?;
        let peer = Connect::open(Some(peer_uri))
            .map_err(|e| StartError::Refused(e.message().to_owned()))?;
        let started = start_there(&peer, &xml, uuid, host);
        crate::libvirt_ffi::close(peer);
        started?;
        let flags =
            virt::sys::VIR_DOMAIN_UNDEFINE_KEEP_NVRAM | virt::sys::VIR_DOMAIN_UNDEFINE_KEEP_TPM;
        Ok(Started {
            undefined_here: dom
                .undefine_flags(flags)
                .map_err(|e| e.message().to_owned()),
        })
    })();
    crate::libvirt_ffi::close(here);
    r
}

fn start_there(peer: &Connect, xml: &str, uuid: &str, host: &str) -> Result<(), StartError> {
    let refused = |e: virt::error::Error| StartError::Refused(e.message().to_owned());
    if let Ok(d) = peer.lookup_domain_by_uuid_string(uuid) {
        if d.is_active().unwrap_or(true) {
            return Err(StartError::Here("it is already active there".into()));
        }
    }
    let marked = super::domxml::with_recovery_marker(xml, host);
    let dom = peer.define_domain_xml(&marked).map_err(refused)?;
    if let Err(e) = dom.create() {
        // Refused or failed there: leave that host as it was.
        let _ = dom.undefine_flags(
            virt::sys::VIR_DOMAIN_UNDEFINE_KEEP_NVRAM | virt::sys::VIR_DOMAIN_UNDEFINE_KEEP_TPM,
        );
        return Err(refused(e));
    }
    // Its next boot there needs no admission: the plain definition.
    if let Err(e) = peer.define_domain_xml(xml) {
        tracing::warn!(uuid, cause = %e.message(), "started on the peer; its definition there keeps the recovery marker");
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_refusal_is_said_in_the_hooks_words() {
        let e = "Hook script execution failed: internal error: Child process (LC_ALL=C \
                 PATH=/usr/bin /etc/libvirt/hooks/qemu.d/rackside-hook c1 prepare begin -) \
                 unexpected exit status 1: rackside: hb is faulty (mc0: 1 uncorrected memory \
                 error in the last 1 s); not accepting VM\n";
        assert_eq!(
            hook_words(e),
            "rackside: hb is faulty (mc0: 1 uncorrected memory error in the last 1 s); not accepting VM"
        );
        assert_eq!(hook_words("Connection refused"), "Connection refused");
    }
}
