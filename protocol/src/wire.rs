//! What goes out on the line.
//!
//! JSON lines are built by hand around `serde_json`'s compact encoding so
//! the keys come in the order PROTOCOL.md shows (`id` first, which is what a
//! person reading a capture looks for), without the `preserve_order`
//! feature. The compact encoding escapes every control character, so each
//! JSON line is one line and starts with '{', as clients are promised.

use serde_json::Value;

use crate::error::ErrorCode;
use crate::request::RequestError;

/// One JSON response line (no trailing newline): {"id":..,"ok":true,"data":{..}}; "id" omitted when None.
pub fn json_ok(id: Option<&Value>, data: &Value) -> String {
    let mut line = open_response(id);
    line.push_str("\"ok\":true,\"data\":");
    line.push_str(&data.to_string());
    line.push('}');
    line
}

/// {"id":..,"ok":false,"error":{"code":"..","message":".."}}
pub fn json_error(id: Option<&Value>, code: ErrorCode, message: &str) -> String {
    let mut line = open_response(id);
    line.push_str("\"ok\":false,\"error\":{\"code\":");
    line.push_str(&string(code.as_str()));
    line.push_str(",\"message\":");
    line.push_str(&string(message));
    line.push_str("}}");
    line
}

/// {"event":"migration.progress","ts":"RFC3339","data":{...}}
pub fn json_event(event: &str, ts: &str, data: &Value) -> String {
    format!(
        "{{\"event\":{},\"ts\":{},\"data\":{data}}}",
        string(event),
        string(ts)
    )
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

/// `text` made safe to print as (part of) one terminal line: line breaks
/// and tabs become spaces, other control characters (ESC above all, which
/// could drive the terminal) become '?'.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\r' | '\n' | '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
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
            "error: not_found: no VM 'x'  ?[2Jgone too"
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
