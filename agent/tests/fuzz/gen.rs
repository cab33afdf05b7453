//! Structure-aware generators: what a person, a script, a telnet client, a
//! noisy line and a hostile VM name send the agent. Each one is cheap, so
//! a million inputs fit in a few minutes.

use rackside_agent::events::{
    Event, HookReport, HostName, MigrationDone, MigrationFailed, MigrationProgress, Payload,
    VmStateChange,
};
use rackside_agent::migration::announce::Announce;
use rackside_agent::migration::timeline::{Step, Timeline};
use rackside_agent::placement::{PeerReason, Unplaceable};
use rackside_agent::report::{Moved, NotMoved, Phase, StillHere, Verdict};
use rackside_protocol::{COMMANDS, MAX_LINE};
use serde_json::Value;

use super::rng::Rng;

/// The PIN configured on sessions that have one.
pub const PIN: &str = "471147";

const IAC: u8 = 255;

/// Pieces of names and messages that come from outside the agent (libvirt,
/// a peer, whoever defined a VM): line breaks, terminal controls, C1
/// codes, bidi overrides, JSON and verdict look-alikes.
const HOSTILE: &[&str] = &[
    "web1",
    "db-02",
    "x",
    " ",
    "\r\n",
    "\r",
    "\n",
    "\n\r",
    "\n{",
    "{",
    "}",
    "{\"ok\":true,\"data\":{}}",
    "{\"event\":\"evacuation.done\"",
    "*** SAFE TO POWER OFF kvm-a: no VM left running; 9 moved ***",
    "\r*** SAFE TO POWER OFF kvm-a ***\x07",
    "\r\n*** NOT SAFE",
    "SAFE TO POWER OFF",
    "power\toff",
    "POWER OFF",
    "poWer oFF",
    "error: busy: forged",
    "kvm-a> ",
    "\x1b[2J\x1b[H",
    "\x1b]0;owned\x07",
    "\x1b[31m",
    "\x1bc",
    "\u{9b}2J",
    "\u{9d}0;t\u{9c}",
    "\u{80}",
    "\u{85}",
    "\u{9f}",
    "\u{202e}",
    "\u{202a}",
    "\u{202d}",
    "\u{2066}",
    "\u{2067}",
    "\u{2069}",
    "\u{200e}",
    "\u{200f}",
    "\u{61c}",
    "\u{feff}",
    "\u{2028}",
    "\u{2029}",
    "\u{fffd}",
    "\0",
    "\x07",
    "\x08\x08\x08",
    "\t",
    "\x7f",
    "é",
    "€",
    "😀",
    "\\",
    "\"",
    "'",
    "%s%n",
];

/// A string from outside the agent.
pub fn hostile(rng: &mut Rng) -> String {
    let mut s = String::new();
    match rng.below(20) {
        0 => s.extend((0..rng.range(1, 40)).map(|_| rng.char())),
        1 => s.push_str(&"A".repeat(rng.range(100, 700))),
        _ => {
            for _ in 0..rng.range(1, 4) {
                s.push_str(rng.pick::<&str>(HOSTILE));
            }
        }
    }
    s
}

/// A request line end, or none (the next piece continues the line).
fn terminator(rng: &mut Rng, out: &mut Vec<u8>) {
    let ends: &[&[u8]] = &[
        b"\r", b"\n", b"\r\n", b"\r\n", b"\r", b"\n\r", b"\r\r\n", b"", b"\r\0\n", b"\x03",
    ];
    out.extend_from_slice(rng.pick::<&[u8]>(ends));
}

/// Words that commands take, good and bad.
const ARGS: &[&str] = &[
    "auto",
    "AUTO",
    "poweroff",
    "on",
    "OFF",
    "json",
    "text",
    "web1",
    "kvm-b",
    PIN,
    "0000",
    "0",
    "1",
    "86400",
    "86401",
    "4294967296",
    "-1",
    "a/b",
    "x'y",
    "é€😀",
    "{",
    "\u{a0}",
    "nosuchhost",
];

