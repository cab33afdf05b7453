//! The test every rendering takes: it fits the terminals at the rack.

use rackside_protocol::screen::WIDTH;
use rackside_protocol::Text;

/// Every line of `text` (as shown, CR LF ended, perhaps a bell) is at most
/// [`WIDTH`] chars.
pub fn assert_fits_80(text: &str) {
    let body = text.trim_end_matches('\x07');
    for line in body.split("\r\n") {
        assert!(
            line.chars().count() <= WIDTH,
            "{} columns: {line:?}\n--- in ---\n{}",
            line.chars().count(),
            body.replace("\r\n", "\n")
        );
    }
}

/// [`assert_fits_80`] for a [`Text`], which it hands back as shown.
pub fn fits(text: &Text) -> String {
    let shown = text.to_string();
    assert_fits_80(&shown);
    shown
}

/// `shown` with each wrapped line joined back to the one it continues
/// (a line that starts with spaces): what the text says, whatever the
/// width.
pub fn unwrapped(shown: &str) -> String {
    let mut out = String::new();
    for line in shown.split("\r\n") {
        let body = line.trim_start_matches(' ');
        if body.len() < line.len() && !out.is_empty() {
            out.push(' ');
            out.push_str(body);
        } else {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(line);
        }
    }
    out
}

/// Realistic long names: 20-char VMs, 12-char hosts.
pub fn vm_name(i: usize) -> String {
    format!("db-replica-{i:02}-prod-x")[..20].to_string()
}

pub const HOST_A: &str = "kvm-r12-u07a";
pub const HOST_B: &str = "kvm-r12-u09b";
pub const HOST_C: &str = "kvm-r14-u03c";

#[test]
fn names_are_as_long_as_promised() {
    assert_eq!(vm_name(3).chars().count(), 20);
    assert_eq!(HOST_A.len(), 12);
}
