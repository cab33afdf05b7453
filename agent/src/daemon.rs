//! The daemon: wires configuration, inventory, lines and systemd together
//! and runs until SIGTERM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::auth::Logins;
use crate::backend::AgentBackend;
use crate::config::Config;
use crate::console::answer::{self, HostInfo};
use crate::console::line::{self, LineConfig};
use crate::console::session::SessionConfig;
use crate::evacuation::journal::{Journal, JournalError};
use crate::evacuation::{Controller, Ctx, Threads};
use crate::events::Bus;
use crate::hypervisor::libvirt::Libvirt;
use crate::inventory::local::LocalPoller;
use crate::inventory::{peers, Inventory};
use crate::libvirt_ffi;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot start a thread")]
    Thread(#[source] std::io::Error),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("state directory")]
    Journal(#[from] JournalError),
}

/// How long the agent waits for a first successful inventory before it
/// declares itself ready anyway, blind: libvirtd down must not fail the
/// unit's start (TimeoutStartSec=60s) nor keep the console dark, and the
/// poller retries meanwhile (after 0.5, 1, 2, 4 and 8 s).
const FIRST_POLL_LIMIT: Duration = Duration::from_secs(15);

/// Waits for the first successful poll of the local libvirt, at most
/// `limit`, telling systemd why while it waits. Err: the last reason
/// libvirt gave (or that it gave none) when the limit passed.
fn wait_first_inventory(
    first: &mpsc::Receiver<Result<(), String>>,
    limit: Duration,
    mut tell: impl FnMut(&str),
) -> Result<(), String> {
    let end = std::time::Instant::now() + limit;
    let mut last: Option<String> = None;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        match first.recv_timeout(left) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => {
                if last.as_deref() != Some(&e) {
                    tell(&format!("waiting for libvirt, unreachable: {e}"));
                }
                last = Some(e);
            }
            Err(_) => {
                return Err(last.unwrap_or_else(|| "no answer from libvirt".into()));
            }
        }
    }
}

/// The STATUS sent with READY.
fn ready_status(first: &Result<(), String>) -> String {
    match first {
        Ok(()) => "inventory in, serving".into(),
        Err(e) => format!(
            "libvirt unreachable after {} s: {e}; serving blind, answers that need libvirt say unavailable",
            FIRST_POLL_LIMIT.as_secs()
        ),
    }
}

