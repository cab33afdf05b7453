//! The agent's configuration file (TOML).
//!
//! Strict on purpose: an unknown key is far more often a typo that would
//! silently leave a default in force than a deliberate extension, so every
//! section denies unknown fields, and every error names the file and key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// `[state]` is defined with rackside-hook, which reads `run_dir` from
/// this same file: one type, one default, one rule.
pub use rackside_contract::StateSection;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub host: HostSection,
    #[serde(default)]
    pub libvirt: LibvirtSection,
    #[serde(default)]
    pub console: Vec<ConsoleSection>,
    #[serde(default)]
    pub peer: Vec<PeerSection>,
    #[serde(default)]
    pub placement: PlacementSection,
    #[serde(default)]
    pub migration: MigrationSection,
    #[serde(default)]
    pub power: PowerSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub health: HealthSection,
    #[serde(default)]
    pub crash: CrashSection,
    #[serde(default)]
    pub state: StateSection,
}

/// What the agent does about a crashed VM (crate::crash).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CrashSection {
    /// `restart`: restart a crashed VM here while this host is ok;
    /// `leave`: leave it as it is.
    #[serde(default = "default_crash_policy")]
    pub policy: crate::crash::Policy,
    /// Restarts allowed per VM within `window_s`; then it is left alone.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    #[serde(default = "default_restart_window")]
    pub window_s: u64,
}

impl Default for CrashSection {
    fn default() -> Self {
        Self {
            policy: default_crash_policy(),
            max_restarts: default_max_restarts(),
            window_s: default_restart_window(),
        }
    }
}

fn default_crash_policy() -> crate::crash::Policy {
    crate::crash::Policy::Restart
}
fn default_max_restarts() -> u32 {
    3
}
fn default_restart_window() -> u64 {
    600
}

/// Where the host's health is read and what counts (crate::health).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// Where sysfs is; a directory of fixture files in the lab.
    #[serde(default = "default_sysfs_root")]
    pub sysfs_root: PathBuf,
    /// Seconds between readings.
    #[serde(default = "default_health_period")]
    pub period_s: u64,
    /// Network interfaces that must be up (the migration and guest
    /// networks, say); one down or missing makes the host degraded.
    #[serde(default)]
    pub links: Vec<String>,
    /// Corrected memory errors in one period that make the host degraded
    /// (any uncorrected one makes it faulty).
    #[serde(default = "default_ce_degraded")]
    pub edac_ce_degraded: u64,
    /// Degrees below a thermal zone's critical point that count as degraded.
    #[serde(default = "default_temp_margin")]
    pub temp_margin_c: f64,
    /// How long a finding stays after its cause is gone.
    #[serde(default = "default_hold")]
    pub hold_s: u64,
    /// When a VM crashes on this host while it is faulty, evacuate the
    /// host's other VMs too (and end with the usual verdict).
    #[serde(default)]
    pub evacuate_on_faulty: bool,
    /// Optional probes (crate::health::probe), each run only where its
    /// tool is installed.
    #[serde(default = "default_probes")]
    pub probes: Vec<crate::health::probe::Kind>,
    /// Seconds between probe runs: the tools are slow (a BMC takes
    /// seconds to list its sensors) and what they read changes slowly.
    #[serde(default = "default_probe_period")]
    pub probe_period_s: u64,
    /// Seconds one probe command may take before it is killed.
    #[serde(default = "default_probe_timeout")]
    pub probe_timeout_s: u64,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            sysfs_root: default_sysfs_root(),
            period_s: default_health_period(),
            links: Vec::new(),
            edac_ce_degraded: default_ce_degraded(),
            temp_margin_c: default_temp_margin(),
            hold_s: default_hold(),
            evacuate_on_faulty: false,
            probes: default_probes(),
            probe_period_s: default_probe_period(),
            probe_timeout_s: default_probe_timeout(),
        }
    }
}

