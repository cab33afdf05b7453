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
