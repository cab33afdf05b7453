//! Answers to the reading commands, built from an inventory snapshot: the
//! JSON `data` of docs/protocol.md and the text a person sees. Pure functions of
//! the snapshot and the clock, so they are tested without libvirt.

use std::time::Instant;

use rackside_protocol::{table, Command, ErrorCode, Text};
use serde_json::{json, Value};

use crate::inventory::model::{allocation, VmState};
use crate::inventory::{peers, Link, State};

/// A successful answer in both forms.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub data: Value,
    pub text: Text,
}

pub type Refusal = (ErrorCode, String);

/// What a session asks of the agent. The agent implements it over the live
/// inventory; tests implement it over fixed snapshots.
pub trait Backend: Send + Sync {
    /// `line` names the management line the command came from (logs and
    /// the journal record it).
    fn answer(&self, cmd: &Command, line: &str) -> Result<Answer, Refusal>;
}

/// Facts about this host that do not come from the inventory.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub name: String,
    pub location: String,
    pub libvirt_uri: String,
    pub version: &'static str,
}

pub fn help() -> Answer {
    const LINES: &[(&str, &str)] = &[
        ("help", "this list"),
        ("status", "this host: state, health, CPU, memory, VMs"),
        ("vms", "the VMs on this host"),
        ("hosts", "this host and its peers"),
        ("plan [HOST|auto]", "dry run of an evacuation"),
        ("migrate VM [HOST|auto]", "live-migrate one VM"),
        ("evacuate [HOST|auto] [poweroff]", "move every VM away"),
        ("jobs", "migrations of the current and last evacuation"),
        ("abort [VM]", "stop migrations"),
        ("maintenance on|off", "keep this host out of plans"),
        (
            "login PIN / logout",
            "unlock / lock commands that change things",
        ),
        ("subscribe / unsubscribe", "events on this line"),
        ("mode json|text", "switch this line's format"),
        ("locate VM", "where a VM is"),
        ("identify [on|off|SECONDS]", "blink this host's locator"),
        ("poweroff", "power off, only when empty"),
    ];
    let rows: Vec<Vec<String>> = LINES
        .iter()
        .map(|(c, d)| vec![c.to_string(), d.to_string()])
        .collect();
    Answer {
        data: json!({ "commands": rackside_protocol::COMMANDS }),
        text: table::render(&["COMMAND", "WHAT"], &rows),
    }
}

fn link_word(link: &Link) -> &'static str {
    match link {
        Link::Connecting => "connecting",
        Link::Up => "up",
        Link::Down { .. } => "down",
    }
}

/// Seconds since `t`, rounded.
fn age(now: Instant, t: Option<Instant>) -> Option<u64> {
    t.map(|t| now.saturating_duration_since(t).as_secs())
}

