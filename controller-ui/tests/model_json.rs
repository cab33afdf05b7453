//! The model built from the agents' JSON, as docs/protocol.md shows it,
//! and from JSON that is missing, null or wrong.

mod common;

use common::*;
use rackside_controller_ui::model::{
    jobs_from_json, Event, Health, HostState, HostsEntry, Job, Located, Phase, Plan, PlanFor,
    Status, Verdict, VmList, VmState,
};
use rackside_controller_ui::{Answer, App, Input, Key};
use serde_json::{json, Value};

fn data(response: &str) -> Value {
    json(response)["data"].clone()
}

#[test]
fn status_of_a_host_whose_libvirt_is_down() {
    let s = Status::from_json(&data(STATUS_HB_DEGRADED));
    assert_eq!(s.host.as_deref(), Some("hb"));
    assert_eq!(s.state, HostState::Active);
    assert_eq!(s.health, Health::Degraded);
    assert_eq!(s.health_reasons.len(), 1);
    assert!(s.health_reasons[0].starts_with("libvirt unreachable for 22 s"));
    assert_eq!(s.cpu_pct, Some(99.2));
    assert_eq!(
        (s.mem_free_mib, s.mem_total_mib),
        (Some(22388), Some(24105))
    );
    assert_eq!(s.vms_running, None, "null until libvirt answers");
    assert_eq!(s.libvirt.as_deref(), Some("down"));
}

#[test]
fn hosts_from_one_agent_fill_in_its_peers_without_overriding_their_own_word() {
    let entries = HostsEntry::list_from_json(&data(HOSTS_FROM_HA));
    assert_eq!(entries.len(), 3);
    assert!(entries[0].is_self && entries[0].health == Health::Ok);
    assert_eq!(
        entries[1].health,
        Health::Unknown,
        "a peer's health is null"
    );
    assert_eq!(entries[2].location.as_deref(), Some("rack 13 / U02"));

    let app = rack();
    let hb = app.rack().host("hb").unwrap();
    // hb's own status said degraded with 22388 MiB free; ha's view of hb
    // (health null, 3 MiB free) came later and must not replace it.
    assert_eq!(hb.health, Health::Degraded);
    assert_eq!(hb.mem_free_mib, Some(22388));
    // hc has no status of its own: ha's view is all there is.
    let hc = app.rack().host("hc").unwrap();
    assert_eq!(hc.mem_total_mib, Some(3072));
    assert_eq!(hc.location.as_deref(), Some("rack 13 / U02"));
}

#[test]
fn an_unreachable_peer_says_why() {
    let d = json(
        r#"{"hosts":[{"age_s":null,"cpu_pct":null,"cpus":null,"error":"An error occurred, but the cause is unknown","health":null,"load1":null,"location":null,"mem_allocated_mib":null,"mem_free_mib":null,"mem_total_mib":null,"name":"hb","reachable":false,"self":false,"state":null,"vms_running":null}]}"#,
    );
    let e = &HostsEntry::list_from_json(&d)[0];
    assert_eq!(
        e.state,
        HostState::Unreachable("An error occurred, but the cause is unknown".into())
    );
    let mut app = App::new();
    app.handle(Input::Answer {
        host: "ha".into(),
        answer: Answer::Hosts(d),
    });
    let s = screen(&app, 80, 24);
    assert!(
        rows_with(&draw(&app, 80, 24), "hb ")[0].contains("unreachable"),
        "{s}"
    );
    assert!(
        s.contains("unreachable: An error occurred, but the cause is unknown"),
        "{s}"
    );
}

#[test]
fn vms_keep_their_exact_names_and_states() {
    let l = VmList::from_json(&data(VMS_HA));
    let names: Vec<&str> = l.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["db1", "huge", "spare", "web1"]);
    assert_eq!(l.vms[1].mem_mib, Some(40960));
    assert_eq!(l.vms[2].state, VmState::Shutoff);
    assert_eq!(l.vms[0].cpu_pct, None);
    let weird = VmList::from_json(&json(
        r#"{"vms":[{"name":"y\u009b2J\u202eevil","state":"hibernating"}],"stale":true,"age_s":40}"#,
    ));
    assert_eq!(weird.vms[0].name, "y\u{9b}2J\u{202e}evil");
    assert_eq!(weird.vms[0].state, VmState::Other("hibernating".into()));
    assert!(weird.stale);
}

