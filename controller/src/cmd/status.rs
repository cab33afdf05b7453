//! `status`: every host's line and what its agent says of the host, one
//! row per host. The hosts are asked at once, each on its own thread, so
//! a dead line costs its timeout once, not once per host.

use rackside_protocol::{table, Command, Text};
use serde_json::{json, Value};

use crate::client::ClientOptions;
use crate::cmd::Outcome;
use crate::config::Config;
use crate::model::Status;
use crate::out::Out;

/// One host's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub host: String,
    pub line: String,
    /// The agent's status, or why there is none (the error chain).
    pub status: Result<Status, String>,
}

/// Asks every host, in parallel, once each.
pub fn gather(config: &Config, options: &ClientOptions) -> Vec<Row> {
    super::ask_all::<Status>(config, options, &Command::Status)
        .into_iter()
        .zip(&config.hosts)
        .map(|((host, status), h)| Row {
            host,
            line: h.line.to_string(),
            status,
        })
        .collect()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The table, then a note for each line that is down and each health
/// reason.
pub fn render(rows: &[Row]) -> Text {
    let headers = [
        "HOST",
        "LINE",
        "STATE",
        "HEALTH",
        "VMS",
        "CPU%",
        "MEM_FREE/TOTAL",
    ];
    let mut cells = Vec::new();
    let mut notes = Vec::new();
    for row in rows {
        match &row.status {
            Ok(s) => {
                cells.push(vec![
                    row.host.clone(),
                    "up".into(),
                    s.state.clone(),
                    s.health.clone(),
                    format!("{}/{}", opt(s.vms_running), opt(s.vms_defined)),
                    opt(s.cpu_pct.map(|p| p.round() as i64)),
                    match (s.mem_free_mib, s.mem_total_mib) {
                        (Some(free), Some(total)) => format!("{free}/{total} MiB"),
                        _ => "-".into(),
                    },
                ]);
                if s.host != row.host {
                    notes.push(format!(
                        "note: {}: the agent on this line calls itself '{}'",
                        row.host, s.host
                    ));
                }
                for reason in &s.health_reasons {
                    notes.push(format!("note: {}: {reason}", row.host));
                }
            }
            Err(error) => {
                let mut row_cells = vec![row.host.clone(), "down".into()];
                row_cells.extend(std::iter::repeat_n("-".to_owned(), 5));
                cells.push(row_cells);
                notes.push(format!("note: {} ({}): {error}", row.host, row.line));
            }
        }
    }
    let mut text = table::render(&headers, &cells);
    for note in notes {
        text.push_wrapped(&note, 6);
    }
    text
}

/// `{"hosts": [{"name", "line", "up", "error", "status"}]}`.
pub fn to_json(rows: &[Row]) -> Value {
    let hosts: Vec<Value> = rows
        .iter()
        .map(|row| {
            let (status, error) = match &row.status {
                Ok(s) => (json!(s), Value::Null),
                Err(e) => (Value::Null, json!(e)),
            };
            json!({
                "name": row.host,
                "line": row.line,
                "up": row.status.is_ok(),
                "error": error,
                "status": status,
            })
        })
        .collect();
    json!({ "hosts": hosts })
}

pub fn run(config: &Config, options: &ClientOptions, out: &mut Out) -> Outcome {
    let rows = gather(config, options);
    if out.json() {
        out.value(&to_json(&rows));
    } else {
        out.text(&render(&rows));
    }
    if rows.iter().all(|r| r.status.is_ok()) {
        Outcome::Success
    } else {
        Outcome::Incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(host: &str) -> Row {
        Row {
            host: host.into(),
            line: "tcp://10.0.0.5:7001".into(),
            status: Ok(Status {
                host: host.into(),
                state: "maintenance".into(),
                health: "degraded".into(),
                health_reasons: vec!["link eno1 is down".into()],
                cpu_pct: Some(99.6),
                vms_running: Some(120),
                vms_defined: Some(300),
                mem_free_mib: Some(1_022_794),
                mem_total_mib: Some(1_048_576),
                ..Status::default()
            }),
        }
    }

    #[test]
    fn one_row_per_host_within_80_columns() {
        let rows = vec![
            up("ha"),
            up("rack12-kvm07"),
            Row {
                host: "hb".into(),
                line: "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0".into(),
                status: Err("line down: cannot open /dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0: No such file or directory (os error 2)".into()),
            },
        ];
        let lines = render(&rows).lines();
        assert_eq!(
            lines[0],
            "HOST          LINE  STATE        HEALTH    VMS      CPU%  MEM_FREE/TOTAL"
        );
        assert_eq!(
            lines[1],
            "ha            up    maintenance  degraded  120/300  100   1022794/1048576 MiB"
        );
        assert!(
            lines[3].starts_with("hb            down  -"),
            "{}",
            lines[3]
        );
        for line in &lines {
            assert!(line.chars().count() <= 80, "{line}");
        }
        assert!(lines.iter().any(|l| l == "note: ha: link eno1 is down"));
        assert!(lines.iter().any(|l| l.starts_with("note: hb (/dev/serial")));
    }

    #[test]
    fn names_from_an_agent_are_escaped() {
        let mut row = up("ha");
        if let Ok(s) = &mut row.status {
            s.state = "x\x1b[2J".into();
        }
        let lines = render(&[row]).lines();
        assert!(lines[1].contains("x\\e[2J"), "{}", lines[1]);
    }

    #[test]
    fn json_has_every_host() {
        let rows = vec![
            up("ha"),
            Row {
                host: "hb".into(),
                line: "telnet://h:1".into(),
                status: Err("line down".into()),
            },
        ];
        let v = to_json(&rows);
        assert_eq!(v["hosts"][0]["up"], true);
        assert_eq!(v["hosts"][0]["status"]["vms_running"], 120);
        assert_eq!(v["hosts"][1]["up"], false);
        assert_eq!(v["hosts"][1]["error"], "line down");
        assert_eq!(v["hosts"][1]["status"], Value::Null);
    }
}