/// The warning line a person sees when figures are not live.
fn stale_note(s: &State, now: Instant) -> Option<String> {
    match &s.local.link {
        Link::Up => None,
        Link::Connecting => Some("note: libvirt not answered yet".into()),
        Link::Down { since, error } => Some(format!(
            "warning: libvirt unreachable for {} s ({error}); VM figures are {} old",
            now.saturating_duration_since(*since).as_secs(),
            age(now, s.local.vms_at).map_or("unknown".into(), |a| format!("{a} s")),
        )),
    }
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// `host_state`: what the evacuation controller says (active,
/// maintenance, evacuating, empty); `maintenance`: the flag itself.
pub fn status(
    s: &State,
    host: &HostInfo,
    now: Instant,
    host_state: &str,
    maintenance: bool,
) -> Answer {
    let known = s.local.vms_at.is_some();
    let a = allocation(&s.local.vms);
    let f = &s.local.figures;
    let state = host_state;
    let stale = !matches!(s.local.link, Link::Up);
    let n = |v: u64| if known { json!(v) } else { Value::Null };
    let data = json!({
        "host": host.name,
        "location": host.location,
        "state": state,
        "maintenance": maintenance,
        "health": f.health,
        "cpus": f.cpus,
        "load1": f.load1,
        "cpu_pct": f.cpu_pct,
        "mem_total_mib": f.mem_total_mib,
        "mem_free_mib": f.mem_free_mib,
        "vms_running": n(a.running as u64),
        "vms_defined": n(a.defined as u64),
        "vcpus_allocated": n(a.vcpus as u64),
        "mem_allocated_mib": n(a.mem_mib),
        "version": host.version,
        "libvirt": link_word(&s.local.link),
        "stale": stale,
        "age_s": age(now, s.local.vms_at),
    });
    let show = |k: &str| match &data[k] {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let mut pairs: Vec<(&str, String)> = vec![
        ("host", show("host")),
        ("location", show("location")),
        ("state", show("state")),
        ("health", show("health")),
        ("cpus", show("cpus")),
        ("load1", show("load1")),
        ("cpu %", show("cpu_pct")),
        (
            "memory",
            format!("{} MiB free of {}", f.mem_free_mib, f.mem_total_mib),
        ),
        (
            "vms",
            format!(
                "{} running, {} defined",
                show("vms_running"),
                show("vms_defined")
            ),
        ),
        (
            "allocated",
            format!(
                "{} vCPUs, {} MiB",
                show("vcpus_allocated"),
                show("mem_allocated_mib")
            ),
        ),
        (
            "libvirt",
            format!("{} ({})", show("libvirt"), host.libvirt_uri),
        ),
        ("version", show("version")),
    ];
    if let Some(w) = stale_note(s, now) {
        pairs.push(("", w));
    }
    Answer {
        data,
        text: table::render_kv(&pairs),
    }
}

pub fn vms(s: &State, now: Instant) -> Result<Answer, Refusal> {
    if s.local.vms_at.is_none() {
        let why = match &s.local.link {
            Link::Down { error, .. } => format!("libvirt unreachable: {error}"),
            _ => "libvirt has not answered yet".into(),
        };
        return Err((ErrorCode::Unavailable, why));
    }
    let list: Vec<Value> = s
        .local
        .vms
        .iter()
        .map(|v| {
            json!({
                "name": v.name, "uuid": v.uuid, "state": v.state.as_str(),
                "vcpus": v.vcpus, "mem_mib": v.mem_mib, "cpu_pct": v.cpu_pct,
            })
        })
        .collect();
    let rows: Vec<Vec<String>> = s
        .local
        .vms
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.state.as_str().into(),
                v.vcpus.to_string(),
                v.mem_mib.to_string(),
                fmt_opt(v.cpu_pct),
                v.uuid.clone(),
            ]
        })
        .collect();
    let mut text = if rows.is_empty() {
        Text::line("no VMs defined on this host")
    } else {
        table::render(
            &["NAME", "STATE", "VCPUS", "MEM_MIB", "CPU%", "UUID"],
            &rows,
        )
    };
    if let Some(w) = stale_note(s, now) {
        text.push(w);
    }
    Ok(Answer {
        data: json!({
            "vms": list,
            "stale": !matches!(s.local.link, Link::Up),
            "age_s": age(now, s.local.vms_at),
        }),
        text,
    })
}

