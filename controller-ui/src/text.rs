//! Making agent-supplied text safe and fitting it into cells.
//!
//! Names and reasons come from whoever defined a VM or wrote a libvirt
//! message; they may hold control or bidi characters, and they may be longer
//! than any column. Everything the screens show from data passes `clean`,
//! then `fit` or `wrap`, which measure in terminal columns (not bytes or
//! chars), the same way ratatui does.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// The data shown as the agent's own screen sanitiser shows it
/// (`protocol/src/screen.rs`): nothing from data can move the cursor,
/// reverse the text or hide itself, and no name or reason can spell the
/// verdict phrase: the space in "power off" becomes `\x20`, so only the
/// banner, built from the verdict's boolean, ever says "POWER OFF".
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\u{1b}' => out.push_str("\\e"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_invisible(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    defuse_power_off(&out)
}

/// C1 controls, bidi controls, zero-width and other invisible formatting
/// characters (Unicode category Cf and friends).
fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x80..=0x9f
        | 0xad
        | 0x600..=0x605
        | 0x61c
        | 0x6dd
        | 0x70f
        | 0x180e
        | 0x200b..=0x200f
        | 0x2028..=0x202e
        | 0x2060..=0x206f
        | 0xfeff
        | 0xfff9..=0xfffb
        | 0xe0001
        | 0xe0020..=0xe007f)
}

fn defuse_power_off(s: &str) -> String {
    const PHRASE: &str = "power off";
    let lower = s.to_ascii_lowercase();
    if !lower.contains(PHRASE) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut rest = 0;
    // ASCII lowering keeps byte offsets, so positions in `lower` are
    // positions in `s`.
    for (at, _) in lower.match_indices(PHRASE) {
        out.push_str(&s[rest..at + 5]);
        out.push_str("\\x20");
        rest = at + 6;
    }
    out.push_str(&s[rest..]);
    out
}

/// Columns a string takes on a terminal.
pub fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// `s` cut to at most `cols` columns. A cut string ends in `…`, and is cut
/// at a space when that keeps most of the room, so a reader sees whole
/// words ("LINE DOWN 12s: …") rather than half of one.
pub fn fit(s: &str, cols: usize) -> String {
    if width(s) <= cols {
        return s.to_owned();
    }
    if cols == 0 {
        return String::new();
    }
    let room = cols - 1; // one column for the ellipsis
    let mut used = 0;
    let mut cut = 0; // byte index: s[..cut] fits in `room`
    let mut last_space = None;
    for (i, c) in s.char_indices() {
        let w = c.width().unwrap_or(0);
        if used + w > room {
            break;
        }
        if c == ' ' {
            last_space = Some((i, used));
        }
        used += w;
        cut = i + c.len_utf8();
    }
    // Cut just before a space, the last word is whole as it is; else cut
    // at the last space when that keeps at least half the room (a long
    // word is better cut than dropped).
    let end = if s[cut..].starts_with(' ') {
        cut
    } else {
        match last_space {
            Some((i, at)) if at * 2 >= room => i,
            _ => cut,
        }
    };
    let kept = s[..end].trim_end();
    // A space before the ellipsis, when there is room, says a word follows.
    if end != cut && width(kept) + 2 <= cols {
        format!("{kept} …")
    } else {
        format!("{kept}…")
    }
}

/// `s` padded with spaces (or cut by `fit`) to exactly `cols` columns.
pub fn cell(s: &str, cols: usize) -> String {
    let mut out = fit(s, cols);
    let w = width(&out);
    out.extend(std::iter::repeat_n(' ', cols.saturating_sub(w)));
    out
}

/// `s` right-aligned in `cols` columns (numbers line up on the right).
pub fn cell_right(s: &str, cols: usize) -> String {
    let out = fit(s, cols);
    let w = width(&out);
    format!("{}{}", " ".repeat(cols.saturating_sub(w)), out)
}

/// Word-wraps `s` to lines of at most `cols` columns; lines after the first
/// are indented by `indent` columns, as the agent indents its own reasons.
/// Spacing inside a line is kept as given (and so is a leading indent); a
/// word longer than a line is split where it must be.
pub fn wrap(s: &str, cols: usize, indent: usize) -> Vec<String> {
    let cols = cols.max(1);
    let indent = if indent * 2 > cols { 0 } else { indent };
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut line_w = 0;
    for (gap, word) in words(s) {
        let room = if lines.is_empty() {
            cols
        } else {
            cols - indent
        };
        let (gw, ww) = (width(gap), width(word));
        // The first line keeps its leading gap; a wrapped line starts at
        // its word.
        let at_start = line_w == 0 && !lines.is_empty();
        let gap = if at_start { "" } else { gap };
        let gw = if at_start { 0 } else { gw };
        if line_w + gw + ww <= room {
            line.push_str(gap);
            line.push_str(word);
            line_w += gw + ww;
            continue;
        }
        if line_w > 0 {
            lines.push(std::mem::take(&mut line));
        }
        // Start a new line with the word, split by columns if it is wider
        // than a line.
        let mut rest = word;
        loop {
            let room = if lines.is_empty() {
                cols
            } else {
                cols - indent
            };
            if width(rest) <= room {
                line.push_str(rest);
                line_w = width(rest);
                break;
            }
            let (head, tail) = split_at_cols(rest, room);
            lines.push(head.to_owned());
            rest = tail;
        }
    }
    if line_w > 0 || lines.is_empty() {
        lines.push(line);
    }
    let pad = " ".repeat(indent);
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| if i == 0 { l } else { format!("{pad}{l}") })
        .collect()
}