#[test]
fn plans_from_the_doc() {
    // `plan hb` on a host whose peers do not answer, verbatim.
    let p = Plan::from_json(&data(
        r#"{"id":9,"ok":true,"data":{"moves":[],"peer_reasons":[{"host":"hb","reason":"unreachable"}],"unplaceable":[{"reason":"no candidate: hb is unreachable","vm":"huge"},{"reason":"no candidate: hb is unreachable","vm":"db1"},{"reason":"no candidate: hb is unreachable","vm":"web1"},{"reason":"no candidate: hb is unreachable","vm":"spare"}]}}"#,
    ));
    assert!(p.moves.is_empty());
    assert_eq!(p.unplaceable.len(), 4);
    assert_eq!(
        p.for_vm("db1"),
        PlanFor::CannotPlace("no candidate: hb is unreachable")
    );
    assert_eq!(p.peer_reasons[0].reason, "unreachable");
    let p = Plan::from_json(&data(EVACUATE_HA));
    assert_eq!(p.evacuation, Some(2));
    assert_eq!(p.for_vm("app2"), PlanFor::MovesTo("hc"));
    assert_eq!(p.for_vm("nosuch"), PlanFor::NotInPlan);
}

/// The doc's `jobs` answer, verbatim: done, running after a retry, failed.
const JOBS: &str = r#"{"id":5,"ok":true,"data":{"jobs":[{"announce":{"from_end_ms":-2013,"result":"seen"},"data_mib":412.5,"dest":"hb","downtime_ms":155,"error":null,"eta_s":0,"id":3,"kind":"evacuate","note":null,"offline":false,"percent":100.0,"phase":"done","rate_mib_s":35.1,"remaining_mib":0.0,"run":2,"seconds":4.1,"timeline":[{"at_s":0.0,"step":"accepted"},{"at_s":0.012,"step":"prepared"},{"at_s":0.29,"step":"dest_started"},{"at_s":1.308,"step":"first_byte"},{"at_s":2.06,"step":"switchover"},{"at_s":2.071,"step":"announced"},{"at_s":4.084,"step":"ended"},{"at_s":4.12,"step":"done"}],"tried":["hb"],"vm":"db1"},{"announce":null,"data_mib":null,"dest":"hc","downtime_ms":null,"error":null,"eta_s":null,"id":4,"kind":"evacuate","note":"hb failed (no progress for 61 s (remaining 512 MiB)); retrying on hc; web1 was left paused here and has been resumed","offline":false,"percent":0.0,"phase":"running","rate_mib_s":null,"remaining_mib":null,"run":2,"seconds":null,"timeline":[],"tried":["hb","hc"],"vm":"web1"},{"announce":null,"data_mib":null,"dest":"hc","downtime_ms":null,"error":"no answer from hc for 120 s","eta_s":null,"id":5,"kind":"evacuate","note":null,"offline":false,"percent":0.0,"phase":"failed","rate_mib_s":null,"remaining_mib":null,"run":2,"seconds":null,"timeline":[],"tried":["hc"],"vm":"app2"}],"running":true}}"#;

