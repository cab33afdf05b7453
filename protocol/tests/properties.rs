//! Property tests: the rules of docs/protocol.md that must hold for every input,
//! not just the ones we thought of. The line and the parser face a serial
//! line (noise, a telnet client, a firmware bug), so "never panics" and
//! "never wedges" are the properties that matter most.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use rackside_protocol::line::MAX_SUBNEGOTIATION;
use rackside_protocol::{
    parse_line, validate_name, wire, Command, Dest, ErrorCode, Identify, LineEvent, LineReader,
    Mode, Request, COMMANDS, MAX_LINE,
};
use serde_json::{json, Value};

// Cases per property: proptest's 256 where a case is a long byte string
// (the line discipline), more where a case is cheap. The fast suite stays
// within seconds; `make fuzz` runs a million inputs through all of it.
const CASES_LINE: u32 = 256;
const CASES_PARSE: u32 = 2048;
const CASES_PARSE_LONG: u32 = 256;
const CASES_WIRE: u32 = 1024;
const CASES_ROUND_TRIP: u32 = 1024;

// ---------------------------------------------------------------------------
// Line discipline

/// Bytes biased towards the ones the line discipline treats specially, so
/// line ends, telnet and escape sequences actually meet each other.
fn line_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        6 => b'a'..=b'z',
        2 => any::<u8>(),
        1 => prop::sample::select(vec![
            b'\r', b'\n', 0x03, 0x08, 0x7f, 0x15, 0x1b, b'[', b'O', b'\t', 0x00,
            255, 250, 240, 251, 252, 253, 254, 241, 0xc3, 0xa9, 0xe2, 0x82, 0xac,
        ]),
    ]
}

fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(any::<u8>(), 0..1500), vec(line_byte(), 0..1500)]
}

fn feed_all(chunks: &[&[u8]]) -> (Vec<LineEvent>, Vec<u8>) {
    let mut reader = LineReader::new();
    let (mut events, mut echo) = (Vec::new(), Vec::new());
    for chunk in chunks {
        reader.feed(chunk, true, &mut echo, &mut events);
    }
    (events, echo)
}

/// `bytes` cut at the given points.
fn chunked<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(&bytes[start..cut]);
        start = cut;
    }
    chunks.push(&bytes[start..]);
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES_LINE))]

    /// (1) A read may end anywhere: how the bytes are cut never changes what
    /// comes out, events or echo.
    #[test]
    fn chunking_does_not_matter(bytes in line_bytes(), cuts in vec(any::<usize>(), 0..40)) {
        let whole = feed_all(&[&bytes]);
        let pieces = feed_all(&chunked(&bytes, &cuts));
        prop_assert_eq!(&whole, &pieces);
        let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(&whole, &feed_all(&one_by_one));
    }

    /// (2) A line handed to the parser is bounded and printable.
    #[test]
    fn lines_are_bounded_and_printable(bytes in line_bytes()) {
        let (events, _) = feed_all(&[&bytes]);
        for event in events {
            if let LineEvent::Line(line) = event {
                prop_assert!(line.len() <= MAX_LINE, "{} bytes", line.len());
                prop_assert!(!line.chars().any(char::is_control), "{:?}", line);
            }
        }
    }

    /// (3) Nothing but a line end or a Ctrl-C makes an event.
    #[test]
    fn events_never_outnumber_terminators(bytes in line_bytes()) {
        let (events, _) = feed_all(&[&bytes]);
        let terminators = bytes.iter().filter(|&&b| matches!(b, b'\r' | b'\n' | 0x03)).count();
        prop_assert!(events.len() <= terminators);
    }

    /// Whatever came before, a clean line end and a command are understood:
    /// no state of the reader survives a long enough stretch of sane input.
    #[test]
    fn reader_always_recovers(garbage in line_bytes()) {
        let mut input = garbage;
        input.extend(std::iter::repeat_n(b'x', 5000));
        input.extend_from_slice(b"\r\nstatus\r");
        let (events, _) = feed_all(&[&input]);
        prop_assert_eq!(events.last(), Some(&LineEvent::Line("status".into())));
    }

    /// Echo with echo off is nothing, and events do not depend on echo.
    #[test]
    fn echo_flag_changes_only_the_echo(bytes in line_bytes()) {
        let mut reader = LineReader::new();
        let (mut echo, mut events) = (Vec::new(), Vec::new());
        reader.feed(&bytes, false, &mut echo, &mut events);
        prop_assert!(echo.is_empty());
        prop_assert_eq!(events, feed_all(&[&bytes]).0);
    }
}

