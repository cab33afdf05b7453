//! The line discipline: raw bytes from a serial line (or a telnet client
//! behind a terminal server) in, whole lines out.
//!
//! The kernel tty is in raw mode, so editing, echo and telnet stripping all
//! happen here. It is a byte-at-a-time state machine whose state survives
//! between [`LineReader::feed`] calls, because a read may end anywhere: in
//! the middle of a CRLF, of a telnet sequence or of a UTF-8 character. Every
//! state is bounded (line, subnegotiation, escape sequence), so no input,
//! however hostile or noisy, can wedge the line: the next line end after a
//! sane stretch of input always yields a line again.

/// Longest line accepted, in bytes (docs/protocol.md "Limits").
pub const MAX_LINE: usize = 512;

/// The message for a [`LineEvent::TooLong`], for the `bad_request` answer.
pub const TOO_LONG_MESSAGE: &str = "line longer than 512 bytes, discarded";

/// Longest telnet subnegotiation followed. Real ones (terminal type, window
/// size, environment) are far shorter; past this we assume the `IAC SE` was
/// lost on the line and go back to reading data rather than swallowing the
/// session forever.
pub const MAX_SUBNEGOTIATION: usize = 4096;

/// Longest escape sequence followed, for the same reason.
const MAX_ESCAPE: usize = 32;

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const DONT: u8 = 254;

const CTRL_C: u8 = 0x03;
const BS: u8 = 0x08;
const CTRL_U: u8 = 0x15;
const ESC: u8 = 0x1b;
const DEL: u8 = 0x7f;
const BEL: u8 = 0x07;

const ERASE: &[u8] = b"\x08 \x08";

/// What the line discipline hands to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// A complete line (without terminator), control bytes removed, valid UTF-8 (lossy-converted).
    Line(String),
    /// A line longer than MAX_LINE bytes was discarded whole (answer with bad_request).
    TooLong,
    /// Ctrl-C: the current partial line was cancelled.
    Cancelled,
    /// Up arrow: the last line is back as the partial line (already
    /// redrawn when echo is [`Echo::On`]).
    Recalled,
}

/// What the reader echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Nothing (a machine, a PIN being typed).
    Off,
    /// Everything a terminal user should see (see [`LineReader::feed`]).
    On,
    /// For a terminal that echoes what is typed by itself: only what such
    /// a terminal does not show right. Erasing (it shows nothing for DEL
    /// and only moves back for BS), Ctrl-U, Ctrl-C and the line end, so
    /// the screen follows the line and an answer never lands on the
    /// command's row.
    EditsOnly,
}

impl From<bool> for Echo {
    fn from(on: bool) -> Self {
        if on {
            Echo::On
        } else {
            Echo::Off
        }
    }
}

/// Where we are in a telnet command (RFC 854/855). Telnet is a layer below
/// the line editor: its bytes never reach the line, not even to break a CRLF.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Telnet {
    #[default]
    Data,
    /// After IAC.
    Iac,
    /// After IAC WILL/WONT/DO/DONT: one option byte follows.
    Option,
    /// Inside IAC SB ..., with the number of bytes seen so far.
    Sub(usize),
    /// After an IAC inside a subnegotiation.
    SubIac(usize),
}

/// Where we are in an ECMA-48 escape sequence (arrow keys, function keys).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Start,
    /// After ESC [ (CSI), with the number of parameter bytes seen.
    Csi(usize),
    /// After ESC O (SS3, application cursor keys): one final byte follows.
    Ss3,
    /// After ESC and intermediate bytes (ESC ( B and the like).
    Intermediate(usize),
}

/// Turns the bytes of one serial line into [`LineEvent`]s, and tells the
/// caller what to echo.
#[derive(Debug, Default)]
pub struct LineReader {
    /// The partial line, raw bytes (UTF-8 is only decoded at the line end,
    /// since a character may arrive split across reads). Never longer than
    /// [`MAX_LINE`]: past that only `overflow` is recorded.
    buf: Vec<u8>,
    /// The current line went past MAX_LINE and will be answered by one
    /// `TooLong` at its end.
    overflow: bool,
    /// The previous data byte was a CR, so an LF now is the second half of
    /// a CRLF, not an empty line.
    after_cr: bool,
    telnet: Telnet,
    escape: Escape,
    /// The last line ended while echo was on, for Up arrow. Lines read
    /// without echo (a PIN, a machine's) are never kept.
    last: Vec<u8>,
}

