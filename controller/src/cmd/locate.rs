//! `locate VM`: asks every host's agent where the VM is (each knows its
//! own libvirt and what its peers showed last), and says where.

use rackside_protocol::{Command, Text};
use serde_json::{json, Value};

use crate::client::ClientOptions;
use crate::cmd::Outcome;
use crate::config::Config;
use crate::model::Located;
use crate::out::Out;

/// One host's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub asked: String,
    pub result: Result<Located, String>,
}

pub fn gather(config: &Config, options: &ClientOptions, vm: &str) -> Vec<Answer> {
    let cmd = Command::Locate { vm: vm.to_owned() };
    super::ask_all::<Located>(config, options, &cmd)
        .into_iter()
        .map(|(asked, result)| Answer { asked, result })
        .collect()
}

/// The best answer: a host that says it has the VM itself, over a peer's
/// word for it, over a stale word, over "moved to"; `None` when nobody
/// knows.
pub fn best(answers: &[Answer]) -> Option<&Located> {
    let rank = |asked: &str, l: &Located| -> Option<u8> {
        let on_host = matches!(l.state.as_str(), "live" | "inactive") && l.host.is_some();
        match () {
            _ if on_host && l.host.as_deref() == Some(asked) && !l.stale => Some(0),
            _ if on_host && !l.stale => Some(1),
            _ if on_host => Some(2),
            _ if l.state == "moved" && (l.to.is_some() || l.host.is_some()) => Some(3),
            _ => None,
        }
    };
    answers
        .iter()
        .filter_map(|a| {
            let l = a.result.as_ref().ok()?;
            Some((rank(&a.asked, l)?, l))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, l)| l)
}

pub fn render(vm: &str, answers: &[Answer]) -> Text {
    let mut text = Text::new();
    match best(answers) {
        Some(l) if l.state == "moved" => {
            let to =
                l.to.as_ref()
                    .or(l.host.as_ref())
                    .map_or("-", String::as_str);
            text.push_wrapped(&format!("{vm}: moved to {to}"), 2);
        }
        Some(l) => {
            let host = l.host.as_deref().unwrap_or("-");
            let location = l
                .location
                .as_ref()
                .map(|loc| format!(" ({loc})"))
                .unwrap_or_default();
            let vm_state = l
                .vm_state
                .as_ref()
                .map(|s| format!(", {s}"))
                .unwrap_or_default();
            let stale = if l.stale { " (last known)" } else { "" };
            text.push_wrapped(
                &format!("{vm}: {} on {host}{location}{vm_state}{stale}", l.state),
                2,
            );
        }
        None => {
            text.push_wrapped(&format!("{vm}: not found on any host that answered"), 2);
        }
    }
    for a in answers {
        if let Err(e) = &a.result {
            text.push_wrapped(&format!("note: {} not asked: {e}", a.asked), 6);
        }
    }
    text
}

pub fn to_json(vm: &str, answers: &[Answer]) -> Value {
    let found = best(answers);
    let asked: Vec<Value> = answers
        .iter()
        .map(|a| match &a.result {
            Ok(l) => json!({"host": a.asked, "ok": true, "answer": l}),
            Err(e) => json!({"host": a.asked, "ok": false, "error": e}),
        })
        .collect();
    json!({
        "vm": vm,
        "found": found.is_some(),
        "where": found,
        "asked": asked,
    })
}

pub fn run(config: &Config, options: &ClientOptions, vm: &str, out: &mut Out) -> Outcome {
    let answers = gather(config, options, vm);
    if out.json() {
        out.value(&to_json(vm, &answers));
    } else {
        out.text(&render(vm, &answers));
    }
    if best(&answers).is_some() {
        Outcome::Success
    } else {
        Outcome::Incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(asked: &str, state: &str, host: Option<&str>, stale: bool) -> Answer {
        Answer {
            asked: asked.into(),
            result: Ok(Located {
                vm: "web1".into(),
                host: host.map(Into::into),
                location: host.map(|h| format!("rack of {h}")),
                state: state.into(),
                vm_state: Some("running".into()),
                to: None,
                stale,
            }),
        }
    }

    #[test]
    fn the_host_that_has_it_wins() {
        let answers = vec![
            answer("ha", "live", Some("hc"), true),
            answer("hb", "unknown", None, false),
            answer("hc", "live", Some("hc"), false),
        ];
        assert_eq!(best(&answers).unwrap().host.as_deref(), Some("hc"));
        assert_eq!(
            render("web1", &answers).lines(),
            ["web1: live on hc (rack of hc), running"]
        );
    }

    #[test]
    fn a_peers_word_counts_when_the_host_is_not_asked() {
        let answers = vec![
            answer("ha", "live", Some("hb"), false),
            Answer {
                asked: "hb".into(),
                result: Err("line down: the other end closed the line".into()),
            },
        ];
        let lines = render("web1", &answers).lines();
        assert_eq!(lines[0], "web1: live on hb (rack of hb), running");
        assert_eq!(
            lines[1],
            "note: hb not asked: line down: the other end closed the line"
        );
    }

    #[test]
    fn nobody_knows() {
        let answers = vec![answer("ha", "unknown", None, false)];
        assert!(best(&answers).is_none());
        assert_eq!(
            render("web1", &answers).lines(),
            ["web1: not found on any host that answered"]
        );
        let v = to_json("web1", &answers);
        assert_eq!(v["found"], false);
        assert_eq!(v["asked"][0]["answer"]["state"], "unknown");
    }
}
