//! smartmontools: `smartctl --scan-open --json` lists the disks,
//! `smartctl --json -H -A [-d TYPE] DEV` reads each one's verdict and
//! attributes. Only the JSON is read: smartctl's exit status is a bit mask
//! in which "some attribute was once below its threshold" and "the device
//! could not be opened" both make it nonzero.
//!
//! - The drive's own verdict (`smart_status.passed`) false: faulty.
//! - Reallocated sectors (ATA 5, SCSI grown defects), pending sectors
//!   (ATA 197) or NVMe media errors *growing* since the last run:
//!   degraded. The counts at the first run are a baseline: a disk that
//!   remapped sectors years ago and stayed put is fine.
//! - An NVMe critical warning: degraded while it lasts.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::ProbeError;
use crate::health::{Finding, Level};

/// One disk as `--scan-open` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Device {
    /// `/dev/sda`, `/dev/nvme0`, `/dev/bus/0`.
    pub name: String,
    /// `sat`, `nvme`, `scsi`, `megaraid,0`: passed back as `-d`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Set by `--scan-open` for a device it could not open.
    #[serde(default)]
    pub open_error: Option<String>,
}

impl Device {
    /// How reasons name it: `sda`, or `bus/0 [megaraid,1]` for a disk
    /// behind a controller (one device name, many disks).
    pub fn label(&self) -> String {
        let short = self.name.strip_prefix("/dev/").unwrap_or(&self.name);
        match &self.kind {
            Some(k) if k.contains(',') => format!("{short} [{k}]"),
            _ => short.to_owned(),
        }
    }

    /// smartctl's arguments for reading this disk.
    pub fn args(&self) -> Vec<&str> {
        let mut a = vec!["--json", "-H", "-A"];
        if let Some(k) = &self.kind {
            a.extend(["-d", k.as_str()]);
        }
        a.push(&self.name);
        a
    }
}

#[derive(Debug, Deserialize)]
struct Scan {
    #[serde(default)]
    devices: Vec<Device>,
}

/// The disks of `smartctl --scan-open --json` (or `--scan --json`),
/// without those it could not open.
pub fn parse_scan(output: &str) -> Result<Vec<Device>, ProbeError> {
    let scan: Scan = serde_json::from_str(output).map_err(ProbeError::Json)?;
    Ok(scan
        .devices
        .into_iter()
        .filter(|d| d.open_error.is_none())
        .collect())
}

/// What one disk's report says, as far as it says it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disk {
    /// The drive's own overall verdict.
    pub passed: Option<bool>,
    /// Reallocated sectors (ATA attribute 5) or the SCSI grown defect list.
    pub reallocated: Option<u64>,
    /// Sectors waiting to be remapped (ATA attribute 197).
    pub pending: Option<u64>,
    /// The NVMe critical warning bits (0: none).
    pub critical_warning: Option<u64>,
    pub media_errors: Option<u64>,
    /// smartctl's own error messages, when it could not read the disk.
    pub errors: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Report {
    #[serde(default)]
    smartctl: Option<Meta>,
    #[serde(default)]
    smart_status: Option<Status>,
    #[serde(default)]
    ata_smart_attributes: Option<Attributes>,
    #[serde(default)]
    scsi_grown_defect_list: Option<u64>,
    #[serde(default)]
    nvme_smart_health_information_log: Option<NvmeLog>,
}

#[derive(Debug, Deserialize)]
struct Meta {
    #[serde(default)]
    messages: Vec<Message>,
}

