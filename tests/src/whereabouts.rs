//! Running means running: where a guest is, as every host's libvirt and
//! the machine's process table see it. A guest "runs exactly once" when
//! one host shows it *running*, no other host shows it active in any state
//! (paused included), one QEMU process runs it in the whole lab, and its
//! tick counter advances.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::lab::{Lab, LabError};
use crate::virsh::{self, DomState};
use crate::{guest, smoke};

/// One host's view of the lab's domains; `Err` when its libvirtd did not
/// answer.
pub type HostStates = Vec<(String, Result<BTreeMap<String, DomState>, String>)>;

/// Every host's domain states, read in parallel (one virsh each) so the
/// readings are close together in time.
pub fn read_states(hosts: &[(String, String)]) -> HostStates {
    std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|(name, uri)| {
                s.spawn(move || (name.clone(), virsh::states(uri).map_err(|e| e.to_string())))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("virsh reader thread"))
            .collect()
    })
}

/// Where one guest is: its state on each host (None: not defined there)
/// and its QEMU processes per host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whereabouts {
    pub guest: String,
    pub states: Vec<(String, Option<DomState>)>,
    pub qemus: Vec<(String, usize)>,
}

impl Whereabouts {
    /// The host it runs on, when it runs exactly once; else why not.
    pub fn runs_once(&self) -> Result<String, String> {
        let running: Vec<&str> = self
            .states
            .iter()
            .filter(|(_, s)| s.is_some_and(DomState::is_running))
            .map(|(h, _)| h.as_str())
            .collect();
        let active: Vec<&str> = self
            .states
            .iter()
            .filter(|(_, s)| s.is_some_and(DomState::is_active))
            .map(|(h, _)| h.as_str())
            .collect();
        let qemus: usize = self.qemus.iter().map(|(_, n)| n).sum();
        match running.as_slice() {
            [one] if active.len() == 1 && qemus == 1 => Ok((*one).to_owned()),
            [] => Err(format!(
                "{:?} runs nowhere: {}",
                self.guest,
                self.describe()
            )),
            [_] if qemus != 1 => Err(format!(
                "{:?} has {qemus} QEMU processes: {}",
                self.guest,
                self.describe()
            )),
            [_] => Err(format!(
                "{:?} is active on more than one host: {}",
                self.guest,
                self.describe()
            )),
            _ => Err(format!(
                "{:?} runs on {} hosts at once: {}",
                self.guest,
                running.len(),
                self.describe()
            )),
        }
    }

