//! Readings in, findings out: the rules of host health, pure.
//!
//! - EDAC: the errors *since the last period* count, never the totals
//!   since boot (a host that had one corrected error a year ago is fine).
//!   Any uncorrected error is faulty; `edac_ce_degraded` corrected ones in
//!   one period are degraded.
//! - Thermal zones: at or over the critical trip point is faulty; within
//!   `temp_margin_c` of it, degraded.
//! - hwmon alarms: a critical alarm is faulty, any other degraded.
//! - Links: a configured interface that is down or missing is degraded.
//! - Probes (super::probe): their findings as they come, each probe's
//!   latest until its next run.
//!
//! A finding stays for `hold` after its cause was last seen, so a flapping
//! link or a burst of errors does not flap the host between states.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Finding, Level, Readings};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Corrected memory errors in one period that make the host degraded.
    pub edac_ce_degraded: u64,
    /// Degrees Celsius below a zone's critical trip point that count as
    /// degraded.
    pub temp_margin_c: f64,
    /// How long a finding outlives its cause.
    pub hold: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            edac_ce_degraded: 10,
            temp_margin_c: 5.0,
            hold: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
pub struct Evaluator {
    thresholds: Thresholds,
    /// Each controller's totals at the last period: (corrected, uncorrected).
    last_edac: BTreeMap<String, (u64, u64)>,
    /// Findings raised, by key, with when their cause was last seen.
    held: BTreeMap<String, (Finding, Instant)>,
}

impl Evaluator {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            last_edac: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// This period's findings, worst first. `period`: the time since the
    /// last readings, for the reasons' wording.
    pub fn evaluate(&mut self, r: &Readings, now: Instant, period: Duration) -> Vec<Finding> {
        for f in self.causes(r, period) {
            self.held.insert(f.key.clone(), (f, now));
        }
        let hold = self.thresholds.hold;
        // Seen this period, or within the hold time.
        self.held
            .retain(|_, (_, seen)| *seen == now || now.saturating_duration_since(*seen) < hold);
        let mut out: Vec<Finding> = self.held.values().map(|(f, _)| f.clone()).collect();
        out.sort_by(|a, b| b.level.cmp(&a.level).then_with(|| a.key.cmp(&b.key)));
        out
    }

