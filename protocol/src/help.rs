//! What `help` and `help COMMAND` say (docs/protocol.md "help"): one
//! [`CommandInfo`] per command, in the order of [`COMMANDS`], so the list
//! and each command's page are read from the same entry and cannot drift.
//!
//! Everything is rendered for an 80-column terminal: the list keeps each
//! summary short, and a command's page wraps its sentences.

use serde_json::{json, Value};

use crate::screen::Text;
use crate::table;

/// The width every line of help fits in.
pub const WIDTH: usize = 80;

/// Whether a command needs `login` when a PIN is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// Never: it changes nothing on the host.
    No,
    /// Always: it changes the host.
    Yes,
    /// Only in this form (`journal ack`).
    Only(&'static str),
}

impl Login {
    /// Whether the typed `line` (one of the command's forms) needs login.
    pub fn needed_for(&self, line: &str) -> bool {
        match self {
            Login::No => false,
            Login::Yes => true,
            Login::Only(form) => {
                let words = |s: &str| {
                    s.split_whitespace()
                        .map(str::to_ascii_lowercase)
                        .collect::<Vec<_>>()
                };
                words(line) == words(form)
            }
        }
    }

    /// The sentence a person reads.
    pub fn text(&self) -> String {
        match self {
            Login::No => "not needed, even when a PIN is set".into(),
            Login::Yes => "needed when a PIN is set (it changes the host)".into(),
            Login::Only(form) => format!("needed for '{form}' when a PIN is set"),
        }
    }
}

/// A command as `help` shows it to a person, and `help COMMAND` in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandInfo {
    pub name: &'static str,
    /// The text form, e.g. `"migrate VM [HOST|auto]"`.
    pub usage: &'static str,
    /// What it is for, short enough for the list's one line.
    pub summary: &'static str,
    /// Each word of the usage a person replaces or may add, with its meaning.
    pub args: &'static [(&'static str, &'static str)],
    pub login: Login,
    /// Lines as typed, with what each does.
    pub examples: &'static [(&'static str, &'static str)],
    /// What the answer looks like, text and JSON `data`.
    pub answer: &'static str,
    /// The same request as JSON.
    pub json: &'static str,
}

/// Every command name, in help order.
pub const COMMANDS: &[&str] = &[
    "help",
    "status",
    "vms",
    "hosts",
    "plan",
    "migrate",
    "evacuate",
    "jobs",
    "abort",
    "maintenance",
    "login",
    "logout",
    "subscribe",
    "unsubscribe",
    "mode",
    "locate",
    "identify",
    "poweroff",
    "journal",
];

