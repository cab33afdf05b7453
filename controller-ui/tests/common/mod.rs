//! Shared fixtures: an app fed the agents' JSON as docs/protocol.md shows
//! it, and a headless terminal to look at what a person would see.

#![allow(dead_code)] // each test binary uses a different part of this

use rackside_controller_ui::{Answer, App, Command, Input, Key, Millis};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde_json::Value;

pub fn json(s: &str) -> Value {
    serde_json::from_str(s).expect("fixture JSON parses")
}

/// A whole line as the agent writes it: a response's `data` or an event.
pub fn answer(app: &mut App, host: &str, kind: fn(Value) -> Answer, response: &str) {
    let v = json(response);
    let data = v.get("data").cloned().unwrap_or(Value::Null);
    app.handle(Input::Answer {
        host: host.into(),
        answer: kind(data),
    });
}

pub fn event(app: &mut App, host: &str, line: &str) -> Vec<Command> {
    let v = json(line);
    app.handle(Input::Event {
        host: host.into(),
        name: v["event"].as_str().unwrap_or_default().into(),
        data: v.get("data").cloned().unwrap_or(Value::Null),
    })
}

pub fn keys(app: &mut App, keys: &[Key]) -> Vec<Command> {
    keys.iter()
        .flat_map(|k| app.handle(Input::Key(*k)))
        .collect()
}

pub fn type_str(app: &mut App, s: &str) -> Vec<Command> {
    s.chars()
        .flat_map(|c| app.handle(Input::Key(Key::Char(c))))
        .collect()
}

/// The screen as rows of text, one `String` per terminal row.
pub fn draw(app: &App, w: u16, h: u16) -> Vec<String> {
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    term.draw(|f| app.render(f)).expect("draw");
    let buf = term.backend().buffer().clone();
    (0..h)
        .map(|y| (0..w).map(|x| buf[(x, y)].symbol().to_owned()).collect())
        .collect()
}

pub fn screen(app: &App, w: u16, h: u16) -> String {
    draw(app, w, h).join("\n")
}

/// Rows that contain `needle`.
pub fn rows_with(rows: &[String], needle: &str) -> Vec<String> {
    rows.iter()
        .filter(|r| r.contains(needle))
        .cloned()
        .collect()
}

// Responses from docs/protocol.md (`status`, `hosts`), and ones in the
// same shape for a busier rack where the doc shows only the text form.

pub const STATUS_HA: &str = r#"{"ok":true,"data":{"age_s":0,"cpu_pct":99.0,"cpus":2,"health":"ok","health_reasons":[],"host":"ha","journal":"ok","journal_note":null,"last_result":null,"libvirt":"up","load1":3.8,"location":"rack 12 / U07","maintenance":false,"mem_allocated_mib":51200,"mem_free_mib":22794,"mem_total_mib":24105,"stale":false,"state":"active","vcpus_allocated":14,"version":"0.1.0","vms_defined":4,"vms_running":3}}"#;

pub const STATUS_HB_DEGRADED: &str = r#"{"id":1,"ok":true,"data":{"age_s":null,"cpu_pct":99.2,"cpus":2,"health":"degraded","health_reasons":["libvirt unreachable for 22 s: unable to connect to server at '127.0.0.1:1': Connection refused"],"host":"hb","journal":"ok","journal_note":null,"last_result":null,"libvirt":"down","load1":2.78,"location":"rack 12 / U09","maintenance":false,"mem_allocated_mib":null,"mem_free_mib":22388,"mem_total_mib":24105,"stale":true,"state":"active","vcpus_allocated":null,"version":"0.1.0","vms_defined":null,"vms_running":null}}"#;

pub const HOSTS_FROM_HA: &str = r#"{"id":3,"ok":true,"data":{"hosts":[{"age_s":0,"cpu_pct":99.0,"cpus":2,"health":"ok","health_reasons":[],"libvirt":"up","load1":3.04,"location":"rack 12 / U07","mem_allocated_mib":8832,"mem_free_mib":22519,"mem_total_mib":24105,"name":"ha","reachable":true,"self":true,"stale":false,"state":"active","vms_running":3},{"age_s":0,"cpu_pct":null,"cpus":16,"error":null,"health":null,"load1":null,"location":"rack 12 / U09","mem_allocated_mib":8192,"mem_free_mib":3,"mem_total_mib":3072,"name":"hb","reachable":true,"self":false,"state":"active","vms_running":1},{"age_s":0,"cpu_pct":null,"cpus":16,"error":null,"health":null,"load1":null,"location":"rack 13 / U02","mem_allocated_mib":8192,"mem_free_mib":3,"mem_total_mib":3072,"name":"hc","reachable":true,"self":false,"state":"active","vms_running":1}]}}"#;

/// `vms` of ha in the JSON shape of the doc, with the figures of its
/// text example (db1, huge, spare, web1).
pub const VMS_HA: &str = r#"{"ok":true,"data":{"age_s":0,"stale":false,"vms":[{"cpu_pct":null,"mem_mib":8192,"name":"db1","state":"running","uuid":"6695eb01-f6a4-8304-79aa-97f2502e0002","vcpus":4},{"cpu_pct":null,"mem_mib":40960,"name":"huge","state":"running","uuid":"6695eb01-f6a4-8304-79aa-97f2502e0003","vcpus":8},{"cpu_pct":null,"mem_mib":1024,"name":"spare","state":"shutoff","uuid":"6695eb01-f6a4-8304-79aa-97f2502e0004","vcpus":1},{"cpu_pct":null,"mem_mib":2048,"name":"web1","state":"running","uuid":"6695eb01-f6a4-8304-79aa-97f2502e0001","vcpus":2}]}}"#;