/// A small deterministic generator, so the large test is the same every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// 20 kB of noise, a 5000-byte line and a telnet client's opening
/// negotiation, then a command: the command must get through, whatever
/// state the noise left, however the reads are cut.
#[test]
fn noise_long_line_and_negotiation_then_status() {
    for seed in 1..=64u64 {
        let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut input = rng.bytes(20_000);
        input.extend(std::iter::repeat_n(b'L', 5000));
        input.extend_from_slice(b"\r\n");
        // IAC WILL ECHO, IAC WILL SGA, IAC DO NAWS, IAC SB NAWS 0 80 0 24 IAC SE,
        // IAC SB TTYPE IS "xterm" IAC SE, IAC DONT LINEMODE, IAC NOP.
        input.extend_from_slice(
            b"\xff\xfb\x01\xff\xfb\x03\xff\xfd\x1f\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0\
              \xff\xfa\x18\x00xterm\xff\xf0\xff\xfe\x22\xff\xf1",
        );
        input.extend_from_slice(b"status\r");

        let (events, _) = feed_all(&[&input]);
        assert_eq!(
            events.last(),
            Some(&LineEvent::Line("status".into())),
            "seed {seed}"
        );
        // The 5000-byte line is exactly one TooLong, right before "status"
        // (even if the noise ended inside a subnegotiation, which then
        // swallows at most MAX_SUBNEGOTIATION of it).
        const { assert!(5000 > MAX_SUBNEGOTIATION + MAX_LINE) };
        assert_eq!(events[events.len() - 2], LineEvent::TooLong, "seed {seed}");

        let mut chunks = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            let n = (rng.next() % 700) as usize + 1;
            let (chunk, tail) = rest.split_at(n.min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        assert_eq!(feed_all(&chunks).0, events, "seed {seed}");
    }
}

// ---------------------------------------------------------------------------
// Requests

/// Strings shaped like JSON requests, valid or nearly so.
fn json_ish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            " ",
            "\"cmd\"",
            "\"id\"",
            "\"args\"",
            "\"vm\"",
            "\"dest\"",
            "\"seconds\"",
            "\"on\"",
            "\"pin\"",
            "\"mode\"",
            "\"poweroff\"",
            "\"migrate\"",
            "\"identify\"",
            "\"auto\"",
            "1",
            "-1",
            "1e999",
            "0.5",
            "18446744073709551616",
            "true",
            "false",
            "null",
            "\"\\u0000\"",
            "\"\\ud800\"",
            "\"a b\"",
            "\"",
        ])
        .prop_map(String::from),
        any::<String>().prop_map(|s| Value::from(s).to_string()),
    ];
    vec(token, 0..60).prop_map(|tokens| format!("{{{}", tokens.concat()))
}

