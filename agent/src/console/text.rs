//! Text renderings of the evacuation commands' answers, for people.

use rackside_protocol::table;
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

fn moves_and_unplaceable(d: &Value) -> String {
    let moves: Vec<Vec<String>> = d["moves"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| vec![cell(&m["vm"]), cell(&m["dest"])])
                .collect()
        })
        .unwrap_or_default();
    let mut t = if moves.is_empty() {
        "nothing to move\r\n".to_string()
    } else {
        table::render(&["VM", "TO"], &moves)
    };
    for u in d["unplaceable"].as_array().into_iter().flatten() {
        t.push_str(&format!(
            "cannot place {}: {}\r\n",
            cell(&u["vm"]),
            cell(&u["reason"])
        ));
    }
    t
}

pub fn plan(d: &Value) -> String {
    moves_and_unplaceable(d)
}

pub fn evacuation_started(d: &Value) -> String {
    format!(
        "evacuation {} started; this host is in maintenance\r\n{}",
        d["evacuation"],
        moves_and_unplaceable(d)
    )
}

pub fn jobs(d: &Value) -> String {
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
        return "no jobs\r\n".into();
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