    /// What this period's readings show by themselves.
    fn causes(&mut self, r: &Readings, period: Duration) -> Vec<Finding> {
        let t = self.thresholds;
        let secs = period.as_secs().max(1);
        let mut out = Vec::new();
        for mc in &r.edac {
            let (ce0, ue0) = self
                .last_edac
                .insert(mc.name.clone(), (mc.corrected, mc.uncorrected))
                // First sight: a baseline, not news.
                .unwrap_or((mc.corrected, mc.uncorrected));
            // A counter that went down was reset (driver reload): count
            // from zero.
            let ue = if mc.uncorrected >= ue0 {
                mc.uncorrected - ue0
            } else {
                mc.uncorrected
            };
            let ce = if mc.corrected >= ce0 {
                mc.corrected - ce0
            } else {
                mc.corrected
            };
            if ue > 0 {
                out.push(Finding {
                    level: Level::Faulty,
                    key: format!("edac:{}:ue", mc.name),
                    reason: format!(
                        "{}: {ue} uncorrected memory error{} in the last {secs} s",
                        mc.name,
                        plural(ue)
                    ),
                });
            }
            if ce >= t.edac_ce_degraded.max(1) {
                out.push(Finding {
                    level: Level::Degraded,
                    key: format!("edac:{}:ce", mc.name),
                    reason: format!(
                        "{}: {ce} corrected memory error{} in the last {secs} s",
                        mc.name,
                        plural(ce)
                    ),
                });
            }
        }
        for z in &r.thermal {
            let Some(crit) = z.critical_mc else { continue };
            let (temp_c, crit_c) = (z.temp_mc as f64 / 1000.0, crit as f64 / 1000.0);
            let level = if temp_c >= crit_c {
                Level::Faulty
            } else if temp_c >= crit_c - t.temp_margin_c {
                Level::Degraded
            } else {
                continue;
            };
            out.push(Finding {
                level,
                key: format!("thermal:{}", z.name),
                reason: format!("{}: {temp_c:.0} °C, critical at {crit_c:.0} °C", z.name),
            });
        }
        for a in &r.alarms {
            out.push(Finding {
                level: if a.critical {
                    Level::Faulty
                } else {
                    Level::Degraded
                },
                key: format!("hwmon:{}", a.name),
                reason: format!("{}: alarm", a.name),
            });
        }
        for l in &r.links {
            let reason = match l.up {
                Some(true) => continue,
                Some(false) => format!("link {} is {}", l.name, l.operstate),
                None => format!("link {} is missing", l.name),
            };
            out.push(Finding {
                level: Level::Degraded,
                key: format!("link:{}", l.name),
                reason,
            });
        }
        out.extend(r.probes.iter().cloned());
        out
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The worst level among `findings` (ok when there are none).
pub fn level(findings: &[Finding]) -> Level {
    findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Alarm, LinkState, McCounts, Thermal};

    const P: Duration = Duration::from_secs(5);

    fn mc(ce: u64, ue: u64) -> Readings {
        Readings {
            edac: vec![McCounts {
                name: "mc0".into(),
                corrected: ce,
                uncorrected: ue,
            }],
            ..Readings::default()
        }
    }

    fn link(up: Option<bool>) -> Readings {
        Readings {
            links: vec![LinkState {
                name: "eno1".into(),
                up,
                operstate: if up == Some(true) { "up" } else { "down" }.into(),
            }],
            ..Readings::default()
        }
    }

    #[test]
    fn errors_since_boot_are_a_baseline_and_new_ones_count() {
        let mut e = Evaluator::new(Thresholds::default());
        let t0 = Instant::now();
        assert_eq!(
            e.evaluate(&mc(500, 2), t0, P),
            [],
            "totals since boot are old news"
        );
        let f = e.evaluate(&mc(500, 5), t0 + P, P);
        assert_eq!(level(&f), Level::Faulty);
        assert_eq!(
            f[0].reason,
            "mc0: 3 uncorrected memory errors in the last 5 s"
        );
        // The cause is gone: held for 30 s, then cleared.
        let at = |s| t0 + P + Duration::from_secs(s);
        assert_eq!(level(&e.evaluate(&mc(500, 5), at(29), P)), Level::Faulty);
        assert_eq!(e.evaluate(&mc(500, 5), at(30), P), []);
    }

    #[test]
    fn corrected_errors_degrade_only_past_the_threshold() {
        let mut e = Evaluator::new(Thresholds::default());
        let t0 = Instant::now();
        e.evaluate(&mc(0, 0), t0, P);
        assert_eq!(e.evaluate(&mc(9, 0), t0 + P, P), []);
        let f = e.evaluate(&mc(19, 0), t0 + P * 2, P);
        assert_eq!(level(&f), Level::Degraded);
        assert_eq!(
            f[0].reason,
            "mc0: 10 corrected memory errors in the last 5 s"
        );
    }

    #[test]
    fn a_counter_reset_counts_from_zero() {
        let mut e = Evaluator::new(Thresholds::default());
        let t0 = Instant::now();
        e.evaluate(&mc(100, 7), t0, P);
        let f = e.evaluate(&mc(0, 1), t0 + P, P);
        assert_eq!(
            f[0].reason,
            "mc0: 1 uncorrected memory error in the last 5 s"
        );
    }

    #[test]
    fn temperature_near_or_over_the_critical_point() {
        let zone = |temp_mc| Readings {
            thermal: vec![Thermal {
                name: "thermal_zone0 (x86_pkg_temp)".into(),
                temp_mc,
                critical_mc: Some(100_000),
            }],
            ..Readings::default()
        };
        let t0 = Instant::now();
        let mut e = Evaluator::new(Thresholds {
            hold: Duration::ZERO,
            ..Thresholds::default()
        });
        assert_eq!(e.evaluate(&zone(94_000), t0, P), []);
        let f = e.evaluate(&zone(95_000), t0, P);
        assert_eq!(level(&f), Level::Degraded);
        assert_eq!(
            f[0].reason,
            "thermal_zone0 (x86_pkg_temp): 95 °C, critical at 100 °C"
        );
        assert_eq!(level(&e.evaluate(&zone(100_000), t0, P)), Level::Faulty);
    }

    #[test]
    fn alarms_and_links() {
        let t0 = Instant::now();
        let mut e = Evaluator::new(Thresholds::default());
        let r = Readings {
            alarms: vec![
                Alarm {
                    name: "hwmon1 (nct6775) fan2_alarm".into(),
                    critical: false,
                },
                Alarm {
                    name: "hwmon1 (nct6775) temp1_crit_alarm".into(),
                    critical: true,
                },
            ],
            ..link(None)
        };
        let f = e.evaluate(&r, t0, P);
        let got: Vec<(Level, &str)> = f.iter().map(|f| (f.level, f.reason.as_str())).collect();
        assert_eq!(
            got,
            [
                (Level::Faulty, "hwmon1 (nct6775) temp1_crit_alarm: alarm"),
                (Level::Degraded, "hwmon1 (nct6775) fan2_alarm: alarm"),
                (Level::Degraded, "link eno1 is missing"),
            ]
        );
    }

    /// A probe's finding is held like any other: it stays `hold` after
    /// the probe last reported it, then clears.
    #[test]
    fn probe_findings_are_held_and_cleared() {
        let t0 = Instant::now();
        let mut e = Evaluator::new(Thresholds::default());
        let bmc = Finding {
            level: Level::Faulty,
            key: "ipmi:CPU2 Temp:02h".into(),
            reason: "BMC: CPU2 Temp 98 degrees C is critical".into(),
        };
        let with = Readings {
            probes: vec![bmc.clone()],
            ..Readings::default()
        };
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(e.evaluate(&with, at(0), P), std::slice::from_ref(&bmc));
        assert_eq!(e.evaluate(&with, at(300), P), std::slice::from_ref(&bmc));
        let without = Readings::default();
        assert_eq!(e.evaluate(&without, at(329), P), [bmc]);
        assert_eq!(e.evaluate(&without, at(330), P), []);
    }

    /// A link that flaps (down, up, down, up every 10 s) keeps the host
    /// degraded until it has stayed up for the hold time.
    #[test]
    fn a_flapping_link_does_not_flap_the_host() {
        let t0 = Instant::now();
        let mut e = Evaluator::new(Thresholds::default());
        let at = |s| t0 + Duration::from_secs(s);
        let mut levels = Vec::new();
        for (s, up) in [
            (0, false),
            (10, true),
            (20, false),
            (30, true),
            (40, true),
            (55, true),
        ] {
            levels.push(level(&e.evaluate(&link(Some(up)), at(s), P)));
        }
        use Level::{Degraded as D, Ok as O};
        assert_eq!(levels, [D, D, D, D, D, O]);
        assert_eq!(
            e.evaluate(&link(Some(false)), at(60), P)[0].reason,
            "link eno1 is down"
        );
    }
}