pub const PLAN_HA: &str = r#"{"id":9,"ok":true,"data":{"moves":[{"dest":"hb","vm":"db1"},{"dest":"hc","vm":"web1"},{"dest":"hc","vm":"spare"}],"peer_reasons":[{"host":"hb","reason":"full (needs 40960 MiB, has 3 MiB free after the 1 GiB reserve)"},{"host":"hc","reason":"unreachable"}],"unplaceable":[{"reason":"no candidate: needs 40960 MiB; hb has 3 MiB free, hc is unreachable","vm":"huge"}]}}"#;

/// ha evacuating: the evacuate answer, then progress and results as the
/// doc's event examples show them.
pub const EVACUATE_HA: &str = r#"{"id":2,"ok":true,"data":{"evacuation":2,"moves":[{"dest":"hb","vm":"db1"},{"dest":"hb","vm":"web1"},{"dest":"hc","vm":"app2"}],"peer_reasons":[],"unplaceable":[]}}"#;

pub const PROGRESS_DB1: &str = r#"{"event":"migration.progress","ts":"2026-12-01T05:06:12.998060526Z","data":{"dest":"hb","downtime_ms":100,"eta_s":2,"job":3,"note":null,"percent":41.2,"rate_mib_s":35.1,"remaining_mib":57.3,"vm":"db1"}}"#;

pub const PROGRESS_WEB1: &str = r#"{"event":"migration.progress","ts":"2026-12-01T05:06:12.998060526Z","data":{"dest":"hb","downtime_ms":100,"eta_s":75,"job":4,"note":null,"percent":87.0,"rate_mib_s":30.0,"remaining_mib":12.0,"vm":"web1"}}"#;

pub const DONE_DB1: &str = r#"{"event":"migration.done","ts":"2026-12-01T05:06:12.998180346Z","data":{"announce":{"from_end_ms":-2013,"result":"seen"},"data_mib":412.5,"dest":"hb","downtime_ms":155,"job":3,"seconds":4.12,"timeline":[{"at_s":0.0,"step":"accepted"},{"at_s":4.12,"step":"done"}],"vm":"db1"}}"#;

pub const FAILED_APP2: &str = r#"{"event":"migration.failed","ts":"2026-12-01T05:06:12.998274747Z","data":{"dest":"hc","error":"no answer from hc for 120 s","job":5,"now_on":null,"retrying_on":null,"vm":"app2"}}"#;

pub const FAILED_WEB1_RETRY: &str = r#"{"event":"migration.failed","ts":"2026-12-01T05:06:12.998223491Z","data":{"dest":"hb","error":"no progress for 61 s (remaining 512 MiB)","job":4,"note":"web1 was left paused here and has been resumed","now_on":"ha","retrying_on":"hc","vm":"web1"}}"#;

pub const VERDICT_SAFE: &str = r#"{"event":"evacuation.done","ts":"2026-12-01T05:01:09.024510029Z","data":{"check_error":null,"evacuation":2,"failed":[],"host":"ha","moved":[{"vm":"db1","dest":"hb","downtime_ms":155,"seconds":4.1}],"peer_reasons":[],"remaining":[],"safe_to_power_off":true,"still_here":[],"unplaceable":[]}}"#;

pub const VERDICT_NOT_SAFE: &str = r#"{"event":"evacuation.done","ts":"2026-12-01T05:05:12.158479854Z","data":{"check_error":null,"evacuation":2,"failed":[],"host":"ha","moved":[],"peer_reasons":[],"remaining":["db1","web1"],"safe_to_power_off":false,"still_here":[{"state":"paused","vm":"db1"},{"state":"running","vm":"web1"}],"unplaceable":[{"reason":"no candidate: no peers are known","vm":"db1"},{"reason":"no candidate: no peers are known","vm":"web1"}]}}"#;

/// A rack of three: ha and hb up, hc's line dropped 12 s ago.
pub fn rack() -> App {
    let mut app = App::new();
    for h in ["ha", "hb", "hc"] {
        app.handle(Input::LineConnecting {
            host: h.into(),
            at: Millis(0),
        });
    }
    app.handle(Input::LineUp {
        host: "ha".into(),
        at: Millis(500),
    });
    app.handle(Input::LineUp {
        host: "hb".into(),
        at: Millis(600),
    });
    app.handle(Input::LineDropped {
        host: "hc".into(),
        reason: "reconnecting".into(),
        at: Millis::from_secs(3),
    });
    answer(&mut app, "ha", Answer::Status, STATUS_HA);
    answer(&mut app, "ha", Answer::Hosts, HOSTS_FROM_HA);
    answer(&mut app, "ha", Answer::Vms, VMS_HA);
    answer(&mut app, "hb", Answer::Status, STATUS_HB_DEGRADED);
    app.handle(Input::Tick {
        now: Millis::from_secs(15),
    });
    app
}

/// `rack()` with ha's evacuation under way: db1 at 41%, web1 at 87%,
/// app2 queued.
pub fn evacuating() -> App {
    let mut app = rack();
    answer(&mut app, "ha", Answer::Evacuate, EVACUATE_HA);
    event(&mut app, "ha", PROGRESS_DB1);
    event(&mut app, "ha", PROGRESS_WEB1);
    app
}