/// Well-formed JSON requests with arbitrary values where the arguments go.
fn json_request() -> impl Strategy<Value = String> {
    let cmd = prop_oneof![
        4 => prop::sample::select(COMMANDS.to_vec()).prop_map(Value::from),
        1 => json_value(),
    ];
    let key = prop::sample::select(vec![
        "vm", "dest", "poweroff", "on", "pin", "mode", "seconds", "ack", "extra",
    ]);
    let args = btree_map(key, json_value(), 0..4);
    (json_value(), cmd, args, any::<(bool, bool)>()).prop_map(
        |(id, cmd, args, (with_id, with_args))| {
            let mut request = serde_json::Map::new();
            if with_id {
                request.insert("id".into(), id);
            }
            request.insert("cmd".into(), cmd);
            if with_args {
                let args = args.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                request.insert("args".into(), Value::Object(args));
            }
            Value::Object(request).to_string()
        },
    )
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![0.5, -0.25, 1e10, 86400.0]).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[a-z0-9/ -]{0,10}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map("[a-z]{0,6}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Every name a parsed command carries passed `validate_name`.
fn names_are_valid(cmd: &Command) -> bool {
    let host = |dest: &Dest| dest.host().is_none_or(|h| validate_name("host", h).is_ok());
    let vm = |name: &str| validate_name("vm", name).is_ok();
    match cmd {
        Command::Plan { dest } | Command::Evacuate { dest, .. } => host(dest),
        Command::Migrate { vm: name, dest } => vm(name) && host(dest),
        Command::Abort { vm: Some(name) } | Command::Locate { vm: name } => vm(name),
        _ => true,
    }
}

/// What must hold of any answer from `parse_line`.
fn check_parse(line: &str) -> Result<(), TestCaseError> {
    let is_json = line.trim_start().starts_with('{');
    match parse_line(line) {
        Ok(None) => prop_assert!(line.trim().is_empty()),
        Ok(Some(Request { id, cmd, json })) => {
            prop_assert_eq!(json, is_json);
            prop_assert!(json || id.is_none());
            prop_assert!(id
                .as_ref()
                .is_none_or(|id| !id.is_object() && !id.is_array()));
            prop_assert!(COMMANDS.contains(&cmd.name()));
            prop_assert!(names_are_valid(&cmd), "{:?}", cmd);
            prop_assert_eq!(cmd.changes_state(), !cmd.allowed_without_login());
        }
        Err(err) => {
            prop_assert_eq!(err.json, is_json);
            prop_assert!(matches!(
                err.code,
                ErrorCode::BadRequest | ErrorCode::UnknownCommand
            ));
            prop_assert!(err.json || err.id.is_none());
            prop_assert!(err
                .id
                .as_ref()
                .is_none_or(|id| !id.is_object() && !id.is_array()));
            prop_assert!(!err.message.is_empty());
            prop_assert!(
                !err.message.chars().any(char::is_control),
                "{:?}",
                err.message
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES_PARSE))]

    /// (4) Any string: no panic, one consistent answer.
    #[test]
    fn parse_line_never_panics_on_strings(line in any::<String>()) {
        check_parse(&line)?;
    }

    #[test]
    fn parse_line_never_panics_on_words(
        line in "[ \t]{0,2}[a-zA-Z]{1,12}( [a-zA-Z0-9/\"'\\\\.é-]{0,10}){0,4}[ ]{0,2}"
    ) {
        check_parse(&line)?;
    }


    #[test]
    fn parse_line_never_panics_on_json_requests(line in json_request()) {
        check_parse(&line)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES_PARSE_LONG))]

    #[test]
    fn parse_line_never_panics_on_json_ish(line in json_ish()) {
        check_parse(&line)?;
    }

    /// Whatever the line discipline lets through parses without panic.
    #[test]
    fn lines_from_the_reader_parse(bytes in line_bytes()) {
        for event in feed_all(&[&bytes]).0 {
            if let LineEvent::Line(line) = event {
                check_parse(&line)?;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Wire

fn scalar_id() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ])
}

