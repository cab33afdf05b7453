//! Answers to the reading commands, built from an inventory snapshot: the
//! JSON `data` of docs/protocol.md and the text a person sees. Pure functions of
//! the snapshot and the clock, so they are tested without libvirt.

use std::time::Instant;

use rackside_protocol::{table, Command, ErrorCode, Text};
use serde_json::{json, Value};

use crate::inventory::model::{allocation, VmState};
use crate::inventory::{peers, Link, State};
use crate::report::LastResult;

#[cfg(test)]
#[path = "answer_blind_tests.rs"]
mod blind_tests;
#[cfg(test)]
#[path = "answer_width_tests.rs"]
mod width_tests;

/// A successful answer in both forms.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub data: Value,
    pub text: Text,
}

pub use crate::report::Refusal;

impl Answer {
    /// A typed answer: its JSON from `Serialize`, its text already rendered.
    pub fn of<T: serde::Serialize>(data: &T, text: impl Into<Text>) -> Answer {
        Answer {
            data: serde_json::to_value(data).unwrap_or_default(),
            text: text.into(),
        }
    }
}

/// What a session asks of the agent. The agent implements it over the live
/// inventory; tests implement it over fixed snapshots.
pub trait Backend: Send + Sync {
    /// `line` names the management line the command came from (logs and
    /// the journal record it).
    fn answer(&self, cmd: &Command, line: &str) -> Result<Answer, Refusal>;

    /// What every person who opens a line must be told before anything
    /// else (a damaged journal, say). Shown with the banner.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Facts about this host that do not come from the inventory.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub name: String,
    pub location: String,
    pub libvirt_uri: String,
    pub version: &'static str,
}