pub fn run(cfg: Config) -> Result<(), DaemonError> {
    let host = cfg.host_name();
    // The journal first: a state directory we cannot write is a reason not
    // to start, since nothing could be recovered after a crash.
    let (journal, recovered) = Journal::open(&cfg.state.dir)?;
    libvirt_ffi::start_event_loop();
    let inventory = Inventory::new(&cfg.peer, cfg.poll_interval());
    let bus = Bus::new();
    let stop = Arc::new(AtomicBool::new(false));

    let (first_tx, first_rx) = mpsc::channel();
    // Crashes seen before the controller exists wait here for it.
    let (crashes, crash_rx) = mpsc::channel();
    LocalPoller {
        uri: cfg.libvirt.uri.clone(),
        inventory: inventory.clone(),
        bus: bus.clone(),
        stop: stop.clone(),
        first_poll: Some(first_tx),
        crashes: Some(crashes),
    }
    .spawn()
    .map_err(DaemonError::Thread)?;
    peers::spawn_all(&inventory, &stop).map_err(DaemonError::Thread)?;
    let probes = Arc::new(crate::health::probe::Latest::default());
    if !cfg.health.probes.is_empty() {
        crate::health::probe::spawn(
            crate::health::probe::Prober::new(
                cfg.health.probes.clone(),
                crate::health::probe::Host::local(),
                Duration::from_secs(cfg.health.probe_timeout_s),
                cfg.health.edac_ce_degraded,
            ),
            Duration::from_secs(cfg.health.probe_period_s),
            probes.clone(),
            stop.clone(),
        )
        .map_err(DaemonError::Thread)?;
    }
    crate::health::watch::spawn(
        crate::health::watch::Watch {
            host: cfg.host_name(),
            sysfs_root: cfg.health.sysfs_root.clone(),
            links: cfg.health.links.clone(),
            period: Duration::from_secs(cfg.health.period_s),
            thresholds: cfg.health.thresholds(),
            probes,
        },
        inventory.clone(),
        bus.clone(),
        stop.clone(),
    )
    .map_err(DaemonError::Thread)?;

    let first = wait_first_inventory(&first_rx, FIRST_POLL_LIMIT, |status| {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(status)]);
    });
    if let Err(e) = &first {
        tracing::warn!(
            cause = %e,
            "no first inventory within {} s; serving blind",
            FIRST_POLL_LIMIT.as_secs()
        );
    }

    let controller = Controller::new(
        Ctx::from_config(&cfg),
        inventory.clone(),
        bus.clone(),
        journal,
        &recovered,
        Arc::new(Libvirt::new(&cfg.libvirt.uri)),
        Arc::new(Threads),
    );
    controller.recover(&recovered);
    let crash_thread = crate::crash::handler::spawn(
        crate::crash::handler::Config {
            host: host.clone(),
            uri: cfg.libvirt.uri.clone(),
            state_dir: cfg.state.dir.clone(),
            policy: cfg.crash.policy,
            budget: crate::crash::Budget {
                max: cfg.crash.max_restarts,
                window: Duration::from_secs(cfg.crash.window_s),
            },
            evacuate_on_faulty: cfg.health.evacuate_on_faulty,
        },
        crash_rx,
        inventory.clone(),
        controller.clone(),
        bus.clone(),
        stop.clone(),
    )
    .map_err(DaemonError::Thread)?;
    let hook_reports = crate::hookio::spawn_listener(&cfg.state.run_dir, bus.clone(), stop.clone())
        .inspect_err(|e| tracing::warn!(cause = %crate::hookio::chain(e), dir = %cfg.state.run_dir.display(), "no hook reports: the hook socket is not ours to bind"))
        .ok();
    spawn_publisher(&cfg, inventory.clone(), controller.clone(), stop.clone())
        .map_err(DaemonError::Thread)?;
    let backend = Arc::new(AgentBackend {
        controller,
        inventory: inventory.clone(),
        host: HostInfo {
            name: host.clone(),
            location: cfg.host.location.clone(),
            libvirt_uri: cfg.libvirt.uri.clone(),
            version: env!("CARGO_PKG_VERSION"),
        },
    });
    // One count of failed logins for every line, kept across restarts.
    let (logins, problem) = Logins::open(
        &cfg.state.dir,
        cfg.auth.max_failures,
        Duration::from_secs(cfg.auth.lockout_s),
    );
    if let Some(p) = problem {
        tracing::warn!(cause = %p, "failed logins");
    }
    let logins = Arc::new(logins);
    let mut lines = Vec::new();
    for c in &cfg.console {
        let lc = LineConfig {
            path: c.path.clone(),
            baud: c.baud,
            session: SessionConfig {
                host: host.clone(),
                location: cfg.host.location.clone(),
                line: c.path.display().to_string(),
                echo: c.echo,
                pin_hash: cfg.auth.pin_hash.clone(),
                idle_timeout: Duration::from_secs(cfg.auth.idle_timeout_s),
                login_lifetime: Duration::from_secs(cfg.auth.login_lifetime_s),
                utc_offset: crate::console::clock::local_utc_offset_s,
            },
        };
        lines.push(
            line::spawn(
                lc,
                backend.clone(),
                logins.clone(),
                bus.clone(),
                stop.clone(),
            )
            .map_err(DaemonError::Thread)?,
        );
    }

    let status = ready_status(&first);
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    tracing::info!(host = %host, lines = cfg.console.len(), peers = cfg.peer.len(), "rackside-agent ready");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    rt.block_on(supervise(inventory))?;

    stop.store(true, Ordering::Relaxed);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    for l in lines {
        let _ = l.join();
    }
    let _ = crash_thread.join();
    // The listener removes its socket (if still ours) on the way out.
    if let Some(h) = hook_reports {
        let _ = h.join();
    }
    tracing::info!("rackside-agent stopped");
    Ok(())
}

