//! What a person's terminal is shown: the one sanitiser every byte of a
//! text session passes through.
//!
//! A VM's name is data from whoever defined it, and libvirt accepts a
//! carriage return, an ESC, C1 codes and bidi controls in it. Printed raw,
//! `x\r*** SAFE TO POWER OFF ...` would paint a forged verdict over the
//! line, and `\x1b[2J` would clear the engineer's screen. So text is built
//! as *lines* ([`Text`]), never as strings with line breaks in them, and
//! every line is passed through [`escape`] on its way out: no byte that
//! moves the cursor or changes how the terminal reads what follows can come
//! from data. Line breaks are added here, after escaping, and nowhere else.
//!
//! Only [`Text::verdict`] can put the verdict phrase ("... POWER OFF") on a
//! line: in every other line the phrase is shown escaped
//! (`POWER\x20OFF`), so no name, message or reason can contain it.
//!
//! [`escape`] is idempotent (what it writes contains nothing it would
//! escape), so a table can escape its cells to measure their width and the
//! line can pass through it again on the way out. A backslash is left as
//! it is for that reason: `\r` in a name reads like an escaped CR, which
//! costs clarity, never safety.

/// Line end on a serial terminal.
pub const NL: &str = "\r\n";

/// The columns of the terminals at the rack (80x24 over a serial line):
/// every line a person is shown fits in them, as shown (escaped).
pub const WIDTH: usize = 80;

/// The phrase only a verdict line may contain, matched without regard to
/// case.
const RESERVED: &[u8] = b"power off";

/// Characters that are not controls to Rust but change how a terminal lays
/// out or reads text: bidi overrides and isolates (a name can reverse what
/// follows it), zero-width and invisible formatting, line and paragraph
/// separators, soft hyphen, byte order mark, interlinear annotations, tags.
fn invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x061C | 0x180E
        | 0x200B..=0x200F
        | 0x2028..=0x202E
        | 0x2060..=0x2064
        | 0x2066..=0x206F
        | 0xFEFF
        | 0xFFF9..=0xFFFB
        | 0xE0000..=0xE007F)
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '\r' => out.push_str("\\r"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\x1b' => out.push_str("\\e"),
        c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if c.is_control() || invisible(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        c => out.push(c),
    }
}

/// `s` made safe to print inside one line of an ordinary answer: control
/// characters (C0, DEL, C1), bidi controls and invisible formatting are
/// shown as escapes (`\r`, `\e`, `\x07`, `\u{85}`, `\u{202e}`), and the
/// verdict phrase is broken (`POWER\x20OFF`).
pub fn escape(s: &str) -> String {
    let mut out = escape_controls(s);
    break_reserved(&mut out);
    out
}

/// Controls escaped, the verdict phrase left whole: for verdict lines.
fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        escape_char(c, &mut out);
    }
    out
}

/// Replaces the space inside every "power off" (any case) with `\x20`.
fn break_reserved(s: &mut String) {
    let mut from = 0;
    while let Some(at) = find_ignore_case(&s.as_bytes()[from..], RESERVED) {
        let space = from + at + 5;
        s.replace_range(space..space + 1, "\\x20");
        from = space + 4;
    }
}