#[test]
fn jobs_from_the_doc() {
    let (jobs, running) = jobs_from_json(&data(JOBS));
    assert!(running);
    assert_eq!(jobs.len(), 3);
    assert_eq!(jobs[0].phase, Phase::Done);
    assert_eq!(jobs[0].downtime_ms, Some(155));
    assert_eq!(jobs[1].phase, Phase::Running);
    assert!(jobs[1].note.as_deref().unwrap().contains("retrying on hc"));
    assert_eq!(
        jobs[2].phase,
        Phase::Failed("no answer from hc for 120 s".into())
    );

    // Only the latest run is progress; the run before is history.
    let d = json(
        r#"{"jobs":[{"id":1,"run":1,"vm":"old","phase":"done"},{"id":2,"run":2,"vm":"new","phase":"queued"}],"running":true}"#,
    );
    let (jobs, _) = jobs_from_json(&d);
    assert_eq!(
        jobs.iter().map(|j| j.vm.as_str()).collect::<Vec<_>>(),
        ["new"]
    );

    // A controller that connects mid-run shows it from `jobs`.
    let mut app = rack();
    answer(&mut app, "ha", Answer::Jobs, JOBS);
    keys(&mut app, &[Key::Enter, Key::Char('g')]);
    let s = screen(&app, 80, 24);
    assert!(s.contains("1 of 3 done, 1 running, 1 failed"), "{s}");

    // The jobs of a run that ended before the controller looked are not
    // an evacuation under way (seen on the lab: "1 evacuating" forever).
    let mut app = rack();
    let ended = JOBS.replace(r#""running":true"#, r#""running":false"#);
    answer(&mut app, "ha", Answer::Jobs, &ended);
    let s = screen(&app, 80, 24);
    assert!(!s.contains("evacuating"), "{s}");
}

#[test]
fn migration_events_drive_each_vms_progress() {
    let app = evacuating();
    let e = app.rack().host("ha").unwrap().evacuation.as_ref().unwrap();
    assert_eq!(e.id, Some(2));
    let db1 = &e.jobs[0];
    assert_eq!((db1.id, db1.phase.clone()), (Some(3), Phase::Running));
    assert_eq!(db1.percent, 41.2);
    assert_eq!(
        (db1.remaining_mib, db1.rate_mib_s, db1.eta_s),
        (Some(57.3), Some(35.1), Some(2))
    );
    assert_eq!(e.jobs[2].phase, Phase::Queued);

    let mut app = evacuating();
    // A late sample never makes the bar go back.
    event(&mut app, "ha", &PROGRESS_DB1.replace("41.2", "30.0"));
    event(&mut app, "ha", DONE_DB1);
    event(&mut app, "ha", FAILED_WEB1_RETRY);
    event(
        &mut app,
        "ha",
        r#"{"event":"migration.failed","ts":"2026-12-01T05:06:12.99845642Z","data":{"dest":"hc","error":"aborted by request","job":4,"note":"web1 is PAUSED here: libvirt is still running a job on it","now_on":"ha","retrying_on":null,"vm":"web1"}}"#,
    );
    let e = app.rack().host("ha").unwrap().evacuation.as_ref().unwrap();
    assert_eq!(e.jobs[0].phase, Phase::Done);
    assert_eq!(e.jobs[0].ratio(), 1.0);
    assert_eq!(e.jobs[1].dest.as_deref(), Some("hc"), "the retry's host");
    assert_eq!(
        e.jobs[1].phase,
        Phase::Aborted(
            "aborted by request (web1 is PAUSED here: libvirt is still running a job on it)".into()
        )
    );
}

#[test]
fn the_verdict_is_safe_only_when_everything_agrees() {
    let safe = Verdict::from_json(&json(VERDICT_SAFE)["data"]);
    assert!(safe.safe && safe.reasons.is_empty());
    assert_eq!((safe.moved, safe.evacuation), (1, Some(2)));

    let not = Verdict::from_json(&json(VERDICT_NOT_SAFE)["data"]);
    assert!(!not.safe);
    assert_eq!(
        not.reasons,
        [
            "still here, paused: db1: cannot be placed: no candidate: no peers are known",
            "still running here: web1: cannot be placed: no candidate: no peers are known",
        ]
    );

    let check = Verdict::from_json(&json!({
        "safe_to_power_off": false, "check_error": "libvirt did not answer for 30 s",
        "remaining": [], "still_here": [], "moved": [{"vm": "db1"}]
    }));
    assert_eq!(
        check.reasons,
        ["cannot verify what still runs here: libvirt did not answer for 30 s"]
    );

    let failed = Verdict::from_json(&json!({
        "safe_to_power_off": false, "remaining": ["app2"],
        "still_here": [{"vm": "app2", "state": "running"}],
        "failed": [{"vm": "app2", "dest": "hc", "phase": "failed", "error": "no answer from hc for 120 s"}],
        "peer_reasons": [{"host": "hb", "reason": "unreachable"}]
    }));
    assert_eq!(
        failed.reasons,
        [
            "still running here: app2: no answer from hc for 120 s",
            "peer hb took none: unreachable"
        ]
    );

    // Fails closed: a missing flag, a contradiction, or nothing at all.
    for data in [
        json!({}),
        json!({"safe_to_power_off": "true"}),
        json!({"safe_to_power_off": true, "still_here": [{"vm": "web1", "state": "running"}]}),
        json!({"safe_to_power_off": true, "remaining": ["web1"]}),
        json!({"safe_to_power_off": true, "check_error": "libvirt did not answer for 30 s"}),
        json!({"safe_to_power_off": false}),
        Value::Null,
    ] {
        let v = Verdict::from_json(&data);
        assert!(!v.safe, "{data} read as SAFE");
        assert!(!v.reasons.is_empty(), "{data} gave no reason");
    }
}

#[test]
fn locate_answers_read_as_sentences() {
    let l = Located::from_json(&data(
        r#"{"id":7,"ok":true,"data":{"host":"ha","location":"rack 12 / U07","state":"live","vm":"web1","vm_state":"running"}}"#,
    ))
    .unwrap();
    assert_eq!(l.sentence(), "web1: live on ha (rack 12 / U07), running");
    let l = Located::from_json(&json!({"vm": "app7", "state": "unknown", "host": null,
        "location": null, "unreachable_peers": ["hb", "hc"]}))
    .unwrap();
    assert_eq!(l.sentence(), "app7: not found (not reachable: hb, hc)");
    let l = Located::from_json(
        &json!({"vm": "db1", "state": "moved", "from": "ha", "to": "hb",
        "host": "hb", "location": "rack 12 / U09", "vm_state": "running"}),
    )
    .unwrap();
    assert_eq!(
        l.sentence(),
        "db1: moved from ha to hb (rack 12 / U09), running"
    );
}

#[test]
fn host_and_vm_events_change_the_host() {
    let mut app = rack();
    event(
        &mut app,
        "ha",
        r#"{"event":"host.health","ts":"x","data":{"host":"ha","health":"faulty","reasons":["mc0: 2 uncorrected memory errors in the last 5 s"]}}"#,
    );
    event(
        &mut app,
        "ha",
        r#"{"event":"vm.state","ts":"2026-12-01T04:31:24.165230572Z","data":{"state":"shutoff","uuid":"6695eb01-f6a4-8304-79aa-97f2502e0001","vm":"web1","what":"stopped"}}"#,
    );
    event(
        &mut app,
        "ha",
        r#"{"event":"vm.state","ts":"x","data":{"op":"release","refused":null,"source":"hook","subop":"end","uuid":"u","vm":"huge","what":"undefined"}}"#,
    );
    event(
        &mut app,
        "ha",
        r#"{"event":"vm.crash","ts":"x","data":{"vm":"c1","uuid":"u","crash":"qemu_died","health":"ok","action":"restart","dest":null,"reason":"restarted here (host ok; restart 1 of 3)"}}"#,
    );
    let ha = app.rack().host("ha").unwrap();
    assert_eq!(ha.health, Health::Faulty);
    assert_eq!(
        ha.vms.iter().find(|v| v.name == "web1").unwrap().state,
        VmState::Shutoff
    );
    assert!(ha.vms.iter().all(|v| v.name != "huge"));
    assert!(ha.notes[0].contains("c1 crashed: restart restarted here"));
    let rows = draw(&app, 80, 24);
    assert!(rows_with(&rows, "ha  ")[0].contains("FAULTY"));
    assert!(rows
        .join(" ")
        .contains("health: mc0: 2 uncorrected memory errors"));

    event(
        &mut app,
        "ha",
        r#"{"event":"host.poweroff","ts":"x","data":{"host":"ha"}}"#,
    );
    assert_eq!(app.rack().host("ha").unwrap().state, HostState::PoweringOff);
}

/// Values that are not what the protocol says, in every place it has one.
fn garbage() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(-1),
        json!(1e308),
        json!("text"),
        json!([]),
        json!([null, 1, "x", {}]),
        json!({}),
        json!({"vms": "x", "hosts": {}, "jobs": [{"vm": 5}], "moves": [null], "still_here": 3}),
        json!({"name": "n", "vm": "v", "percent": -50, "eta_s": -3, "remaining_mib": "lots",
               "vcpus": 1.5, "mem_mib": -1, "state": 7, "phase": "exploded", "health": ["ok"]}),
        json!({"vm": "v", "percent": 1e300, "rate_mib_s": 1e300, "eta_s": 1e300,
               "remaining_mib": 1e300, "job": 1e300}),
        json!({"vms": [{"name": "a", "mem_mib": 1e300, "vcpus": 1e300, "cpu_pct": -1e300}],
               "hosts": [{"name": "h", "mem_free_mib": 1e300, "mem_total_mib": 1e300, "cpu_pct": 1e300}],
               "jobs": [{"vm": "j", "run": "2", "percent": "50"}]}),
    ]
}