impl HealthSection {
    pub fn thresholds(&self) -> crate::health::eval::Thresholds {
        crate::health::eval::Thresholds {
            edac_ce_degraded: self.edac_ce_degraded,
            temp_margin_c: self.temp_margin_c,
            hold: Duration::from_secs(self.hold_s),
        }
    }
}

fn default_sysfs_root() -> PathBuf {
    PathBuf::from("/sys")
}
fn default_health_period() -> u64 {
    5
}
fn default_ce_degraded() -> u64 {
    10
}
fn default_temp_margin() -> f64 {
    5.0
}
fn default_hold() -> u64 {
    30
}
fn default_probes() -> Vec<crate::health::probe::Kind> {
    crate::health::probe::Kind::ALL.to_vec()
}
fn default_probe_period() -> u64 {
    300
}
fn default_probe_timeout() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// Default: the machine's hostname.
    pub name: Option<String>,
    #[serde(default)]
    pub location: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LibvirtSection {
    #[serde(default = "default_uri")]
    pub uri: String,
    /// Seconds between bulk stats calls.
    #[serde(default = "default_poll")]
    pub poll_interval_s: f64,
}

impl Default for LibvirtSection {
    fn default() -> Self {
        Self {
            uri: default_uri(),
            poll_interval_s: default_poll(),
        }
    }
}

fn default_uri() -> String {
    "qemu:///system".into()
}
fn default_poll() -> f64 {
    5.0
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    pub path: PathBuf,
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Echo typed characters (off for terminals that echo locally).
    #[serde(default = "default_true")]
    pub echo: bool,
}