    /// `ha: running(migrated), 1 QEMU; hb: -, 0 QEMU`
    pub fn describe(&self) -> String {
        self.states
            .iter()
            .map(|(h, s)| {
                let q = self
                    .qemus
                    .iter()
                    .find(|(x, _)| x == h)
                    .map_or(0, |(_, n)| *n);
                format!(
                    "{h}: {}, {q} QEMU",
                    s.map_or("-".to_owned(), DomState::describe)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Ticks must advance within this long (a loaded 2-core machine running
/// TCG guests prints a tick every 1-3 s).
const TICK_LIMIT: Duration = Duration::from_secs(60);

impl Lab {
    /// (name, local URI) of every host, for readers that outlive a borrow.
    pub fn host_uris(&self) -> Vec<(String, String)> {
        self.desc()
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.local_uri.clone()))
            .collect()
    }

    /// Where `guest` is, on every host.
    pub fn whereabouts(&self, guest: &str) -> Result<Whereabouts, LabError> {
        let mut states = Vec::new();
        for (host, read) in read_states(&self.host_uris()) {
            let map = read.map_err(|e| LabError::Virsh {
                host: host.clone(),
                source: crate::cmd::CmdError::Failed {
                    cmd: "virsh domstats --state".into(),
                    status: "error".into(),
                    stderr: e,
                },
            })?;
            states.push((host, map.get(guest).copied()));
        }
        let mut qemus = Vec::new();
        for h in &self.desc().hosts {
            qemus.push((h.name.clone(), smoke::qemu_processes(self, &h.name, guest)?));
        }
        Ok(Whereabouts {
            guest: guest.to_owned(),
            states,
            qemus,
        })
    }

    /// Asserts that `guest` runs exactly once in the lab: *running* on one
    /// host, active (running, paused, anything) on no other, one QEMU in
    /// all, and alive: its tick counter grows. Returns the host.
    pub fn assert_runs_once(&self, guest: &str) -> String {
        let w = self
            .whereabouts(guest)
            .unwrap_or_else(|e| panic!("cannot tell where {guest:?} is: {e}"));
        let host = w.runs_once().unwrap_or_else(|why| panic!("{why}"));
        let latest = || guest::latest_tick(&self.serial_log(&host, guest).unwrap_or_default());
        // Just arrived, its log on this host may hold no tick yet: any
        // tick then proves it alive.
        let tick = latest().unwrap_or(0);
        let qemu = smoke::qemu_pids(self, &host, guest)
            .ok()
            .and_then(|p| p.first().copied());
        let cpu0 = qemu.and_then(smoke::cpu_ticks);
        let end = std::time::Instant::now() + TICK_LIMIT;
        while latest().is_none_or(|t| t <= tick) {
            if std::time::Instant::now() >= end {
                let log = self.serial_log(&host, guest).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                panic!(
                    "{guest:?} is running on {host} but not alive: tick stuck at {tick} for {} s \
                     (QEMU {qemu:?} used {:?} CPU ticks meanwhile; serial log there: {} bytes, \
                     last lines {tail:?})",
                    TICK_LIMIT.as_secs(),
                    cpu0.zip(qemu.and_then(smoke::cpu_ticks))
                        .map(|(a, b)| b - a),
                    log.len()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        // Alive is not enough: a guest kernel that oopsed (and maybe
        // rebooted, `panic=-1`) ticks again while its owner saw an outage.
        for h in &self.desc().hosts {
            let log = self.serial_log(&h.name, guest).unwrap_or_default();
            let errors = guest::kernel_errors(&log);
            assert!(
                errors.is_empty(),
                "{guest:?}: its kernel reported errors on {}: {errors:?}",
                h.name
            );
        }
        host
    }

    /// [`Lab::assert_runs_once`] for each guest: guest -> host.
    pub fn assert_each_runs_once(&self, guests: &[&str]) -> BTreeMap<String, String> {
        guests
            .iter()
            .map(|g| (g.to_string(), self.assert_runs_once(g)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: DomState = DomState {
        state: 1,
        reason: 1,
    };
    const PAUSED_MIG: DomState = DomState {
        state: 3,
        reason: 2,
    };
    const OFF: DomState = DomState {
        state: 5,
        reason: 0,
    };

    fn w(states: &[(&str, Option<DomState>)], qemus: &[usize]) -> Whereabouts {
        Whereabouts {
            guest: "g".into(),
            states: states.iter().map(|(h, s)| (h.to_string(), *s)).collect(),
            qemus: states
                .iter()
                .zip(qemus)
                .map(|((h, _), n)| (h.to_string(), *n))
                .collect(),
        }
    }

    #[test]
    fn running_once_is_one_running_nothing_else_active_and_one_qemu() {
        let ok = w(
            &[("ha", Some(OFF)), ("hb", Some(RUN)), ("hc", None)],
            &[0, 1, 0],
        );
        assert_eq!(ok.runs_once(), Ok("hb".into()));
        // Left paused on the source after a failed migration: not once.
        let paused_src = w(&[("ha", Some(PAUSED_MIG)), ("hb", Some(RUN))], &[1, 1]);
        assert!(paused_src.runs_once().is_err());
        // Paused alone: runs nowhere.
        let paused = w(&[("ha", Some(PAUSED_MIG)), ("hb", None)], &[1, 0]);
        assert!(paused.runs_once().unwrap_err().contains("nowhere"));
        let twice = w(&[("ha", Some(RUN)), ("hb", Some(RUN))], &[1, 1]);
        assert!(twice.runs_once().unwrap_err().contains("2 hosts"));
        // A QEMU libvirt lost track of.
        let stray = w(&[("ha", Some(RUN)), ("hb", None)], &[1, 1]);
        assert!(stray.runs_once().unwrap_err().contains("2 QEMU"));
        assert!(stray.describe().contains("ha: running(booted), 1 QEMU"));
    }
}