#[derive(Debug, Deserialize)]
struct Message {
    string: String,
    #[serde(default)]
    severity: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    passed: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Attributes {
    #[serde(default)]
    table: Vec<Attribute>,
}

#[derive(Debug, Deserialize)]
struct Attribute {
    id: u32,
    #[serde(default)]
    raw: Option<Raw>,
}

#[derive(Debug, Deserialize)]
struct Raw {
    value: u64,
}

#[derive(Debug, Deserialize)]
struct NvmeLog {
    #[serde(default)]
    critical_warning: Option<u64>,
    #[serde(default)]
    media_errors: Option<u64>,
}

/// One disk's `smartctl --json -H -A` report.
pub fn parse_device(output: &str) -> Result<Disk, ProbeError> {
    let r: Report = serde_json::from_str(output).map_err(ProbeError::Json)?;
    let attr = |id: u32| {
        r.ata_smart_attributes
            .as_ref()?
            .table
            .iter()
            .find(|a| a.id == id)?
            .raw
            .as_ref()
            .map(|raw| raw.value)
    };
    let nvme = r.nvme_smart_health_information_log.as_ref();
    Ok(Disk {
        passed: r.smart_status.as_ref().and_then(|s| s.passed),
        reallocated: attr(5).or(r.scsi_grown_defect_list),
        pending: attr(197),
        critical_warning: nvme.and_then(|n| n.critical_warning),
        media_errors: nvme.and_then(|n| n.media_errors),
        errors: r
            .smartctl
            .map(|m| m.messages)
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.severity.as_deref() == Some("error"))
            .map(|m| m.string)
            .collect(),
    })
}

/// The counters of each disk at the last run, to tell growth from history.
#[derive(Debug, Default)]
pub struct Smart {
    last: BTreeMap<String, Disk>,
    /// Each disk's findings at the last run, for a run that cannot read it.
    last_findings: BTreeMap<String, Vec<Finding>>,
    /// Disks whose read errors were already logged.
    told: BTreeSet<String>,
}

impl Smart {
    /// This run's findings for `disks` (label, report).
    pub fn assess(&mut self, disks: &[(String, Disk)]) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut last = BTreeMap::new();
        let mut last_findings = BTreeMap::new();
        for (label, d) in disks {
            let start = out.len();
            if !d.errors.is_empty() && self.told.insert(label.clone()) {
                // Once per disk: a disk the agent may not read (an NVMe
                // without CAP_SYS_ADMIN, say) would otherwise say so
                // every run.
                tracing::warn!(disk = %label, errors = ?d.errors, "smartctl cannot read a disk");
            }
            let prev = self.last.get(label);
            if d.passed.is_none() && !d.errors.is_empty() {
                // Not read this time (a timeout, an error): what it said
                // last stays, as a failed probe's findings do.
                out.extend(self.last_findings.remove(label).unwrap_or_default());
            }
            if d.passed == Some(false) {
                out.push(finding(
                    Level::Faulty,
                    label,
                    "health",
                    format!("{label}: SMART overall health failed"),
                ));
            }
            if let Some(w) = d.critical_warning.filter(|w| *w != 0) {
                out.push(finding(
                    Level::Degraded,
                    label,
                    "critical_warning",
                    format!(
                        "{label}: NVMe critical warning 0x{w:02x} ({})",
                        warning_bits(w)
                    ),
                ));
            }
            for (what, now, before, words) in [
                (
                    "reallocated",
                    d.reallocated,
                    prev.and_then(|p| p.reallocated),
                    "reallocated sector",
                ),
                (
                    "pending",
                    d.pending,
                    prev.and_then(|p| p.pending),
                    "pending sector",
                ),
                (
                    "media_errors",
                    d.media_errors,
                    prev.and_then(|p| p.media_errors),
                    "media error",
                ),
            ] {
                let (Some(now), Some(before)) = (now, before) else {
                    continue;
                };
                if now > before {
                    let n = now - before;
                    out.push(finding(
                        Level::Degraded,
                        label,
                        what,
                        format!(
                            "{label}: {n} more {words}{} since the last check ({now} now)",
                            if n == 1 { "" } else { "s" }
                        ),
                    ));
                }
            }
            // A counter the disk did not report this time keeps its last
            // value: a failed read is not a reset.
            let mut keep = d.clone();
            if let Some(p) = prev {
                keep.reallocated = keep.reallocated.or(p.reallocated);
                keep.pending = keep.pending.or(p.pending);
                keep.media_errors = keep.media_errors.or(p.media_errors);
            }
            last.insert(label.clone(), keep);
            last_findings.insert(label.clone(), out[start..].to_vec());
        }
        self.last = last;
        self.last_findings = last_findings;
        out
    }
}

