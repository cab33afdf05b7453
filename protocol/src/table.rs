//! Aligned text for people at a serial terminal.
//!
//! Anything printed may come from a VM or peer name we do not control, so
//! every cell passes through [`screen::escape`] before its width is
//! measured: a name with an ESC in it must not be able to clear the
//! engineer's screen, nor a CR start a line of its own.

use crate::screen::{self, Text};

/// Renders rows under headers, columns left-aligned and padded to the widest cell
/// (by char count, after escaping), two spaces between columns, no trailing spaces, one
/// [`Text`] line per row.
///
/// Rows shorter than the headers get empty cells; longer rows get extra
/// columns. Wide (CJK) characters count as one column, like every other.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> Text {
    let header: Vec<String> = headers.iter().map(|cell| printable(cell)).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| printable(cell)).collect())
        .collect();
    let lines = || std::iter::once(&header).chain(&body);

    let columns = lines().map(Vec::len).max().unwrap_or(0);
    if columns == 0 {
        return Text::new();
    }
    let mut widths = vec![0; columns];
    for line in lines() {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }

    let mut out = Text::new();
    for line in lines() {
        let mut text = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = line.get(i).map(String::as_str).unwrap_or("");
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            text.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        out.push(text.trim_end_matches(' '));
    }
    out
}

/// Key/value block: "key:  value" lines aligned on the colon, same line ending rules.
///
/// Keys are right-aligned so the colons form one column and the values
/// another (`   host:  kvm-a` over `location:  rack 12`).
pub fn render_kv(pairs: &[(&str, String)]) -> Text {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(key, value)| (printable(key), printable(value)))
        .collect();
    let width = pairs
        .iter()
        .map(|(key, _)| key.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = Text::new();
    for (key, value) in &pairs {
        let line = format!(
            "{:pad$}{key}:  {value}",
            "",
            pad = width - key.chars().count()
        );
        out.push(line.trim_end_matches(' '));
    }
    out
}

/// `cell` as it will be shown (see [`screen::escape`]).
pub fn printable(cell: &str) -> String {
    screen::escape(cell)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: Text) -> String {
        t.to_string()
    }

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|cell| cell.to_string()).collect()
    }

    #[test]
    fn columns_are_padded_to_the_widest_cell() {
        let out = s(render(
            &["NAME", "STATE", "MEM"],
            &[
                row(&["web1", "running", "2048"]),
                row(&["database-primary", "shutoff", "16384"]),
            ],
        ));
        assert_eq!(
            out,
            "NAME              STATE    MEM\r\n\
             web1              running  2048\r\n\
             database-primary  shutoff  16384\r\n"
        );
    }

    #[test]
    fn no_trailing_spaces_even_with_empty_last_cells() {
        let out = s(render(
            &["A", "B"],
            &[row(&["x", ""]), row(&["long", "y"]), row(&["z"])],
        ));
        assert_eq!(out, "A     B\r\nx\r\nlong  y\r\nz\r\n");
        for line in out.split("\r\n") {
            assert!(!line.ends_with(' '), "{line:?}");
        }
    }

    #[test]
    fn width_is_counted_in_characters() {
        let out = s(render(
            &["VM", "HOST"],
            &[row(&["ü€", "a"]), row(&["abc", "b"])],
        ));
        assert_eq!(out, "VM   HOST\r\nü€   a\r\nabc  b\r\n");
    }

    #[test]
    fn control_characters_are_escaped_before_widths_are_measured() {
        let out = s(render(&["N", "X"], &[row(&["evil\x1b[2J\r\nname", "y"])]));
        assert_eq!(out, "N                  X\r\nevil\\e[2J\\r\\nname  y\r\n");
    }

    #[test]
    fn headers_only_and_nothing_at_all() {
        assert_eq!(s(render(&["A", "B"], &[])), "A  B\r\n");
        assert!(render(&[], &[]).is_empty());
    }

    #[test]
    fn longer_rows_get_extra_columns() {
        assert_eq!(s(render(&["A"], &[row(&["x", "y"])])), "A\r\nx  y\r\n");
    }

    #[test]
    fn key_values_are_aligned_on_the_colon() {
        let out = s(render_kv(&[
            ("host", "kvm-a".to_string()),
            ("location", "rack 12".to_string()),
            ("note", String::new()),
            ("bad", "a\nb".to_string()),
        ]));
        assert_eq!(
            out,
            "    host:  kvm-a\r\nlocation:  rack 12\r\n    note:\r\n     bad:  a\\nb\r\n"
        );
        assert!(render_kv(&[]).is_empty());
    }
}