impl LineReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes read from the line. Appends complete events to `events` and,
    /// when `echo` is true, appends to `echo_out` the bytes a terminal user should see echoed
    /// (printable chars as typed; for backspace/DEL erase one char with "\x08 \x08";
    /// for Ctrl-U erase the whole partial line; for Ctrl-C "^C\r\n"; for line end "\r\n").
    ///
    /// Two additions: a BEL when a line first goes past [`MAX_LINE`] (the
    /// terminal stops showing what is typed, and the beep says why), and a
    /// literal 255 data byte (sent as `IAC IAC`) is echoed as `IAC IAC`,
    /// since only a telnet client can have sent it.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        echo: impl Into<Echo>,
        echo_out: &mut Vec<u8>,
        events: &mut Vec<LineEvent>,
    ) {
        let mut out = Output {
            echo: echo.into(),
            echo_out,
            events,
        };
        for &byte in bytes {
            if let Some(data) = self.telnet(byte) {
                self.data(data, &mut out);
            }
        }
    }

    /// Bytes of the current partial line (for tests / redraw).
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Up arrow will bring nothing back (after a line that held a PIN).
    pub fn forget_history(&mut self) {
        self.last.clear();
    }

    /// True while the current line is being discarded for being too long.
    pub fn overflowing(&self) -> bool {
        self.overflow
    }

    /// Strips telnet commands; returns the data byte, if this byte is one.
    fn telnet(&mut self, byte: u8) -> Option<u8> {
        let (next, data) = match self.telnet {
            Telnet::Data if byte == IAC => (Telnet::Iac, None),
            Telnet::Data => (Telnet::Data, Some(byte)),
            Telnet::Iac => match byte {
                IAC => (Telnet::Data, Some(IAC)),
                WILL..=DONT => (Telnet::Option, None),
                SB => (Telnet::Sub(0), None),
                // NOP, GA, AYT, BRK, ...: a single command byte, ignored.
                _ => (Telnet::Data, None),
            },
            Telnet::Option => (Telnet::Data, None),
            Telnet::Sub(n) if byte == IAC => (Telnet::SubIac(n), None),
            Telnet::Sub(n) => (sub_continue(n), None),
            Telnet::SubIac(_) if byte == SE => (Telnet::Data, None),
            // IAC IAC is an escaped 255 inside the subnegotiation; anything
            // else is malformed, and we keep skipping until IAC SE.
            Telnet::SubIac(n) => (sub_continue(n), None),
        };
        self.telnet = next;
        data
    }

    /// One data byte, telnet already stripped.
    fn data(&mut self, byte: u8, out: &mut Output<'_>) {
        if byte == 0 {
            // Padding on serial lines, and telnet's CR NUL: as if never sent,
            // so it cannot turn a CR LF into two lines either.
            return;
        }
        let after_cr = std::mem::take(&mut self.after_cr);
        let in_escape = self.escape;
        if self.escape(byte) {
            let up = matches!(in_escape, Escape::Csi(0) | Escape::Ss3) && byte == b'A';
            if up {
                self.recall(out);
            }
            return;
        }
        match byte {
            b'\r' => {
                self.end_line(out);
                self.after_cr = true;
            }
            b'\n' if after_cr => {}
            b'\n' => self.end_line(out),
            CTRL_C => {
                self.reset();
                out.edit(b"^C\r\n");
                out.events.push(LineEvent::Cancelled);
            }
            CTRL_U => {
                self.erase_line(out);
                self.reset();
            }
            BS | DEL => self.erase_char(byte, out),
            b'\t' => self.push(b' ', out),
            ESC => self.escape = Escape::Start,
            0x00..=0x1f => {}
            _ => self.push(byte, out),
        }
    }

    /// Follows an escape sequence; true when `byte` was part of one (and so
    /// is dropped). A byte that cannot continue the sequence ends it and is
    /// then handled as usual, so a lost final byte never eats a line end.
    fn escape(&mut self, byte: u8) -> bool {
        let (next, consumed) = match self.escape {
            Escape::None => return false,
            Escape::Start => match byte {
                b'[' => (Escape::Csi(0), true),
                b'O' => (Escape::Ss3, true),
                0x20..=0x2f => (Escape::Intermediate(1), true),
                0x30..=0x7e => (Escape::None, true),
                _ => (Escape::None, false),
            },
            Escape::Csi(n) => match byte {
                0x20..=0x3f if n + 1 < MAX_ESCAPE => (Escape::Csi(n + 1), true),
                0x20..=0x3f => (Escape::None, true),
                0x40..=0x7e => (Escape::None, true),
                _ => (Escape::None, false),
            },
            Escape::Ss3 => match byte {
                0x20..=0x7e => (Escape::None, true),
                _ => (Escape::None, false),
            },
            Escape::Intermediate(n) => match byte {
                0x20..=0x2f if n + 1 < MAX_ESCAPE => (Escape::Intermediate(n + 1), true),
                0x20..=0x7e => (Escape::None, true),
                _ => (Escape::None, false),
            },
        };
        self.escape = next;
        consumed
    }

    fn push(&mut self, byte: u8, out: &mut Output<'_>) {
        if self.overflow {
            return;
        }
        if self.buf.len() >= MAX_LINE {
            self.overflow = true;
            out.edit(&[BEL]);
            return;
        }
        self.buf.push(byte);
        if byte == IAC {
            out.echo(&[IAC, IAC]);
        } else {
            out.echo(&[byte]);
        }
    }

    /// Erases what the terminal shows of the line (all of it up to the
    /// limit, when the line went past it).
    fn erase_line(&self, out: &mut Output<'_>) {
        for _ in 0..display_chars(&self.buf) {
            out.edit(ERASE);
        }
    }

    /// Up arrow: the last line replaces the partial one, on screen too.
    fn recall(&mut self, out: &mut Output<'_>) {
        if self.last.is_empty() || out.echo == Echo::Off {
            return;
        }
        if out.echo == Echo::On {
            self.erase_line(out);
            out.echo(&self.last.clone());
        }
        self.buf.clone_from(&self.last);
        self.overflow = false;
        out.events.push(LineEvent::Recalled);
    }

    fn erase_char(&mut self, byte: u8, out: &mut Output<'_>) {
        // A line past the limit is discarded whole whatever is erased, and
        // the terminal no longer shows its tail, so there is nothing to undo.
        if self.overflow || self.buf.is_empty() {
            return;
        }
        let len = last_char_len(&self.buf);
        self.buf.truncate(self.buf.len() - len);
        match out.echo {
            // A terminal echoing for itself already moved back over a BS.
            Echo::EditsOnly if byte == BS => out.edit(b" \x08"),
            _ => out.edit(ERASE),
        }
    }

    fn end_line(&mut self, out: &mut Output<'_>) {
        let event = if self.overflow {
            LineEvent::TooLong
        } else {
            LineEvent::Line(to_text(&self.buf))
        };
        if out.echo != Echo::Off && !self.overflow && !self.buf.is_empty() {
            self.last.clone_from(&self.buf);
        }
        self.reset();
        out.edit(b"\r\n");
        out.events.push(event);
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.overflow = false;
    }
}

