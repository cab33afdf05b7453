//! Optional probes: hardware health that only a vendor tool can read
//! (disks' SMART data, the BMC's sensors, rasdaemon's machine-check
//! records). Each runs only where its tool is installed, on its own slower
//! period (`[health] probe_period_s`) in its own thread, so a slow BMC or
//! disk never delays the health period. Each probe's latest findings are
//! kept in [`Latest`]; the health thread adds them to every period's
//! readings and the evaluator holds and clears them like any other.
//!
//! A probe that fails (its tool hangs, prints what it should not) keeps
//! its last findings and logs a warning: a broken tool is not a broken
//! host.

pub mod ipmi;
pub mod ras;
pub mod run;
pub mod smart;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::Finding;
use run::RunError;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("running the tool")]
    Run(#[from] RunError),
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("output is not the JSON expected")]
    Json(#[source] serde_json::Error),
    #[error("unexpected output: {0}")]
    Format(String),
}

/// A probe, by the name `[health] probes` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Smartctl,
    Ipmitool,
    Rasdaemon,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Smartctl, Kind::Ipmitool, Kind::Rasdaemon];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Smartctl => "smartctl",
            Kind::Ipmitool => "ipmitool",
            Kind::Rasdaemon => "rasdaemon",
        }
    }
}

/// Each probe's findings from its last good run.
#[derive(Debug, Default)]
pub struct Latest(Mutex<BTreeMap<Kind, Vec<Finding>>>);

impl Latest {
    pub fn set(&self, kind: Kind, findings: Vec<Finding>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind, findings);
    }

    pub fn findings(&self) -> Vec<Finding> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .cloned()
            .collect()
    }
}

/// Where the probes look for their tools and devices: the host's, or a
/// test's temporary directory.
#[derive(Debug, Clone)]
pub struct Host {
    /// A PATH value.
    pub path: OsString,
    /// The IPMI device nodes; without one, ipmitool has no BMC to ask.
    pub ipmi_devices: Vec<PathBuf>,
    /// rasdaemon's database; without it, rasdaemon is not recording.
    pub ras_database: PathBuf,
}

impl Host {
    /// This machine: the agent's PATH (systemd's default for a service
    /// includes /usr/sbin, where smartctl lives).
    pub fn local() -> Host {
        Host {
            path: std::env::var_os("PATH")
                .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin".into()),
            ipmi_devices: ["/dev/ipmi0", "/dev/ipmi/0", "/dev/ipmidev/0"]
                .map(PathBuf::from)
                .to_vec(),
            ras_database: PathBuf::from(ras::DATABASE),
        }
    }
}

/// How a probe gets its data on this host, when it can.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tool {
    Smartctl(PathBuf),
    Ipmitool(PathBuf),
    RasMcCtl(PathBuf),
    Sqlite3(PathBuf, PathBuf),
}

/// Runs the probes, keeping what they need between runs.
#[derive(Debug)]
pub struct Prober {
    pub kinds: Vec<Kind>,
    pub host: Host,
    /// Each command's time limit.
    pub timeout: Duration,
    /// New corrected errors (rasdaemon) in one run that are degraded.
    pub ce_degraded: u64,
    smart: smart::Smart,
    ras: ras::Ras,
    /// What was last logged of each probe: whether its tool was there,
    /// and its last error, so the log says each thing once.
    present: BTreeMap<Kind, bool>,
    failing: BTreeMap<Kind, String>,
}

impl Prober {
    pub fn new(kinds: Vec<Kind>, host: Host, timeout: Duration, ce_degraded: u64) -> Prober {
        Prober {
            kinds,
            host,
            timeout,
            ce_degraded,
            smart: smart::Smart::default(),
            ras: ras::Ras::default(),
            present: BTreeMap::new(),
            failing: BTreeMap::new(),
        }
    }

