//! Why a peer cannot be reached, in the few words a table cell holds. The
//! whole message (libvirt's, usually a sentence with an address in it)
//! stays in the note under the table and in JSON.

/// A word or two for `error`, a peer's last poll error; "error" when none
/// of the known causes fits.
pub fn short_peer_error(error: &str) -> &'static str {
    // First match wins: "timed out" before "connect", which most say.
    const CAUSES: [(&[&str], &str); 8] = [
        (&["not polled yet"], "not polled yet"),
        (&["no recent answer"], "no answer"),
        (&["connection refused"], "refused"),
        (&["timed out", "timeout"], "timed out"),
        (&["no route to host", "network is unreachable"], "no route"),
        (
            &["connection reset", "end of file", "broken pipe", "closed"],
            "dropped",
        ),
        (
            &[
                "certificate",
                "authentication",
                "permission denied",
                "tls",
                "gnutls",
            ],
            "auth/TLS",
        ),
        (
            &["name or service not known", "resolve", "name resolution"],
            "unknown name",
        ),
    ];
    let e = error.to_ascii_lowercase();
    CAUSES
        .iter()
        .find(|(signs, _)| signs.iter().any(|s| e.contains(s)))
        .map_or("error", |(_, word)| word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirts_messages_become_a_word() {
        for (msg, word) in [
            (
                "unable to connect to server at '10.77.0.2:16509': Connection refused",
                "refused",
            ),
            (
                "unable to connect to server at '10.77.0.3:16509': Connection timed out",
                "timed out",
            ),
            (
                "unable to connect to server at '10.77.0.3:16509': No route to host",
                "no route",
            ),
            ("Cannot recv data: Connection reset by peer", "dropped"),
            (
                "End of file while reading data: Input/output error",
                "dropped",
            ),
            (
                "authentication failed: Failed to verify peer's certificate",
                "auth/TLS",
            ),
            (
                "unable to connect to server at 'kvm-q:16509': Name or service not known",
                "unknown name",
            ),
            ("not polled yet", "not polled yet"),
            ("no recent answer", "no answer"),
            ("internal error: something new", "error"),
            ("", "error"),
        ] {
            assert_eq!(short_peer_error(msg), word, "{msg:?}");
        }
    }
}
