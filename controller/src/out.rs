//! Where results and notes go: results on stdout (text for people, or one
//! JSON value a line with `--json`), notes about lines on stderr. Every
//! string that came from an agent is passed through the protocol's screen
//! sanitiser before a terminal sees it.

use std::io::Write;

use rackside_protocol::Text;
use serde_json::Value;

use crate::link::Note;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Results, on stdout.
pub struct Out<'a> {
    pub format: Format,
    stdout: &'a mut dyn Write,
}

impl std::fmt::Debug for Out<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Out").field("format", &self.format).finish()
    }
}

impl<'a> Out<'a> {
    pub fn new(format: Format, stdout: &'a mut dyn Write) -> Self {
        Out { format, stdout }
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Text, escaped and wrapped as the agent's own (80 columns).
    pub fn text(&mut self, text: &Text) {
        for line in text.lines() {
            let _ = writeln!(self.stdout, "{line}");
        }
        let _ = self.stdout.flush();
    }

    /// One line of text (escaped, wrapped with `indent`).
    pub fn say(&mut self, line: &str, indent: usize) {
        let mut t = Text::new();
        t.push_wrapped(line, indent);
        self.text(&t);
    }

    /// One JSON value on one line.
    pub fn value(&mut self, value: &Value) {
        let _ = writeln!(self.stdout, "{value}");
        let _ = self.stdout.flush();
    }
}

/// Notes about lines, on stderr, in text whatever the format, so stdout
/// stays what a script parses.
pub struct Notes<'a> {
    stderr: &'a mut dyn Write,
}

impl std::fmt::Debug for Notes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notes").finish()
    }
}

impl<'a> Notes<'a> {
    pub fn new(stderr: &'a mut dyn Write) -> Self {
        Notes { stderr }
    }

    pub fn say(&mut self, line: &str) {
        let mut t = Text::new();
        t.push_wrapped(line, 2);
        for line in t.lines() {
            let _ = writeln!(self.stderr, "{line}");
        }
        let _ = self.stderr.flush();
    }

    /// A [`Note`] about `host`'s line.
    pub fn line(&mut self, host: &str, note: Note) {
        self.say(&note_text(host, note));
    }
}

/// How a [`Note`] reads.
pub fn note_text(host: &str, note: Note) -> String {
    match note {
        Note::Dropped { error } => format!("{host}: line dropped: {error}"),
        Note::Retrying { after, error } => format!(
            "{host}: line down ({error}); trying again in {:.1} s",
            after.as_secs_f64()
        ),
        Note::Up => format!("{host}: line up again"),
    }
}