fn default_baud() -> u32 {
    115_200
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    pub name: String,
    pub uri: String,
    pub migrate_uri: Option<String>,
    #[serde(default)]
    pub location: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Balance,
    Pack,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlacementSection {
    #[serde(default = "default_strategy")]
    pub strategy: Strategy,
    #[serde(default = "default_threshold")]
    pub load_threshold: f64,
    #[serde(default = "default_reserve")]
    pub mem_reserve_mib: u64,
    #[serde(default = "default_overcommit")]
    pub vcpu_overcommit: f64,
}

impl Default for PlacementSection {
    fn default() -> Self {
        Self {
            strategy: default_strategy(),
            load_threshold: default_threshold(),
            mem_reserve_mib: default_reserve(),
            vcpu_overcommit: default_overcommit(),
        }
    }
}

fn default_strategy() -> Strategy {
    Strategy::Balance
}
fn default_threshold() -> f64 {
    0.8
}
fn default_reserve() -> u64 {
    1024
}
fn default_overcommit() -> f64 {
    4.0
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MigrationSection {
    #[serde(default = "default_parallel")]
    pub max_parallel: u32,
    /// Migrations into any one destination at once.
    #[serde(default = "default_per_dest")]
    pub max_per_destination: u32,
    /// MiB/s per migration; 0: no cap.
    #[serde(default)]
    pub bandwidth_mib_s: u64,
    /// Evacuations also move shut-off persistent VMs (their definitions).
    #[serde(default = "default_true")]
    pub move_shutoff: bool,
    /// Let QEMU throttle a guest's vCPUs when it dirties memory too fast.
    #[serde(default)]
    pub auto_converge: bool,
    /// Allowed downtime, raised one step each time a migration stops converging.
    #[serde(default = "default_downtime_steps")]
    pub downtime_steps_ms: Vec<u64>,
    /// Give up on a migration that moves no data for this long.
    #[serde(default = "default_no_progress")]
    pub no_progress_timeout_s: u64,
    /// Give up on a migration taking longer than this per GiB of guest memory.
    #[serde(default = "default_budget")]
    pub budget_s_per_gib: u64,
    /// Copy a VM's local disks to the destination during a live migration
    /// (libvirt's non-shared-disk migration). Off: VMs with a local disk
    /// are unplaceable.
    #[serde(default = "default_true")]
    pub copy_local_disks: bool,
    /// Encrypt the migration stream (VIR_MIGRATE_TLS): on by default, since
    /// guest memory holds keys and passwords; hosts need certificates.
    #[serde(default = "default_true")]
    pub tls: bool,
}

impl Default for MigrationSection {
    fn default() -> Self {
        Self {
            max_parallel: default_parallel(),
            max_per_destination: default_per_dest(),
            bandwidth_mib_s: 0,
            move_shutoff: true,
            auto_converge: false,
            downtime_steps_ms: default_downtime_steps(),
            no_progress_timeout_s: default_no_progress(),
            budget_s_per_gib: default_budget(),
            copy_local_disks: true,
            tls: true,
        }
    }
}

fn default_per_dest() -> u32 {
    2
}
fn default_downtime_steps() -> Vec<u64> {
    vec![100, 200, 300, 500]
}
fn default_no_progress() -> u64 {
    60
}
fn default_budget() -> u64 {
    150
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PowerSection {
    /// `poweroff` (and `evacuate ... poweroff`) act only when this is true.
    #[serde(default)]
    pub allow: bool,
    /// What powering off runs.
    #[serde(default = "default_poweroff")]
    pub command: Vec<String>,
    /// What `identify SECONDS` runs, with the seconds appended (0: off),
    /// e.g. ["ipmitool", "chassis", "identify"]. Empty: not available.
    #[serde(default)]
    pub identify_command: Vec<String>,
}

impl Default for PowerSection {
    fn default() -> Self {
        Self {
            allow: false,
            command: default_poweroff(),
            identify_command: Vec::new(),
        }
    }
}

fn default_poweroff() -> Vec<String> {
    vec!["systemctl".into(), "poweroff".into()]
}

fn default_parallel() -> u32 {
    2
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// argon2 PHC string from `rackside-agent hash-pin`; absent: no PIN.
    pub pin_hash: Option<String>,
    /// A session's login ends after this long without a command.
    #[serde(default = "default_idle")]
    pub idle_timeout_s: u64,
    /// A login ends this long after it began, however busy.
    #[serde(default = "default_login_lifetime")]
    pub login_lifetime_s: u64,
    /// Wrong PINs, on all lines together, before logins lock.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// The first lockout; each one in a row lasts twice as long (to 1 h).
    #[serde(default = "default_lockout")]
    pub lockout_s: u64,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            pin_hash: None,
            idle_timeout_s: default_idle(),
            login_lifetime_s: default_login_lifetime(),
            max_failures: default_max_failures(),
            lockout_s: default_lockout(),
        }
    }
}

fn default_idle() -> u64 {
    600
}
fn default_login_lifetime() -> u64 {
    4 * 3600
}
fn default_max_failures() -> u32 {
    5
}
fn default_lockout() -> u64 {
    300
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: describe_toml_error(text, &e),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        if let Some(n) = &self.host.name {
            rackside_protocol::validate_name("host", n).map_err(|m| bad("host.name", m))?;
        }
        if self.libvirt.uri.trim().is_empty() || self.libvirt.uri.contains('\0') {
            return Err(bad("libvirt.uri", "must be a libvirt URI".into()));
        }
        let p = self.libvirt.poll_interval_s;
        if !(0.2..=3600.0).contains(&p) {
            return Err(bad(
                "libvirt.poll_interval_s",
                format!("{p} is outside 0.2..=3600"),
            ));
        }
        let mut paths = std::collections::HashSet::new();
        for (i, c) in self.console.iter().enumerate() {
            let key = format!("console[{i}]");
            if !c.path.is_absolute() {
                return Err(bad(
                    &format!("{key}.path"),
                    "must be an absolute path".into(),
                ));
            }
            if !paths.insert(&c.path) {
                return Err(bad(
                    &format!("{key}.path"),
                    format!("{} listed twice", c.path.display()),
                ));
            }
            if crate::console::tty::baud_rate(c.baud).is_none() {
                return Err(bad(
                    &format!("{key}.baud"),
                    format!("{} is not a supported baud rate", c.baud),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, peer) in self.peer.iter().enumerate() {
            let key = format!("peer[{i}]");
            rackside_protocol::validate_name("peer", &peer.name)
                .map_err(|m| bad(&format!("{key}.name"), m))?;
            if Some(&peer.name) == self.host.name.as_ref() {
                return Err(bad(
                    &format!("{key}.name"),
                    "a peer cannot be this host".into(),
                ));
            }
            if !names.insert(&peer.name) {
                return Err(bad(
                    &format!("{key}.name"),
                    format!("peer {:?} listed twice", peer.name),
                ));
            }
            if peer.uri.trim().is_empty() || peer.uri.contains('\0') {
                return Err(bad(&format!("{key}.uri"), "must be a libvirt URI".into()));
            }
            if peer
                .migrate_uri
                .as_deref()
                .is_some_and(|u| u.contains('\0') || u.trim().is_empty())
            {
                return Err(bad(&format!("{key}.migrate_uri"), "must be a URI".into()));
            }
        }
        if self.crash.max_restarts > 100 {
            return Err(bad(
                "crash.max_restarts",
                format!("{} is over 100", self.crash.max_restarts),
            ));
        }
        if !(1..=86_400).contains(&self.crash.window_s) {
            return Err(bad(
                "crash.window_s",
                format!("{} is outside 1..=86400", self.crash.window_s),
            ));
        }
        let h = &self.health;
        if !h.sysfs_root.is_absolute() {
            return Err(bad("health.sysfs_root", "must be an absolute path".into()));
        }
        if !(1..=3600).contains(&h.period_s) {
            return Err(bad(
                "health.period_s",
                format!("{} is outside 1..=3600", h.period_s),
            ));
        }
        for (i, l) in h.links.iter().enumerate() {
            let ok = !l.is_empty()
                && l.len() < 16
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
            if !ok {
                return Err(bad(
                    &format!("health.links[{i}]"),
                    format!("{l:?} is not an interface name"),
                ));
            }
        }
        if h.edac_ce_degraded == 0 {
            return Err(bad("health.edac_ce_degraded", "must be at least 1".into()));
        }
        if !(0.0..=50.0).contains(&h.temp_margin_c) {
            return Err(bad(
                "health.temp_margin_c",
                format!("{} is outside 0..=50", h.temp_margin_c),
            ));
        }
        if h.hold_s > 86_400 {
            return Err(bad("health.hold_s", format!("{} is over a day", h.hold_s)));
        }
        for (i, p) in h.probes.iter().enumerate() {
            if h.probes[..i].contains(p) {
                return Err(bad(
                    &format!("health.probes[{i}]"),
                    format!("{} listed twice", p.as_str()),
                ));
            }
        }
        // Under 10 s the tools would run back to back; over a day, a
        // failing disk would go unseen for too long.
        for (key, v, range) in [
            ("health.probe_period_s", h.probe_period_s, 10..=86_400),
            ("health.probe_timeout_s", h.probe_timeout_s, 1..=600),
        ] {
            if !range.contains(&v) {
                return Err(bad(
                    key,
                    format!("{v} is outside {}..={}", range.start(), range.end()),
                ));
            }
        }
        let t = self.placement.load_threshold;
        if !(t > 0.0 && t <= 1.0) {
            return Err(bad(
                "placement.load_threshold",
                format!("{t} is outside (0, 1]"),
            ));
        }
        let o = self.placement.vcpu_overcommit;
        if !(1.0..=64.0).contains(&o) {
            return Err(bad(
                "placement.vcpu_overcommit",
                format!("{o} is outside 1..=64"),
            ));
        }
        if !(1..=16).contains(&self.migration.max_parallel) {
            return Err(bad(
                "migration.max_parallel",
                format!("{} is outside 1..=16", self.migration.max_parallel),
            ));
        }
        if !(1..=8).contains(&self.migration.max_per_destination) {
            return Err(bad(
                "migration.max_per_destination",
                format!("{} is outside 1..=8", self.migration.max_per_destination),
            ));
        }
        if self
            .migration
            .downtime_steps_ms
            .iter()
            .any(|&d| d == 0 || d > 60_000)
        {
            return Err(bad(
                "migration.downtime_steps_ms",
                "each step must be 1..=60000 ms".into(),
            ));
        }
        if self.migration.no_progress_timeout_s == 0 || self.migration.budget_s_per_gib == 0 {
            return Err(bad(
                "migration",
                "no_progress_timeout_s and budget_s_per_gib must be at least 1".into(),
            ));
        }
        if self.power.command.is_empty() || self.power.command[0].trim().is_empty() {
            return Err(bad("power.command", "must name a program".into()));
        }
        if let Some(h) = &self.auth.pin_hash {
            crate::auth::check_hash(h).map_err(|e| bad("auth.pin_hash", e.to_string()))?;
        }
        if self.auth.max_failures == 0 {
            return Err(bad("auth.max_failures", "must be at least 1".into()));
        }
        // Zero would end every login at once (or never lock): a typo, not
        // a policy.
        let a = &self.auth;
        for (key, v, range) in [
            ("auth.idle_timeout_s", a.idle_timeout_s, 10..=86_400),
            ("auth.login_lifetime_s", a.login_lifetime_s, 60..=604_800),
            ("auth.lockout_s", a.lockout_s, 1..=3_600),
        ] {
            if !range.contains(&v) {
                return Err(bad(
                    key,
                    format!("{v} is outside {}..={}", range.start(), range.end()),
                ));
            }
        }
        if let Some(key) = self.state.relative_key() {
            return Err(bad(key, "must be an absolute path".into()));
        }
        Ok(())
    }

    /// This host's name: configured, else the machine's hostname.
    pub fn host_name(&self) -> String {
        self.host.name.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        })
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.libvirt.poll_interval_s)
    }
}