    /// Runs every probe whose tool is here once; a good run replaces the
    /// probe's findings in `latest`.
    pub fn run_once(&mut self, latest: &Latest, stop: &AtomicBool) {
        for kind in self.kinds.clone() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let tool = self.tool(kind);
            if self.present.insert(kind, tool.is_some()) != Some(tool.is_some()) {
                match &tool {
                    Some(t) => tracing::info!(probe = kind.as_str(), tool = ?t, "health probe on"),
                    None => tracing::info!(
                        probe = kind.as_str(),
                        "health probe off: its tool (or device, or database) is not here"
                    ),
                }
            }
            let Some(tool) = tool else {
                // Gone since: its findings go too.
                latest.set(kind, Vec::new());
                continue;
            };
            match self.probe(&tool, stop) {
                Ok(findings) => {
                    if self.failing.remove(&kind).is_some() {
                        tracing::info!(probe = kind.as_str(), "health probe works again");
                    }
                    latest.set(kind, findings);
                }
                // Killed because the agent is stopping: not the tool's fault.
                Err(_) if stop.load(Ordering::Relaxed) => return,
                Err(e) => {
                    let cause = error_chain(&e);
                    if self.failing.get(&kind) != Some(&cause) {
                        tracing::warn!(
                            probe = kind.as_str(),
                            cause = %cause,
                            "health probe failed; its last findings stay"
                        );
                    }
                    self.failing.insert(kind, cause);
                }
            }
        }
    }

    fn tool(&self, kind: Kind) -> Option<Tool> {
        let find = |name| run::find(&self.host.path, name);
        match kind {
            Kind::Smartctl => find("smartctl").map(Tool::Smartctl),
            Kind::Ipmitool => {
                let bmc = self.host.ipmi_devices.iter().any(|d| d.exists());
                find("ipmitool").filter(|_| bmc).map(Tool::Ipmitool)
            }
            Kind::Rasdaemon => {
                let db = &self.host.ras_database;
                if !db.is_file() {
                    return None;
                }
                find("ras-mc-ctl")
                    .map(Tool::RasMcCtl)
                    .or_else(|| find("sqlite3").map(|s| Tool::Sqlite3(s, db.clone())))
            }
        }
    }

    fn probe(&mut self, tool: &Tool, stop: &AtomicBool) -> Result<Vec<Finding>, ProbeError> {
        let run = |p: &Path, args: &[&str]| run::run(p, args, self.timeout, stop);
        match tool {
            Tool::Smartctl(p) => {
                let scan = run(p, &["--scan-open", "--json"])?;
                let devices = smart::parse_scan(&scan.stdout)?;
                let mut disks = Vec::new();
                for d in devices {
                    let report = match run(p, &d.args()) {
                        Ok(o) => smart::parse_device(&o.stdout),
                        Err(e @ RunError::Stopped { .. }) => return Err(e.into()),
                        Err(e) => Err(e.into()),
                    };
                    // One disk that cannot be read does not hide the others.
                    let disk = report.unwrap_or_else(|e| smart::Disk {
                        errors: vec![error_chain(&e)],
                        ..smart::Disk::default()
                    });
                    disks.push((d.label(), disk));
                }
                Ok(self.smart.assess(&disks))
            }
            Tool::Ipmitool(p) => {
                let o = run(p, &["sdr", "elist"])?;
                let sensors = ipmi::parse_sdr(&o.stdout)?;
                if sensors.is_empty() && !o.status.success() {
                    return Err(failed(p, &o));
                }
                Ok(ipmi::findings(&sensors))
            }
            Tool::RasMcCtl(p) => {
                let o = run(p, &["--errors"])?;
                let counts = ras::parse_errors(&o.stdout).map_err(|e| {
                    if o.status.success() {
                        e
                    } else {
                        failed(p, &o)
                    }
                })?;
                Ok(self.ras.assess(counts, self.ce_degraded))
            }
            Tool::Sqlite3(p, db) => {
                let mut args = vec!["-readonly", "-batch", "-separator", "|"];
                for q in ras::SQL {
                    args.extend(["-cmd", q]);
                }
                let db = db.to_string_lossy();
                args.push(&db);
                let o = run(p, &args)?;
                let counts = ras::parse_sqlite(&o.stdout).map_err(|_| failed(p, &o))?;
                Ok(self.ras.assess(counts, self.ce_degraded))
            }
        }
    }
}

fn failed(p: &Path, o: &run::Output) -> ProbeError {
    ProbeError::Failed {
        program: p.display().to_string(),
        status: o.status,
        stderr: o.stderr.trim().chars().take(300).collect(),
    }
}