/// Every command, in the order of [`COMMANDS`].
pub const HELP: &[CommandInfo] = &[
    CommandInfo {
        name: "help",
        usage: "help [COMMAND]",
        summary: "this list; help COMMAND explains one",
        args: &[("COMMAND", "one of the commands this list shows")],
        login: Login::No,
        examples: &[
            ("help", "every command, one line each"),
            ("help migrate", "what migrate does, its arguments, examples"),
        ],
        answer: "help: a COMMAND WHAT table. JSON data: {\"commands\": [NAME, ...]}. \
                 help COMMAND: this page. JSON data: command, usage, summary, \
                 args [{arg, meaning}], login (true when it, or one form of it, \
                 needs login), login_text, examples [{line, what}], answer, json. \
                 A name that is no command: not_found.",
        json: r#"{"cmd":"help","args":{"command":"migrate"}}"#,
    },
    CommandInfo {
        name: "status",
        usage: "status",
        summary: "this host: state, health, CPU, memory, VMs",
        args: &[],
        login: Login::No,
        examples: &[("status", "how this host is doing")],
        answer: "one 'key: value' line each: host, location, state (active, \
                 maintenance, evacuating, empty), health (ok, degraded, faulty, \
                 with why), cpus, load1, CPU use, memory, vms, allocated, libvirt, \
                 version, journal; a warning line while libvirt does not answer. \
                 JSON data: the same figures by name, with stale and age_s.",
        json: r#"{"cmd":"status"}"#,
    },
    CommandInfo {
        name: "vms",
        usage: "vms [long]",
        summary: "the VMs defined on this host",
        args: &[("long", "also each VM's UUID (-l works too)")],
        login: Login::No,
        examples: &[
            ("vms", "every VM defined here, one line each"),
            ("vms long", "each VM's name and UUID"),
        ],
        answer: "a table NAME, STATE (running, paused, shutoff, crashed, \
                 migrating), VCPUS, MEM_MIB, CPU%; the long form: NAME and \
                 UUID. JSON data (always with the UUID): {\"vms\": [{name, \
                 uuid, state, vcpus, mem_mib, cpu_pct}], stale, age_s}. \
                 unavailable until libvirt has answered once.",
        json: r#"{"cmd":"vms","args":{"long":true}}"#,
    },
    CommandInfo {
        name: "hosts",
        usage: "hosts",
        summary: "this host and its peers",
        args: &[],
        login: Login::No,
        examples: &[("hosts", "which peers answer, and their room")],
        answer: "a table HOST (this one marked *), REACHABLE (or why not), \
                 STATE, VMS, CPUS, LOAD1, CPU%, MEM_FREE, HEALTH, AGE_S, then a \
                 note line per problem. JSON data: {\"hosts\": [...]}.",
        json: r#"{"cmd":"hosts"}"#,
    },
    CommandInfo {
        name: "plan",
        usage: "plan [HOST|auto]",
        summary: "dry run of an evacuation",
        args: &[(
            "HOST|auto",
            "only this peer as destination; auto or left out: any peer",
        )],
        login: Login::No,
        examples: &[
            ("plan", "where each VM would go; nothing moves"),
            ("plan hb", "what would fit on hb"),
        ],
        answer: "a VM TO table of moves (or 'nothing to move'), then a \
                 'cannot place VM: REASON' line for each VM that fits nowhere. \
                 JSON data: {\"moves\": [{vm, dest}], \"unplaceable\": [{vm, \
                 reason}]}.",
        json: r#"{"cmd":"plan","args":{"dest":"hb"}}"#,
    },
    CommandInfo {
        name: "migrate",
        usage: "migrate VM [HOST|auto]",
        summary: "live-migrate one VM",
        args: &[
            ("VM", "a VM defined on this host"),
            (
                "HOST|auto",
                "a configured peer; auto or left out: the agent chooses, \
                 and retries once on the next host if the move fails",
            ),
        ],
        login: Login::Yes,
        examples: &[
            ("migrate web1", "to the host placement chooses"),
            ("migrate web1 hb", "to hb, and nowhere else"),
        ],
        answer: "'job ID started: VM to HOST'; progress and the result come \
                 as events (subscribe) and in jobs. JSON data: {\"job\": ID, \
                 \"dest\": HOST}. Refusals: not_found (no such VM or peer), \
                 no_capacity, busy (a run is active), unavailable.",
        json: r#"{"cmd":"migrate","args":{"vm":"web1","dest":"hb"}}"#,
    },
    CommandInfo {
        name: "evacuate",
        usage: "evacuate [HOST|auto] [poweroff]",
        summary: "move every VM away; ends SAFE or NOT SAFE",
        args: &[
            (
                "HOST|auto",
                "only this peer as destination; auto or left out: any peer",
            ),
            (
                "poweroff",
                "power the host down after a SAFE verdict (needs \
                 [power] allow = true in the config)",
            ),
        ],
        login: Login::Yes,
        examples: &[
            ("evacuate", "empty this host onto its peers"),
            ("evacuate poweroff", "the same, then switch the host off"),
        ],
        answer: "'evacuation ID started; this host is in maintenance', the \
                 planned moves and 'cannot place' lines; then events, and at \
                 the end a verdict line, SAFE or NOT SAFE, with every VM still \
                 here and why, on every text line. JSON data: {evacuation, \
                 moves, unplaceable}; the verdict is the evacuation.done event.",
        json: r#"{"cmd":"evacuate","args":{"dest":"auto","poweroff":false}}"#,
    },
    CommandInfo {
        name: "jobs",
        usage: "jobs",
        summary: "migrations of the current and last run",
        args: &[],
        login: Login::No,
        examples: &[("jobs", "progress, time left, errors")],
        answer: "a table JOB, VM, TO, PHASE (queued, running, done, failed, \
                 aborted), %, LEFT_MIB, MIB/S, ETA_S, DOWNTIME_MS, NOTE; then a \
                 timeline and an announcement line per finished migration; \
                 'no jobs' when there are none. JSON data: {\"jobs\": [...], \
                 \"running\": bool}.",
        json: r#"{"cmd":"jobs"}"#,
    },
    CommandInfo {
        name: "abort",
        usage: "abort [VM]",
        summary: "stop the current run, or one VM's migration",
        args: &[("VM", "only this VM's queued or running migration")],
        login: Login::Yes,
        examples: &[
            ("abort", "stop every migration of the current run"),
            ("abort web1", "stop only web1's"),
        ],
        answer: "'aborted: [\"web1\"]'; a VM left paused here is resumed. JSON \
                 data: {\"aborted\": [VM, ...]}. not_found when nothing runs.",
        json: r#"{"cmd":"abort","args":{"vm":"web1"}}"#,
    },
    CommandInfo {
        name: "maintenance",
        usage: "maintenance on|off",
        summary: "refuse incoming migrations, or accept them",
        args: &[
            ("on", "in maintenance: no VM may migrate to this host"),
            ("off", "active again (busy while an evacuation runs)"),
        ],
        login: Login::Yes,
        examples: &[("maintenance on", "before work on this host")],
        answer: "'state: maintenance' or 'state: active'; kept across \
                 restarts. JSON data: {\"state\", \"maintenance\": bool}.",
        json: r#"{"cmd":"maintenance","args":{"on":true}}"#,
    },
    CommandInfo {
        name: "login",
        usage: "login [PIN]",
        summary: "unlock the commands that change the host",
        args: &[(
            "PIN",
            "the console PIN; left out, the agent asks 'PIN: ' and does \
             not echo what is typed",
        )],
        login: Login::No,
        examples: &[
            ("login", "asks for the PIN; it stays off the screen"),
            ("login 471147", "the PIN on the line: it stays on screen"),
        ],
        answer: "'logged in', and the prompt ends in # instead of >. A wrong \
                 PIN says how many tries are left; [auth] max_failures (5) \
                 wrong PINs, on all lines together, lock logins for \
                 [auth] lockout_s (300 s), twice as long each time in a row. \
                 A login ends on logout, after [auth] idle_timeout_s (600 s) \
                 without a command, [auth] login_lifetime_s (4 h) after it \
                 began, and when the line drops. Without a PIN every command \
                 is allowed. JSON (the PIN always in args): data \
                 {\"role\": \"operator\"}.",
        json: r#"{"cmd":"login","args":{"pin":"471147"}}"#,
    },
    CommandInfo {
        name: "logout",
        usage: "logout",
        summary: "lock them again",
        args: &[],
        login: Login::No,
        examples: &[("logout", "before leaving the rack")],
        answer: "'logged out', and the prompt ends in > again. JSON data: \
                 {\"role\": \"reader\"} (\"operator\" without a PIN).",
        json: r#"{"cmd":"logout"}"#,
    },
    CommandInfo {
        name: "subscribe",
        usage: "subscribe",
        summary: "show events (progress, verdicts) here",
        args: &[],
        login: Login::No,
        examples: &[("subscribe", "then evacuate, and watch")],
        answer: "'subscribed: events will show on this line', then a line per \
                 event stamped [HH:MM:SS], or a JSON line {event, ts, data} \
                 when subscribed by JSON or in JSON mode. JSON data: {}.",
        json: r#"{"cmd":"subscribe"}"#,
    },
    CommandInfo {
        name: "unsubscribe",
        usage: "unsubscribe",
        summary: "stop showing events here",
        args: &[],
        login: Login::No,
        examples: &[("unsubscribe", "a quiet line again")],
        answer: "'unsubscribed'. JSON data: {}. The verdict of an evacuation \
                 still shows on every text line.",
        json: r#"{"cmd":"unsubscribe"}"#,
    },
    CommandInfo {
        name: "mode",
        usage: "mode json|text",
        summary: "switch this line to JSON or to text",
        args: &[
            ("json", "JSON only: no banner, prompt or echo"),
            ("text", "back to text for people"),
        ],
        login: Login::No,
        examples: &[("mode json", "for a program driving the line")],
        answer: "'text mode', or {\"ok\":true,\"data\":{}} for a switch to \
                 JSON; from then on every answer is a JSON line.",
        json: r#"{"cmd":"mode","args":{"mode":"text"}}"#,
    },
    CommandInfo {
        name: "locate",
        usage: "locate VM",
        summary: "which host a VM is on",
        args: &[("VM", "a VM name, here or on a peer")],
        login: Login::No,
        examples: &[("locate web1", "here, on a peer, or moved away")],
        answer: "'web1: live on HOST (LOCATION), running', 'moved from HA to \
                 HB', or 'not found on this host or any reachable peer' (not \
                 an error). JSON data: vm, host, location, state (live, \
                 inactive, moved, unknown), vm_state.",
        json: r#"{"cmd":"locate","args":{"vm":"web1"}}"#,
    },
    CommandInfo {
        name: "identify",
        usage: "identify [on|off|SECONDS]",
        summary: "blink this host's locator",
        args: &[
            ("on", "on for 255 s (also when left out)"),
            ("off", "off now"),
            ("SECONDS", "on for 1 to 86400 s"),
        ],
        login: Login::Yes,
        examples: &[("identify 60", "find the host in the rack")],
        answer: "'ok' at once: [power] identify_command runs with the seconds \
                 added (killed after 10 s). JSON data: {}. unavailable when no \
                 identify_command is configured.",
        json: r#"{"cmd":"identify","args":{"seconds":60}}"#,
    },
    CommandInfo {
        name: "poweroff",
        usage: "poweroff",
        summary: "switch this host off, only when empty",
        args: &[],
        login: Login::Yes,
        examples: &[("poweroff", "after a SAFE verdict")],
        answer: "'powering off', then [power] command runs (systemctl \
                 poweroff). Only with [power] allow = true and nothing here \
                 but shut-off VMs: else bad_request, or busy naming what is \
                 still here. JSON data: {\"powering_off\": true}.",
        json: r#"{"cmd":"poweroff"}"#,
    },
    CommandInfo {
        name: "journal",
        usage: "journal [ack]",
        summary: "the journal's state / acknowledge damage",
        args: &[(
            "ack",
            "accept the damage found at start, after checking the moved \
             file, so evacuate and migrate work again",
        )],
        login: Login::Only("journal ack"),
        examples: &[
            ("journal", "ok, or DAMAGED with where the file went"),
            ("journal ack", "after checking the damaged file"),
        ],
        answer: "'journal: ok', or 'journal: DAMAGED' with the file, where it \
                 was moved and why. JSON data: journal, path, damage, \
                 journal_note, torn_kept_in. journal ack: 'journal damage \
                 acknowledged; ...'. JSON data: {journal, acknowledged, damage}.",
        json: r#"{"cmd":"journal","args":{"ack":true}}"#,
    },
];

