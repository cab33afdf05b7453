//! The hook's report of one libvirt call: one JSON datagram to
//! `RUN_DIR/hook.sock`, fire and forget.
//!
//! ```json
//! {"vm": "web1", "uuid": "6f1c...", "op": "migrate", "subop": "begin",
//!  "extra": "-", "refused": null}
//! ```
//!
//! `uuid` is null when the XML was unreadable; `refused` is the refusal
//! line when this call refused the VM.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub vm: String,
    #[serde(default)]
    pub uuid: Option<String>,
    pub op: String,
    #[serde(default)]
    pub subop: String,
    #[serde(default)]
    pub extra: String,
    #[serde(default)]
    pub refused: Option<String>,
}

impl Report {
    pub fn encode(&self) -> Vec<u8> {
        // Plain strings: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Report, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            vm: "web\"1".into(),
            uuid: None,
            op: "migrate".into(),
            subop: "begin".into(),
            extra: "-".into(),
            refused: Some("rackside: h is in maintenance; not accepting VM".into()),
        }
    }

    #[test]
    fn encodes_the_documented_shape() {
        let v: serde_json::Value = serde_json::from_slice(&report().encode()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"vm": "web\"1", "uuid": null, "op": "migrate", "subop": "begin",
                "extra": "-", "refused": "rackside: h is in maintenance; not accepting VM"})
        );
        assert_eq!(Report::decode(&report().encode()).unwrap(), report());
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let r = Report::decode(br#"{"vm":"a","op":"started"}"#).unwrap();
        assert_eq!((r.subop.as_str(), r.extra.as_str()), ("", ""));
        assert_eq!((r.uuid, r.refused), (None, None));
        assert!(Report::decode(br#"{"op":"started"}"#).is_err());
    }
}
