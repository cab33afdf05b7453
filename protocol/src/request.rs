//! One line in, one request out: the text form for people and the JSON form
//! for machines (docs/protocol.md "Text and JSON" and "Commands").
//!
//! Everything a request names (a VM, a host, a PIN) is checked here, before
//! it can reach libvirt or the journal, so the agent can trust a `Command`.
//! Errors carry the request's `id` and form, because the answer must echo
//! the one and use the other even when the request is unusable.

use serde_json::{Map, Value};

use crate::error::ErrorCode;
use crate::help::{self, usage, COMMANDS};

/// Where a migration goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// The agent chooses from its peers (`auto`, or no destination given).
    Auto,
    Host(String),
}

impl Dest {
    /// The named host, if one was named.
    pub fn host(&self) -> Option<&str> {
        match self {
            Dest::Auto => None,
            Dest::Host(host) => Some(host),
        }
    }
}

/// How a session talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Text,
    Json,
}

impl Mode {
    /// The protocol spelling: `"text"` or `"json"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Text => "text",
            Mode::Json => "json",
        }
    }
}

/// What `identify` asks of the host's identify light.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identify {
    On,
    Off,
    /// On for this many seconds, 1..=[`MAX_IDENTIFY_SECONDS`].
    Seconds(u32),
}

/// Longest `identify SECONDS`: a day, so a forgotten light goes out.
pub const MAX_IDENTIFY_SECONDS: u32 = 86_400;

/// Longest VM or host name accepted, in bytes.
pub const MAX_NAME: usize = 128;

/// Longest PIN accepted, in bytes.
pub const MAX_PIN: usize = 128;

/// Every command of the protocol, with its arguments checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `help`, or `help COMMAND` (the name checked, in lower case).
    Help {
        command: Option<&'static str>,
    },
    Status,
    /// `vms`; `vms long` adds each VM's UUID (text only: JSON always
    /// carries it).
    Vms {
        long: bool,
    },
    Hosts,
    Plan {
        dest: Dest,
    },
    Migrate {
        vm: String,
        dest: Dest,
    },
    Evacuate {
        dest: Dest,
        poweroff: bool,
    },
    Jobs,
    Abort {
        vm: Option<String>,
    },
    Maintenance {
        on: bool,
    },
    Login {
        pin: String,
    },
    /// Text `login` with no PIN: the session asks for it on the next line
    /// and does not echo it, so it stays off the screen and out of every
    /// console server's port log. (JSON has no such form: a machine sends
    /// the PIN in its request.)
    AskPin,
    Logout,
    Subscribe,
    Unsubscribe,
    Mode(Mode),
    Locate {
        vm: String,
    },
    Identify(Identify),
    Poweroff,
    /// `journal`: the journal's state; `journal ack`: acknowledge damage.
    Journal {
        ack: bool,
    },
}

impl Command {
    /// The protocol name ("status", "migrate", ...), as in JSON "cmd".
    pub fn name(&self) -> &'static str {
        match self {
            Command::Help { .. } => "help",
            Command::Status => "status",
            Command::Vms { .. } => "vms",
            Command::Hosts => "hosts",
            Command::Plan { .. } => "plan",
            Command::Migrate { .. } => "migrate",
            Command::Evacuate { .. } => "evacuate",
            Command::Jobs => "jobs",
            Command::Abort { .. } => "abort",
            Command::Maintenance { .. } => "maintenance",
            Command::Login { .. } | Command::AskPin => "login",
            Command::Logout => "logout",
            Command::Subscribe => "subscribe",
            Command::Unsubscribe => "unsubscribe",
            Command::Mode(_) => "mode",
            Command::Locate { .. } => "locate",
            Command::Identify(_) => "identify",
            Command::Poweroff => "poweroff",
            Command::Journal { .. } => "journal",
        }
    }

    /// Reading commands allowed without login when a PIN is set:
    /// status, vms, hosts, jobs, plan, locate, help. Also allowed always: login, logout, mode,
    /// subscribe, unsubscribe (session-only, change nothing on the host).
    pub fn allowed_without_login(&self) -> bool {
        !self.changes_state()
    }

    /// True for commands that change host state (migrate, evacuate, abort, maintenance, identify,
    /// poweroff): these get logged with the line.
    pub fn changes_state(&self) -> bool {
        // Spelled out rather than `_ => false` so a new command must be
        // classified on purpose: the PIN check rests on this.
        match self {
            Command::Migrate { .. }
            | Command::Evacuate { .. }
            | Command::Abort { .. }
            | Command::Maintenance { .. }
            | Command::Identify(_)
            | Command::Poweroff
            | Command::Journal { ack: true } => true,
            Command::Help { .. }
            | Command::Status
            | Command::Vms { .. }
            | Command::Hosts
            | Command::Plan { .. }
            | Command::Jobs
            | Command::Login { .. }
            | Command::AskPin
            | Command::Logout
            | Command::Subscribe
            | Command::Unsubscribe
            | Command::Mode(_)
            | Command::Locate { .. }
            | Command::Journal { ack: false } => false,
        }
    }

    /// The text form's synopsis, e.g. `"migrate VM [HOST|auto]"`.
    pub fn usage(&self) -> &'static str {
        usage(self.name()).unwrap_or_default()
    }
}

/// A parsed request line.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The JSON `id`, to echo back (always `None` for text).
    pub id: Option<Value>,
    pub cmd: Command,
    /// The request came as JSON, so the answer goes as JSON.
    pub json: bool,
}