#[test]
fn bad_data_never_panics_and_still_renders() {
    let events = [
        "migration.progress",
        "migration.done",
        "migration.failed",
        "evacuation.done",
        "host.health",
        "vm.state",
        "vm.crash",
        "host.empty",
        "host.poweroff",
        "agent.stopping",
        "events.missed",
        "no.such.event",
    ];
    let mut app = evacuating();
    for g in garbage() {
        for a in [
            Answer::Status(g.clone()),
            Answer::Hosts(g.clone()),
            Answer::Vms(g.clone()),
            Answer::Plan(g.clone()),
            Answer::Jobs(g.clone()),
            Answer::Locate(g.clone()),
            Answer::Evacuate(g.clone()),
        ] {
            app.handle(Input::Answer {
                host: "ha".into(),
                answer: a,
            });
        }
        for name in events {
            app.handle(Input::Event {
                host: "ha".into(),
                name: name.into(),
                data: g.clone(),
            });
            let _ = Event::from_json(name, &g);
        }
        let _ = Job::from_json(&g).map(|j| j.ratio());
        let _ = Verdict::from_json(&g);
    }
    // Every screen still draws with whatever is left.
    for k in [
        Key::Esc,
        Key::Enter,
        Key::Enter,
        Key::Char('g'),
        Key::Char('v'),
    ] {
        app.handle(Input::Key(k));
        for (w, h) in [(80, 24), (120, 40), (20, 6)] {
            draw(&app, w, h);
        }
    }
    // And a gauge never sees a ratio outside 0..=1.
    for j in app
        .rack()
        .hosts()
        .filter_map(|h| h.evacuation.as_ref())
        .flat_map(|e| &e.jobs)
    {
        assert!((0.0..=1.0).contains(&j.ratio()), "{j:?}");
    }
}

#[test]
fn a_destination_is_cautioned_only_by_its_own_word() {
    let mut app = rack();
    // hb said degraded on its own line; ha's view of hc (health null) and
    // ha itself (ok) say nothing against them.
    assert_eq!(app.rack().caution("hb").as_deref(), Some("degraded"));
    assert_eq!(app.rack().caution("hc"), None);
    assert_eq!(app.rack().caution("ha"), None);
    assert_eq!(app.rack().caution("nowhere"), None);
    // A host in maintenance refuses whatever its health.
    let maint = STATUS_HA
        .replace(r#""host":"ha""#, r#""host":"hc""#)
        .replace(r#""state":"active""#, r#""state":"maintenance""#);
    answer(&mut app, "hc", Answer::Status, &maint);
    assert_eq!(app.rack().caution("hc").as_deref(), Some("maintenance"));
}
