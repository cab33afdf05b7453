//! One generated input through the three layers: the line reader, the
//! parser, and a session with events and time passing, run twice (cut at
//! every line end, and cut at random) and compared.

use std::time::{Duration, Instant};

use rackside_agent::auth::Logins;
use rackside_agent::console::session::{Session, SessionConfig};
use rackside_agent::events::Event;
use rackside_protocol::{LineEvent, LineReader, Mode};

use super::backend::FakeBackend;
use super::check::{self, show};
use super::gen;
use super::rng::Rng;

/// The prompt of the sessions' host, `kvm-a`.
const PROMPT: &[u8] = b"kvm-a> ";
/// What ends the answer to `login` alone on a text line with a PIN set.
const PIN_PROMPT: &[u8] = b"PIN: ";
/// The prompt of a session logged in with a PIN.
const OPERATOR_PROMPT: &[u8] = b"kvm-a# ";

/// What every input of a run shares.
#[derive(Debug, Clone)]
pub struct Opts {
    pub seed: u64,
    /// An argon2 hash of [`gen::PIN`] with the smallest parameters, so a
    /// login costs microseconds.
    pub pin_hash: String,
}

/// Inputs taken by each layer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub reader: u64,
    pub parser: u64,
    pub session: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.reader += other.reader;
        self.parser += other.parser;
        self.session += other.session;
    }
}

#[derive(Debug)]
pub enum Step {
    Feed(Vec<u8>),
    Event(Event),
    /// Time passes (this many seconds), then the line's tick.
    Tick(u64),
    /// The line fell behind by this many events.
    Missed(u64),
}

#[derive(Debug)]
pub struct Script {
    pub echo: bool,
    pub pin: bool,
    pub steps: Vec<Step>,
    backend_seed: u64,
    cut_seed: u64,
}

pub fn script(rng: &mut Rng) -> Script {
    let steps = (0..rng.range(1, 8))
        .map(|_| match rng.below(20) {
            0..=3 => Step::Event(gen::event(rng)),
            4 | 5 => Step::Tick(*rng.pick(&[0, 1, 30, 59, 61, 299, 301])),
            6 if rng.one_in(4) => Step::Missed(rng.next() >> rng.below(64)),
            _ => {
                let mut bytes = Vec::new();
                for _ in 0..rng.range(1, 6) {
                    gen::piece(rng, &mut bytes);
                }
                Step::Feed(bytes)
            }
        })
        .collect();
    Script {
        echo: !rng.one_in(4),
        pin: rng.one_in(2),
        steps,
        backend_seed: rng.next(),
        cut_seed: rng.next(),
    }
}

/// The input's bytes, for a failure report.
pub fn describe(script: &Script) -> String {
    let mut s = format!("echo {}, pin {}\n", script.echo, script.pin);
    for step in &script.steps {
        match step {
            Step::Feed(bytes) => s.push_str(&format!("  feed {}\n", show(bytes))),
            Step::Event(ev) => {
                s.push_str(&format!("  event {} {} {:?}\n", ev.name, ev.ts, ev.data))
            }
            Step::Tick(secs) => s.push_str(&format!("  tick +{secs} s\n")),
            Step::Missed(n) => s.push_str(&format!("  missed {n}\n")),
        }
    }
    s
}

/// Runs input `index`; on a broken invariant, what broke.
pub fn input(opts: &Opts, index: u64) -> Result<Counts, String> {
    let mut rng = Rng::for_input(opts.seed, index);
    let script = script(&mut rng);
    run(opts, &script, &mut rng)
}

pub fn run(opts: &Opts, script: &Script, rng: &mut Rng) -> Result<Counts, String> {
    let mut counts = Counts::default();

    // The line reader, on everything the session will be fed.
    let bytes: Vec<u8> = script
        .steps
        .iter()
        .filter_map(|step| match step {
            Step::Feed(bytes) => Some(&bytes[..]),
            _ => None,
        })
        .flatten()
        .copied()
        .collect();
    let mut cuts: Vec<usize> = (0..rng.below(8))
        .map(|_| rng.below(bytes.len() + 1))
        .collect();
    cuts.sort_unstable();
    let events = check::line_reader(&bytes, &cuts)?;
    counts.reader += 1;

    // The parser, on every line the reader made and on one line of its own.
    for event in &events {
        if let LineEvent::Line(line) = event {
            check::parse(line)?;
            counts.parser += 1;
        }
    }
    check::parse(&gen::parser_line(rng))?;
    counts.parser += 1;

    // The session: fed one request line at a time (checked line by line),
    // then cut at random; both must write the same bytes.
    let start = Instant::now();
    let by_line = session(opts, script, start, None)?;
    let at_random = session(opts, script, start, Some(Rng::new(script.cut_seed)))?;
    if by_line != at_random {
        return Err(format!(
            "output depends on how the input is cut:\n  by line:   {}\n  at random: {}",
            show(&by_line),
            show(&at_random)
        ));
    }
    check::text_output(&by_line, false)?;
    counts.session += 1;
    Ok(counts)
}