fn one_json_object(line: &str) -> Result<serde_json::Map<String, Value>, TestCaseError> {
    prop_assert!(line.starts_with('{'), "{:?}", line);
    prop_assert!(!line.contains(['\n', '\r']), "{:?}", line);
    // Printable ASCII only: nothing in a JSON line can drive a terminal.
    prop_assert!(
        line.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "{:?}",
        line
    );
    // from_str rejects trailing characters, so this is exactly one value.
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(map)) => Ok(map),
        other => Err(TestCaseError::fail(format!("{line:?}: {other:?}"))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES_WIRE))]

    /// (5) Every JSON line is one object on one line, carrying what it was given.
    #[test]
    fn json_ok_is_one_object(id in scalar_id(), data in json_value()) {
        let map = one_json_object(&wire::json_ok(id.as_ref(), &data))?;
        prop_assert_eq!(map.get("id"), id.as_ref());
        prop_assert_eq!(map.get("ok"), Some(&Value::Bool(true)));
        prop_assert_eq!(map.get("data"), Some(&data));
        prop_assert_eq!(map.len(), 2 + usize::from(id.is_some()));
    }

    #[test]
    fn json_error_is_one_object(
        id in scalar_id(),
        code in prop::sample::select(ErrorCode::ALL.to_vec()),
        message in any::<String>(),
    ) {
        let map = one_json_object(&wire::json_error(id.as_ref(), code, &message))?;
        prop_assert_eq!(map.get("id"), id.as_ref());
        prop_assert_eq!(map.get("ok"), Some(&Value::Bool(false)));
        prop_assert_eq!(
            map.get("error"),
            Some(&json!({"code": code.as_str(), "message": message}))
        );
    }

    #[test]
    fn json_event_is_one_object(event in any::<String>(), ts in any::<String>(), data in json_value()) {
        let map = one_json_object(&wire::json_event(&event, &ts, &data))?;
        prop_assert_eq!(Value::Object(map), json!({"event": event, "ts": ts, "data": data}));
    }

    #[test]
    fn text_error_is_one_printable_line(
        code in prop::sample::select(ErrorCode::ALL.to_vec()),
        message in any::<String>(),
    ) {
        let line = wire::text_error(code, &message);
        let prefix = format!("error: {}: ", code.as_str());
        prop_assert!(line.starts_with(&prefix));
        prop_assert!(!line.chars().any(char::is_control), "{:?}", line);
        prop_assert!(!line.to_ascii_lowercase().contains("power off"), "{:?}", line);
    }

    #[test]
    fn tables_are_printable_and_crlf_terminated(
        headers in vec("[A-Z]{0,8}", 1..5),
        rows in vec(vec(any::<String>(), 0..6), 0..6),
    ) {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let out = rackside_protocol::table::render(&headers, &rows).to_string();
        prop_assert!(out.ends_with("\r\n"));
        let body = &out[..out.len() - 2];
        for line in body.split("\r\n") {
            prop_assert!(!line.ends_with(' '), "{:?}", line);
            prop_assert!(!line.chars().any(char::is_control), "{:?}", line);
        }
        prop_assert_eq!(body.split("\r\n").count(), rows.len() + 1);
    }
}

// ---------------------------------------------------------------------------
// Round trips: every valid command, as a person or a machine would send it.

const KEYWORDS: &[&str] = &["auto", "poweroff", "on", "off", "json", "text"];

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9._:é€ü-]{0,40}".prop_filter("keyword", |n| {
        !KEYWORDS.iter().any(|k| n.eq_ignore_ascii_case(k))
    })
}

/// A keyword as a person might type it: any case.
fn typed(word: &str, upper: &[bool]) -> String {
    word.chars()
        .zip(upper.iter().cycle())
        .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
        .collect()
}

fn dest() -> impl Strategy<Value = Dest> {
    prop_oneof![Just(Dest::Auto), name().prop_map(Dest::Host)]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        prop::option::of(prop::sample::select(rackside_protocol::COMMANDS))
            .prop_map(|command| Command::Help { command }),
        Just(Command::Status),
        any::<bool>().prop_map(|long| Command::Vms { long }),
        Just(Command::Hosts),
        dest().prop_map(|dest| Command::Plan { dest }),
        (name(), dest()).prop_map(|(vm, dest)| Command::Migrate { vm, dest }),
        (dest(), any::<bool>()).prop_map(|(dest, poweroff)| Command::Evacuate { dest, poweroff }),
        Just(Command::Jobs),
        prop::option::of(name()).prop_map(|vm| Command::Abort { vm }),
        any::<bool>().prop_map(|on| Command::Maintenance { on }),
        "[0-9A-Za-z!#%&*+=?@^~]{1,32}".prop_map(|pin| Command::Login { pin }),
        Just(Command::Logout),
        Just(Command::Subscribe),
        Just(Command::Unsubscribe),
        prop_oneof![Just(Mode::Json), Just(Mode::Text)].prop_map(Command::Mode),
        name().prop_map(|vm| Command::Locate { vm }),
        prop_oneof![
            Just(Identify::On),
            Just(Identify::Off),
            (1..=86_400u32).prop_map(Identify::Seconds),
        ]
        .prop_map(Command::Identify),
        Just(Command::Poweroff),
        any::<bool>().prop_map(|ack| Command::Journal { ack }),
    ]
}