fn sub_continue(n: usize) -> Telnet {
    if n + 1 >= MAX_SUBNEGOTIATION {
        Telnet::Data
    } else {
        Telnet::Sub(n + 1)
    }
}

/// The caller's output buffers for one `feed`.
struct Output<'a> {
    echo: Echo,
    echo_out: &'a mut Vec<u8>,
    events: &'a mut Vec<LineEvent>,
}

impl Output<'_> {
    /// What is typed: shown only when echoing everything.
    fn echo(&mut self, bytes: &[u8]) {
        if self.echo == Echo::On {
            self.echo_out.extend_from_slice(bytes);
        }
    }

    /// What editing does to the screen: shown by any echo.
    fn edit(&mut self, bytes: &[u8]) {
        if self.echo != Echo::Off {
            self.echo_out.extend_from_slice(bytes);
        }
    }
}

/// Bytes taken by the last character of `buf`: a whole UTF-8 character when
/// the tail is one, else a single byte (a stray byte shows as one '?').
fn last_char_len(buf: &[u8]) -> usize {
    let continuation = buf
        .iter()
        .rev()
        .take(3)
        .take_while(|&&b| b & 0xc0 == 0x80)
        .count();
    match buf.len().checked_sub(continuation + 1) {
        Some(lead) if continuation > 0 && buf[lead] >= 0xc0 => continuation + 1,
        _ => 1,
    }
}