/// One session through the script. `cuts`: None to feed one request line
/// per call and check each answer; Some to cut at random points.
fn session(
    opts: &Opts,
    script: &Script,
    start: Instant,
    mut cuts: Option<Rng>,
) -> Result<Vec<u8>, String> {
    let cfg = SessionConfig {
        host: "kvm-a".into(),
        location: "rack 1".into(),
        line: "/dev/ttyS1".into(),
        echo: script.echo,
        pin_hash: script.pin.then(|| opts.pin_hash.clone()),
        idle_timeout: Duration::from_secs(60),
        login_lifetime: Duration::from_secs(3600),
        utc_offset: || -5 * 3600,
    };
    let backend = FakeBackend::new(script.backend_seed);
    let logins = Logins::in_memory(5, Duration::from_secs(300));
    let mut session = Session::new(cfg, start);
    let mut now = start;
    // A second reader fed the same bytes tells where the line ends are.
    let mut shadow = LineReader::new();
    let mut transcript = Vec::new();
    for step in &script.steps {
        match step {
            Step::Feed(bytes) => {
                let chunks = match &mut cuts {
                    None => at_line_ends(&mut shadow, bytes),
                    Some(rng) => at_random(rng, bytes),
                };
                for (chunk, line_end) in chunks {
                    let mode = session.mode();
                    let calls = backend.calls();
                    let out = session.feed(chunk, now, &backend, &logins);
                    if cuts.is_none() {
                        let calls = backend.calls() - calls;
                        let prompt = if session.awaiting_pin() {
                            PIN_PROMPT
                        } else if session.logged_in() && script.pin {
                            OPERATOR_PROMPT
                        } else {
                            PROMPT
                        };
                        answer(mode, session.mode(), line_end, calls, prompt, &out)
                            .map_err(|e| format!("feeding {}: {e}", show(chunk)))?;
                    }
                    transcript.extend_from_slice(&out);
                }
            }
            Step::Event(ev) => {
                let out = session.event(ev);
                event(session.mode(), ev.name == "evacuation.done", &out)
                    .map_err(|e| format!("event {}: {e}", ev.name))?;
                transcript.extend_from_slice(&out);
            }
            Step::Tick(secs) => {
                now += Duration::from_secs(*secs);
                let out = session.tick(now);
                match session.mode() {
                    Mode::Json if !out.is_empty() => {
                        return Err(format!("tick wrote on a JSON line: {}", show(&out)))
                    }
                    _ => {
                        check::text_output(&out, false)?;
                        check::screen(&out, 0)?;
                    }
                };
                transcript.extend_from_slice(&out);
            }
            Step::Missed(n) => {
                // Stamped with the wall clock, so checked but not compared.
                let out = session.missed(*n);
                event(session.mode(), false, &out).map_err(|e| format!("missed: {e}"))?;
            }
        }
    }
    Ok(transcript)
}

/// `bytes` cut right after each byte that ends a request line (or cancels
/// one), so each chunk holds at most one; true for the chunks that do.
fn at_line_ends<'a>(shadow: &mut LineReader, bytes: &'a [u8]) -> Vec<(&'a [u8], bool)> {
    let mut chunks = Vec::new();
    let mut events = Vec::new();
    let mut start = 0;
    for i in 0..bytes.len() {
        shadow.feed(&bytes[i..=i], false, &mut Vec::new(), &mut events);
        if !events.is_empty() {
            events.clear();
            chunks.push((&bytes[start..=i], true));
            start = i + 1;
        }
    }
    if start < bytes.len() {
        chunks.push((&bytes[start..], false));
    }
    chunks
}

