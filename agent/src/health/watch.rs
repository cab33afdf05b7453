//! The health thread: reads the host each period (with the probes' latest
//! findings), evaluates, keeps the findings in the inventory and tells
//! every line when the host's health changes (`host.health`), and the
//! journal (the log) with it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::eval::{self, Evaluator, Thresholds};
use super::{probe, sysfs, Finding, Level};
use crate::events::{Bus, HostHealth, Payload};
use crate::inventory::Inventory;

#[derive(Debug, Clone)]
pub struct Watch {
    pub host: String,
    pub sysfs_root: PathBuf,
    pub links: Vec<String>,
    pub period: Duration,
    pub thresholds: Thresholds,
    /// The probes' latest findings, added to every period's readings.
    pub probes: Arc<probe::Latest>,
}

pub fn spawn(
    w: Watch,
    inventory: Arc<Inventory>,
    bus: Bus,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || run(&w, &inventory, &bus, &stop))
}

fn run(w: &Watch, inventory: &Inventory, bus: &Bus, stop: &AtomicBool) {
    let mut ev = Evaluator::new(w.thresholds);
    let mut last: Option<(Instant, Vec<Finding>)> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let mut readings = sysfs::read(&w.sysfs_root, &w.links);
        readings.probes = w.probes.findings();
        let period = last.as_ref().map_or(w.period, |(t, _)| now - *t);
        let findings = ev.evaluate(&readings, now, period);
        let changed = last.as_ref().is_none_or(|(_, f)| *f != findings);
        if changed {
            inventory.update(|s| s.local.findings = findings.clone());
            let level = eval::level(&findings);
            let reasons: Vec<String> = findings.iter().map(|f| f.reason.clone()).collect();
            // The first reading is news only when something is wrong.
            if last.is_some() || level != Level::Ok {
                if level == Level::Ok {
                    tracing::info!(health = level.as_str(), "host health changed");
                } else {
                    tracing::warn!(health = level.as_str(), reasons = ?reasons, "host health changed");
                }
                bus.publish(Payload::HostHealth(HostHealth {
                    host: w.host.clone(),
                    health: level,
                    reasons,
                }));
            }
        }
        last = Some((now, findings));
        let end = now + w.period;
        while !stop.load(Ordering::Relaxed) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}