fn finding(level: Level, label: &str, what: &str, reason: String) -> Finding {
    Finding {
        level,
        key: format!("smart:{label}:{what}"),
        reason,
    }
}

/// The NVMe critical warning bits in words (NVMe base spec, SMART / Health
/// Information log, byte 0).
fn warning_bits(w: u64) -> String {
    const BITS: [&str; 6] = [
        "spare space below threshold",
        "temperature out of range",
        "reliability degraded",
        "read-only",
        "volatile memory backup failed",
        "persistent memory read-only",
    ];
    let words: Vec<&str> = BITS
        .iter()
        .enumerate()
        .filter(|(i, _)| w & (1 << i) != 0)
        .map(|(_, s)| *s)
        .collect();
    if words.is_empty() {
        "unknown".into()
    } else {
        words.join(", ")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `smartctl --scan-open --json` on a host with a SATA disk, an NVMe
    /// drive, a disk behind a MegaRAID controller and one it could not open.
    pub(crate) const SCAN: &str = r#"{
  "json_format_version": [1, 0],
  "smartctl": {
    "version": [7, 3],
    "svn_revision": "5338",
    "platform_info": "x86_64-linux-6.1.0-18-amd64",
    "build_info": "(local build)",
    "argv": ["smartctl", "--scan-open", "--json"],
    "exit_status": 0
  },
  "devices": [
    {"name": "/dev/sda", "info_name": "/dev/sda [SAT]", "type": "sat", "protocol": "ATA"},
    {"name": "/dev/sdb", "info_name": "/dev/sdb", "type": "scsi", "protocol": "SCSI",
     "open_error": "INQUIRY failed"},
    {"name": "/dev/bus/0", "info_name": "/dev/bus/0 [megaraid_disk_01]", "type": "megaraid,1", "protocol": "SCSI"},
    {"name": "/dev/nvme0", "info_name": "/dev/nvme0", "type": "nvme", "protocol": "NVMe"}
  ]
}"#;

    /// `smartctl --json -H -A -d sat /dev/sda` on a failing SATA disk
    /// (exit status 0x18: failing, prefail attribute at threshold).
    pub(crate) fn sata(passed: bool, reallocated: u64, pending: u64) -> String {
        format!(
            r#"{{
  "json_format_version": [1, 0],
  "smartctl": {{
    "version": [7, 3],
    "argv": ["smartctl", "--json", "-H", "-A", "-d", "sat", "/dev/sda"],
    "exit_status": 24
  }},
  "device": {{"name": "/dev/sda", "info_name": "/dev/sda [SAT]", "type": "sat", "protocol": "ATA"}},
  "smart_support": {{"available": true, "enabled": true}},
  "smart_status": {{"passed": {passed}}},
  "ata_smart_attributes": {{
    "revision": 16,
    "table": [
      {{"id": 1, "name": "Raw_Read_Error_Rate", "value": 200, "worst": 200, "thresh": 51,
        "when_failed": "", "flags": {{"value": 47, "string": "POSR-K ", "prefailure": true,
        "updated_online": true, "performance": true, "error_rate": true, "event_count": false,
        "auto_keep": true}}, "raw": {{"value": 0, "string": "0"}}}},
      {{"id": 5, "name": "Reallocated_Sector_Ct", "value": 1, "worst": 1, "thresh": 140,
        "when_failed": "now", "flags": {{"value": 51, "string": "PO--CK ", "prefailure": true,
        "updated_online": true, "performance": false, "error_rate": false, "event_count": true,
        "auto_keep": true}}, "raw": {{"value": {reallocated}, "string": "{reallocated}"}}}},
      {{"id": 194, "name": "Temperature_Celsius", "value": 114, "worst": 97, "thresh": 0,
        "when_failed": "", "flags": {{"value": 34, "string": "-O---K ", "prefailure": false,
        "updated_online": true, "performance": false, "error_rate": false, "event_count": false,
        "auto_keep": true}}, "raw": {{"value": 38, "string": "38"}}}},
      {{"id": 197, "name": "Current_Pending_Sector", "value": 200, "worst": 200, "thresh": 0,
        "when_failed": "", "flags": {{"value": 50, "string": "-O--CK ", "prefailure": false,
        "updated_online": true, "performance": false, "error_rate": false, "event_count": true,
        "auto_keep": true}}, "raw": {{"value": {pending}, "string": "{pending}"}}}}
    ]
  }},
  "power_on_time": {{"hours": 41290}},
  "temperature": {{"current": 38}}
}}"#
        )
    }

    /// `smartctl --json -H -A -d nvme /dev/nvme0`.
    pub(crate) fn nvme(warning: u64, media_errors: u64) -> String {
        format!(
            r#"{{
  "json_format_version": [1, 0],
  "smartctl": {{"version": [7, 3], "exit_status": 0}},
  "device": {{"name": "/dev/nvme0", "info_name": "/dev/nvme0", "type": "nvme", "protocol": "NVMe"}},
  "smart_support": {{"available": true, "enabled": true}},
  "smart_status": {{"passed": true, "nvme": {{"value": {warning}}}}},
  "nvme_smart_health_information_log": {{
    "critical_warning": {warning},
    "temperature": 41,
    "available_spare": 100,
    "available_spare_threshold": 10,
    "percentage_used": 3,
    "data_units_read": 48318722,
    "data_units_written": 61202471,
    "host_reads": 612843216,
    "host_writes": 1023487365,
    "controller_busy_time": 2381,
    "power_cycles": 64,
    "power_on_hours": 19871,
    "unsafe_shutdowns": 21,
    "media_errors": {media_errors},
    "num_err_log_entries": 112,
    "warning_temp_time": 0,
    "critical_comp_time": 0
  }},
  "temperature": {{"current": 41}},
  "power_on_time": {{"hours": 19871}}
}}"#
        )
    }

    /// smartctl without the rights to open an NVMe drive (exit status 2).
    pub(crate) const DENIED: &str = r#"{
  "json_format_version": [1, 0],
  "smartctl": {
    "version": [7, 3],
    "argv": ["smartctl", "--json", "-H", "-A", "-d", "nvme", "/dev/nvme0"],
    "messages": [
      {"string": "Smartctl open device: /dev/nvme0 failed: Permission denied", "severity": "error"}
    ],
    "exit_status": 2
  }
}"#;

    #[test]
    fn the_scan_lists_the_disks_it_could_open() {
        let d = parse_scan(SCAN).unwrap();
        let labels: Vec<String> = d.iter().map(Device::label).collect();
        assert_eq!(labels, ["sda", "bus/0 [megaraid,1]", "nvme0"]);
        assert_eq!(
            d[1].args(),
            ["--json", "-H", "-A", "-d", "megaraid,1", "/dev/bus/0"]
        );
        // --scan (without -open) has no open_error and an older smartctl
        // may leave out the type.
        let plain = parse_scan(r#"{"devices":[{"name":"/dev/sda"}]}"#).unwrap();
        assert_eq!(plain[0].args(), ["--json", "-H", "-A", "/dev/sda"]);
        assert_eq!(parse_scan(r#"{"smartctl":{}}"#).unwrap(), []);
        assert!(parse_scan("smartctl: unrecognized option '--json'").is_err());
    }

    #[test]
    fn reads_sata_nvme_and_unreadable_reports() {
        assert_eq!(
            parse_device(&sata(false, 1960, 8)).unwrap(),
            Disk {
                passed: Some(false),
                reallocated: Some(1960),
                pending: Some(8),
                ..Disk::default()
            }
        );
        assert_eq!(
            parse_device(&nvme(4, 2)).unwrap(),
            Disk {
                passed: Some(true),
                critical_warning: Some(4),
                media_errors: Some(2),
                ..Disk::default()
            }
        );
        let d = parse_device(DENIED).unwrap();
        assert_eq!(d.passed, None);
        assert_eq!(
            d.errors,
            ["Smartctl open device: /dev/nvme0 failed: Permission denied"]
        );
        let sas = parse_device(r#"{"smart_status":{"passed":true},"scsi_grown_defect_list":12}"#)
            .unwrap();
        assert_eq!(sas.reallocated, Some(12));
        assert!(parse_device("").is_err());
    }

    fn assess(s: &mut Smart, disks: &[(&str, &str)]) -> Vec<(Level, String)> {
        let disks: Vec<(String, Disk)> = disks
            .iter()
            .map(|(l, j)| (l.to_string(), parse_device(j).unwrap()))
            .collect();
        s.assess(&disks)
            .into_iter()
            .map(|f| (f.level, f.reason))
            .collect()
    }

    #[test]
    fn a_failed_verdict_is_faulty_every_run() {
        let mut s = Smart::default();
        for _ in 0..2 {
            assert_eq!(
                assess(&mut s, &[("sda", &sata(false, 0, 0))]),
                [(Level::Faulty, "sda: SMART overall health failed".into())]
            );
        }
    }

    #[test]
    fn growing_counters_degrade_history_does_not() {
        let mut s = Smart::default();
        assert_eq!(
            assess(
                &mut s,
                &[("sda", &sata(true, 1960, 8)), ("nvme0", &nvme(0, 3))]
            ),
            [],
            "the first counts are a baseline"
        );
        assert_eq!(
            assess(
                &mut s,
                &[("sda", &sata(true, 1968, 2)), ("nvme0", &nvme(0, 5))]
            ),
            [
                (
                    Level::Degraded,
                    "sda: 8 more reallocated sectors since the last check (1968 now)".into()
                ),
                (
                    Level::Degraded,
                    "nvme0: 2 more media errors since the last check (5 now)".into()
                ),
            ],
            "pending sectors going down is remapping, not news"
        );
        // Unchanged: the cause is gone (the evaluator holds it a while).
        assert_eq!(
            assess(
                &mut s,
                &[("sda", &sata(true, 1968, 2)), ("nvme0", &nvme(0, 5))]
            ),
            []
        );
        // A run that could not read the counters is not a reset.
        assert_eq!(assess(&mut s, &[("sda", DENIED)]), []);
        assert_eq!(
            assess(&mut s, &[("sda", &sata(true, 1968, 3))]),
            [(
                Level::Degraded,
                "sda: 1 more pending sector since the last check (3 now)".into()
            )]
        );
    }

    /// A disk that cannot be read this run (smartctl timed out on it)
    /// keeps its last findings; the probe failing is not news by itself.
    #[test]
    fn an_unreadable_disk_keeps_its_last_findings() {
        let mut s = Smart::default();
        let failed = [(
            Level::Faulty,
            "sda: SMART overall health failed".to_string(),
        )];
        assert_eq!(assess(&mut s, &[("sda", &sata(false, 0, 0))]), failed);
        assert_eq!(assess(&mut s, &[("sda", DENIED)]), failed);
        assert_eq!(assess(&mut s, &[("sda", DENIED)]), failed);
        assert_eq!(assess(&mut s, &[("sda", &sata(true, 0, 0))]), []);
        assert_eq!(assess(&mut s, &[("sda", DENIED)]), []);
    }

    #[test]
    fn an_nvme_critical_warning_is_degraded_while_it_lasts() {
        let mut s = Smart::default();
        assert_eq!(
            assess(&mut s, &[("nvme0", &nvme(0x05, 0))]),
            [(
                Level::Degraded,
                "nvme0: NVMe critical warning 0x05 (spare space below threshold, \
                 reliability degraded)"
                    .into()
            )]
        );
        assert_eq!(assess(&mut s, &[("nvme0", &nvme(0, 0))]), []);
    }
}