/// The entry for a command name (exact, lower case), if it is one.
pub fn info(name: &str) -> Option<&'static CommandInfo> {
    HELP.iter().find(|info| info.name == name)
}

/// The text form's synopsis of a command name, if it is one.
pub fn usage(name: &str) -> Option<&'static str> {
    info(name).map(|info| info.usage)
}

/// `help`: every command, one line each.
pub fn list_text() -> Text {
    let rows: Vec<Vec<String>> = HELP
        .iter()
        .map(|info| vec![info.usage.to_string(), info.summary.to_string()])
        .collect();
    table::render(&["COMMAND", "WHAT"], &rows)
}

/// `help`'s JSON `data`.
pub fn list_data() -> Value {
    json!({ "commands": COMMANDS })
}

/// `help COMMAND` for a person.
pub fn page_text(info: &CommandInfo) -> Text {
    let mut out = Text::new();
    wrap(
        &mut out,
        &format!("{}: {}", info.usage, info.summary),
        "",
        "  ",
    );
    if !info.args.is_empty() {
        out.push("arguments:");
        table_wrapped(&mut out, info.args);
    }
    wrap(&mut out, &info.login.text(), "login: ", "  ");
    out.push("examples:");
    table_wrapped(&mut out, info.examples);
    wrap(&mut out, info.answer, "answer: ", "  ");
    wrap(&mut out, info.json, "JSON: ", "  ");
    out
}