pub fn hosts(
    s: &State,
    host: &HostInfo,
    now: Instant,
    stale_after: std::time::Duration,
    me: &Answer,
) -> Answer {
    let me = &me.data;
    let mut list = vec![json!({
        "name": host.name,
        "self": true,
        "reachable": true,
        "state": me["state"],
        "vms_running": me["vms_running"],
        "cpus": me["cpus"],
        "load1": me["load1"],
        "cpu_pct": me["cpu_pct"],
        "mem_total_mib": me["mem_total_mib"],
        "mem_free_mib": me["mem_free_mib"],
        "mem_allocated_mib": me["mem_allocated_mib"],
        "health": me["health"],
        "location": host.location,
        "age_s": me["age_s"],
    })];
    for p in &s.peers {
        let reachable = p.reachable(now, stale_after);
        let polled = p.ok_at.is_some();
        let v = |x: Value| if polled { x } else { Value::Null };
        list.push(json!({
            "name": p.name,
            "self": false,
            "reachable": reachable,
            // libvirt tells whether a peer has VMs, not whether its agent
            // put it in maintenance: its hook refuses migrations then.
            "state": if !polled { Value::Null } else if p.vms_running == 0 { json!("empty") } else { json!("active") },
            "vms_running": v(json!(p.vms_running)),
            "cpus": v(json!(p.cpus)),
            "load1": Value::Null,
            "cpu_pct": p.cpu_pct,
            "mem_total_mib": v(json!(p.mem_total_mib)),
            "mem_free_mib": v(json!(p.mem_free_mib)),
            "mem_allocated_mib": v(json!(p.mem_allocated_mib)),
            "health": Value::Null,
            "location": p.location,
            "age_s": age(now, p.ok_at),
            "error": if reachable { Value::Null } else { json!(p.error.clone().unwrap_or_else(|| "no recent answer".into())) },
        }));
    }
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => {
            if *b {
                "yes".into()
            } else {
                "no".into()
            }
        }
        v => v.to_string(),
    };
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|h| {
            let name = if h["self"] == json!(true) {
                format!("{} *", cell(&h["name"]))
            } else {
                cell(&h["name"])
            };
            vec![
                name,
                cell(&h["reachable"]),
                cell(&h["state"]),
                cell(&h["vms_running"]),
                cell(&h["cpus"]),
                cell(&h["load1"]),
                cell(&h["cpu_pct"]),
                cell(&h["mem_free_mib"]),
                cell(&h["health"]),
                cell(&h["age_s"]),
            ]
        })
        .collect();
    Answer {
        text: table::render(
            &[
                "HOST",
                "REACHABLE",
                "STATE",
                "VMS",
                "CPUS",
                "LOAD1",
                "CPU%",
                "MEM_FREE",
                "HEALTH",
                "AGE_S",
            ],
            &rows,
        ),
        data: json!({ "hosts": list }),
    }
}

pub fn locate(s: &State, host: &HostInfo, vm: &str) -> Answer {
    let here = s.local.vms.iter().find(|v| v.name == vm);
    let data = if let Some(v) =
        here.filter(|v| v.state.is_active() || !s.local.departed.contains_key(vm))
    {
        json!({
            "vm": vm, "host": host.name, "location": host.location,
            "state": if v.state.is_active() { "live" } else { "inactive" },
            "vm_state": v.state.as_str(),
        })
    } else if let Some((p, st)) = peers::find_on_peers(&s.peers, vm) {
        let moved = s.local.departed.contains_key(vm);
        let state = if moved {
            "moved"
        } else if st.is_active() {
            "live"
        } else {
            "inactive"
        };
        let mut d = json!({
            "vm": vm, "host": p.name, "location": p.location, "state": state,
            "vm_state": st.as_str(),
        });
        if moved {
            d["to"] = json!(p.name);
            d["from"] = json!(host.name);
        }
        d
    } else if s.local.departed.contains_key(vm) {
        // It left by live migration; no peer shows it yet (their next poll
        // will). Say what is known rather than "unknown".
        json!({ "vm": vm, "host": Value::Null, "location": Value::Null, "state": "moved", "to": Value::Null, "from": host.name })
    } else {
        json!({ "vm": vm, "host": Value::Null, "location": Value::Null, "state": "unknown" })
    };
    let text = match data["state"].as_str() {
        Some("unknown") => format!("{vm}: not found on this host or any reachable peer"),
        Some("moved") if data["to"].is_null() => format!(
            "{vm}: left {} by live migration; destination not confirmed yet",
            host.name
        ),
        Some("moved") => format!(
            "{vm}: moved from {} to {} ({}), {}",
            host.name,
            data["to"].as_str().unwrap_or("?"),
            data["location"].as_str().unwrap_or(""),
            data["vm_state"].as_str().unwrap_or("?")
        ),
        Some(st) => format!(
            "{vm}: {st} on {} ({}), {}",
            data["host"].as_str().unwrap_or("?"),
            data["location"].as_str().unwrap_or(""),
            data["vm_state"].as_str().unwrap_or("?")
        ),
        None => String::new(),
    };
    Answer {
        data,
        text: Text::line(text),
    }
}

