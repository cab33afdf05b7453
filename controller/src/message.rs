//! The agent's JSON lines, typed: what a line from the agent is (a
//! response, an event, or something to skip) and what a request looks
//! like on the wire. Requests are built from `rackside_protocol::Command`,
//! the type the agent parses them into, so the two cannot drift apart.

use rackside_protocol::{Command, Dest, ErrorCode, Identify};
use serde_json::{json, Map, Value};

/// A refusal from the agent: `{"ok":false,"error":{"code","message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AgentError {
    /// The protocol's spelling (`"auth_required"`); kept as a string so a
    /// code from a newer agent is still shown.
    pub code: String,
    pub message: String,
}

impl AgentError {
    /// True when this is `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code.as_str()
    }
}

/// An answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The request's id, echoed (absent for a request that had none).
    pub id: Option<Value>,
    /// `data`, or the error.
    pub outcome: Result<Value, AgentError>,
}

/// `{"event":NAME,"ts":..,"data":{..}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub ts: String,
    pub data: Value,
}

/// What a line from the agent is.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Response(Response),
    Event(Event),
}

/// Reads one line. `None` for everything that is neither a response nor
/// an event: the banner, a prompt, echo, text answers, noise, a JSON line
/// cut by a glitch, and our own requests echoed back by a terminal server.
pub fn classify(line: &str) -> Option<Incoming> {
    let line = line.trim_start_matches(|c: char| c.is_whitespace() || c == '\0');
    if !line.starts_with('{') {
        return None;
    }
    let Value::Object(mut obj) = serde_json::from_str::<Value>(line.trim_end()).ok()? else {
        return None;
    };
    if let Some(Value::String(name)) = obj.get("event") {
        let name = name.clone();
        let ts = match obj.remove("ts") {
            Some(Value::String(ts)) => ts,
            _ => String::new(),
        };
        let data = obj.remove("data").unwrap_or(Value::Null);
        return Some(Incoming::Event(Event { name, ts, data }));
    }
    let ok = obj.get("ok")?.as_bool()?;
    let id = obj.remove("id");
    let outcome = if ok {
        Ok(obj.remove("data").unwrap_or_else(|| json!({})))
    } else {
        let error = obj.remove("error").unwrap_or(Value::Null);
        let text = |key: &str| {
            error
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Err(AgentError {
            code: text("code"),
            message: text("message"),
        })
    };
    Some(Incoming::Response(Response { id, outcome }))
}

/// The request line for `cmd` with `id`, without line end.
pub fn encode(id: u64, cmd: &Command) -> String {
    let mut line = json!({"id": id, "cmd": cmd.name()});
    let args = args(cmd);
    if !args.is_empty() {
        line["args"] = Value::Object(args);
    }
    line.to_string()
}

fn dest(dest: &Dest) -> Value {
    match dest {
        Dest::Auto => Value::Null,
        Dest::Host(host) => json!(host),
    }
}

fn args(cmd: &Command) -> Map<String, Value> {
    let args = match cmd {
        Command::Help { command } => json!({ "command": command }),
        Command::Vms { long } => json!({ "long": long }),
        Command::Plan { dest: d } => json!({ "dest": dest(d) }),
        Command::Migrate { vm, dest: d } => json!({ "vm": vm, "dest": dest(d) }),
        Command::Evacuate { dest: d, poweroff } => json!({ "dest": dest(d), "poweroff": poweroff }),
        Command::Abort { vm } => json!({ "vm": vm }),
        Command::Maintenance { on } => json!({ "on": on }),
        Command::Login { pin } => json!({ "pin": pin }),
        Command::Mode(mode) => json!({ "mode": mode.as_str() }),
        Command::Locate { vm } => json!({ "vm": vm }),
        Command::Identify(Identify::On) => json!({ "on": true }),
        Command::Identify(Identify::Off) => json!({ "on": false }),
        Command::Identify(Identify::Seconds(s)) => json!({ "seconds": s }),
        Command::Journal { ack } => json!({ "ack": ack }),
        Command::Status
        | Command::Hosts
        | Command::Jobs
        | Command::AskPin
        | Command::Logout
        | Command::Subscribe
        | Command::Unsubscribe
        | Command::Poweroff => json!({}),
    };
    match args {
        // `null` counts as absent for the agent; leave it out altogether.
        Value::Object(map) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use rackside_protocol::{parse_line, Mode};

    use super::*;

    #[test]
    fn a_response_is_read_with_its_id() {
        let got = classify(r#"{"id":7,"ok":true,"data":{"host":"ha"}}"#);
        assert_eq!(
            got,
            Some(Incoming::Response(Response {
                id: Some(json!(7)),
                outcome: Ok(json!({"host": "ha"})),
            }))
        );
    }

    #[test]
    fn an_error_is_read_with_its_code() {
        let Some(Incoming::Response(r)) = classify(
            r#"{"id":8,"ok":false,"error":{"code":"auth_required","message":"login first"}}"#,
        ) else {
            panic!("not a response")
        };
        let err = r.outcome.unwrap_err();
        assert!(err.is(ErrorCode::AuthRequired));
        assert_eq!(err.to_string(), "auth_required: login first");
    }

    #[test]
    fn a_response_without_id_has_none() {
        let Some(Incoming::Response(r)) = classify(r#"{"ok":true,"data":{}}"#) else {
            panic!()
        };
        assert_eq!(r.id, None);
    }

    #[test]
    fn an_event_is_read() {
        let got = classify(r#"{"event":"host.empty","ts":"T","data":{"host":"ha"}}"#);
        assert_eq!(
            got,
            Some(Incoming::Event(Event {
                name: "host.empty".into(),
                ts: "T".into(),
                data: json!({"host": "ha"}),
            }))
        );
    }

    #[test]
    fn everything_else_is_skipped() {
        for line in [
            "rackside-agent 0.1.0 on ha",
            "ha> ",
            "ha> {\"id\":1,\"ok\":true}",
            "error: bad_request: usage",
            "{\"id\":1,\"ok\":tr",
            "{\"id\":1,\"cmd\":\"status\"}",
            "[1,2]",
            "{}",
            "\u{fffd}{\"ok\":true}",
            "",
        ] {
            assert_eq!(classify(line), None, "{line:?}");
        }
    }

    #[test]
    fn leading_blanks_and_nuls_are_tolerated() {
        assert!(classify(" \0\t{\"ok\":true,\"data\":{}} ").is_some());
    }

    /// Every request we send parses, in the agent's own parser, back into
    /// the command it was built from.
    #[test]
    fn requests_parse_back_into_the_same_command() {
        let commands = [
            Command::Status,
            Command::Hosts,
            Command::Subscribe,
            Command::Mode(Mode::Json),
            Command::Locate { vm: "web1".into() },
            Command::Login {
                pin: "123456".into(),
            },
            Command::Evacuate {
                dest: Dest::Auto,
                poweroff: false,
            },
            Command::Evacuate {
                dest: Dest::Host("hb".into()),
                poweroff: true,
            },
            Command::Identify(Identify::On),
            Command::Identify(Identify::Off),
            Command::Identify(Identify::Seconds(60)),
            Command::Journal { ack: true },
            Command::Help { command: None },
        ];
        for (i, cmd) in commands.into_iter().enumerate() {
            let line = encode(i as u64, &cmd);
            let req = parse_line(&line).unwrap().unwrap();
            assert_eq!(req.cmd, cmd, "{line}");
            assert_eq!(req.id, Some(json!(i)));
            assert!(req.json);
        }
    }

    #[test]
    fn a_request_without_args_has_no_args_key() {
        assert_eq!(encode(3, &Command::Status), r#"{"cmd":"status","id":3}"#);
    }
}