/// `help COMMAND`'s JSON `data`.
pub fn page_data(info: &CommandInfo) -> Value {
    let pairs = |rows: &[(&str, &str)], a: &str, b: &str| -> Vec<Value> {
        rows.iter().map(|(x, y)| json!({ a: x, b: y })).collect()
    };
    json!({
        "command": info.name,
        "usage": info.usage,
        "summary": info.summary,
        "args": pairs(info.args, "arg", "meaning"),
        "login": info.login != Login::No,
        "login_text": info.login.text(),
        "examples": pairs(info.examples, "line", "what"),
        "answer": info.answer,
        "json": info.json,
    })
}

/// Two columns indented by two spaces, the second wrapped under itself.
fn table_wrapped(out: &mut Text, rows: &[(&str, &str)]) {
    let width = rows
        .iter()
        .map(|(a, _)| a.chars().count())
        .max()
        .unwrap_or(0);
    for (a, b) in rows {
        let first = format!("  {a:width$}  ");
        let rest = " ".repeat(first.chars().count());
        wrap(out, b, &first, &rest);
    }
}

/// `text` in lines of fewer than [`WIDTH`] columns (a terminal that wraps
/// as soon as the 80th column is written would add a blank line), the
/// first starting with `first`, the others with `rest`; breaks only at
/// spaces (a longer word keeps its own line).
fn wrap(out: &mut Text, text: &str, first: &str, rest: &str) {
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        let fits = line.chars().count() + 1 + word.chars().count() < WIDTH;
        if !empty && !fits {
            out.push(std::mem::replace(&mut line, rest.to_string()));
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push(line);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{parse_line, Command};

    fn every_page() -> impl Iterator<Item = (&'static str, Text)> {
        HELP.iter().map(|info| (info.name, page_text(info)))
    }

    #[test]
    fn every_command_has_an_entry_in_order() {
        let names: Vec<&str> = HELP.iter().map(|info| info.name).collect();
        assert_eq!(names, COMMANDS);
        for info in HELP {
            assert!(info.usage.starts_with(info.name), "{}", info.name);
            assert!(!info.summary.is_empty() && !info.answer.is_empty());
            assert!(!info.examples.is_empty(), "{}", info.name);
        }
    }

    #[test]
    fn every_line_fits_80_columns() {
        let list = list_text();
        assert_eq!(list.lines().len(), COMMANDS.len() + 1);
        for (name, text) in std::iter::once(("(list)", list)).chain(every_page()) {
            for line in text.lines() {
                assert!(
                    line.chars().count() <= WIDTH,
                    "help {name}: {} columns: {line:?}",
                    line.chars().count()
                );
                // Only a verdict line may say it; anywhere else the space
                // would be shown escaped.
                assert!(!line.to_lowercase().contains("power off"), "{line:?}");
                assert!(!line.ends_with(' '), "{line:?}");
            }
        }
    }

    #[test]
    fn examples_parse_to_their_command_and_login_matches_the_parser() {
        for info in HELP {
            for (line, _) in info.examples {
                let req = parse_line(line)
                    .unwrap_or_else(|e| panic!("help {}: {line:?}: {e}", info.name))
                    .unwrap();
                assert_eq!(req.cmd.name(), info.name, "{line}");
                assert_eq!(
                    req.cmd.changes_state(),
                    info.login.needed_for(line),
                    "help {}: {line}",
                    info.name
                );
            }
            let req = parse_line(info.json)
                .unwrap_or_else(|e| panic!("help {}: {}: {e}", info.name, info.json))
                .unwrap();
            assert!(req.json);
            assert_eq!(req.cmd.name(), info.name);
        }
    }

    #[test]
    fn login_is_needed_exactly_where_the_parser_says() {
        // One command per entry with every argument a person may leave out,
        // so Login::Yes and Login::No are checked on their bare form too.
        for info in HELP {
            let Ok(Some(req)) = parse_line(info.name) else {
                continue;
            };
            if req.cmd == Command::AskPin {
                continue;
            }
            assert_eq!(
                req.cmd.changes_state(),
                info.login.needed_for(info.name),
                "{}",
                info.name
            );
        }
        assert!(Login::Only("journal ack").needed_for("JOURNAL  Ack"));
        assert!(!Login::Only("journal ack").needed_for("journal"));
    }

    #[test]
    fn a_page_reads_as_documented() {
        let page = page_text(info("migrate").unwrap()).to_string();
        assert!(page.starts_with("migrate VM [HOST|auto]: live-migrate one VM\r\n"));
        assert!(page.contains("\r\nlogin: needed when a PIN is set"));
        assert!(page.contains("\r\n  migrate web1 hb  to hb, and nowhere else\r\n"));
        let data = page_data(info("journal").unwrap());
        assert_eq!(data["command"], "journal");
        assert_eq!(data["login"], true);
        assert_eq!(
            data["login_text"],
            "needed for 'journal ack' when a PIN is set"
        );
        assert_eq!(data["examples"][1]["line"], "journal ack");
        assert_eq!(page_data(info("status").unwrap())["login"], false);
    }

    #[test]
    fn wrapping_breaks_at_spaces_and_keeps_long_words() {
        let mut out = Text::new();
        let long = "x".repeat(90);
        wrap(&mut out, &format!("a {long} b"), "> ", "  ");
        assert_eq!(out.lines(), ["> a", &format!("  {long}"), "  b"]);
    }
}