/// A line that is not a usable request, with what the answer needs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RequestError {
    /// The JSON `id` when it could be read, to echo back.
    pub id: Option<Value>,
    /// Answer as JSON (the line started with '{').
    pub json: bool,
    pub code: ErrorCode,
    /// For a person; never contains the PIN.
    pub message: String,
}

/// Why a request failed, before we know how to answer it.
struct Fail {
    code: ErrorCode,
    message: String,
}

impl Fail {
    fn bad(message: impl Into<String>) -> Self {
        Fail {
            code: ErrorCode::BadRequest,
            message: message.into(),
        }
    }

    fn usage(name: &str) -> Self {
        Fail::bad(format!("usage: {}", usage(name).unwrap_or(name)))
    }

    fn unknown(name: &str) -> Self {
        Fail {
            code: ErrorCode::UnknownCommand,
            message: format!("unknown command {}; type help", quoted(name)),
        }
    }

    fn answer(self, id: Option<Value>, json: bool) -> RequestError {
        RequestError {
            id,
            json,
            code: self.code,
            message: self.message,
        }
    }
}

/// Parses one line. A line whose first non-blank char is '{' is JSON, otherwise text.
/// Blank lines -> Ok(None).
pub fn parse_line(line: &str) -> Result<Option<Request>, RequestError> {
    let line = line.trim();
    if line.is_empty() {
        Ok(None)
    } else if line.starts_with('{') {
        parse_json(line).map(Some)
    } else {
        parse_text(line).map(Some)
    }
}

/// Checks a VM or host name before it may reach libvirt (the bindings panic on interior NUL):
/// 1..=128 bytes, no control chars, no NUL, no whitespace, no '/' , no quotes or backslash.
/// `kind` ("vm", "host", ...) starts the message, which is for a person.
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{kind} name is empty"));
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "{kind} name {} is longer than {MAX_NAME} bytes",
            quoted(name)
        ));
    }
    let problem = name.chars().find_map(|c| {
        if c.is_control() {
            Some("a control character")
        } else if c.is_whitespace() {
            Some("whitespace")
        } else if c == '/' {
            Some("'/'")
        } else if matches!(c, '"' | '\'' | '`' | '\\') {
            Some("a quote or backslash")
        } else {
            None
        }
    });
    match problem {
        Some(problem) => Err(format!("{kind} name {} contains {problem}", quoted(name))),
        None => Ok(()),
    }
}

fn check_name(kind: &str, name: &str) -> Result<String, Fail> {
    validate_name(kind, name).map_err(Fail::bad)?;
    Ok(name.to_owned())
}

fn check_pin(pin: &str) -> Result<String, Fail> {
    if pin.is_empty() || pin.len() > MAX_PIN || pin.chars().any(char::is_control) {
        // The PIN itself stays out of the message: answers may be logged.
        return Err(Fail::bad(format!(
            "PIN must be 1 to {MAX_PIN} bytes without control characters"
        )));
    }
    Ok(pin.to_owned())
}

fn dest(word: Option<&str>) -> Result<Dest, Fail> {
    match word {
        None => Ok(Dest::Auto),
        Some(word) if word.eq_ignore_ascii_case("auto") => Ok(Dest::Auto),
        Some(host) => Ok(Dest::Host(check_name("host", host)?)),
    }
}

/// Keywords are case-insensitive like command words: a person with caps
/// lock on should not get an error for `MAINTENANCE ON`.
fn keyword(word: &str, keyword: &str) -> bool {
    word.eq_ignore_ascii_case(keyword)
}

/// A word from the input, fit to quote in a one-line message.
fn quoted(word: &str) -> String {
    const MAX: usize = 40;
    let mut out = String::from("'");
    out.extend(
        word.chars()
            .take(MAX)
            .map(|c| if c.is_control() { '?' } else { c }),
    );
    if word.chars().nth(MAX).is_some() {
        out.push_str("...");
    }
    out.push('\'');
    out
}

fn parse_text(line: &str) -> Result<Request, RequestError> {
    let mut words = line.split_whitespace();
    let word = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    match text_command(word, &args) {
        Ok(cmd) => Ok(Request {
            id: None,
            cmd,
            json: false,
        }),
        Err(fail) => Err(fail.answer(None, false)),
    }
}

