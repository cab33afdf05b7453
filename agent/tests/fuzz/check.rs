//! The invariants, each a function of what went in and what came out.
//! They return a description of the first violation rather than panic, so
//! the harness can tell a broken invariant from a panic in the code.

use rackside_protocol::{
    parse_line, validate_name, Command, Dest, ErrorCode, LineEvent, LineReader, Request, COMMANDS,
    MAX_LINE,
};
use serde_json::Value;

pub type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// `line` is exactly one JSON object on one line.
pub fn json_object(line: &[u8]) -> Check {
    ensure!(
        line.first() == Some(&b'{'),
        "JSON line does not start with '{{': {}",
        show(line)
    );
    ensure!(
        !line.iter().any(|&b| b == b'\r' || b == b'\n'),
        "line break inside a JSON line: {}",
        show(line)
    );
    ensure!(
        line.iter().all(|&b| (0x20..0x7f).contains(&b)),
        "not printable ASCII (DEL, a C1 or bidi control, say) in a JSON line: {}",
        show(line)
    );
    // from_slice rejects trailing characters: exactly one value.
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(_)) => Ok(()),
        Ok(_) => Err(format!("JSON line is not an object: {}", show(line))),
        Err(err) => Err(format!("invalid JSON line ({err}): {}", show(line))),
    }
}

/// Output on a JSON-mode line: whole lines, each one JSON object. Returns
/// how many, and what followed the last line end (the text prompt after a
/// switch to text mode).
pub fn json_output(out: &[u8]) -> Result<(usize, &[u8]), String> {
    let mut lines = 0;
    let mut rest = out;
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        json_object(&rest[..end])?;
        lines += 1;
        rest = &rest[end + 2..];
    }
    Ok((lines, rest))
}

/// Output on a text-mode line: wherever a terminal starts a line (after CR
/// or LF), a '{' starts one JSON object. Returns how many JSON lines.
/// `continued`: `out` continues a line written before (its first stretch
/// does not start a line).
pub fn text_output(out: &[u8], continued: bool) -> Result<usize, String> {
    let mut json = 0;
    let segments = out.split(|&b| b == b'\r' || b == b'\n');
    for segment in segments.skip(usize::from(continued)) {
        if segment.first() == Some(&b'{') {
            json_object(segment)?;
            json += 1;
        }
    }
    Ok(json)
}

/// Text the agent writes for a person (not the echo of what was typed)
/// carries no terminal controls: no ESC or other C0 code but CR, LF and the
/// verdict's BEL, no C1 code, no bidi control, whatever the data. And no
/// line says "POWER OFF" (any case, a JSON line aside) but the agent's own
/// verdicts: at most `verdicts` of them.
pub fn screen(out: &[u8], verdicts: usize) -> Check {
    let text = String::from_utf8_lossy(out);
    let bad = text
        .chars()
        .find(|&c| (c.is_control() && !matches!(c, '\r' | '\n' | '\x07')) || invisible(c));
    ensure!(
        bad.is_none(),
        "control {:?} on the screen: {}",
        bad,
        show(out)
    );
    let found = text
        .split(['\r', '\n'])
        .filter(|line| !line.starts_with('{') && line.to_ascii_lowercase().contains("power off"))
        .count();
    ensure!(
        found <= verdicts,
        "{found} line(s) say POWER OFF, {verdicts} verdict(s): {}",
        show(out)
    );
    Ok(())
}

/// Characters that are no controls to Rust but change how a terminal lays
/// out what follows: bidi controls, line and paragraph separators.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// The line reader's promises for one input: bounded lines without
/// control characters, never more line events than terminators, and the same
/// events and echo however the input is cut.
pub fn line_reader(bytes: &[u8], cuts: &[usize]) -> Result<Vec<LineEvent>, String> {
    let (whole, echo) = read(&[bytes])?;
    let terminators = bytes
        .iter()
        .filter(|&&b| matches!(b, b'\r' | b'\n' | 0x03))
        .count();
    // Up arrow is an event of its own without a terminator.
    let ended = whole.iter().filter(|e| **e != LineEvent::Recalled).count();
    ensure!(
        ended <= terminators,
        "{ended} events from {terminators} terminators"
    );
    for event in &whole {
        if let LineEvent::Line(line) = event {
            ensure!(line.len() <= MAX_LINE, "line of {} bytes", line.len());
            ensure!(
                !line.chars().any(char::is_control),
                "control character in line {line:?}"
            );
        }
    }
    let mut chunks = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        let cut = cut.clamp(start, bytes.len());
        chunks.push(&bytes[start..cut]);
        start = cut;
    }
    chunks.push(&bytes[start..]);
    let (pieces, pieces_echo) = read(&chunks)?;
    ensure!(
        pieces == whole,
        "events depend on how the input is cut: {whole:?} / {pieces:?}"
    );
    ensure!(pieces_echo == echo, "echo depends on how the input is cut");
    Ok(whole)
}

fn read(chunks: &[&[u8]]) -> Result<(Vec<LineEvent>, Vec<u8>), String> {
    let mut reader = LineReader::new();
    let (mut events, mut echo) = (Vec::new(), Vec::new());
    for chunk in chunks {
        reader.feed(chunk, true, &mut echo, &mut events);
        ensure!(
            reader.pending().len() <= MAX_LINE,
            "reader holds {} bytes",
            reader.pending().len()
        );
    }
    Ok((events, echo))
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
pub fn parse(line: &str) -> Check {
    let is_json = line.trim_start().starts_with('{');
    let scalar = |id: &Option<Value>| {
        id.as_ref()
            .is_none_or(|id| !id.is_object() && !id.is_array())
    };
    match parse_line(line) {
        Ok(None) => ensure!(line.trim().is_empty(), "{line:?} parsed as blank"),
        Ok(Some(Request { id, cmd, json })) => {
            ensure!(json == is_json, "{line:?}: json {json}");
            ensure!(json || id.is_none(), "{line:?}: text request with an id");
            ensure!(scalar(&id), "{line:?}: id {id:?}");
            ensure!(COMMANDS.contains(&cmd.name()), "{line:?}: {cmd:?}");
            ensure!(names_are_valid(&cmd), "{line:?}: invalid name in {cmd:?}");
            ensure!(
                cmd.changes_state() != cmd.allowed_without_login(),
                "{cmd:?}"
            );
        }
        Err(err) => {
            ensure!(err.json == is_json, "{line:?}: error json {}", err.json);
            // not_found only for `help NAME` naming no command.
            let help_topic =
                err.code == ErrorCode::NotFound && err.message.starts_with("no command ");
            ensure!(
                matches!(err.code, ErrorCode::BadRequest | ErrorCode::UnknownCommand) || help_topic,
                "{line:?}: code {}",
                err.code
            );
            ensure!(
                err.json || err.id.is_none(),
                "{line:?}: text error with an id"
            );
            ensure!(scalar(&err.id), "{line:?}: id {:?}", err.id);
            ensure!(!err.message.is_empty(), "{line:?}: empty message");
            ensure!(
                !err.message.chars().any(char::is_control),
                "{line:?}: control character in {:?}",
                err.message
            );
        }
    }
    Ok(())
}

/// Bytes for a failure report: text where printable, escapes elsewhere,
/// cut short when long.
pub fn show(bytes: &[u8]) -> String {
    const MAX: usize = 600;
    let text: String = bytes
        .iter()
        .take(MAX)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > MAX {
        format!("\"{text}\"... ({} bytes)", bytes.len())
    } else {
        format!("\"{text}\"")
    }
}