fn find_ignore_case(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// `s` (already escaped) as lines of at most `width` chars, broken at
/// spaces; the lines after the first start with `indent` spaces. Spaces
/// inside a line are kept as they are (table columns, aligned values);
/// those at a break are dropped. Never an empty line but for an empty `s`.
fn wrap(s: &str, indent: usize, width: usize) -> Vec<String> {
    let indent = indent.min(width / 2);
    let mut lines = Vec::new();
    let mut line = String::new();
    // Chars on `line`, and how many of them are its indent.
    let (mut len, mut start) = (0, 0);
    let mut rest = s;
    while !rest.is_empty() {
        let word_at = rest.find(|c| c != ' ').unwrap_or(rest.len());
        let gap = &rest[..word_at];
        let after = &rest[word_at..];
        let word_len = after.find(' ').unwrap_or(after.len());
        let word = &after[..word_len];
        rest = &after[word_len..];
        if word.is_empty() {
            break;
        }
        let mut word: Vec<char> = word.chars().collect();
        let mut gap = gap.chars().count();
        loop {
            if len + gap + word.len() <= width {
                line.extend(std::iter::repeat_n(' ', gap));
                line.extend(word.iter());
                len += gap + word.len();
                break;
            }
            if len == start {
                // Longer than a whole line: cut it.
                let tail = word.split_off(width - len - gap.min(width - len));
                line.extend(std::iter::repeat_n(' ', gap.min(width - len)));
                line.extend(word.iter());
                word = tail;
            }
            lines.push(std::mem::replace(&mut line, " ".repeat(indent)));
            (len, start, gap) = (indent, indent, 0);
            if word.is_empty() {
                break;
            }
        }
    }
    if len > start || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// A line that starts with '{' is a JSON answer to clients, and a VM may
/// be named `{x` (the first column of a table, `locate`): such a line is
/// shown one space in.
fn not_json(line: String) -> String {
    if line.starts_with('{') {
        format!(" {line}")
    } else {
        line
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Plain(String),
    Verdict(String),
}

/// Text for a person: lines, each escaped on the way out, each ended with
/// CR LF; optionally a bell after the last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text {
    lines: Vec<Line>,
    bell: bool,
}

impl Text {
    pub fn new() -> Self {
        Self::default()
    }

    /// One line.
    pub fn line(s: impl Into<String>) -> Self {
        let mut t = Self::new();
        t.push(s);
        t
    }

    /// Appends one line. Whatever it contains stays on that line.
    pub fn push(&mut self, s: impl Into<String>) -> &mut Self {
        self.lines.push(Line::Plain(s.into()));
        self
    }

    /// Appends `s` as lines of at most [`WIDTH`] columns as shown (after
    /// escaping): broken at spaces, every line after the first `indent`
    /// spaces in; a word too long for a line is cut.
    pub fn push_wrapped(&mut self, s: &str, indent: usize) -> &mut Self {
        // A line shown one space in (see `not_json`) is measured so.
        for l in wrap(&not_json(escape(s)), indent, WIDTH) {
            self.push(l);
        }
        self
    }

    /// The same text with every plain line longer than [`WIDTH`] wrapped
    /// as [`Text::push_wrapped`] does; verdict lines are left as they are.
    pub fn wrapped(&self, indent: usize) -> Text {
        let mut t = Text {
            lines: Vec::new(),
            bell: self.bell,
        };
        for l in &self.lines {
            match l {
                Line::Plain(s) => {
                    t.push_wrapped(s, indent);
                }
                Line::Verdict(_) => t.lines.push(l.clone()),
            }
        }
        t
    }

    /// Appends the lines (and bell) of `other`.
    pub fn append(&mut self, other: Text) -> &mut Self {
        self.lines.extend(other.lines);
        self.bell |= other.bell;
        self
    }

    /// A verdict line: the only kind that may say "POWER OFF". Controls in
    /// it are still escaped. Only the agent's verdict builds these.
    pub fn verdict(&mut self, s: impl Into<String>) -> &mut Self {
        self.lines.push(Line::Verdict(s.into()));
        self
    }

    /// Rings the terminal's bell after the last line.
    pub fn bell(&mut self) -> &mut Self {
        self.bell = true;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && !self.bell
    }

    /// The lines as they will be shown, without line ends.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .iter()
            .map(|l| match l {
                Line::Plain(s) => not_json(escape(s)),
                Line::Verdict(s) => escape_controls(s),
            })
            .collect()
    }

    /// The bytes for the line: every line escaped, CR LF after each.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for l in self.lines() {
            f.write_str(&l)?;
            f.write_str(NL)?;
        }
        if self.bell {
            f.write_str("\x07")?;
        }
        Ok(())
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text::line(s)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text::line(s)
    }
}