fn text_command(word: &str, args: &[&str]) -> Result<Command, Fail> {
    let name = word.to_ascii_lowercase();
    let cmd = match (name.as_str(), args) {
        ("help", []) => Command::Help { command: None },
        ("help", [topic]) => Command::Help {
            command: Some(help_topic(topic)?),
        },
        ("status", []) => Command::Status,
        ("vms", []) => Command::Vms { long: false },
        ("vms", [word]) if keyword(word, "long") || *word == "-l" => Command::Vms { long: true },
        ("hosts", []) => Command::Hosts,
        ("plan", []) => Command::Plan { dest: Dest::Auto },
        ("plan", [host]) => Command::Plan {
            dest: dest(Some(host))?,
        },
        ("migrate", [vm]) => Command::Migrate {
            vm: check_name("vm", vm)?,
            dest: Dest::Auto,
        },
        ("migrate", [vm, host]) => Command::Migrate {
            vm: check_name("vm", vm)?,
            dest: dest(Some(host))?,
        },
        ("evacuate", []) => Command::Evacuate {
            dest: Dest::Auto,
            poweroff: false,
        },
        ("evacuate", [word]) if keyword(word, "poweroff") => Command::Evacuate {
            dest: Dest::Auto,
            poweroff: true,
        },
        ("evacuate", [host]) => Command::Evacuate {
            dest: dest(Some(host))?,
            poweroff: false,
        },
        ("evacuate", [host, word]) if keyword(word, "poweroff") => Command::Evacuate {
            dest: dest(Some(host))?,
            poweroff: true,
        },
        ("jobs", []) => Command::Jobs,
        ("abort", []) => Command::Abort { vm: None },
        ("abort", [vm]) => Command::Abort {
            vm: Some(check_name("vm", vm)?),
        },
        ("maintenance", [word]) if keyword(word, "on") => Command::Maintenance { on: true },
        ("maintenance", [word]) if keyword(word, "off") => Command::Maintenance { on: false },
        ("login", []) => Command::AskPin,
        ("login", [pin]) => Command::Login {
            pin: check_pin(pin)?,
        },
        ("logout", []) => Command::Logout,
        ("subscribe", []) => Command::Subscribe,
        ("unsubscribe", []) => Command::Unsubscribe,
        ("mode", [word]) if keyword(word, "json") => Command::Mode(Mode::Json),
        ("mode", [word]) if keyword(word, "text") => Command::Mode(Mode::Text),
        ("locate", [vm]) => Command::Locate {
            vm: check_name("vm", vm)?,
        },
        ("identify", []) => Command::Identify(Identify::On),
        ("identify", [word]) if keyword(word, "on") => Command::Identify(Identify::On),
        ("identify", [word]) if keyword(word, "off") => Command::Identify(Identify::Off),
        ("identify", [word]) if word.bytes().all(|b| b.is_ascii_digit()) => {
            Command::Identify(Identify::Seconds(identify_seconds(word)?))
        }
        ("poweroff", []) => Command::Poweroff,
        ("journal", []) => Command::Journal { ack: false },
        ("journal", [word]) if keyword(word, "ack") => Command::Journal { ack: true },
        (name, _) if COMMANDS.contains(&name) => return Err(Fail::usage(name)),
        _ => return Err(Fail::unknown(word)),
    };
    Ok(cmd)
}

/// The command `help COMMAND` asks about, any case; `not_found` (as for a
/// VM or peer that does not exist) when it names none.
fn help_topic(word: &str) -> Result<&'static str, Fail> {
    let name = word.to_ascii_lowercase();
    match help::info(&name) {
        Some(info) => Ok(info.name),
        None => Err(Fail {
            code: ErrorCode::NotFound,
            message: format!("no command {}; type help for the list", quoted(word)),
        }),
    }
}

/// `identify SECONDS`, the digits already checked.
fn identify_seconds(digits: &str) -> Result<u32, Fail> {
    match digits.parse::<u32>() {
        Ok(seconds @ 1..=MAX_IDENTIFY_SECONDS) => Ok(seconds),
        _ => Err(Fail::bad(format!(
            "identify: SECONDS must be 1 to {MAX_IDENTIFY_SECONDS} ('identify off' turns the light off)"
        ))),
    }
}

fn parse_json(line: &str) -> Result<Request, RequestError> {
    let value: Value = serde_json::from_str(line)
        .map_err(|err| Fail::bad(format!("invalid JSON: {err}")).answer(None, true))?;
    let Value::Object(mut request) = value else {
        return Err(Fail::bad("a JSON request must be one object").answer(None, true));
    };
    let id = match request.remove("id") {
        None => None,
        Some(id @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_))) => Some(id),
        Some(_) => {
            return Err(
                Fail::bad("'id' must be a string, number, boolean or null").answer(None, true)
            )
        }
    };
    match json_command(request) {
        Ok(cmd) => Ok(Request {
            id,
            cmd,
            json: true,
        }),
        Err(fail) => Err(fail.answer(id, true)),
    }
}

/// The request object without its `id`.
fn json_command(mut request: Map<String, Value>) -> Result<Command, Fail> {
    if let Some(key) = request
        .keys()
        .find(|key| !matches!(key.as_str(), "cmd" | "args"))
    {
        return Err(Fail::bad(format!("unknown key {}", quoted(key))));
    }
    let name = match request.remove("cmd") {
        Some(Value::String(name)) => name,
        Some(_) => return Err(Fail::bad("'cmd' must be a string")),
        None => return Err(Fail::bad("missing 'cmd'")),
    };
    let args = match request.remove("args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(args)) => args,
        Some(_) => return Err(Fail::bad("'args' must be an object")),
    };
    let Some(keys) = json_arg_keys(&name) else {
        return Err(Fail::unknown(&name));
    };
    let args = Args { cmd: &name, args };
    if let Some(key) = args.args.keys().find(|key| !keys.contains(&key.as_str())) {
        return Err(Fail::bad(format!(
            "unknown argument {} for {name}",
            quoted(key)
        )));
    }
    let cmd = match name.as_str() {
        "help" => Command::Help {
            command: args.str("command")?.map(help_topic).transpose()?,
        },
        "status" => Command::Status,
        "vms" => Command::Vms {
            long: args.bool("long")?.unwrap_or(false),
        },
        "hosts" => Command::Hosts,
        "plan" => Command::Plan { dest: args.dest()? },
        "migrate" => Command::Migrate {
            vm: check_name("vm", args.required_str("vm")?)?,
            dest: args.dest()?,
        },
        "evacuate" => Command::Evacuate {
            dest: args.dest()?,
            poweroff: args.bool("poweroff")?.unwrap_or(false),
        },
        "jobs" => Command::Jobs,
        "abort" => Command::Abort {
            vm: args.str("vm")?.map(|vm| check_name("vm", vm)).transpose()?,
        },
        "maintenance" => Command::Maintenance {
            on: args.required_bool("on")?,
        },
        "login" => Command::Login {
            pin: check_pin(args.required_str("pin")?)?,
        },
        "logout" => Command::Logout,
        "subscribe" => Command::Subscribe,
        "unsubscribe" => Command::Unsubscribe,
        "mode" => match args.required_str("mode")? {
            mode if keyword(mode, "json") => Command::Mode(Mode::Json),
            mode if keyword(mode, "text") => Command::Mode(Mode::Text),
            _ => return Err(Fail::bad("argument 'mode' must be \"json\" or \"text\"")),
        },
        "locate" => Command::Locate {
            vm: check_name("vm", args.required_str("vm")?)?,
        },
        "identify" => Command::Identify(args.identify()?),
        "poweroff" => Command::Poweroff,
        "journal" => Command::Journal {
            ack: args.bool("ack")?.unwrap_or(false),
        },
        _ => return Err(Fail::unknown(&name)),
    };
    Ok(cmd)
}