fn at_random<'a>(rng: &mut Rng, bytes: &'a [u8]) -> Vec<(&'a [u8], bool)> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let max = *rng.pick(&[1, 3, 16, 200, usize::MAX]);
        let n = rng.range(1, rest.len().min(max));
        let (chunk, tail) = rest.split_at(n);
        chunks.push((chunk, false));
        rest = tail;
    }
    chunks
}

/// The echo of editing, then rows that are each the prompt and a recalled
/// command (one per Up arrow).
fn recall_redraw(prompt: &[u8], out: &[u8]) -> bool {
    let text = String::from_utf8_lossy(out);
    let prompt = String::from_utf8_lossy(prompt);
    let mut rows = text.split("\r\n");
    let echo = rows.next().unwrap_or_default();
    !echo.contains(['\r', '\n'])
        && rows.all(|row| row.starts_with(&*prompt) && !row.contains(['\r', '\n']))
}

/// The output of feeding one chunk that holds at most one request line.
fn answer(
    before: Mode,
    after: Mode,
    line_end: bool,
    calls: u64,
    prompt: &[u8],
    out: &[u8],
) -> check::Check {
    let breaks = out.iter().any(|&b| b == b'\r' || b == b'\n');
    if !line_end {
        if calls > 0 {
            return Err(format!("{calls} command(s) ran before a line end"));
        }
        return match before {
            Mode::Json if !out.is_empty() => Err(format!(
                "wrote on a JSON line before a line end: {}",
                show(out)
            )),
            // Up arrow on a terminal that echoes by itself: the prompt and
            // the recalled command on a row of their own.
            Mode::Text if breaks && !recall_redraw(prompt, out) => {
                Err(format!("line break before a line end: {}", show(out)))
            }
            _ => Ok(()),
        };
    }
    if calls > 1 {
        return Err(format!("{calls} commands ran for one line"));
    }
    match before {
        Mode::Json => {
            let (lines, tail) = check::json_output(out)?;
            if lines > 1 {
                return Err(format!("{lines} answers to one line: {}", show(out)));
            }
            if after == Mode::Json && !tail.is_empty() {
                return Err(format!(
                    "text after the answer on a JSON line: {}",
                    show(out)
                ));
            }
            if after == Mode::Text && tail != prompt {
                return Err(format!(
                    "not the prompt after switching to text: {}",
                    show(out)
                ));
            }
        }
        Mode::Text => {
            // The first stretch continues the line being typed (echo).
            let json = check::text_output(out, true)?;
            if json > 1 {
                return Err(format!("{json} JSON answers to one line: {}", show(out)));
            }
            if after == Mode::Text && !out.ends_with(prompt) {
                return Err(format!("no prompt after the answer: {}", show(out)));
            }
            let written = match out.iter().position(|&b| b == b'\r' || b == b'\n') {
                Some(i) => &out[i..],
                None => &[],
            };
            // A row that starts with the prompt goes on with what is typed
            // (echo, or a command Up arrow recalled): only the agent's own
            // rows are held to the screen rules.
            for row in written.split(|&b| b == b'\n') {
                let row = row.strip_suffix(b"\r").unwrap_or(row);
                if !row.starts_with(prompt) {
                    check::screen(row, 0)?;
                }
            }
        }
    }
    Ok(())
}

/// The output of one event: nothing, or one JSON line on a JSON line; on a
/// text line, the event on lines of its own.
fn event(mode: Mode, verdict: bool, out: &[u8]) -> check::Check {
    if out.is_empty() {
        return Ok(());
    }
    match mode {
        Mode::Json => {
            let (lines, tail) = check::json_output(out)?;
            if lines != 1 || !tail.is_empty() {
                return Err(format!("not one JSON line: {}", show(out)));
            }
        }
        Mode::Text => {
            if !out.starts_with(b"\r\n") {
                return Err(format!("event not on a line of its own: {}", show(out)));
            }
            if check::text_output(out, false)? > 1 {
                return Err(format!("more than one JSON event: {}", show(out)));
            }
            // The last stretch is the prompt and the redrawn typing.
            let end = out.windows(2).rposition(|w| w == b"\r\n").unwrap_or(0);
            check::screen(&out[..end], usize::from(verdict))?;
        }
    }
    Ok(())
}
