//! Watching guests while they move: every ~200 ms every host's libvirt is
//! read (twice, see [`take`]) and each guest's state per host recorded.
//! A guest may be active on two hosts only while a migration holds one
//! end paused; it must never run on two hosts, and when the watch ends it
//! must run on exactly one host with nothing left (paused) elsewhere.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::lab::Lab;
use crate::virsh::DomState;
use crate::whereabouts::read_states;

const PERIOD: Duration = Duration::from_millis(200);

/// One guest on one host in one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// The same in both reads: `None` means not defined there.
    Stable(Option<DomState>),
    /// Changed between the two reads: no conclusion from this sample.
    Flux,
    /// The host's libvirtd did not answer.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Since the watch started.
    pub at: Duration,
    /// guest -> per host (in lab order).
    pub guests: BTreeMap<String, Vec<(String, Reading)>>,
}

/// Reads every host twice in a row and keeps, per guest and host, the
/// state only if both reads agree. Every first read ends before any second
/// read starts, so the stable states all held together at one instant:
/// a migration switching over between two hosts' reads never shows as a
/// guest running twice.
pub fn take(hosts: &[(String, String)], guests: &[String], t0: Instant) -> Sample {
    let first = read_states(hosts);
    let second = read_states(hosts);
    let at = t0.elapsed();
    let mut out = BTreeMap::new();
    for g in guests {
        let per_host = first
            .iter()
            .zip(&second)
            .map(|((h, a), (_, b))| {
                let r = match (a, b) {
                    (Ok(a), Ok(b)) => {
                        let (x, y) = (a.get(g).copied(), b.get(g).copied());
                        if x == y {
                            Reading::Stable(x)
                        } else {
                            Reading::Flux
                        }
                    }
                    _ => Reading::Unknown,
                };
                (h.clone(), r)
            })
            .collect();
        out.insert(g.clone(), per_host);
    }
    Sample { at, guests: out }
}

/// What is wrong with one guest in one sample, judged on its stable
/// readings: running on two hosts, or active on two where one end is
/// neither running nor paused by a migration.
pub fn violation(guest: &str, per_host: &[(String, Reading)]) -> Option<String> {
    let stable: Vec<(&str, DomState)> = per_host
        .iter()
        .filter_map(|(h, r)| match r {
            Reading::Stable(Some(s)) if s.is_active() => Some((h.as_str(), *s)),
            _ => None,
        })
        .collect();
    let running = stable.iter().filter(|(_, s)| s.is_running()).count();
    let odd = stable
        .iter()
        .any(|(_, s)| !s.is_running() && !s.is_migration_pause());
    if running > 1 || (stable.len() > 1 && odd) {
        Some(format!("{guest:?} active on {}", render(per_host)))
    } else {
        None
    }
}

/// At the end: running on exactly one host, active on no other, every
/// host answering. Returns the host.
pub fn settled(guest: &str, per_host: &[(String, Reading)]) -> Result<String, String> {
    let mut running = Vec::new();
    for (h, r) in per_host {
        match r {
            Reading::Stable(Some(s)) if s.is_running() => running.push(h.clone()),
            Reading::Stable(Some(s)) if s.is_active() => {
                return Err(format!(
                    "{guest:?} left {} on {h}: {}",
                    s.describe(),
                    render(per_host)
                ))
            }
            Reading::Stable(_) => {}
            Reading::Flux | Reading::Unknown => {
                return Err(format!("{guest:?} not settled: {}", render(per_host)))
            }
        }
    }
    match running.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!(
            "{guest:?} running on {} hosts: {}",
            running.len(),
            render(per_host)
        )),
    }
}