/// `help`: every command, one line each; `help COMMAND`: that command's
/// page. Both from the one table in [`rackside_protocol::help`]; the
/// parser has already refused a name that is no command.
pub fn help(command: Option<&str>) -> Answer {
    use rackside_protocol::help;
    match command.and_then(help::info) {
        Some(info) => Answer {
            data: help::page_data(info),
            text: help::page_text(info),
        },
        None => Answer {
            data: help::list_data(),
            text: help::list_text(),
        },
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

/// What the evacuation controller and the journal say about this host,
/// for `status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Control<'a> {
    /// active, maintenance, evacuating or empty
    pub state: &'a str,
    /// the maintenance flag itself
    pub maintenance: bool,
    /// the journal's damage warning, when it stands
    pub journal_note: Option<&'a str>,
    /// the last evacuation's result, while it stands
    pub last_result: Option<&'a LastResult>,
    /// this host's offset from UTC, for the time of day shown
    pub utc_offset_s: i32,
}

/// The last evacuation's result in one line (never the verdict phrase:
/// that is the verdict's own).
pub fn last_result_text(r: &LastResult, utc_offset_s: i32) -> String {
    let at = super::clock::time_of_day(&r.at, utc_offset_s).unwrap_or_else(|| r.at.clone());
    let word = if r.safe_to_power_off {
        "SAFE"
    } else {
        "NOT SAFE"
    };
    let here = if !r.checked {
        "not verified what still runs here".to_owned()
    } else if r.still_here == 0 {
        "none still here".to_owned()
    } else {
        format!("{} still here", r.still_here)
    };
    format!(
        "{word} at {at} (evacuation {}): {} moved, {here}",
        r.evacuation, r.moved
    )
}

pub fn status(s: &State, host: &HostInfo, now: Instant, control: &Control<'_>) -> Answer {
    let known = s.local.vms_at.is_some();
    let a = allocation(&s.local.vms);
    let f = &s.local.figures;
    let state = control.state;
    let (maintenance, journal_note) = (control.maintenance, control.journal_note);
    let stale = s.local_blind(now).is_some();
    let health = s.health(now);
    let n = |v: u64| if known { json!(v) } else { Value::Null };
    let data = json!({
        "host": host.name,
        "location": host.location,
        "state": state,
        "maintenance": maintenance,
        "health": health.level.as_str(),
        "health_reasons": health.reasons,
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
        "journal": if journal_note.is_some() { "damaged" } else { "ok" },
        "journal_note": journal_note,
        "last_result": control.last_result,
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
        (
            "health",
            if health.reasons.is_empty() {
                show("health")
            } else {
                format!("{} ({})", show("health"), health.reasons.join("; "))
            },
        ),
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
        ("journal", show("journal")),
    ];
    if let Some(r) = control.last_result {
        pairs.push(("last result", last_result_text(r, control.utc_offset_s)));
    }
    if let Some(w) = stale_note(s, now) {
        pairs.push(("", w));
    }
    if let Some(w) = journal_note {
        pairs.push(("", w.to_owned()));
    }
    // Long values (health reasons, the journal's note) go on under their
    // value's column.
    let indent = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 3;
    Answer {
        data,
        text: table::render_kv(&pairs).wrapped(indent),
    }
}

/// `vms`; with `long` (`vms long`), each VM's name and UUID instead, which
/// would not fit beside the figures in 80 columns. JSON always has both.
pub fn vms(s: &State, now: Instant, long: bool) -> Result<Answer, Refusal> {
    let blind = s.local_blind(now);
    if s.local.vms_at.is_none() {
        let why = blind.map_or_else(|| "libvirt has not answered yet".into(), |b| b.reason);
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
            if long {
                vec![v.name.clone(), v.uuid.clone()]
            } else {
                vec![
                    v.name.clone(),
                    v.state.as_str().into(),
                    v.vcpus.to_string(),
                    v.mem_mib.to_string(),
                    fmt_opt(v.cpu_pct),
                ]
            }
        })
        .collect();
    let headers: &[&str] = if long {
        &["NAME", "UUID"]
    } else {
        &["NAME", "STATE", "VCPUS", "MEM_MIB", "CPU%"]
    };
    let mut text = if rows.is_empty() {
        Text::line("no VMs defined on this host")
    } else {
        table::render(headers, &rows)
    };
    if let Some(w) = stale_note(s, now) {
        text.push(w);
    }
    let text = text.wrapped(2);
    Ok(Answer {
        data: json!({
            "vms": list,
            "stale": blind.is_some(),
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
        "health_reasons": me["health_reasons"],
        "libvirt": me["libvirt"],
        "stale": me["stale"],
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
    let pct = |v: &Value| v.as_f64().map_or("-".into(), |p| format!("{p:.0}"));
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|h| {
            let name = if h["self"] == json!(true) {
                format!("{} *", cell(&h["name"]))
            } else {
                cell(&h["name"])
            };
            // An unreachable peer says why in a word where its state would
            // be; the note under the table has the whole message.
            let state = match h["error"].as_str() {
                Some(e) => format!("down ({})", super::reason::short_peer_error(e)),
                None => cell(&h["state"]),
            };
            // A peer's health is known only to that peer (its hook
            // refuses what it cannot take): never guessed here.
            let health = match h["health"].as_str() {
                Some(l) => l.to_owned(),
                None => "unknown".to_owned(),
            };
            vec![
                name,
                state,
                health,
                cell(&h["vms_running"]),
                cell(&h["cpus"]),
                pct(&h["cpu_pct"]),
                cell(&h["mem_free_mib"]),
                cell(&h["age_s"]),
            ]
        })
        .collect();
    let mut notes = Text::line("* this host; FREE: free memory, MiB; AGE: s since read");
    for r in me["health_reasons"].as_array().into_iter().flatten() {
        notes.push(format!(
            "note: {}: {}",
            host.name,
            r.as_str().unwrap_or("?")
        ));
    }
    for h in list.iter().filter(|h| !h["error"].is_null()) {
        notes.push(format!(
            "note: {} unreachable: {}",
            cell(&h["name"]),
            h["error"].as_str().unwrap_or("?")
        ));
    }
    // This host's health reasons are the notes: the table keeps to what
    // fits 80 columns.
    let mut text = table::render(
        &[
            "HOST", "STATE", "HEALTH", "VMS", "CPUS", "CPU%", "FREE", "AGE",
        ],
        &rows,
    );
    text.append(notes.wrapped(6));
    Answer {
        text,
        data: json!({ "hosts": list }),
    }
}

/// Where a VM is. While the local libvirt is blind, a reachable peer's
/// word is given with this host's side marked unknown, the last known local
/// state is given as stale with its age, and "not found" is never said:
/// without libvirt the VM may well be here.
pub fn locate(
    s: &State,
    host: &HostInfo,
    vm: &str,
    now: Instant,
    stale_after: std::time::Duration,
) -> Result<Answer, Refusal> {
    let blind = s.local_blind(now);
    let here = s.local.vms.iter().find(|v| v.name == vm);
    let here = here.filter(|v| v.state.is_active() || !s.local.departed.contains_key(vm));
    let reachable: Vec<crate::inventory::Peer> = s
        .peers
        .iter()
        .filter(|p| p.reachable(now, stale_after))
        .cloned()
        .collect();
    let on_peer = peers::find_on_peers(&reachable, vm);
    // A peer that stopped answering still tells where the VM was last seen.
    let on_stale_peer = peers::find_on_peers(&s.peers, vm).filter(|_| on_peer.is_none());
    let mut data = match (&blind, here, on_peer) {
        // A blind host: a reachable peer that runs it is the best truth.
        (Some(_), _, Some((p, st))) if st.is_active() || here.is_none() => json!({
            "vm": vm, "host": p.name, "location": p.location,
            "state": if st.is_active() { "live" } else { "inactive" },
            "vm_state": st.as_str(), "local": "unknown",
        }),
        (Some(_), Some(v), _) => json!({
            "vm": vm, "host": host.name, "location": host.location,
            "state": if v.state.is_active() { "live" } else { "inactive" },
            "vm_state": v.state.as_str(), "stale": true,
            "age_s": s.vms_stale_age(now),
        }),
        (Some(b), None, _) => {
            return Err((
                ErrorCode::Unavailable,
                format!("{}; no reachable peer shows {vm}", b.reason),
            ))
        }
        (None, Some(v), _) => json!({
            "vm": vm, "host": host.name, "location": host.location,
            "state": if v.state.is_active() { "live" } else { "inactive" },
            "vm_state": v.state.as_str(),
        }),
        (None, None, found) => match found.or(on_stale_peer) {
            Some((p, st)) => {
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
                if found.is_none() {
                    d["stale"] = json!(true);
                    d["age_s"] = json!(age(now, p.ok_at));
                }
                d
            }
            // It left by live migration; no peer shows it yet (their next
            // poll will). Say what is known rather than "unknown".
            None if s.local.departed.contains_key(vm) => {
                json!({ "vm": vm, "host": Value::Null, "location": Value::Null, "state": "moved", "to": Value::Null, "from": host.name })
            }
            None => {
                json!({ "vm": vm, "host": Value::Null, "location": Value::Null, "state": "unknown" })
            }
        },
    };
    // Peers that could not be asked: "not found" covers only the others.
    let unasked: Vec<&str> = s
        .peers
        .iter()
        .filter(|p| !p.reachable(now, stale_after))
        .map(|p| p.name.as_str())
        .collect();
    if data["state"] == "unknown" {
        data["unreachable_peers"] = json!(unasked);
    }
    let first = match data["state"].as_str() {
        Some("unknown") if unasked.is_empty() => {
            format!("{vm}: not found on this host or any peer")
        }
        Some("unknown") => format!(
            "{vm}: not found on this host or any reachable peer (not reachable: {})",
            unasked.join(", ")
        ),
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
    let mut text = Text::line(first);
    if blind.is_none() && data["stale"] == true {
        text.push(format!(
            "warning: {} is not answering; this is its last known state",
            data["host"].as_str().unwrap_or("?")
        ));
    }
    if let Some(b) = &blind {
        let what = if data["local"] == "unknown" {
            format!("whether {} also has it is unknown", host.name)
        } else {
            format!(
                "last known {} s ago",
                data["age_s"].as_u64().map_or("?".into(), |a| a.to_string())
            )
        };
        text.push(format!("warning: {}; {what}", b.reason));
    }
    Ok(Answer {
        data,
        text: text.wrapped(2),
    })
}

/// Counts of VM states, for the status line of the daemon; while libvirt
/// does not answer, why, and how old the counts are.
pub fn summary(s: &State, now: Instant) -> String {
    let running = s
        .local
        .vms
        .iter()
        .filter(|v| v.state == VmState::Running)
        .count();
    match s.local_blind(now) {
        None => format!("{running} VMs running, libvirt up"),
        Some(b) => match s.vms_stale_age(now) {
            Some(a) => format!("{}; {running} VMs running {a} s ago", b.reason),
            None => format!("{}; VMs unknown", b.reason),
        },
    }
}