/// The `args` keys each JSON command takes; `None` for an unknown command.
fn json_arg_keys(name: &str) -> Option<&'static [&'static str]> {
    let keys: &'static [&'static str] = match name {
        "help" => &["command"],
        "status" | "hosts" | "jobs" | "logout" | "subscribe" | "unsubscribe" | "poweroff" => &[],
        "vms" => &["long"],
        "plan" => &["dest"],
        "migrate" => &["vm", "dest"],
        "evacuate" => &["dest", "poweroff"],
        "abort" | "locate" => &["vm"],
        "maintenance" => &["on"],
        "login" => &["pin"],
        "mode" => &["mode"],
        "identify" => &["seconds", "on"],
        "journal" => &["ack"],
        _ => return None,
    };
    Some(keys)
}

/// A JSON request's `args`, read by key. A `null` value counts as absent,
/// as most JSON encoders write `null` for an unset optional field.
struct Args<'a> {
    cmd: &'a str,
    args: Map<String, Value>,
}

impl Args<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.args.get(key).filter(|value| !value.is_null())
    }

    fn missing(&self, key: &str) -> Fail {
        Fail::bad(format!("missing argument '{key}' for {}", self.cmd))
    }

    fn str(&self, key: &str) -> Result<Option<&str>, Fail> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Fail::bad(format!("argument '{key}' must be a string"))),
        }
    }

    fn required_str(&self, key: &str) -> Result<&str, Fail> {
        self.str(key)?.ok_or_else(|| self.missing(key))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, Fail> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(Fail::bad(format!("argument '{key}' must be true or false"))),
        }
    }

    fn required_bool(&self, key: &str) -> Result<bool, Fail> {
        self.bool(key)?.ok_or_else(|| self.missing(key))
    }

    fn dest(&self) -> Result<Dest, Fail> {
        dest(self.str("dest")?)
    }

    fn identify(&self) -> Result<Identify, Fail> {
        match (self.get("seconds"), self.bool("on")?) {
            (Some(_), Some(_)) => Err(Fail::bad("give either 'seconds' or 'on', not both")),
            (None, None) | (None, Some(true)) => Ok(Identify::On),
            (None, Some(false)) => Ok(Identify::Off),
            (Some(seconds), None) => match seconds.as_u64().map(u32::try_from) {
                Some(Ok(0)) => Ok(Identify::Off),
                Some(Ok(n @ 1..=MAX_IDENTIFY_SECONDS)) => Ok(Identify::Seconds(n)),
                _ => Err(Fail::bad(format!(
                    "argument 'seconds' must be an integer from 0 to {MAX_IDENTIFY_SECONDS}"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn text(line: &str) -> Command {
        match parse_line(line) {
            Ok(Some(Request {
                id: None,
                cmd,
                json: false,
            })) => cmd,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    fn text_err(line: &str) -> RequestError {
        match parse_line(line) {
            Err(err) => {
                assert!(!err.json, "{line:?}");
                assert_eq!(err.id, None);
                err
            }
            other => panic!("{line:?}: {other:?}"),
        }
    }

    fn bad(line: &str) -> String {
        let err = text_err(line);
        assert_eq!(err.code, ErrorCode::BadRequest, "{line:?}: {err:?}");
        err.message
    }

    fn json_req(line: &str) -> Request {
        match parse_line(line) {
            Ok(Some(req)) => {
                assert!(req.json, "{line:?}");
                req
            }
            other => panic!("{line:?}: {other:?}"),
        }
    }

    fn json_cmd(line: &str) -> Command {
        json_req(line).cmd
    }

    fn json_err(line: &str) -> RequestError {
        match parse_line(line) {
            Err(err) => {
                assert!(err.json, "{line:?}");
                err
            }
            other => panic!("{line:?}: {other:?}"),
        }
    }

    fn host(name: &str) -> Dest {
        Dest::Host(name.into())
    }

    #[test]
    fn blank_lines_are_nothing() {
        for line in ["", " ", "\t  ", "\u{a0}"] {
            assert_eq!(parse_line(line), Ok(None), "{line:?}");
        }
    }

    #[test]
    fn simple_commands() {
        assert_eq!(text("help"), Command::Help { command: None });
        assert_eq!(
            text("HELP Migrate"),
            Command::Help {
                command: Some("migrate")
            }
        );
        assert_eq!(text("status"), Command::Status);
        assert_eq!(text("vms"), Command::Vms { long: false });
        assert_eq!(text("vms long"), Command::Vms { long: true });
        assert_eq!(text("VMS Long"), Command::Vms { long: true });
        assert_eq!(text("vms -l"), Command::Vms { long: true });
        assert_eq!(text("hosts"), Command::Hosts);
        assert_eq!(text("jobs"), Command::Jobs);
        assert_eq!(text("logout"), Command::Logout);
        assert_eq!(text("subscribe"), Command::Subscribe);
        assert_eq!(text("unsubscribe"), Command::Unsubscribe);
        assert_eq!(text("poweroff"), Command::Poweroff);
    }

    #[test]
    fn command_word_is_case_insensitive_and_arguments_keep_case() {
        assert_eq!(text("STATUS"), Command::Status);
        assert_eq!(text("  Status  "), Command::Status);
        assert_eq!(
            text("MiGrAtE WebVM Kvm-B"),
            Command::Migrate {
                vm: "WebVM".into(),
                dest: host("Kvm-B")
            }
        );
    }

    #[test]
    fn words_are_separated_by_any_whitespace() {
        assert_eq!(
            text("migrate\tweb1 \t kvm-b"),
            Command::Migrate {
                vm: "web1".into(),
                dest: host("kvm-b")
            }
        );
    }

    #[test]
    fn plan_and_migrate_destinations() {
        assert_eq!(text("plan"), Command::Plan { dest: Dest::Auto });
        assert_eq!(text("plan auto"), Command::Plan { dest: Dest::Auto });
        assert_eq!(text("plan AUTO"), Command::Plan { dest: Dest::Auto });
        assert_eq!(
            text("plan kvm-c"),
            Command::Plan {
                dest: host("kvm-c")
            }
        );
        assert_eq!(
            text("migrate web1"),
            Command::Migrate {
                vm: "web1".into(),
                dest: Dest::Auto
            }
        );
        assert_eq!(
            text("migrate web1 auto"),
            Command::Migrate {
                vm: "web1".into(),
                dest: Dest::Auto
            }
        );
    }

    #[test]
    fn evacuate_forms() {
        let evac = |dest, poweroff| Command::Evacuate { dest, poweroff };
        assert_eq!(text("evacuate"), evac(Dest::Auto, false));
        assert_eq!(text("evacuate auto"), evac(Dest::Auto, false));
        assert_eq!(text("evacuate poweroff"), evac(Dest::Auto, true));
        assert_eq!(text("evacuate PowerOff"), evac(Dest::Auto, true));
        assert_eq!(text("evacuate kvm-b"), evac(host("kvm-b"), false));
        assert_eq!(text("evacuate auto poweroff"), evac(Dest::Auto, true));
        assert_eq!(text("evacuate kvm-b poweroff"), evac(host("kvm-b"), true));
        assert_eq!(
            bad("evacuate kvm-b now"),
            "usage: evacuate [HOST|auto] [poweroff]"
        );
        assert_eq!(
            bad("evacuate a poweroff b"),
            "usage: evacuate [HOST|auto] [poweroff]"
        );
    }

    #[test]
    fn abort_maintenance_login_mode_locate() {
        assert_eq!(text("abort"), Command::Abort { vm: None });
        assert_eq!(
            text("abort web1"),
            Command::Abort {
                vm: Some("web1".into())
            }
        );
        assert_eq!(text("maintenance on"), Command::Maintenance { on: true });
        assert_eq!(text("maintenance OFF"), Command::Maintenance { on: false });
        assert_eq!(text("login 4711"), Command::Login { pin: "4711".into() });
        assert_eq!(text("login"), Command::AskPin);
        assert_eq!(text("mode json"), Command::Mode(Mode::Json));
        assert_eq!(text("mode text"), Command::Mode(Mode::Text));
        assert_eq!(text("locate db-7"), Command::Locate { vm: "db-7".into() });
    }

    #[test]
    fn identify_forms() {
        assert_eq!(text("identify"), Command::Identify(Identify::On));
        assert_eq!(text("identify on"), Command::Identify(Identify::On));
        assert_eq!(text("identify off"), Command::Identify(Identify::Off));
        assert_eq!(text("identify 1"), Command::Identify(Identify::Seconds(1)));
        assert_eq!(
            text("identify 86400"),
            Command::Identify(Identify::Seconds(86_400))
        );
        for line in [
            "identify 0",
            "identify 86401",
            "identify 99999999999999999999",
        ] {
            assert!(bad(line).contains("SECONDS must be 1 to 86400"), "{line}");
        }
        for line in [
            "identify -5",
            "identify 1.5",
            "identify blink",
            "identify on 5",
        ] {
            assert_eq!(bad(line), "usage: identify [on|off|SECONDS]", "{line}");
        }
    }

    #[test]
    fn missing_and_extra_arguments_show_the_usage() {
        let cases = [
            ("status now", "usage: status"),
            ("help me now", "usage: help [COMMAND]"),
            ("migrate", "usage: migrate VM [HOST|auto]"),
            ("migrate a b c", "usage: migrate VM [HOST|auto]"),
            ("plan a b", "usage: plan [HOST|auto]"),
            ("abort a b", "usage: abort [VM]"),
            ("maintenance", "usage: maintenance on|off"),
            ("maintenance maybe", "usage: maintenance on|off"),
            ("login 1 2", "usage: login [PIN]"),
            ("mode", "usage: mode json|text"),
            ("mode xml", "usage: mode json|text"),
            ("locate", "usage: locate VM"),
            ("POWEROFF now", "usage: poweroff"),
        ];
        for (line, want) in cases {
            assert_eq!(bad(line), want, "{line}");
        }
    }

    #[test]
    fn help_names_one_command_or_none() {
        let err = text_err("help nosuch");
        assert_eq!(err.code, ErrorCode::NotFound);
        assert_eq!(err.message, "no command 'nosuch'; type help for the list");
        let err = json_err(r#"{"id":4,"cmd":"help","args":{"command":"frob"}}"#);
        assert_eq!((err.code, err.id), (ErrorCode::NotFound, Some(json!(4))));
        let err = json_err(r#"{"cmd":"help","args":{"command":7}}"#);
        assert_eq!(err.message, "argument 'command' must be a string");
        for name in COMMANDS {
            let cmd = text(&format!("help {}", name.to_uppercase()));
            assert_eq!(
                cmd,
                Command::Help {
                    command: Some(name)
                }
            );
        }
    }

    #[test]
    fn unknown_command_word() {
        let err = text_err("foo bar");
        assert_eq!(err.code, ErrorCode::UnknownCommand);
        assert_eq!(err.message, "unknown command 'foo'; type help");
        let err = text_err("x\u{1b}[2J");
        assert_eq!(err.message, "unknown command 'x?[2J'; type help");
        let err = text_err(&"z".repeat(100));
        assert_eq!(
            err.message,
            format!("unknown command '{}...'; type help", "z".repeat(40))
        );
    }

    #[test]
    fn names_are_validated() {
        assert!(bad("migrate web/1").contains("vm name 'web/1' contains '/'"));
        assert!(bad("migrate web1 kvm\"b").contains("host name"));
        assert!(bad("locate a\\b").contains("quote or backslash"));
        assert!(bad("abort a\u{1}b").contains("control character"));
        assert!(bad(&format!("locate {}", "v".repeat(129))).contains("longer than 128 bytes"));
        assert_eq!(
            text(&format!("locate {}", "v".repeat(128))),
            Command::Locate {
                vm: "v".repeat(128)
            }
        );
    }

    #[test]
    fn validate_name_rules() {
        let ok = ["web1", "db-7.prod", "vm_ü", "a", &"x".repeat(MAX_NAME)];
        for name in ok {
            assert_eq!(validate_name("vm", name), Ok(()), "{name:?}");
        }
        let not_ok = [
            "",
            "a b",
            "a\tb",
            "a\u{a0}b",
            "a\0b",
            "a\u{85}b",
            "a\u{1b}b",
            "a/b",
            "a\"b",
            "a'b",
            "a`b",
            "a\\b",
            &"x".repeat(MAX_NAME + 1),
        ];
        for name in not_ok {
            let err = validate_name("vm", name).unwrap_err();
            assert!(err.starts_with("vm name"), "{err}");
            assert!(!err.contains(['\0', '\u{1b}', '\n']), "{err:?}");
        }
        assert_eq!(validate_name("peer", ""), Err("peer name is empty".into()));
    }

    #[test]
    fn bad_pin_is_not_repeated() {
        let err = json_err(r#"{"cmd":"login","args":{"pin":"12\u0007secret"}}"#);
        assert_eq!(err.code, ErrorCode::BadRequest);
        assert!(!err.message.contains("secret"));
        let err = json_err(r#"{"cmd":"login","args":{"pin":""}}"#);
        assert_eq!(err.code, ErrorCode::BadRequest);
        assert!(bad(&format!("login {}", "9".repeat(MAX_PIN + 1))).starts_with("PIN must be"));
    }

    #[test]
    fn json_basic_request() {
        let req = json_req(r#"{"id": 7, "cmd": "evacuate", "args": {"dest": "auto"}}"#);
        assert_eq!(req.id, Some(json!(7)));
        assert_eq!(
            req.cmd,
            Command::Evacuate {
                dest: Dest::Auto,
                poweroff: false
            }
        );
        assert_eq!(json_req(r#"  {"cmd":"status"}  "#).id, None);
        assert_eq!(json_cmd(r#"{"cmd":"status","args":{}}"#), Command::Status);
        assert_eq!(json_cmd(r#"{"cmd":"status","args":null}"#), Command::Status);
    }

    #[test]
    fn json_scalar_ids_are_echoed() {
        for id in [
            json!("a-1"),
            json!(-3),
            json!(1.5),
            json!(true),
            json!(null),
        ] {
            let line = json!({"id": id, "cmd": "vms"}).to_string();
            assert_eq!(json_req(&line).id, Some(id));
        }
    }

    #[test]
    fn json_object_or_array_id_is_bad_request_without_id() {
        for line in [r#"{"id":{"a":1},"cmd":"vms"}"#, r#"{"id":[1],"cmd":"vms"}"#] {
            let err = json_err(line);
            assert_eq!(err.code, ErrorCode::BadRequest);
            assert_eq!(err.id, None);
            assert!(err.message.contains("'id'"));
        }
    }

    #[test]
    fn json_errors_carry_the_id() {
        let err = json_err(r#"{"id":"x","cmd":"frobnicate"}"#);
        assert_eq!(err.code, ErrorCode::UnknownCommand);
        assert_eq!(err.id, Some(json!("x")));
        assert_eq!(err.message, "unknown command 'frobnicate'; type help");
        let err = json_err(r#"{"id":9,"cmd":"migrate"}"#);
        assert_eq!(err.code, ErrorCode::BadRequest);
        assert_eq!(err.id, Some(json!(9)));
        assert_eq!(err.message, "missing argument 'vm' for migrate");
    }

    #[test]
    fn invalid_json_is_bad_request() {
        for line in [
            "{",
            "{\"cmd\":",
            "{\"cmd\":\"status\"} trailing",
            "{'cmd':'status'}",
            "{\"cmd\":\"status\",}",
        ] {
            let err = json_err(line);
            assert_eq!(err.code, ErrorCode::BadRequest, "{line}");
            assert_eq!(err.id, None);
            assert!(err.message.starts_with("invalid JSON"), "{}", err.message);
        }
    }

    #[test]
    fn json_depth_bomb_is_bad_request() {
        let line = format!("{{\"id\":{}", "[".repeat(10_000));
        assert_eq!(json_err(&line).code, ErrorCode::BadRequest);
    }

    #[test]
    fn json_unknown_keys_and_wrong_types_name_the_key() {
        let cases = [
            (r#"{"cmd":"vms","verbose":true}"#, "unknown key 'verbose'"),
            (
                r#"{"cmd":"vms","args":{"all":1}}"#,
                "unknown argument 'all' for vms",
            ),
            (
                r#"{"cmd":"migrate","args":{"vm":"a","host":"b"}}"#,
                "unknown argument 'host' for migrate",
            ),
            (r#"{"cmd":7}"#, "'cmd' must be a string"),
            (r#"{"id":1}"#, "missing 'cmd'"),
            (r#"{"cmd":"vms","args":[]}"#, "'args' must be an object"),
            (
                r#"{"cmd":"migrate","args":{"vm":5}}"#,
                "argument 'vm' must be a string",
            ),
            (
                r#"{"cmd":"plan","args":{"dest":true}}"#,
                "argument 'dest' must be a string",
            ),
            (
                r#"{"cmd":"evacuate","args":{"poweroff":"yes"}}"#,
                "argument 'poweroff' must be true or false",
            ),
            (
                r#"{"cmd":"maintenance"}"#,
                "missing argument 'on' for maintenance",
            ),
            (
                r#"{"cmd":"maintenance","args":{"on":1}}"#,
                "argument 'on' must be true or false",
            ),
            (r#"{"cmd":"login"}"#, "missing argument 'pin' for login"),
            (
                r#"{"cmd":"mode","args":{"mode":"xml"}}"#,
                "argument 'mode' must be \"json\" or \"text\"",
            ),
            (
                r#"{"cmd":"locate","args":{}}"#,
                "missing argument 'vm' for locate",
            ),
            (
                r#"{"cmd":"identify","args":{"seconds":86401}}"#,
                "argument 'seconds' must be an integer from 0 to 86400",
            ),
            (
                r#"{"cmd":"identify","args":{"seconds":-1}}"#,
                "argument 'seconds' must be an integer from 0 to 86400",
            ),
            (
                r#"{"cmd":"identify","args":{"seconds":2.5}}"#,
                "argument 'seconds' must be an integer from 0 to 86400",
            ),
            (
                r#"{"cmd":"identify","args":{"seconds":"5"}}"#,
                "argument 'seconds' must be an integer from 0 to 86400",
            ),
            (
                r#"{"cmd":"identify","args":{"seconds":5,"on":true}}"#,
                "give either 'seconds' or 'on', not both",
            ),
            (
                r#"{"cmd":"migrate","args":{"vm":"a b"}}"#,
                "vm name 'a b' contains whitespace",
            ),
            (
                r#"{"cmd":"migrate","args":{"vm":"a","dest":"x\u0000y"}}"#,
                "host name 'x?y' contains a control character",
            ),
        ];
        for (line, want) in cases {
            let err = parse_line(line).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{line}");
            assert!(err.message.starts_with(want), "{line}: {}", err.message);
        }
    }

    #[test]
    fn non_object_json_starting_with_brace_cannot_happen_but_arrays_are_text() {
        // Only '{' selects JSON; '[1]' is a text command word.
        let err = parse_line("[1]").unwrap_err();
        assert!(!err.json);
        assert_eq!(err.code, ErrorCode::UnknownCommand);
    }

    #[test]
    fn json_every_command() {
        let cases = [
            (json!({"cmd":"help"}), Command::Help { command: None }),
            (
                json!({"cmd":"help","args":{"command":"vms"}}),
                Command::Help {
                    command: Some("vms"),
                },
            ),
            (json!({"cmd":"status"}), Command::Status),
            (json!({"cmd":"vms"}), Command::Vms { long: false }),
            (
                json!({"cmd":"vms","args":{"long":true}}),
                Command::Vms { long: true },
            ),
            (json!({"cmd":"hosts"}), Command::Hosts),
            (json!({"cmd":"plan"}), Command::Plan { dest: Dest::Auto }),
            (
                json!({"cmd":"plan","args":{"dest":null}}),
                Command::Plan { dest: Dest::Auto },
            ),
            (
                json!({"cmd":"plan","args":{"dest":"kvm-b"}}),
                Command::Plan {
                    dest: host("kvm-b"),
                },
            ),
            (
                json!({"cmd":"migrate","args":{"vm":"web1"}}),
                Command::Migrate {
                    vm: "web1".into(),
                    dest: Dest::Auto,
                },
            ),
            (
                json!({"cmd":"migrate","args":{"vm":"web1","dest":"kvm-c"}}),
                Command::Migrate {
                    vm: "web1".into(),
                    dest: host("kvm-c"),
                },
            ),
            (
                json!({"cmd":"evacuate","args":{"dest":"auto","poweroff":true}}),
                Command::Evacuate {
                    dest: Dest::Auto,
                    poweroff: true,
                },
            ),
            (
                json!({"cmd":"evacuate","args":{"poweroff":null}}),
                Command::Evacuate {
                    dest: Dest::Auto,
                    poweroff: false,
                },
            ),
            (json!({"cmd":"jobs"}), Command::Jobs),
            (json!({"cmd":"abort"}), Command::Abort { vm: None }),
            (
                json!({"cmd":"abort","args":{"vm":"web1"}}),
                Command::Abort {
                    vm: Some("web1".into()),
                },
            ),
            (
                json!({"cmd":"maintenance","args":{"on":true}}),
                Command::Maintenance { on: true },
            ),
            (
                json!({"cmd":"maintenance","args":{"on":false}}),
                Command::Maintenance { on: false },
            ),
            (
                json!({"cmd":"login","args":{"pin":"12 34"}}),
                Command::Login {
                    pin: "12 34".into(),
                },
            ),
            (json!({"cmd":"logout"}), Command::Logout),
            (json!({"cmd":"subscribe"}), Command::Subscribe),
            (json!({"cmd":"unsubscribe"}), Command::Unsubscribe),
            (
                json!({"cmd":"mode","args":{"mode":"json"}}),
                Command::Mode(Mode::Json),
            ),
            (
                json!({"cmd":"mode","args":{"mode":"text"}}),
                Command::Mode(Mode::Text),
            ),
            (
                json!({"cmd":"locate","args":{"vm":"db"}}),
                Command::Locate { vm: "db".into() },
            ),
            (json!({"cmd":"identify"}), Command::Identify(Identify::On)),
            (
                json!({"cmd":"identify","args":{"on":true}}),
                Command::Identify(Identify::On),
            ),
            (
                json!({"cmd":"identify","args":{"on":false}}),
                Command::Identify(Identify::Off),
            ),
            (
                json!({"cmd":"identify","args":{"seconds":0}}),
                Command::Identify(Identify::Off),
            ),
            (
                json!({"cmd":"identify","args":{"seconds":300}}),
                Command::Identify(Identify::Seconds(300)),
            ),
            (
                json!({"cmd":"identify","args":{"seconds":86400}}),
                Command::Identify(Identify::Seconds(86_400)),
            ),
            (json!({"cmd":"poweroff"}), Command::Poweroff),
            (json!({"cmd":"journal"}), Command::Journal { ack: false }),
            (
                json!({"cmd":"journal","args":{"ack":false}}),
                Command::Journal { ack: false },
            ),
            (
                json!({"cmd":"journal","args":{"ack":true}}),
                Command::Journal { ack: true },
            ),
        ];
        for (request, want) in cases {
            assert_eq!(json_cmd(&request.to_string()), want, "{request}");
        }
    }

    #[test]
    fn json_cmd_is_exact() {
        assert_eq!(
            json_err(r#"{"cmd":"STATUS"}"#).code,
            ErrorCode::UnknownCommand
        );
    }

    #[test]
    fn names_match_commands_list_and_help() {
        let every = [
            Command::Help { command: None },
            Command::Status,
            Command::Vms { long: false },
            Command::Hosts,
            Command::Plan { dest: Dest::Auto },
            Command::Migrate {
                vm: "v".into(),
                dest: Dest::Auto,
            },
            Command::Evacuate {
                dest: Dest::Auto,
                poweroff: false,
            },
            Command::Jobs,
            Command::Abort { vm: None },
            Command::Maintenance { on: true },
            Command::Login { pin: "1".into() },
            Command::Logout,
            Command::Subscribe,
            Command::Unsubscribe,
            Command::Mode(Mode::Json),
            Command::Locate { vm: "v".into() },
            Command::Identify(Identify::On),
            Command::Poweroff,
            Command::Journal { ack: false },
        ];
        let names: Vec<&str> = every.iter().map(Command::name).collect();
        assert_eq!(names, COMMANDS);
        let help: Vec<&str> = help::HELP.iter().map(|info| info.name).collect();
        assert_eq!(help, COMMANDS);
        for (cmd, info) in every.iter().zip(help::HELP) {
            assert!(info.usage.starts_with(info.name));
            assert_eq!(cmd.usage(), info.usage);
            assert!(json_arg_keys(info.name).is_some());
        }
    }

    #[test]
    fn login_rules_follow_the_protocol() {
        let reading = [
            "status", "vms", "hosts", "jobs", "plan", "locate v", "help", "journal",
        ];
        let session = ["login 1", "logout", "mode json", "subscribe", "unsubscribe"];
        let changing = [
            "migrate v",
            "evacuate",
            "abort",
            "maintenance on",
            "identify",
            "poweroff",
            "journal ack",
        ];
        for line in reading.iter().chain(&session) {
            let cmd = text(line);
            assert!(cmd.allowed_without_login(), "{line}");
            assert!(!cmd.changes_state(), "{line}");
        }
        for line in changing {
            let cmd = text(line);
            assert!(!cmd.allowed_without_login(), "{line}");
            assert!(cmd.changes_state(), "{line}");
        }
        // `journal` reads, `journal ack` changes: one name, both lists.
        assert_eq!(
            reading.len() + session.len() + changing.len(),
            COMMANDS.len() + 1
        );
    }

    #[test]
    fn journal_and_journal_ack() {
        assert_eq!(text("journal"), Command::Journal { ack: false });
        assert_eq!(text("JOURNAL Ack"), Command::Journal { ack: true });
        assert_eq!(text("journal ack").name(), "journal");
        assert_eq!(bad("journal ack now"), "usage: journal [ack]");
        assert_eq!(bad("journal yes"), "usage: journal [ack]");
        let err = json_err(r#"{"cmd":"journal","args":{"ack":"yes"}}"#);
        assert_eq!(err.message, "argument 'ack' must be true or false");
        let err = json_err(r#"{"cmd":"journal","args":{"force":true}}"#);
        assert_eq!(err.message, "unknown argument 'force' for journal");
        assert!(Command::Journal { ack: true }.changes_state());
        assert!(!Command::Journal { ack: true }.allowed_without_login());
        assert!(Command::Journal { ack: false }.allowed_without_login());
    }

    #[test]
    fn request_error_displays_code_and_message() {
        let err = text_err("nope");
        assert_eq!(
            err.to_string(),
            "unknown_command: unknown command 'nope'; type help"
        );
    }
}