/// `s` as (spaces before, word) pairs; trailing spaces are dropped.
fn words(s: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = s;
    std::iter::from_fn(move || {
        let word_at = rest.find(|c| c != ' ')?;
        let (gap, tail) = rest.split_at(word_at);
        let word_len = tail.find(' ').unwrap_or(tail.len());
        let (word, after) = tail.split_at(word_len);
        rest = after;
        Some((gap, word))
    })
}

/// Splits at the last char boundary within `cols` columns (at least one
/// char, so a wide char in a one-column room still makes progress).
fn split_at_cols(s: &str, cols: usize) -> (&str, &str) {
    let mut used = 0;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        let w = c.width().unwrap_or(0);
        if used + w > cols && i > 0 {
            break;
        }
        used += w;
        end = i + c.len_utf8();
    }
    s.split_at(end)
}

/// A duration in seconds, short: `45s`, `4m05s`, `2h07m`.
pub fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// An amount of memory: MiB below 10 GiB, whole GiB above, as the agent's
/// progress lines say it.
pub fn mib(mib: f64) -> String {
    if mib >= 10.0 * 1024.0 {
        format!("{:.0} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}

/// Free and total memory in GiB, one decimal: `22.4/23.5`.
pub fn gib_pair(free_mib: Option<u64>, total_mib: Option<u64>) -> String {
    let g = |m: Option<u64>| m.map_or("-".to_owned(), |m| format!("{:.1}", m as f64 / 1024.0));
    format!("{}/{}", g(free_mib), g(total_mib))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_escapes_controls_and_defuses_the_verdict_phrase() {
        assert_eq!(
            clean("x\r*** SAFE TO POWER OFF"),
            "x\\r*** SAFE TO POWER\\x20OFF"
        );
        assert_eq!(clean("y\u{9b}2J\u{202e}evil"), "y\\u{9b}2J\\u{202e}evil");
        assert_eq!(clean("a\u{7}b\u{7f}"), "a\\x07b\\x7f");
        assert_eq!(
            clean("power off, Power Off"),
            "power\\x20off, Power\\x20Off"
        );
        assert_eq!(clean("web1"), "web1");
    }

    #[test]
    fn fit_prefers_a_word_boundary() {
        assert_eq!(fit("LINE DOWN 12s: reconnecting", 20), "LINE DOWN 12s: …");
        assert_eq!(fit("LINE DOWN 12s: reconnecting", 15), "LINE DOWN 12s:…");
        assert_eq!(fit("abcdefghij", 5), "abcd…");
        assert_eq!(
            fit("LINE DOWN 12s: USB adapter unplugged", 27),
            "LINE DOWN 12s: USB adapter…"
        );
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("abc", 0), "");
        assert!(width(&fit("数据库服务器一号", 5)) <= 5);
    }

    #[test]
    fn wrap_keeps_to_the_width_and_indents() {
        let lines = wrap(
            "no candidate: no peers are known and a verylongwordthatcannotfit",
            20,
            2,
        );
        assert!(lines.iter().all(|l| width(l) <= 20), "{lines:?}");
        assert!(lines[1].starts_with("  "));
        assert_eq!(wrap("", 10, 0), vec![String::new()]);
        assert_eq!(wrap("  a   b", 10, 0), vec!["  a   b".to_owned()]);
        assert_eq!(
            wrap("aaaa bbbb", 4, 0),
            vec!["aaaa".to_owned(), "bbbb".to_owned()]
        );
        assert!(wrap("数据库服务器", 1, 4).iter().all(|l| !l.is_empty()));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m05s");
        assert_eq!(duration(7500), "2h05m");
        assert_eq!(mib(57.3), "57 MiB");
        assert_eq!(mib(131072.0), "128 GiB");
        assert_eq!(gib_pair(Some(22933), Some(24105)), "22.4/23.5");
        assert_eq!(gib_pair(None, Some(1024)), "-/1.0");
    }
}