/// How many characters the terminal shows for `buf`, counted the way
/// backspace erases them.
fn display_chars(buf: &[u8]) -> usize {
    let mut rest = buf.len();
    let mut chars = 0;
    while rest > 0 {
        rest -= last_char_len(&buf[..rest]);
        chars += 1;
    }
    chars
}

/// Decodes a finished line. Invalid UTF-8 becomes '?' rather than U+FFFD so
/// the text is never longer than the bytes (callers rely on Line <= MAX_LINE
/// bytes); control characters that survive as UTF-8 (C1, U+0080..U+009F)
/// are dropped like their C0 cousins.
fn to_text(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        text.extend(chunk.valid().chars().filter(|c| !c.is_control()));
        if !chunk.invalid().is_empty() {
            text.push('?');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Vec<LineEvent>, Vec<u8>, LineReader) {
        let mut reader = LineReader::new();
        let mut events = Vec::new();
        let mut echo = Vec::new();
        for chunk in chunks {
            reader.feed(chunk, true, &mut echo, &mut events);
        }
        (events, echo, reader)
    }

    fn events(chunks: &[&[u8]]) -> Vec<LineEvent> {
        run(chunks).0
    }

    fn line(s: &str) -> LineEvent {
        LineEvent::Line(s.into())
    }

    #[test]
    fn cr_lf_and_crlf_each_end_one_line() {
        assert_eq!(events(&[b"a\rb\nc\r\n"]), [line("a"), line("b"), line("c")]);
    }

    #[test]
    fn crlf_split_across_feeds_is_one_line_end() {
        assert_eq!(
            events(&[b"status\r", b"\nvms\r", b"\n"]),
            [line("status"), line("vms")]
        );
    }

    #[test]
    fn empty_lines_are_events_except_the_lf_of_a_crlf() {
        assert_eq!(
            events(&[b"\r\n\r\n\n\r\r"]),
            [line(""), line(""), line(""), line(""), line("")]
        );
        assert_eq!(events(&[b"\n\n"]), [line(""), line("")]);
    }

    #[test]
    fn lf_after_cr_is_swallowed_only_right_after_it() {
        assert_eq!(events(&[b"a\rx\n"]), [line("a"), line("x")]);
        // A dropped control byte in between breaks the pair...
        assert_eq!(events(&[b"a\r\x01\n"]), [line("a"), line("")]);
        // ...but telnet bytes and NUL padding do not.
        assert_eq!(events(&[b"a\r\xff\xf1\x00\n"]), [line("a")]);
    }

    #[test]
    fn telnet_negotiation_is_stripped() {
        // IAC WILL ECHO, IAC DO SGA, IAC DONT LINEMODE, IAC WONT 0.
        assert_eq!(
            events(&[b"\xff\xfb\x01st\xff\xfd\x03at\xff\xfe\x22us\xff\xfc\x00\r"]),
            [line("status")]
        );
    }

    #[test]
    fn option_byte_that_looks_like_a_line_end_is_not_one() {
        // IAC DO 13 and IAC WILL 10: the option byte is never data.
        assert_eq!(events(&[b"ab\xff\xfd\rcd\xff\xfb\n\r"]), [line("abcd")]);
    }

    #[test]
    fn telnet_sequences_split_across_feeds() {
        assert_eq!(
            events(&[b"he\xff", b"\xfb", b"\x18lp\xff", b"\xf1", b"\r"]),
            [line("help")]
        );
        assert_eq!(events(&[b"\xff", b"\xff", b"\r"]), [line("?")]);
    }

    #[test]
    fn single_byte_telnet_commands_are_stripped() {
        // NOP, GA, AYT, data mark.
        assert_eq!(
            events(&[b"v\xff\xf1m\xff\xf9s\xff\xf6\xff\xf2\r"]),
            [line("vms")]
        );
    }

    #[test]
    fn subnegotiation_is_stripped_across_feeds() {
        // IAC SB TERMINAL-TYPE IS "xterm\r\n" (binary inside SB) IAC SE.
        let (events, echo, _) = run(&[
            b"jo\xff\xfa\x18\x00xt",
            b"erm\r\n\xff",
            b"\xff\x03",
            b"\xff",
            b"\xf0bs\r",
        ]);
        assert_eq!(events, [line("jobs")]);
        assert_eq!(echo, b"jobs\r\n");
    }

    #[test]
    fn long_subnegotiation_is_stripped() {
        let mut input = b"\xff\xfa\x27".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_SUBNEGOTIATION - 10));
        input.extend_from_slice(b"\xff\xf0hosts\r");
        assert_eq!(events(&[&input]), [line("hosts")]);
    }

    #[test]
    fn unterminated_subnegotiation_does_not_wedge_the_line() {
        let mut input = b"\xff\xfa\x27".to_vec();
        input.extend(std::iter::repeat_n(b'x', 2 * MAX_SUBNEGOTIATION));
        input.extend_from_slice(b"\r\nstatus\r");
        assert_eq!(events(&[&input]).last(), Some(&line("status")));
    }

    #[test]
    fn iac_iac_is_a_literal_255_data_byte() {
        let (events, echo, reader) = run(&[b"a\xff\xff"]);
        assert!(events.is_empty());
        assert_eq!(reader.pending(), b"a\xff");
        assert_eq!(echo, b"a\xff\xff");
        let (events, _, _) = run(&[b"a\xff\xffb\r"]);
        assert_eq!(events, [line("a?b")]);
        // A 255 is erased by one backspace, like any other stray byte.
        assert_eq!(super::tests::events(&[b"a\xff\xff\x08b\r"]), [line("ab")]);
    }

    #[test]
    fn control_bytes_are_dropped_and_tab_becomes_space() {
        assert_eq!(
            events(&[b"\x00mi\x01gr\x02ate\tvm1\x0b\x0c\x1f\x7f1\r"]),
            [line("migrate vm1")]
        );
    }

    #[test]
    fn backspace_and_del_erase_one_character() {
        let (events, echo, _) = run(&[b"statx\x08us\r", b"vmz\x7fs\r"]);
        assert_eq!(events, [line("status"), line("vms")]);
        assert_eq!(echo, b"statx\x08 \x08us\r\nvmz\x08 \x08s\r\n");
    }

    #[test]
    fn backspace_on_empty_line_echoes_nothing() {
        let (events, echo, _) = run(&[b"\x08\x7f\x08a\r"]);
        assert_eq!(events, [line("a")]);
        assert_eq!(echo, b"a\r\n");
    }

    #[test]
    fn backspace_erases_a_whole_multibyte_character() {
        // "é" is 2 bytes, "€" 3, "😀" 4: each goes with one backspace.
        for ch in ["é", "€", "😀"] {
            let input = format!("a{ch}\x08b\r");
            let (events, echo, _) = run(&[input.as_bytes()]);
            assert_eq!(events, [line("ab")], "{ch}");
            let mut want = format!("a{ch}").into_bytes();
            want.extend_from_slice(b"\x08 \x08b\r\n");
            assert_eq!(echo, want);
        }
        // Also when the character arrived split across reads.
        assert_eq!(events(&[b"x\xe2\x82", b"\xac", b"\x7f\r"]), [line("x")]);
    }

    #[test]
    fn backspace_over_stray_bytes_erases_one_at_a_time() {
        assert_eq!(events(&[b"a\x80\x80\x08\r"]), [line("a?")]);
        assert_eq!(events(&[b"a\x80\x80\x08\x08\r"]), [line("a")]);
    }

    #[test]
    fn ctrl_u_erases_the_partial_line() {
        let (events, echo, reader) = run(&[b"ab\xc3\xa9\x15"]);
        assert!(events.is_empty());
        assert!(reader.pending().is_empty());
        let mut want = b"ab\xc3\xa9".to_vec();
        want.extend_from_slice(&b"\x08 \x08".repeat(3));
        assert_eq!(echo, want);
        assert_eq!(super::tests::events(&[b"junk\x15vms\r"]), [line("vms")]);
    }

    #[test]
    fn ctrl_u_on_empty_line_echoes_nothing() {
        let (events, echo, _) = run(&[b"\x15"]);
        assert!(events.is_empty());
        assert!(echo.is_empty());
    }

    #[test]
    fn ctrl_c_cancels_the_partial_line() {
        let (events, echo, reader) = run(&[b"evacu\x03"]);
        assert_eq!(events, [LineEvent::Cancelled]);
        assert_eq!(echo, b"evacu^C\r\n");
        assert!(reader.pending().is_empty());
        assert_eq!(
            super::tests::events(&[b"evacu\x03", b"vms\r"]),
            [LineEvent::Cancelled, line("vms")]
        );
    }

    #[test]
    fn line_end_echo_is_crlf_once() {
        let (_, echo, _) = run(&[b"a\r\nb\nc\r"]);
        assert_eq!(echo, b"a\r\nb\r\nc\r\n");
    }

    #[test]
    fn no_echo_when_echo_is_off() {
        let mut reader = LineReader::new();
        let (mut echo, mut events) = (Vec::new(), Vec::new());
        reader.feed(b"ab\x08\x15c\x03d\r", false, &mut echo, &mut events);
        assert!(echo.is_empty());
        assert_eq!(events, [LineEvent::Cancelled, line("d")]);
    }

    #[test]
    fn line_of_max_length_is_accepted() {
        let text = "x".repeat(MAX_LINE);
        let (events, echo, _) = run(&[text.as_bytes(), b"\r"]);
        assert_eq!(events, [LineEvent::Line(text.clone())]);
        assert_eq!(echo, format!("{text}\r\n").as_bytes());
    }

    #[test]
    fn line_one_byte_too_long_is_one_too_long() {
        let text = "x".repeat(MAX_LINE + 1);
        let (events, echo, _) = run(&[text.as_bytes(), b"\r\nvms\r\n"]);
        assert_eq!(events, [LineEvent::TooLong, line("vms")]);
        // The terminal shows the first MAX_LINE bytes, beeps once, then the line end.
        let mut want = "x".repeat(MAX_LINE).into_bytes();
        want.extend_from_slice(b"\x07\r\nvms\r\n");
        assert_eq!(echo, want);
    }

    #[test]
    fn very_long_line_split_across_feeds_is_one_too_long() {
        let chunk = [b'y'; 300];
        let (events, _, reader) = run(&[&chunk, &chunk, &chunk, &chunk]);
        assert!(events.is_empty());
        assert!(reader.overflowing());
        assert_eq!(reader.pending().len(), MAX_LINE);
        let (events, _, _) = run(&[&chunk, &chunk, &chunk, b"\n", b"ok\n"]);
        assert_eq!(events, [LineEvent::TooLong, line("ok")]);
    }

    #[test]
    fn backspace_does_not_rescue_a_too_long_line() {
        let mut input = vec![b'z'; MAX_LINE + 1];
        input.extend_from_slice(b"\x08\x08\r");
        assert_eq!(events(&[&input]), [LineEvent::TooLong]);
    }

    #[test]
    fn ctrl_c_and_ctrl_u_clear_a_too_long_line() {
        let long = vec![b'z'; MAX_LINE + 5];
        assert_eq!(
            events(&[&long, b"\x03vms\r"]),
            [LineEvent::Cancelled, line("vms")]
        );
        let (events, echo, _) = run(&[&long, b"\x15vms\r"]);
        assert_eq!(events, [line("vms")]);
        assert!(echo.ends_with(b"\x08 \x08vms\r\n"));
    }

    #[test]
    fn too_long_message_names_the_limit() {
        assert!(TOO_LONG_MESSAGE.contains(&MAX_LINE.to_string()));
    }

    #[test]
    fn length_limit_counts_bytes_not_characters() {
        // 256 two-byte characters fill the line exactly...
        let ok = "é".repeat(MAX_LINE / 2);
        assert_eq!(
            events(&[ok.as_bytes(), b"\r"]),
            [LineEvent::Line(ok.clone())]
        );
        // ...one more byte is too many.
        assert_eq!(events(&[ok.as_bytes(), b"a\r"]), [LineEvent::TooLong]);
    }

    #[test]
    fn arrow_keys_are_dropped_whole() {
        // Up, down, right, left (CSI and SS3 forms), Home, Delete, F5.
        let (events, echo, _) = run(&[b"st\x1b[Aat\x1b[B\x1bOC\x1bODus\x1b[1~\x1b[3~\x1b[15~\r"]);
        assert_eq!(events, [line("status")]);
        assert_eq!(echo, b"status\r\n");
    }

    #[test]
    fn escape_sequence_split_across_feeds_is_dropped() {
        assert_eq!(
            events(&[b"vm\x1b", b"[", b"1;5", b"D", b"s\r"]),
            [line("vms")]
        );
    }

    #[test]
    fn escape_sequences_with_intermediates_and_alt_keys_are_dropped() {
        // Charset selection ESC ( B, Alt-x, a lone ESC before the line end.
        assert_eq!(events(&[b"a\x1b(Bb\x1bxc\x1b\r"]), [line("abc")]);
    }

    #[test]
    fn broken_escape_sequence_does_not_eat_the_line_end() {
        assert_eq!(events(&[b"a\x1b[12\rb\x1bO\n"]), [line("a"), line("b")]);
        assert_eq!(events(&[b"a\x1b[1\x03"]), [LineEvent::Cancelled]);
    }

    #[test]
    fn endless_escape_sequence_is_bounded() {
        let mut input = b"\x1b[".to_vec();
        input.extend(std::iter::repeat_n(b'1', 100));
        input.extend_from_slice(b"x\r");
        // The sequence is given up after MAX_ESCAPE bytes; the rest is data.
        assert_eq!(
            events(&[&input]),
            [LineEvent::Line(format!(
                "{}x",
                "1".repeat(100 - MAX_ESCAPE)
            ))]
        );
    }

    #[test]
    fn utf8_is_kept_and_invalid_bytes_become_question_marks() {
        assert_eq!(events(&["vm-ü€😀\r".as_bytes()]), [line("vm-ü€😀")]);
        assert_eq!(events(&[b"a\xc3b\xe2\x82c\r"]), [line("a?b?c")]);
        // C1 controls encoded as UTF-8 are control characters too.
        assert_eq!(events(&[b"a\xc2\x85b\xc2\x9bc\r"]), [line("abc")]);
    }

    #[test]
    fn pending_shows_the_partial_line() {
        let (_, _, reader) = run(&[b"mig\x1b[Dr"]);
        assert_eq!(reader.pending(), b"migr");
    }

    #[test]
    fn last_char_len_handles_every_tail() {
        assert_eq!(last_char_len(b"a"), 1);
        assert_eq!(last_char_len("é".as_bytes()), 2);
        assert_eq!(last_char_len("€".as_bytes()), 3);
        assert_eq!(last_char_len("😀".as_bytes()), 4);
        assert_eq!(last_char_len(b"\xe2\x82"), 2);
        assert_eq!(last_char_len(b"\x80"), 1);
        assert_eq!(last_char_len(b"\x80\x80\x80\x80\x80"), 1);
        assert_eq!(display_chars("aé€😀".as_bytes()), 4);
        assert_eq!(display_chars(b""), 0);
    }
}
