//! Text renderings of the evacuation commands' answers, for people.

use rackside_protocol::{table, Text};
use serde_json::Value;

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}"),
            _ => n.to_string(),
        },
        v => v.to_string(),
    }
}

fn moves_and_unplaceable(d: &Value) -> Text {
    let moves: Vec<Vec<String>> = d["moves"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| vec![cell(&m["vm"]), cell(&m["dest"])])
                .collect()
        })
        .unwrap_or_default();
    let mut t = if moves.is_empty() {
        Text::line("nothing to move")
    } else {
        table::render(&["VM", "TO"], &moves)
    };
    for u in d["unplaceable"].as_array().into_iter().flatten() {
        t.push(format!(
            "cannot place {}: {}",
            cell(&u["vm"]),
            cell(&u["reason"])
        ));
    }
    t
}

pub fn plan(d: &Value) -> Text {
    moves_and_unplaceable(d)
}

pub fn evacuation_started(d: &Value) -> Text {
    let mut t = Text::line(format!(
        "evacuation {} started; this host is in maintenance",
        d["evacuation"]
    ));
    t.append(moves_and_unplaceable(d));
    t
}

pub fn jobs(d: &Value) -> Text {
    let rows: Vec<Vec<String>> = d["jobs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|j| {
                    vec![
                        cell(&j["id"]),
                        cell(&j["vm"]),
                        cell(&j["dest"]),
                        cell(&j["phase"]),
                        cell(&j["percent"]),
                        cell(&j["remaining_mib"]),
                        cell(&j["rate_mib_s"]),
                        cell(&j["eta_s"]),
                        cell(&j["downtime_ms"]),
                        match (&j["error"], &j["note"]) {
                            (Value::String(e), _) => e.clone(),
                            (_, Value::String(n)) => n.clone(),
                            _ => String::new(),
                        },
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        return Text::line("no jobs");
    }
    table::render(
        &[
            "JOB",
            "VM",
            "TO",
            "PHASE",
            "%",
            "LEFT_MIB",
            "MIB/S",
            "ETA_S",
            "DOWNTIME_MS",
            "NOTE",
        ],
        &rows,
    )
}