/// `e: its source: ...`, for one log field.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The probe thread: a run at once (the baselines), then one each
/// `period`.
pub fn spawn(
    mut prober: Prober,
    period: Duration,
    latest: Arc<Latest>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("health-probes".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                prober.run_once(&latest, &stop);
                let end = start + period;
                while !stop.load(Ordering::Relaxed) {
                    let left = end.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(Duration::from_millis(100)));
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::run::tests::Tools;
    use super::*;
    use crate::health::Level;

    fn host(t: &Tools) -> Host {
        Host {
            path: t.path(),
            ipmi_devices: vec![t.0.join("ipmi0")],
            ras_database: t.0.join("ras-mc_event.db"),
        }
    }

    fn prober(t: &Tools, kinds: &[Kind]) -> Prober {
        Prober::new(kinds.to_vec(), host(t), Duration::from_secs(60), 10)
    }

    /// Writes `body` to a file and a tool `name` that prints it.
    fn tool_printing(t: &Tools, name: &str, file: &str, body: &str, exit: u8) {
        std::fs::write(t.0.join(file), body).unwrap();
        t.script(
            name,
            &format!("cat '{}'; exit {exit}", t.0.join(file).display()),
        );
    }

    fn reasons(latest: &Latest) -> Vec<(Level, String)> {
        latest
            .findings()
            .into_iter()
            .map(|f| (f.level, f.reason))
            .collect()
    }

    /// Runs `p` once, retrying while a freshly written script is "busy"
    /// (see run::tests::run_script): only spawn errors are retried, and
    /// those leave `latest` untouched.
    fn run_once(p: &mut Prober, latest: &Latest) {
        for _ in 0..20 {
            p.run_once(latest, &AtomicBool::new(false));
            let busy = p.failing.values().any(|c| c.contains("Text file busy"));
            if !busy {
                return;
            }
            p.failing.clear();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn without_their_tools_the_probes_are_off() {
        let t = Tools::new("none");
        let mut p = prober(&t, &Kind::ALL);
        let latest = Latest::default();
        run_once(&mut p, &latest);
        assert_eq!(latest.findings(), []);
        assert_eq!(p.present.values().filter(|on| **on).count(), 0);
        assert!(p.failing.is_empty());
        // ipmitool without a BMC device, sqlite3 without a database: off.
        t.script("ipmitool", "exit 1");
        t.script("sqlite3", "exit 1");
        run_once(&mut p, &latest);
        assert_eq!(p.present.values().filter(|on| **on).count(), 0);
        assert!(p.failing.is_empty());
    }

    /// smartctl whose exit status says "failing" (24): the JSON decides.
    #[test]
    fn smartctl_end_to_end() {
        let t = Tools::new("smart");
        std::fs::write(t.0.join("scan.json"), smart::tests::SCAN).unwrap();
        std::fs::write(t.0.join("sda.json"), smart::tests::sata(false, 0, 0)).unwrap();
        std::fs::write(t.0.join("nvme0.json"), smart::tests::nvme(0, 0)).unwrap();
        let dir = t.0.display().to_string();
        t.script(
            "smartctl",
            &format!(
                "for a; do last=$a; done\n\
                 case $last in\n\
                 --json) cat '{dir}/scan.json' ;;\n\
                 /dev/sda) cat '{dir}/sda.json'; exit 24 ;;\n\
                 /dev/nvme0) cat '{dir}/nvme0.json' ;;\n\
                 *) echo 'not JSON'; exit 2 ;;\n\
                 esac"
            ),
        );
        let mut p = prober(&t, &[Kind::Smartctl]);
        let latest = Latest::default();
        run_once(&mut p, &latest);
        assert_eq!(
            reasons(&latest),
            [(Level::Faulty, "sda: SMART overall health failed".into())],
            "the disk behind the controller printed no JSON: left out"
        );
        assert!(p.failing.is_empty(), "{:?}", p.failing);
    }

    #[test]
    fn ipmitool_end_to_end() {
        let t = Tools::new("ipmi");
        std::fs::write(t.0.join("ipmi0"), "").unwrap();
        tool_printing(&t, "ipmitool", "sdr.txt", ipmi::tests::ELIST, 0);
        let mut p = prober(&t, &[Kind::Ipmitool]);
        let latest = Latest::default();
        run_once(&mut p, &latest);
        assert_eq!(
            reasons(&latest)[0],
            (
                Level::Faulty,
                "BMC: CPU2 Temp 98 degrees C is critical".into()
            )
        );
    }

    /// rasdaemon through ras-mc-ctl: the first run is the baseline, then
    /// a new record counts.
    #[test]
    fn rasdaemon_end_to_end() {
        let t = Tools::new("ras");
        std::fs::write(t.0.join("ras-mc_event.db"), "").unwrap();
        tool_printing(&t, "ras-mc-ctl", "errors.txt", ras::tests::ERRORS, 0);
        let mut p = prober(&t, &[Kind::Rasdaemon]);
        let latest = Latest::default();
        run_once(&mut p, &latest);
        assert_eq!(latest.findings(), [], "history");
        let more = ras::tests::ERRORS.replace(
            "\nNo devlink errors.",
            "3 2024-03-05 10:00:00 +0100 error: CACHE L2 mci Uncorrected_error\n\nNo devlink errors.",
        );
        std::fs::write(t.0.join("errors.txt"), more).unwrap();
        run_once(&mut p, &latest);
        assert_eq!(
            reasons(&latest),
            [(
                Level::Faulty,
                "rasdaemon: 1 new uncorrected machine-check error".into()
            )]
        );
    }

    /// A tool that starts failing keeps the probe's last findings, and
    /// makes no finding of its own.
    #[test]
    fn a_failing_probe_keeps_its_last_findings() {
        let t = Tools::new("fail");
        std::fs::write(t.0.join("ipmi0"), "").unwrap();
        tool_printing(&t, "ipmitool", "sdr.txt", ipmi::tests::ELIST, 0);
        let mut p = prober(&t, &[Kind::Ipmitool]);
        let latest = Latest::default();
        run_once(&mut p, &latest);
        let before = latest.findings();
        assert_eq!(before.len(), 3);
        tool_printing(&t, "ipmitool", "sdr.txt", "", 1);
        run_once(&mut p, &latest);
        assert_eq!(latest.findings(), before);
        assert!(
            p.failing[&Kind::Ipmitool].contains("failed (exit status: 1)"),
            "{:?}",
            p.failing
        );
        // A hung tool: the same.
        p.timeout = Duration::from_millis(100);
        t.script("ipmitool", "sleep 1000");
        run_once(&mut p, &latest);
        assert_eq!(latest.findings(), before);
        assert!(
            p.failing[&Kind::Ipmitool].contains("killed"),
            "{:?}",
            p.failing
        );
    }
}