/// `LINE:COL: message (in: the offending line)`: the offending line names
/// the key even where the message itself (a wrong type) does not.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return msg;
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let source = text.lines().nth(line - 1).unwrap_or("").trim();
    format!("{line}:{col}: {msg} (in: {source})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("/etc/rackside/agent.toml"))
    }

    const FULL: &str = r#"
[host]
name = "ha"
location = "DC1 / room 3 / rack 12 / U07"
[libvirt]
uri = "qemu:///system"
[[console]]
path = "/dev/ttyS1"
baud = 115200
[[peer]]
name = "hb"
uri = "qemu+tls://hb/system"
migrate_uri = "tcp://10.0.0.2"
[placement]
strategy = "balance"
load_threshold = 0.8
mem_reserve_mib = 1024
vcpu_overcommit = 4.0
[migration]
max_parallel = 2
bandwidth_mib_s = 0
[state]
dir = "/var/lib/rackside"
"#;

    #[test]
    fn the_issue_example_parses() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.host.name.as_deref(), Some("ha"));
        assert_eq!(c.console[0].baud, 115200);
        assert!(c.console[0].echo);
        assert_eq!(c.peer[0].migrate_uri.as_deref(), Some("tcp://10.0.0.2"));
        assert_eq!(c.placement.strategy, Strategy::Balance);
        assert_eq!(c.auth.pin_hash, None);
    }

    #[test]
    fn the_shipped_example_is_valid_and_all_defaults() {
        let shipped = include_str!("../../packaging/agent.toml");
        assert_eq!(parse(shipped).unwrap(), parse("").unwrap());
        // Uncommented, every documented key is a real key.
        let uncommented: String = shipped
            .lines()
            .map(|l| {
                l.strip_prefix('#')
                    .filter(|r| !r.starts_with(' ') && !r.is_empty())
                    .unwrap_or(l)
            })
            .map(|l| {
                if l.starts_with("pin_hash") {
                    "".to_string()
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let c = parse(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert_eq!(c.console.len(), 1);
        assert_eq!(c.peer[0].name, "kvm-b");
    }

    #[test]
    fn empty_file_means_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.libvirt.uri, "qemu:///system");
        assert_eq!(c.migration.max_parallel, 2);
        assert_eq!(c.auth.max_failures, 5);
        assert_eq!(c.auth.lockout_s, 300);
        assert!(c.migration.tls, "migration is encrypted unless turned off");
        assert_eq!(c.health.probes.len(), 3, "every probe whose tool is here");
        assert!(parse("[health]\nprobes = []\n")
            .unwrap()
            .health
            .probes
            .is_empty());
        assert!(!parse("[migration]\ntls = false\n").unwrap().migration.tls);
    }

    fn err(t: &str) -> String {
        parse(t).unwrap_err().to_string()
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err("[placement]\nstrategy = \"balance\"\nload_treshold = 0.5\n");
        assert!(e.contains("load_treshold"), "{e}");
        assert!(e.contains("/etc/rackside/agent.toml"), "{e}");
        assert!(err("[hosts]\nname='x'\n").contains("hosts"));
    }

    #[test]
    fn wrong_types_and_impossible_values_are_named() {
        let e = err("[migration]\nmax_parallel = \"two\"\n");
        assert!(e.contains("max_parallel"), "{e}");
        assert!(err("[migration]\nmax_parallel = 0\n").contains("migration.max_parallel"));
        assert!(err("[placement]\nload_threshold = 1.5\n").contains("placement.load_threshold"));
        assert!(err("[placement]\nstrategy = \"random\"\n").contains("strategy"));
        assert!(
            err("[[console]]\npath = \"/dev/ttyS0\"\nbaud = 12345\n").contains("console[0].baud")
        );
        assert!(err("[[console]]\npath = \"ttyS0\"\n").contains("console[0].path"));
        assert!(err("[[peer]]\nname = \"a b\"\nuri = \"x\"\n").contains("peer[0].name"));
        assert!(
            err("[host]\nname = \"ha\"\n[[peer]]\nname = \"ha\"\nuri = \"x\"\n")
                .contains("peer[0].name")
        );
        assert!(err("[auth]\npin_hash = \"1234\"\n").contains("auth.pin_hash"));
        assert!(err("[auth]\nidle_timeout_s = 0\n").contains("auth.idle_timeout_s"));
        assert!(err("[auth]\nlogin_lifetime_s = 0\n").contains("auth.login_lifetime_s"));
        assert!(err("[auth]\nlockout_s = 0\n").contains("auth.lockout_s"));
        assert!(err("[health]\nlinks = [\"a b\"]\n").contains("health.links[0]"));
        assert!(err("[health]\nsysfs_root = \"sys\"\n").contains("health.sysfs_root"));
        assert!(err("[crash]\nwindow_s = 0\n").contains("crash.window_s"));
        assert!(err("[health]\nprobes = [\"smartd\"]\n").contains("smartd"));
        assert!(
            err("[health]\nprobes = [\"smartctl\", \"smartctl\"]\n").contains("health.probes[1]")
        );
        assert!(err("[health]\nprobe_period_s = 5\n").contains("health.probe_period_s"));
        assert!(err("[health]\nprobe_timeout_s = 0\n").contains("health.probe_timeout_s"));
        assert!(err("[crash]\npolicy = \"reboot\"\n").contains("policy"));
        assert!(err("[state]\ndir = \"rel\"\n").contains("state.dir"));
        assert!(err("[state]\nrun_dir = \"rel\"\n").contains("state.run_dir"));
    }
}