/// The words of `cmd`'s text form, each with whether it is a keyword (the
/// command word, `auto`, `on`, ...: any case) or a name or PIN (kept as is).
/// `explicit_auto` writes `auto` and `on` where they may be left out.
fn text_words(cmd: &Command, explicit_auto: bool) -> Vec<(String, bool)> {
    let keyword = |word: &str| (word.to_string(), true);
    let name = |word: &str| (word.to_string(), false);
    let dest = |dest: &Dest| match dest {
        Dest::Host(host) => Some(name(host)),
        Dest::Auto if explicit_auto => Some(keyword("auto")),
        Dest::Auto => None,
    };
    let mut words = vec![keyword(cmd.name())];
    match cmd {
        Command::Plan { dest: d } => words.extend(dest(d)),
        Command::Migrate { vm, dest: d } => {
            words.push(name(vm));
            words.extend(dest(d));
        }
        Command::Evacuate { dest: d, poweroff } => {
            words.extend(dest(d));
            if *poweroff {
                words.push(keyword("poweroff"));
            }
        }
        Command::Abort { vm } => words.extend(vm.as_deref().map(name)),
        Command::Maintenance { on } => words.push(keyword(if *on { "on" } else { "off" })),
        Command::Login { pin } => words.push(name(pin)),
        Command::Mode(mode) => words.push(keyword(mode.as_str())),
        Command::Locate { vm } => words.push(name(vm)),
        Command::Identify(Identify::On) if explicit_auto => words.push(keyword("on")),
        Command::Identify(Identify::On) => {}
        Command::Identify(Identify::Off) => words.push(keyword("off")),
        Command::Identify(Identify::Seconds(s)) => words.push(name(&s.to_string())),
        Command::Journal { ack: true } => words.push(keyword("ack")),
        Command::Help { command: Some(c) } => words.push(keyword(c)),
        Command::Vms { long: true } => words.push(keyword("long")),
        _ => {}
    }
    words
}

fn json_form(cmd: &Command) -> Value {
    let dest = |dest: &Dest| match dest {
        Dest::Auto => json!("auto"),
        Dest::Host(host) => json!(host),
    };
    let args = match cmd {
        Command::Plan { dest: d } => json!({"dest": dest(d)}),
        Command::Migrate { vm, dest: d } => json!({"vm": vm, "dest": dest(d)}),
        Command::Evacuate { dest: d, poweroff } => json!({"dest": dest(d), "poweroff": poweroff}),
        Command::Abort { vm } => json!({"vm": vm}),
        Command::Maintenance { on } => json!({"on": on}),
        Command::Login { pin } => json!({"pin": pin}),
        Command::Mode(mode) => json!({"mode": mode.as_str()}),
        Command::Locate { vm } => json!({"vm": vm}),
        Command::Identify(Identify::On) => json!({"on": true}),
        Command::Identify(Identify::Off) => json!({"seconds": 0}),
        Command::Identify(Identify::Seconds(s)) => json!({"seconds": s}),
        Command::Journal { ack } => json!({"ack": ack}),
        Command::Help { command } => json!({"command": command}),
        Command::Vms { long } => json!({"long": long}),
        _ => json!({}),
    };
    json!({"cmd": cmd.name(), "args": args})
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES_ROUND_TRIP))]

    /// (6) The text form round-trips, however it is spaced and capitalised.
    #[test]
    fn text_commands_round_trip(
        cmd in command(),
        explicit_auto in any::<bool>(),
        upper in vec(any::<bool>(), 1..8),
        gaps in vec(prop::sample::select(vec![" ", "  ", "\t", " \t "]), 8),
        lead in prop::sample::select(vec!["", " ", "\t"]),
    ) {
        let words = text_words(&cmd, explicit_auto);
        let mut line = String::from(lead);
        for (i, (word, keyword)) in words.iter().enumerate() {
            line.push_str(&if *keyword { typed(word, &upper) } else { word.clone() });
            line.push_str(gaps[i]);
        }
        let parsed = parse_line(&line);
        prop_assert_eq!(
            parsed,
            Ok(Some(Request { id: None, cmd, json: false })),
            "{:?}", line
        );
    }

    /// The JSON form round-trips and the id comes back.
    #[test]
    fn json_commands_round_trip(cmd in command(), id in scalar_id()) {
        let mut request = json_form(&cmd);
        if let Some(id) = &id {
            request["id"] = id.clone();
        }
        let parsed = parse_line(&request.to_string());
        prop_assert_eq!(parsed, Ok(Some(Request { id, cmd, json: true })));
    }
}