/// Publishes this host's state for rackside-hook every `PUBLISH_PERIOD`:
/// the hook decides admission of incoming migrations from it.
fn spawn_publisher(
    cfg: &Config,
    inventory: Arc<Inventory>,
    controller: Arc<Controller>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let run_dir = cfg.state.run_dir.clone();
    let host = cfg.host_name();
    let reserve = cfg.placement.mem_reserve_mib;
    std::thread::Builder::new().name("publish".into()).spawn(move || {
        let mut warned = false;
        let mut last: Option<(std::time::Instant, Glance)> = None;
        while !stop.load(Ordering::Relaxed) {
            // Maintenance, the host's state and its health reach the hook
            // within a glance (an evacuation that just started must refuse
            // incoming migrations at once: two hosts evacuating onto each
            // other otherwise swap their VMs; a host just found faulty
            // must not take a crashed peer's VM); the rest once a period.
            // (Without the VM count, which changes once a period at most:
            // no inventory snapshot every glance.)
            let now = Glance {
                word: controller.host_state(None),
                maintenance: controller.maintenance_on(),
                health: inventory.read(|s| crate::health::eval::level(&s.local.findings)),
            };
            let due = last.as_ref().is_none_or(|(at, seen)| {
                *seen != now || at.elapsed() >= rackside_contract::PUBLISH_PERIOD
            });
            if !due {
                std::thread::sleep(PUBLISH_GLANCE);
                continue;
            }
            let maint = now.maintenance;
            last = Some((std::time::Instant::now(), now));
            let s = inventory.snapshot();
            let alloc = crate::inventory::model::allocation(&s.local.vms);
            // A blind host is never published as "empty" from a stale list.
            let known = s.live_vms_running(std::time::Instant::now());
            let p = crate::hookio::Published {
                host: Some(host.clone()),
                state: controller.host_state(known).to_owned(),
                maintenance: maint,
                mem_total_mib: s.local.figures.mem_total_mib,
                mem_committed_mib: alloc.mem_mib,
                mem_reserve_mib: reserve,
                updated_unix: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                // The hardware's findings only: the agent's own sight of
                // libvirt says nothing about whether VMs can run here.
                health: Some(crate::health::eval::level(&s.local.findings).as_str().into()),
                health_reasons: s.local.findings.iter().map(|f| f.reason.clone()).collect(),
            };
            if let Err(e) = crate::hookio::publish(&run_dir, &p) {
                if !warned {
                    tracing::warn!(cause = %e, dir = %run_dir.display(), "cannot publish state for the hook");
                    warned = true;
                }
            }
            std::thread::sleep(PUBLISH_GLANCE);
        }
    })
}

/// What the publisher looks at every glance: a change is published at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Glance {
    word: &'static str,
    maintenance: bool,
    health: crate::health::Level,
}

/// How often the publisher looks for a change of maintenance, state or
/// health.
const PUBLISH_GLANCE: Duration = Duration::from_millis(50);

/// Watchdog pings and status lines until SIGTERM or SIGINT.
async fn supervise(inventory: Arc<Inventory>) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let watchdog = sd_notify::watchdog_enabled();
    let tick = watchdog.map_or(Duration::from_secs(10), |w| {
        (w / 2).min(Duration::from_secs(10))
    });
    let mut interval = tokio::time::interval(tick);
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM"); return Ok(()); }
            _ = int.recv() => { tracing::info!("SIGINT"); return Ok(()); }
            _ = interval.tick() => {
                let status = answer::summary(&inventory.snapshot(), std::time::Instant::now());
                let mut states = vec![sd_notify::NotifyState::Status(&status)];
                if watchdog.is_some() {
                    states.push(sd_notify::NotifyState::Watchdog);
                }
                let _ = sd_notify::notify(&states);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_waits_past_failures_for_the_first_success() {
        let (tx, rx) = mpsc::channel();
        tx.send(Err("refused".to_string())).unwrap();
        tx.send(Err("refused".to_string())).unwrap();
        tx.send(Err("no socket".to_string())).unwrap();
        tx.send(Ok(())).unwrap();
        let mut told = Vec::new();
        let r = wait_first_inventory(&rx, Duration::from_secs(3600), |s| told.push(s.to_owned()));
        assert_eq!(r, Ok(()));
        // Each new reason once, as it came.
        assert_eq!(
            told,
            [
                "waiting for libvirt, unreachable: refused",
                "waiting for libvirt, unreachable: no socket"
            ]
        );
        assert_eq!(ready_status(&r), "inventory in, serving");
    }

    #[test]
    fn ready_after_the_limit_says_libvirt_is_unreachable() {
        let (tx, rx) = mpsc::channel();
        tx.send(Err("Connection refused".to_string())).unwrap();
        let r = wait_first_inventory(&rx, Duration::ZERO, |_| {});
        assert_eq!(r, Err("Connection refused".to_string()));
        assert!(ready_status(&r).contains("libvirt unreachable"));
        assert!(ready_status(&r).contains("Connection refused"));
        // A poller that never answered at all.
        let (_tx, rx) = mpsc::channel::<Result<(), String>>();
        let r = wait_first_inventory(&rx, Duration::ZERO, |_| {});
        assert_eq!(r, Err("no answer from libvirt".to_string()));
    }
}