fn render(per_host: &[(String, Reading)]) -> String {
    per_host
        .iter()
        .map(|(h, r)| {
            let s = match r {
                Reading::Stable(Some(s)) => s.describe(),
                Reading::Stable(None) => "-".into(),
                Reading::Flux => "changing".into(),
                Reading::Unknown => "no answer".into(),
            };
            format!("{h}={s}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A watch over some guests, sampling on its own thread until finished.
#[derive(Debug)]
pub struct Sampler {
    hosts: Vec<(String, String)>,
    guests: Vec<String>,
    t0: Instant,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Sample>>>,
}

impl Sampler {
    pub fn start(lab: &Lab, guests: &[&str]) -> Sampler {
        let hosts = lab.host_uris();
        let guests: Vec<String> = guests.iter().map(|g| g.to_string()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let thread = {
            let (hosts, guests, stop) = (hosts.clone(), guests.clone(), stop.clone());
            std::thread::Builder::new()
                .name("lab-sampler".into())
                .spawn(move || {
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let next = Instant::now() + PERIOD;
                        samples.push(take(&hosts, &guests, t0));
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    }
                    samples
                })
                .expect("spawn the sampler thread")
        };
        Sampler {
            hosts,
            guests,
            t0,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling and takes the final look: a few tries while a
    /// guest's state is still changing between reads.
    pub fn finish(mut self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self
            .thread
            .take()
            .map(|t| t.join().expect("sampler thread"))
            .unwrap_or_default();
        let mut last = take(&self.hosts, &self.guests, self.t0);
        for _ in 0..25 {
            let moving = last
                .guests
                .values()
                .flatten()
                .any(|(_, r)| matches!(r, Reading::Flux | Reading::Unknown));
            if !moving {
                break;
            }
            std::thread::sleep(PERIOD);
            last = take(&self.hosts, &self.guests, self.t0);
        }
        Record { samples, last }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Everything a watch saw.
#[derive(Debug, Clone)]
pub struct Record {
    pub samples: Vec<Sample>,
    pub last: Sample,
}

impl Record {
    /// Every sample in which a guest was where it must not be.
    pub fn violations(&self) -> Vec<String> {
        self.samples
            .iter()
            .chain(std::iter::once(&self.last))
            .flat_map(|s| {
                s.guests.iter().filter_map(move |(g, per_host)| {
                    violation(g, per_host).map(|v| format!("+{:.1}s {v}", s.at.as_secs_f64()))
                })
            })
            .collect()
    }

    /// guest -> host, when every guest ended running exactly once.
    pub fn settled(&self) -> Result<BTreeMap<String, String>, Vec<String>> {
        let mut ok = BTreeMap::new();
        let mut bad = Vec::new();
        for (g, per_host) in &self.last.guests {
            match settled(g, per_host) {
                Ok(h) => {
                    ok.insert(g.clone(), h);
                }
                Err(e) => bad.push(e),
            }
        }
        if bad.is_empty() {
            Ok(ok)
        } else {
            Err(bad)
        }
    }

    /// Each guest's changes of state over the watch, for people.
    pub fn timeline(&self) -> String {
        let mut out = String::new();
        let guests: Vec<&String> = self.last.guests.keys().collect();
        for g in guests {
            let mut prev = String::new();
            for s in self.samples.iter().chain(std::iter::once(&self.last)) {
                let Some(per_host) = s.guests.get(g) else {
                    continue;
                };
                let now = render(per_host);
                if now != prev {
                    out.push_str(&format!("  +{:6.1}s {g:?}: {now}\n", s.at.as_secs_f64()));
                    prev = now;
                }
            }
        }
        out
    }

    /// Panics unless no sample ever showed a guest where it must not be
    /// and each ended running on exactly one host. Returns guest -> host.
    pub fn assert_clean(&self) -> BTreeMap<String, String> {
        let violations = self.violations();
        let settled = self.settled();
        eprintln!(
            "sampler: {} samples; timeline:\n{}",
            self.samples.len(),
            self.timeline()
        );
        match (violations.is_empty(), settled) {
            (true, Ok(at)) => at,
            (_, settled) => panic!(
                "guests seen where they must not be:\n{}\nat the end: {}\ntimeline:\n{}",
                violations.join("\n"),
                match settled {
                    Ok(at) => format!("{at:?}"),
                    Err(e) => e.join("; "),
                },
                self.timeline()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: u32, reason: u32) -> Reading {
        Reading::Stable(Some(DomState { state, reason }))
    }

    fn hosts(rs: &[Reading]) -> Vec<(String, Reading)> {
        rs.iter()
            .enumerate()
            .map(|(i, r)| (crate::names::default_host_name(i), *r))
            .collect()
    }

    #[test]
    fn a_migration_may_hold_the_other_end_paused() {
        // Incoming end paused, source running; switch-over; done.
        for rs in [
            [st(1, 1), st(3, 2)],
            [st(3, 2), st(3, 2)],
            [st(3, 2), st(1, 2)],
            [Reading::Stable(None), st(1, 2)],
            [Reading::Flux, st(1, 2)],
        ] {
            assert_eq!(violation("g", &hosts(&rs)), None, "{rs:?}");
        }
    }

    #[test]
    fn running_twice_or_paused_beside_a_twin_is_a_violation() {
        let twice = hosts(&[st(1, 1), st(1, 2)]);
        assert!(violation("g", &twice)
            .unwrap()
            .contains("ha=running(booted)"));
        let user_paused = hosts(&[st(3, 1), st(1, 2)]);
        assert!(violation("g", &user_paused).is_some());
    }

    #[test]
    fn the_end_is_one_running_and_nothing_paused() {
        assert_eq!(
            settled("g", &hosts(&[st(5, 0), st(1, 2)])),
            Ok("hb".to_string())
        );
        // A source left paused after a failed migration, alone: not running.
        let left = settled("g", &hosts(&[st(3, 2), Reading::Stable(None)]));
        assert!(left.unwrap_err().contains("left paused(migration) on ha"));
        assert!(settled("g", &hosts(&[st(1, 1), Reading::Unknown])).is_err());
        assert!(settled("g", &hosts(&[Reading::Stable(None), Reading::Stable(None)])).is_err());
    }
}
