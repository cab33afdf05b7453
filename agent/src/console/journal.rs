//! `journal` and `journal ack`: the journal's state for a person or a
//! machine, and the acknowledgement of damage (asked of the journal in
//! `crate::backend`).

use rackside_protocol::{table, Text};
use serde_json::{json, Value};

use super::answer::Answer;
use crate::report::{Damage, JournalStatus};

/// The word `status` and `journal` use for the journal's state.
pub fn word(damage: Option<&Damage>) -> &'static str {
    if damage.is_some() {
        "damaged"
    } else {
        "ok"
    }
}

/// The damage as JSON; paths as text, so a path that is not UTF-8 cannot
/// make serialisation fail.
fn damage_json(d: Option<&Damage>) -> Value {
    d.map_or(Value::Null, |d| {
        json!({
            "at": d.at,
            "moved_to": d.moved_to.display().to_string(),
            "reason": d.reason,
            "lines_kept": d.lines_kept,
            "lines_bad": d.lines_bad,
        })
    })
}

pub fn show(st: &JournalStatus) -> Answer {
    let d = st.damage.as_ref();
    let data = json!({
        "journal": word(d),
        "path": st.path.display().to_string(),
        "torn_kept_in": st.torn.as_ref().map(|t| t.display().to_string()),
        "damage": damage_json(d),
        "journal_note": d.map(Damage::note),
    });
    let mut pairs: Vec<(&str, String)> = vec![
        (
            "journal",
            if d.is_some() {
                "DAMAGED".into()
            } else {
                "ok".into()
            },
        ),
        ("file", st.path.display().to_string()),
    ];
    if let Some(d) = d {
        pairs.push(("moved to", d.moved_to.display().to_string()));
        pairs.push(("reason", d.reason.clone()));
        pairs.push(("found", d.at.clone()));
        pairs.push((
            "lines",
            format!("{} recovered, {} bad", d.lines_kept, d.lines_bad),
        ));
        pairs.push((
            "",
            "evacuate and migrate are refused until 'journal ack' (check the moved file first)"
                .into(),
        ));
    }
    if let Some(t) = &st.torn {
        pairs.push((
            "torn line",
            format!("a torn last line (power cut) was kept in {}", t.display()),
        ));
    }
    // Paths and reasons go on under their value's column.
    let indent = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 3;
    Answer {
        data,
        text: table::render_kv(&pairs).wrapped(indent),
    }
}

pub fn acknowledged(d: Option<&Damage>) -> Answer {
    let text = match d {
        Some(d) => format!(
            "journal damage acknowledged; the damaged file stays at {}",
            d.moved_to.display()
        ),
        None => "nothing to acknowledge: the journal is ok".into(),
    };
    Answer {
        data: json!({"journal": "ok", "acknowledged": d.is_some(), "damage": damage_json(d)}),
        text: Text::line(text).wrapped(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn damage() -> Damage {
        Damage {
            at: "2026-01-01T00:00:00Z".into(),
            moved_to: PathBuf::from("/s/journal.jsonl.damaged-1"),
            reason: "1 of 4 lines do not parse: line 3: invalid UTF-8 at byte 2".into(),
            lines_kept: 3,
            lines_bad: 1,
        }
    }

    #[test]
    fn show_ok_and_damaged() {
        let ok = show(&JournalStatus {
            path: "/s/journal.jsonl".into(),
            damage: None,
            torn: None,
        });
        assert_eq!(ok.data["journal"], "ok");
        assert_eq!(ok.data["journal_note"], Value::Null);
        assert!(ok.text.to_string().contains("journal:  ok"), "{}", ok.text);
        let bad = show(&JournalStatus {
            path: "/s/journal.jsonl".into(),
            damage: Some(damage()),
            torn: Some("/s/journal.jsonl.torn-1".into()),
        });
        assert_eq!(bad.data["journal"], "damaged");
        assert_eq!(bad.data["damage"]["moved_to"], "/s/journal.jsonl.damaged-1");
        assert_eq!(bad.data["damage"]["lines_bad"], 1);
        assert_eq!(bad.data["torn_kept_in"], "/s/journal.jsonl.torn-1");
        assert!(bad.data["journal_note"]
            .as_str()
            .unwrap()
            .contains("journal ack"));
        assert!(bad.text.to_string().contains("DAMAGED"), "{}", bad.text);
        assert!(
            bad.text.to_string().contains("/s/journal.jsonl.damaged-1"),
            "{}",
            bad.text
        );
        // Long paths and reasons wrap under their value.
        let long = "/var/lib/rackside-agent/state/journal.jsonl";
        let mut d = damage();
        d.moved_to = PathBuf::from(format!("{long}.damaged-2026-03-01T14:31:31.123456789Z"));
        d.reason = format!("{}; {}", d.reason, d.reason);
        let t = crate::console::fit::fits(
            &show(&JournalStatus {
                path: long.into(),
                damage: Some(d.clone()),
                torn: Some(format!("{long}.torn-2026-03-01T14:31:31.123456789Z").into()),
            })
            .text,
        );
        assert!(t.contains("\r\n            /var/lib/rackside-agent"), "{t}");
        crate::console::fit::fits(&acknowledged(Some(&d)).text);
    }

    #[test]
    fn acknowledged_says_what() {
        let a = acknowledged(Some(&damage()));
        assert_eq!(a.data["acknowledged"], true);
        let t = crate::console::fit::unwrapped(&crate::console::fit::fits(&a.text));
        assert!(t.contains("stays at /s/journal.jsonl.damaged-1"), "{t}");
        let a = acknowledged(None);
        assert_eq!(a.data["acknowledged"], false);
        assert_eq!(a.data["journal"], "ok");
    }
}