fn command_word(rng: &mut Rng) -> String {
    let word = if rng.one_in(10) {
        (0..rng.range(1, 12))
            .map(|_| (b'a' + rng.below(26) as u8) as char)
            .collect()
    } else {
        rng.pick(COMMANDS).to_string()
    };
    match rng.below(4) {
        0 => word.to_ascii_uppercase(),
        1 => word
            .chars()
            .map(|c| {
                if rng.one_in(2) {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect(),
        _ => word,
    }
}

/// A text-form command, as typed.
fn text_command(rng: &mut Rng, out: &mut Vec<u8>) {
    let gaps = [" ", " ", "  ", "\t", " \t "];
    if rng.one_in(8) {
        out.extend_from_slice(rng.pick(&gaps).as_bytes());
    }
    out.extend_from_slice(command_word(rng).as_bytes());
    for _ in 0..rng.below(4) {
        out.extend_from_slice(rng.pick(&gaps).as_bytes());
        match rng.below(8) {
            0 => out.extend_from_slice(
                "n".repeat(rng.range(120, 140)).as_bytes(), // around MAX_NAME
            ),
            1 => out.extend_from_slice(hostile(rng).as_bytes()),
            _ => out.extend_from_slice(rng.pick(ARGS).as_bytes()),
        }
    }
    terminator(rng, out);
}

/// A JSON string literal for `s`, sometimes spelled with \u escapes.
fn json_string(rng: &mut Rng, s: &str) -> String {
    if rng.one_in(3) {
        let mut lit = String::from("\"");
        for unit in s.encode_utf16() {
            lit.push_str(&format!("\\u{unit:04x}"));
        }
        lit.push('"');
        lit
    } else {
        Value::from(s).to_string()
    }
}

/// Any JSON value, as text, with the odd spellings serde_json must handle.
fn json_value(rng: &mut Rng, depth: usize) -> String {
    let leaves: &[&str] = &[
        "null",
        "true",
        "false",
        "0",
        "-0",
        "1",
        "-1",
        "0.5",
        "1e10",
        "86400",
        "86400.0",
        "1e308",
        "-1e308",
        "1e999",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "\"\\ud800\"",
        "\"\\udc00\\ud800\"",
        "\"\\ud83d\\ude00\"",
        "\"\\u0000\"",
        "\"\\u001b[2J\"",
        "\"\\u009b\"",
        "\"\\u202e\"",
        "\"auto\"",
        "\"on\"",
        "\"json\"",
        "\"text\"",
        "\"471147\"",
        "\"web1\"",
        "[]",
        "{}",
    ];
    match rng.below(if depth == 0 { 3 } else { 5 }) {
        0 => rng.pick(leaves).to_string(),
        1 => {
            let s = hostile(rng);
            json_string(rng, &s)
        }
        2 => (rng.next() as i64).to_string(),
        3 => {
            let items: Vec<String> = (0..rng.below(4))
                .map(|_| json_value(rng, depth - 1))
                .collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let items: Vec<String> = (0..rng.below(4))
                .map(|_| {
                    let key = hostile(rng);
                    format!("{}:{}", json_string(rng, &key), json_value(rng, depth - 1))
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

/// The arguments a command takes in JSON, and some it does not.
const ARG_KEYS: &[&str] = &[
    "vm", "dest", "poweroff", "on", "pin", "mode", "seconds", "extra", "",
];

/// A JSON request, well-formed or broken in one of the ways a buggy or
/// hostile client breaks them.
fn json_request(rng: &mut Rng, out: &mut Vec<u8>) {
    let mut fields = Vec::new();
    if !rng.one_in(4) {
        fields.push(format!("\"id\":{}", json_value(rng, 2)));
    }
    let cmd = match rng.below(10) {
        0 => json_value(rng, 1),
        1 => {
            let word = command_word(rng);
            json_string(rng, &word)
        }
        _ => {
            let name = *rng.pick(COMMANDS);
            json_string(rng, name)
        }
    };
    if !rng.one_in(20) {
        fields.push(format!("\"cmd\":{cmd}"));
    }
    if rng.one_in(2) {
        let args: Vec<String> = (0..rng.below(3))
            .map(|_| {
                let key = rng.pick(ARG_KEYS);
                let value = match rng.below(3) {
                    0 => {
                        let arg = *rng.pick(ARGS);
                        json_string(rng, arg)
                    }
                    _ => json_value(rng, 2),
                };
                format!("{}:{value}", json_string(rng, key))
            })
            .collect();
        fields.push(format!("\"args\":{{{}}}", args.join(",")));
    } else if rng.one_in(8) {
        fields.push(format!("\"args\":{}", json_value(rng, 1)));
    }
    if rng.one_in(20) {
        let key = hostile(rng);
        fields.push(format!("{}:1", json_string(rng, &key)));
    }
    // Shuffle the keys: the order must not matter.
    for i in (1..fields.len()).rev() {
        fields.swap(i, rng.below(i + 1));
    }
    let sep = if rng.one_in(4) { " , " } else { "," };
    let mut text = format!("{{{}}}", fields.join(sep)).into_bytes();
    if rng.one_in(8) {
        text.insert(0, b' ');
    }
    match rng.below(12) {
        0 => text.truncate(rng.below(text.len() + 1)),
        1 => {
            // Invalid UTF-8 somewhere inside.
            let at = rng.below(text.len() + 1);
            let bad: &[&[u8]] = &[
                b"\xff",
                b"\xc3",
                b"\xe2\x82",
                b"\xf0\x9f\x98",
                b"\xed\xa0\x80",
                b"\xc0\xaf",
            ];
            let bad = rng.pick(bad);
            text.splice(at..at, bad.iter().copied());
        }
        2 => text.extend_from_slice(rng.pick::<&[u8]>(&[&b"}{"[..], b"{}", b" x", b",", b"]"])),
        3 => text.extend_from_slice(b"\x1b[A"),
        _ => {}
    }
    out.extend_from_slice(&text);
    terminator(rng, out);
}

/// Telnet commands and negotiation, whole, broken or endless.
fn telnet(rng: &mut Rng, out: &mut Vec<u8>) {
    match rng.below(8) {
        0 => out.extend_from_slice(&[IAC, 251 + rng.below(4) as u8, rng.byte()]),
        1 => {
            out.extend_from_slice(&[IAC, 250, rng.byte()]);
            for _ in 0..rng.below(12) {
                out.push(rng.byte());
            }
            if !rng.one_in(6) {
                out.extend_from_slice(&[IAC, 240]);
            }
        }
        2 => out.extend_from_slice(&[IAC, IAC]),
        3 => out.extend_from_slice(&[IAC, 241 + rng.below(9) as u8]),
        4 => out.extend_from_slice(&[IAC, rng.byte()]),
        5 => out.push(IAC),
        6 => {
            // A subnegotiation whose IAC SE was lost.
            out.extend_from_slice(&[IAC, 250, 24]);
            out.extend(std::iter::repeat_n(b's', rng.range(10, 4200)));
        }
        _ => out.extend_from_slice(
            b"\xff\xfb\x01\xff\xfb\x03\xff\xfd\x1f\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0",
        ),
    }
}

/// Editing keys and escape sequences.
fn editing(rng: &mut Rng, out: &mut Vec<u8>) {
    let keys: &[&[u8]] = &[
        b"\x08",
        b"\x7f",
        b"\x7f\x7f\x7f",
        b"\x15",
        b"\x03",
        b"\x17",
        b"\x1b",
        b"\x1b[A",
        b"\x1b[B",
        b"\x1b[1;5D",
        b"\x1bOC",
        b"\x1b(B",
        b"\x1b[3~",
        b"\x1b[15~",
        b"\x1bx",
        b"\x1b\r",
        b"\x1b[12\r",
        b"\x1bO\n",
        b"\x1b[\x03",
        b"\x1b[1111111111111111111111111111111111111111111",
        b"\x00",
        b"\x00\x00\x00",
        b"\x0c",
        b"\x1a",
    ];
    out.extend_from_slice(rng.pick::<&[u8]>(keys));
}

/// A line past [`MAX_LINE`], or just at it.
fn long_line(rng: &mut Rng, out: &mut Vec<u8>) {
    let n = match rng.below(4) {
        0 => MAX_LINE + rng.range(0, 2) - 1,
        _ => rng.range(MAX_LINE, 3 * MAX_LINE),
    };
    match rng.below(3) {
        0 => {
            out.extend_from_slice(b"{\"id\":1,\"cmd\":\"status\",\"x\":\"");
            out.extend(std::iter::repeat_n(b'y', n));
            out.extend_from_slice(b"\"}");
        }
        1 => out.extend("é".repeat(n / 2).bytes()),
        _ => out.extend(std::iter::repeat_n(b'x', n)),
    }
    terminator(rng, out);
}

/// The commands that change the session itself.
fn session_command(rng: &mut Rng, out: &mut Vec<u8>) {
    let lines: &[&str] = &[
        "mode json\r",
        "mode text\r",
        "MODE JSON\n",
        "mode Text\r\n",
        "{\"cmd\":\"mode\",\"args\":{\"mode\":\"json\"}}\r",
        "{\"id\":1,\"cmd\":\"mode\",\"args\":{\"mode\":\"text\"}}\r\n",
        "login 471147\r",
        "login 0000\r",
        "{\"id\":\"l\",\"cmd\":\"login\",\"args\":{\"pin\":\"471147\"}}\r",
        "{\"cmd\":\"login\",\"args\":{\"pin\":\"bad\"}}\n",
        "logout\r",
        "{\"cmd\":\"logout\"}\r",
        "subscribe\r",
        "{\"id\":2,\"cmd\":\"subscribe\"}\r",
        "unsubscribe\r",
        "{\"cmd\":\"unsubscribe\"}\r\n",
    ];
    out.extend_from_slice(rng.pick(lines).as_bytes());
}

/// UTF-8 whole, split, invalid, and C1 controls encoded as UTF-8.
fn utf8(rng: &mut Rng, out: &mut Vec<u8>) {
    let pieces: &[&[u8]] = &[
        "é".as_bytes(),
        "€".as_bytes(),
        "😀".as_bytes(),
        "\u{202e}".as_bytes(),
        b"\xc3",
        b"\xe2\x82",
        b"\xf0\x9f\x98",
        b"\x80",
        b"\xc2\x85",
        b"\xc2\x9b",
        b"\xed\xa0\x80",
        b"\xf8\x88\x80\x80\x80",
    ];
    out.extend_from_slice(rng.pick::<&[u8]>(pieces));
}

/// One stretch of input; a line is usually several of them.
pub fn piece(rng: &mut Rng, out: &mut Vec<u8>) {
    match rng.below(20) {
        0..=5 => text_command(rng, out),
        6..=9 => json_request(rng, out),
        10 => telnet(rng, out),
        11 | 12 => editing(rng, out),
        13 => terminator(rng, out),
        14 => long_line(rng, out),
        15 => out.extend((0..rng.range(1, 64)).map(|_| rng.byte())),
        16 | 17 => session_command(rng, out),
        18 => utf8(rng, out),
        _ => out.extend_from_slice(hostile(rng).as_bytes()),
    }
}

/// A line for the parser alone: anything a `&str` can hold.
pub fn parser_line(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => (0..rng.below(80)).map(|_| rng.char()).collect(),
        1 => hostile(rng),
        _ => {
            let mut bytes = Vec::new();
            piece(rng, &mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}

/// Sometimes a string from outside, sometimes none.
fn maybe(rng: &mut Rng) -> Option<String> {
    (!rng.one_in(3)).then(|| hostile(rng))
}

fn number(rng: &mut Rng) -> f64 {
    *rng.pick(&[
        0.0,
        0.5,
        42.0,
        99.99,
        1e9,
        -1.0,
        f64::MAX,
        f64::NAN,
        f64::INFINITY,
    ])
}

/// An event as the agent publishes it, with data from outside (VM names,
/// libvirt's messages, peers' names) in every field that can hold it.
pub fn event(rng: &mut Rng) -> Event {
    let data = match rng.below(9) {
        0 => Payload::VmState(VmStateChange {
            vm: hostile(rng),
            uuid: hostile(rng),
            what: "stopped",
            state: Some("shutoff"),
        }),
        1 => Payload::Hook(HookReport {
            vm: hostile(rng),
            uuid: maybe(rng),
            what: "refused",
            source: "hook",
            op: hostile(rng),
            subop: hostile(rng),
            refused: maybe(rng),
        }),
        2 => Payload::MigrationProgress(MigrationProgress {
            job: rng.next(),
            vm: hostile(rng),
            dest: hostile(rng),
            percent: number(rng),
            remaining_mib: rng.one_in(2).then(|| number(rng)),
            rate_mib_s: rng.one_in(2).then(|| number(rng)),
            eta_s: rng.one_in(2).then(|| rng.next()),
            downtime_ms: rng.next(),
            note: maybe(rng),
        }),
        3 => Payload::MigrationDone(MigrationDone {
            job: rng.next(),
            vm: hostile(rng),
            dest: hostile(rng),
            downtime_ms: rng.one_in(2).then(|| rng.next()),
            seconds: number(rng),
            data_mib: rng.one_in(2).then(|| number(rng)),
            timeline: {
                let mut t = Timeline::default();
                for step in [Step::Accepted, Step::FirstByte, Step::Done] {
                    if rng.one_in(2) {
                        t.mark(step, std::time::Duration::from_millis(rng.next() % 100_000));
                    }
                }
                t
            },
            // Its reasons quote libvirt and the domain's XML (bridge names).
            announce: match rng.below(5) {
                0 => None,
                1 => Some(Announce::NoNic),
                2 => Some(Announce::Seen {
                    from_end_ms: (rng.next() % 2_000) as i64 - 1_000,
                }),
                3 => Some(Announce::Requested {
                    reason: hostile(rng),
                }),
                _ => Some(Announce::NotConfirmed {
                    reason: hostile(rng),
                }),
            },
        }),
        4 => Payload::MigrationFailed(MigrationFailed {
            job: rng.next(),
            vm: hostile(rng),
            dest: hostile(rng),
            error: hostile(rng),
            now_on: maybe(rng),
            retrying_on: maybe(rng),
            note: maybe(rng),
        }),
        5 | 6 => Payload::EvacuationDone(Box::new(verdict(rng))),
        7 => Payload::HostEmpty(HostName { host: hostile(rng) }),
        _ => Payload::HostPoweroff(HostName { host: hostile(rng) }),
    };
    // The agent stamps events with its own clock.
    let ts = format!("2026-12-01T04:{:02}:{:02}Z", rng.below(60), rng.below(60));
    Event {
        name: data.name(),
        ts,
        data,
    }
}

/// A verdict about VMs with names and errors from outside; the host is
/// this one's, from its config.
fn verdict(rng: &mut Rng) -> Verdict {
    let names: Vec<String> = (0..rng.below(4)).map(|_| hostile(rng)).collect();
    let (mut failed, mut unplaceable, mut still_here) = (Vec::new(), Vec::new(), Vec::new());
    for vm in &names {
        if rng.one_in(2) {
            failed.push(NotMoved {
                vm: vm.clone(),
                dest: hostile(rng),
                phase: Phase::Failed,
                error: maybe(rng),
                tried: vec![hostile(rng)],
            });
        }
        if rng.one_in(2) {
            unplaceable.push(Unplaceable {
                vm: vm.clone(),
                reason: hostile(rng),
                unmovable: rng.one_in(2),
            });
        }
        let state = if rng.one_in(2) {
            "running".into()
        } else {
            hostile(rng)
        };
        still_here.push(StillHere {
            vm: vm.clone(),
            state,
        });
    }
    Verdict {
        evacuation: rng.next(),
        host: "kvm-a".into(),
        moved: (0..rng.below(3))
            .map(|_| Moved {
                vm: hostile(rng),
                dest: hostile(rng),
                downtime_ms: None,
                seconds: Some(number(rng)),
            })
            .collect(),
        failed,
        unplaceable,
        peer_reasons: (0..rng.below(3))
            .map(|_| PeerReason {
                host: hostile(rng),
                reason: hostile(rng),
            })
            .collect(),
        still_here,
        remaining: names,
        safe_to_power_off: rng.one_in(2),
        check_error: maybe(rng),
    }
}
