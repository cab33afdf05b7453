//! The error codes of docs/protocol.md. Controllers branch on these strings, so
//! they are a closed set fixed by the protocol, not derived from Rust names.

use std::fmt;

use serde::Serialize;

/// Why a request failed, as sent in `"error": {"code": ...}` and in the text
/// form `error: CODE: message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnknownCommand,
    NotFound,
    AuthRequired,
    AuthFailed,
    LockedOut,
    Busy,
    NoCapacity,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, in docs/protocol.md order (for tests and documentation).
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownCommand,
        ErrorCode::NotFound,
        ErrorCode::AuthRequired,
        ErrorCode::AuthFailed,
        ErrorCode::LockedOut,
        ErrorCode::Busy,
        ErrorCode::NoCapacity,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The protocol spelling, e.g. `"no_capacity"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AuthRequired => "auth_required",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::LockedOut => "locked_out",
            ErrorCode::Busy => "busy",
            ErrorCode::NoCapacity => "no_capacity",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_spelled_as_in_the_protocol() {
        let spelled: Vec<&str> = ErrorCode::ALL.iter().map(ErrorCode::as_str).collect();
        assert_eq!(
            spelled,
            [
                "bad_request",
                "unknown_command",
                "not_found",
                "auth_required",
                "auth_failed",
                "locked_out",
                "busy",
                "no_capacity",
                "unavailable",
                "internal"
            ]
        );
    }

    #[test]
    fn serde_and_display_agree_with_as_str() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().into())
            );
            assert_eq!(code.to_string(), code.as_str());
        }
    }
}
