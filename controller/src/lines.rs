//! Bytes from a line in, whole lines out. A read may end anywhere, the
//! agent ends its lines with CR LF, a terminal server may add noise, and a
//! person may share the line: this only cuts, at CR or LF, and leaves the
//! judging of each line to the caller ([`crate::message`]).

/// Longest line kept. The agent's longest JSON answers (`jobs`, `hosts`
/// on a big cluster) are tens of kilobytes; anything past this is noise
/// that never ended, and is dropped up to its end.
pub const MAX_LINE: usize = 1 << 20;

/// Cuts a byte stream into lines.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    /// The current line went past `max`: drop it up to its end.
    discarding: bool,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(MAX_LINE)
    }
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            max,
            discarding: false,
        }
    }

    /// Feeds bytes; returns the lines they completed, without their ends.
    /// Empty lines (the LF of a CR LF among them) are not returned; bytes
    /// that are not UTF-8 become U+FFFD.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &byte in bytes {
            if byte == b'\r' || byte == b'\n' {
                if !self.discarding && !self.buf.is_empty() {
                    lines.push(String::from_utf8_lossy(&self.buf).into_owned());
                }
                self.buf.clear();
                self.discarding = false;
            } else if !self.discarding {
                if self.buf.len() >= self.max {
                    self.buf.clear();
                    self.discarding = true;
                } else {
                    self.buf.push(byte);
                }
            }
        }
        lines
    }

    /// Forgets a partial line (after the line was reconnected).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.discarding = false;
    }

    /// The partial line so far (a prompt has no line end).
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_cr_and_lf_each_end_one_line() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"a\r\nb\rc\nd"), ["a", "b", "c"]);
        assert_eq!(s.pending(), b"d");
    }

    #[test]
    fn a_line_split_anywhere_comes_out_whole() {
        let input = b"banner\r\n{\"id\":1,\"ok\":true}\r\nha> ";
        for cut in 0..input.len() {
            let mut s = LineSplitter::default();
            let mut got = s.push(&input[..cut]);
            got.extend(s.push(&input[cut..]));
            assert_eq!(got, ["banner", "{\"id\":1,\"ok\":true}"], "cut at {cut}");
            assert_eq!(s.pending(), b"ha> ");
        }
    }

    #[test]
    fn a_crlf_split_between_reads_is_one_line_end() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"x\r"), ["x"]);
        assert!(s.push(b"\ny\r").len() == 1);
    }

    #[test]
    fn blank_lines_are_dropped() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"\r\n\r\n\n\ra\r\n\r\n"), ["a"]);
    }

    #[test]
    fn bytes_that_are_not_utf8_do_not_lose_the_line() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"\xff\xfe{x}\r\n"), ["\u{fffd}\u{fffd}{x}"]);
    }

    #[test]
    fn an_overlong_line_is_dropped_up_to_its_end() {
        let mut s = LineSplitter::new(8);
        assert!(s.push(b"0123456789abcdef").is_empty());
        assert!(s.pending().is_empty());
        assert_eq!(s.push(b"more\r\nnext\r\n"), ["next"]);
        assert_eq!(s.push(b"12345678\n"), ["12345678"]);
    }

    #[test]
    fn reset_forgets_a_partial_line() {
        let mut s = LineSplitter::default();
        s.push(b"{\"id\":1,\"o");
        s.reset();
        assert_eq!(s.push(b"k\":true}\r\n"), ["k\":true}"]);
    }
}
