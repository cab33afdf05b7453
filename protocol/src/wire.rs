//! What goes out on the line.
//!
//! JSON lines are built by hand around `serde_json`'s compact encoding so
//! the keys come in the order docs/protocol.md shows (`id` first, which is what a
//! person reading a capture looks for), without the `preserve_order`
//! feature. The compact encoding escapes every C0 control character, so
//! each JSON line is one line and starts with '{', as clients are promised;
//! on top of it every non-ASCII character is written as a `\u` escape, so a
//! C1 code or a bidi control from a VM's name never reaches a terminal that
//! shows a JSON line raw (a controller's log, a person reading along).

use serde_json::Value;

use crate::error::ErrorCode;
use crate::request::RequestError;

/// One JSON response line (no trailing newline): {"id":..,"ok":true,"data":{..}}; "id" omitted when None.
pub fn json_ok(id: Option<&Value>, data: &Value) -> String {
    let mut line = open_response(id);
    line.push_str("\"ok\":true,\"data\":");
    line.push_str(&data.to_string());
    line.push('}');
    ascii(line)
}

/// {"id":..,"ok":false,"error":{"code":"..","message":".."}}
pub fn json_error(id: Option<&Value>, code: ErrorCode, message: &str) -> String {
    let mut line = open_response(id);
    line.push_str("\"ok\":false,\"error\":{\"code\":");
    line.push_str(&string(code.as_str()));
    line.push_str(",\"message\":");
    line.push_str(&string(message));
    line.push_str("}}");
    ascii(line)
}

/// {"event":"migration.progress","ts":"RFC3339","data":{...}}
pub fn json_event(event: &str, ts: &str, data: &Value) -> String {
    ascii(format!(
        "{{\"event\":{},\"ts\":{},\"data\":{data}}}",
        string(event),
        string(ts)
    ))
}

/// A compact JSON text with every non-ASCII character, and DEL (which
/// serde_json leaves as it is), written as `\uXXXX` (a surrogate pair above
/// U+FFFF). Outside strings compact JSON is printable ASCII, so this only
/// ever rewrites string contents, into the same value.
fn ascii(json: String) -> String {
    let plain = |c: char| c.is_ascii() && c != '\x7f';
    if json.chars().all(plain) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    let mut units = [0u16; 2];
    for c in json.chars() {
        if plain(c) {
            out.push(c);
        } else {
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Text error line: "error: CODE: message" (message with control chars replaced so it stays one
/// line). No line end: the caller ends it like every other line it writes.
pub fn text_error(code: ErrorCode, message: &str) -> String {
    format!("error: {code}: {}", one_line(message))
}

/// The answer to a request that could not be parsed, in the form it came in
/// (a text line or a JSON line, without line end).
pub fn request_error(err: &RequestError) -> String {
    if err.json {
        json_error(err.id.as_ref(), err.code, &err.message)
    } else {
        text_error(err.code, &err.message)
    }
}

/// `text` made safe to print as (part of) one terminal line
/// ([`crate::screen::escape`]).
pub fn one_line(text: &str) -> String {
    crate::screen::escape(text)
}

fn open_response(id: Option<&Value>) -> String {
    match id {
        Some(id) => format!("{{\"id\":{id},"),
        None => String::from("{"),
    }
}

fn string(s: &str) -> String {
    Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ok_line_has_keys_in_protocol_order() {
        assert_eq!(
            json_ok(Some(&json!(7)), &json!({"job": 3})),
            r#"{"id":7,"ok":true,"data":{"job":3}}"#
        );
        assert_eq!(json_ok(None, &json!({})), r#"{"ok":true,"data":{}}"#);
        assert_eq!(
            json_ok(Some(&Value::Null), &json!({})),
            r#"{"id":null,"ok":true,"data":{}}"#
        );
    }

    #[test]
    fn error_line_escapes_the_message() {
        assert_eq!(
            json_error(
                Some(&json!("a")),
                ErrorCode::NoCapacity,
                "no \"room\"\nat all"
            ),
            r#"{"id":"a","ok":false,"error":{"code":"no_capacity","message":"no \"room\"\nat all"}}"#
        );
        assert_eq!(
            json_error(None, ErrorCode::Busy, "x"),
            r#"{"ok":false,"error":{"code":"busy","message":"x"}}"#
        );
    }

    #[test]
    fn json_lines_are_ascii_and_mean_the_same() {
        let name = "y\u{9b}2J\u{85}\u{202e}é😀";
        let line = json_ok(None, &json!({ "vm": name }));
        assert!(line.is_ascii(), "{line}");
        assert!(
            line.contains(r"\u009b") && line.contains(r"\ud83d\ude00"),
            "{line}"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["data"]["vm"], name);
        assert!(json_error(None, ErrorCode::NotFound, name).is_ascii());
        assert!(json_event("vm.state", "t", &json!({ "vm": name })).is_ascii());
    }

    /// Found by the fuzz harness: serde_json writes DEL as it is, and a
    /// JSON request's id comes back in the answer.
    #[test]
    fn json_lines_escape_del() {
        let line = json_ok(Some(&json!("a\x7fb")), &json!({ "vm": "\x7f" }));
        assert!(!line.contains('\x7f'), "{line:?}");
        assert!(line.contains(r"a\u007fb"), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], "a\x7fb");
    }

    #[test]
    fn event_line() {
        assert_eq!(
            json_event(
                "migration.progress",
                "2025-01-02T03:04:05Z",
                &json!({"vm": "web1", "percent": 40})
            ),
            r#"{"event":"migration.progress","ts":"2025-01-02T03:04:05Z","data":{"percent":40,"vm":"web1"}}"#
        );
    }

    #[test]
    fn text_error_stays_one_line() {
        assert_eq!(
            text_error(ErrorCode::NotFound, "no VM 'x'\r\n\x1b[2Jgone\ttoo"),
            "error: not_found: no VM 'x'\\r\\n\\e[2Jgone\\ttoo"
        );
    }

    #[test]
    fn request_error_answers_in_the_form_of_the_request() {
        let err = crate::parse_line(r#"{"id":3,"cmd":"nope"}"#).unwrap_err();
        assert_eq!(
            request_error(&err),
            r#"{"id":3,"ok":false,"error":{"code":"unknown_command","message":"unknown command 'nope'; type help"}}"#
        );
        let err = crate::parse_line("nope").unwrap_err();
        assert_eq!(
            request_error(&err),
            "error: unknown_command: unknown command 'nope'; type help"
        );
    }
}