impl FromIterator<String> for Text {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        let mut t = Text::new();
        for l in iter {
            t.push(l);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_shown_escaped() {
        assert_eq!(
            escape("a\rb\nc\td\x1b[2J\x07\x7f"),
            "a\\rb\\nc\\td\\e[2J\\x07\\x7f"
        );
        assert_eq!(escape("y\u{9b}2J\u{85}z"), "y\\u{9b}2J\\u{85}z");
        assert_eq!(
            escape("ab\u{202e}cd\u{2066}\u{200b}"),
            "ab\\u{202e}cd\\u{2066}\\u{200b}"
        );
        assert_eq!(escape("plain name-1.ü€"), "plain name-1.ü€");
    }

    #[test]
    fn the_verdict_phrase_is_broken_outside_a_verdict() {
        assert_eq!(
            escape("x\r*** SAFE TO POWER OFF ha ***"),
            "x\\r*** SAFE TO POWER\\x20OFF ha ***"
        );
        assert_eq!(
            escape("power off, Power Off"),
            "power\\x20off, Power\\x20Off"
        );
        assert_eq!(escape("poweroff"), "poweroff");
        let mut t = Text::new();
        t.verdict("*** SAFE TO POWER OFF ha\r ***");
        assert_eq!(t.to_string(), "*** SAFE TO POWER OFF ha\\r ***\r\n");
    }

    #[test]
    fn long_lines_wrap_at_spaces_with_an_indent() {
        let mut t = Text::new();
        let long = format!("  still here: {} end", "word ".repeat(30));
        t.push_wrapped(&long, 4);
        let lines = t.lines();
        assert!(lines.len() > 1, "{lines:?}");
        assert!(lines[0].starts_with("  still here: word"), "{lines:?}");
        for l in &lines {
            assert!(l.chars().count() <= WIDTH, "{l:?}");
            assert!(!l.ends_with(' '), "{l:?}");
        }
        for l in &lines[1..] {
            assert!(l.starts_with("    w") || l.starts_with("    e"), "{l:?}");
        }
        assert_eq!(lines.concat().split_whitespace().count(), 33);
        // A word longer than a line is cut; a short line stays whole.
        let mut t = Text::new();
        t.push_wrapped(&"x".repeat(170), 2).push_wrapped("short", 2);
        let lines = t.lines();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0].len(), 80);
        assert_eq!(lines[1], format!("  {}", "x".repeat(78)));
        assert_eq!(lines[2], "  xxxxxxxxxxxx");
        assert_eq!(lines[3], "short");
        // Spaces inside a line are kept, those at a break dropped.
        let mut t = Text::new();
        t.push_wrapped(&format!("   key:  {}", "value ".repeat(20)), 10);
        let lines = t.lines();
        assert!(lines[0].starts_with("   key:  value value"), "{lines:?}");
        assert!(lines[1].starts_with("          value"), "{lines:?}");
        // Measured as shown: escapes count.
        let mut t = Text::new();
        t.push_wrapped(&format!("{} a\x1b", "b".repeat(77)), 0);
        assert_eq!(t.lines(), ["b".repeat(77), "a\\e".to_string()]);
        let mut t = Text::new();
        t.push_wrapped("", 2);
        assert_eq!(t.lines(), [""]);
        // A line shown one space in (it starts with '{') still fits.
        let mut t = Text::new();
        t.push_wrapped(&format!("{{{}", "x ".repeat(40)), 2);
        assert!(t.lines().iter().all(|l| l.chars().count() <= WIDTH));
        assert!(t.lines()[0].starts_with(" {x"));
        // Wrapping a whole text leaves its verdict lines and bell alone.
        let mut t = Text::line("a ".repeat(50));
        t.verdict(format!("*** {} ***", "v".repeat(90))).bell();
        let w = t.wrapped(2);
        assert_eq!(w.lines().len(), 3);
        assert_eq!(w.lines()[2], t.lines()[1]);
        assert!(w.to_string().ends_with('\x07'));
    }

    #[test]
    fn escape_is_idempotent() {
        for s in [
            "x\r*** SAFE TO POWER OFF",
            "\u{85}\u{202e}\x1b",
            "a\\rb",
            "POWER  OFF",
        ] {
            let once = escape(s);
            assert_eq!(escape(&once), once, "{s:?}");
        }
    }

    /// Found by the fuzz harness: a table whose first column is a VM
    /// named `{...` wrote a line clients take for a JSON answer.
    #[test]
    fn no_plain_line_starts_with_a_brace() {
        let mut t = Text::line("{\"ok\":true}");
        t.push("{x: not found").push("a {b}");
        assert_eq!(
            t.to_string(),
            " {\"ok\":true}\r\n {x: not found\r\na {b}\r\n"
        );
    }

    #[test]
    fn lines_end_with_crlf_and_the_bell_comes_last() {
        let mut t = Text::line("one");
        t.push("two\r\nthree");
        assert_eq!(t.to_string(), "one\r\ntwo\\r\\nthree\r\n");
        t.bell();
        assert!(t.to_string().ends_with("\r\n\x07"));
        assert!(Text::new().is_empty());
    }

    #[test]
    fn no_output_byte_is_a_control_but_line_ends_and_bell() {
        let nasty: String = (0u32..0x300)
            .chain(0x2000..0x2070)
            .chain([0xFEFF, 0xE0041])
            .filter_map(char::from_u32)
            .collect();
        let mut t = Text::line(nasty.clone());
        t.verdict(nasty).bell();
        let s = t.to_string();
        let body = s.trim_end_matches('\x07');
        for line in body.split(NL).filter(|l| !l.is_empty()) {
            assert!(
                !line.chars().any(|c| c.is_control() || invisible(c)),
                "{line:?}"
            );
        }
    }
}