/// The agent: reading commands from the inventory, the rest through the
/// evacuation controller.
#[derive(Debug)]
pub struct AgentBackend {
    pub inventory: std::sync::Arc<crate::inventory::Inventory>,
    pub host: HostInfo,
    pub controller: std::sync::Arc<crate::evacuation::Controller>,
}

fn plain(data: Value, text: impl Into<Text>) -> Answer {
    Answer {
        data,
        text: text.into(),
    }
}

impl AgentBackend {
    fn status_now(&self, s: &State, now: Instant) -> Answer {
        let running = s.local.vms_at.map(|_| allocation(&s.local.vms).running);
        let hs = self.controller.host_state(running);
        status(s, &self.host, now, hs, self.controller.maintenance_on())
    }
}

impl Backend for AgentBackend {
    fn answer(&self, cmd: &Command, line: &str) -> Result<Answer, Refusal> {
        let now = Instant::now();
        let s = self.inventory.snapshot();
        let c = &self.controller;
        match cmd {
            Command::Help => Ok(help()),
            Command::Status => Ok(self.status_now(&s, now)),
            Command::Vms => vms(&s, now),
            Command::Hosts => {
                let me = self.status_now(&s, now);
                Ok(hosts(
                    &s,
                    &self.host,
                    now,
                    self.inventory.peer_stale_after(),
                    &me,
                ))
            }
            Command::Locate { vm } => Ok(locate(&s, &self.host, vm)),
            Command::Plan { dest } => c.plan(dest).map(|d| {
                let t = super::text::plan(&d);
                plain(d, t)
            }),
            Command::Evacuate { dest, poweroff } => c.evacuate(dest, *poweroff, line).map(|d| {
                let t = super::text::evacuation_started(&d);
                plain(d, t)
            }),
            Command::Migrate { vm, dest } => c.migrate(vm, dest, line).map(|d| {
                let t = format!(
                    "job {} started: {vm} to {}",
                    d["job"],
                    d["dest"].as_str().unwrap_or("?")
                );
                plain(d, t)
            }),
            Command::Jobs => {
                let d = c.jobs();
                let t = super::text::jobs(&d);
                Ok(plain(d, t))
            }
            Command::Abort { vm } => c.abort(vm.as_deref(), line).map(|d| {
                let t = format!("aborted: {}", d["aborted"]);
                plain(d, t)
            }),
            Command::Maintenance { on } => c.maintenance(*on, line).map(|d| {
                let t = format!("state: {}", d["state"].as_str().unwrap_or("?"));
                plain(d, t)
            }),
            Command::Poweroff => c.poweroff(line).map(|d| plain(d, "powering off")),
            Command::Identify(what) => c.identify(what).map(|d| plain(d, "ok")),
            other => Err((
                ErrorCode::BadRequest,
                format!("'{}' is handled by the session", other.name()),
            )),
        }
    }
}

/// Counts of VM states, for the status line of the daemon.
pub fn summary(s: &State) -> String {
    let running = s
        .local
        .vms
        .iter()
        .filter(|v| v.state == VmState::Running)
        .count();
    format!(
        "{running} VMs running, libvirt {}",
        link_word(&s.local.link)
    )
}
