//! The reading answers over fixed snapshots, in each state of the local
//! libvirt link: never answered, up, down with a last known VM list, down
//! without one. Blind must never read as healthy, empty or "not found".

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rackside_protocol::ErrorCode;
use serde_json::json;

use super::*;
use crate::console::fit::{fits, unwrapped};
use crate::inventory::model::Vm;
use crate::inventory::{HostFigures, Local, Peer, PeerDomain};

pub(super) const STALE_AFTER: Duration = Duration::from_secs(15);

pub(super) fn host() -> HostInfo {
    HostInfo {
        name: "h1".into(),
        location: "rack 1".into(),
        libvirt_uri: "qemu:///system".into(),
        version: "test",
    }
}

pub(super) fn vm(name: &str, state: VmState) -> Vm {
    Vm {
        name: name.into(),
        uuid: format!("uuid-{name}"),
        state,
        vcpus: 2,
        mem_mib: 1024,
        cpu_pct: None,
        cpu_time_ns: None,
        storage: None,
    }
}

pub(super) fn peer(name: &str, now: Instant, reachable: bool, domains: &[(&str, VmState)]) -> Peer {
    Peer {
        name: name.into(),
        uri: format!("qemu+ssh://{name}/system"),
        migrate_uri: None,
        location: format!("rack {name}"),
        ok_at: Some(now - Duration::from_secs(if reachable { 2 } else { 100 })),
        error: (!reachable).then(|| "Connection refused".into()),
        cpus: 8,
        cpu_pct: None,
        mem_total_mib: 16384,
        mem_free_mib: 8192,
        mem_allocated_mib: 0,
        vcpus_allocated: 0,
        vms_running: domains.len() as u32,
        domains: domains
            .iter()
            .map(|(n, s)| PeerDomain {
                name: (*n).into(),
                state: *s,
            })
            .collect(),
        pools: Vec::new(),
    }
}

/// The link states a snapshot can be in.
#[derive(Debug, Clone, Copy)]
pub(super) enum L {
    /// libvirt has not answered since the agent started.
    Connecting,
    /// The last poll answered.
    Up,
    /// Answered once (20 s ago), unreachable for the last 12 s.
    DownKnown,
    /// Never answered; unreachable for 12 s.
    DownNever,
}

pub(super) fn state(l: L, now: Instant, vms: Vec<Vm>, peers: Vec<Peer>) -> State {
    let down = Link::Down {
        since: now - Duration::from_secs(12),
        error: "Failed to connect socket".into(),
    };
    let (link, vms_at) = match l {
        L::Connecting => (Link::Connecting, None),
        L::Up => (Link::Up, Some(now - Duration::from_secs(1))),
        L::DownKnown => (down, Some(now - Duration::from_secs(20))),
        L::DownNever => (down, None),
    };
    State {
        local: Local {
            link,
            vms: if vms_at.is_some() { vms } else { Vec::new() },
            vms_at,
            figures: HostFigures {
                cpus: 8,
                ..Default::default()
            },
            departed: BTreeMap::new(),
            events: BTreeMap::new(),
            findings: Vec::new(),
        },
        peers,
    }
}

pub(super) fn status_of(s: &State, now: Instant) -> Answer {
    let control = Control {
        state: "active",
        ..Control::default()
    };
    status(s, &host(), now, &control)
}

#[test]
fn health_is_ok_only_while_libvirt_answers() {
    let now = Instant::now();
    for l in [L::Connecting, L::Up, L::DownKnown, L::DownNever] {
        let s = state(l, now, vec![], vec![]);
        let a = status_of(&s, now);
        let reasons = a.data["health_reasons"].as_array().unwrap().clone();
        match l {
            L::Up => {
                assert_eq!(a.data["health"], "ok", "{l:?}");
                assert!(reasons.is_empty());
                assert_eq!(a.data["stale"], false);
                assert!(s.local_blind(now).is_none());
            }
            L::Connecting => {
                assert_eq!(a.data["health"], "degraded", "{l:?}");
                assert_eq!(reasons, [json!("libvirt has not answered yet")]);
                assert!(a
                    .text
                    .to_string()
                    .contains("degraded (libvirt has not answered yet)"));
            }
            L::DownKnown | L::DownNever => {
                assert_eq!(a.data["health"], "degraded", "{l:?}");
                assert_eq!(
                    reasons,
                    [json!(
                        "libvirt unreachable for 12 s: Failed to connect socket"
                    )]
                );
                assert_eq!(a.data["stale"], true);
                let b = s.local_blind(now).unwrap();
                assert_eq!(b.since, Some(now - Duration::from_secs(12)));
                assert!(a.text.to_string().contains("libvirt unreachable for 12 s"));
            }
        }
    }
}

#[test]
fn faulty_hardware_stays_faulty_when_blind_too() {
    let now = Instant::now();
    let mut s = state(L::DownKnown, now, vec![], vec![]);
    s.local.findings = vec![crate::health::Finding {
        level: crate::health::Level::Faulty,
        key: "edac:mc0:ue".into(),
        reason: "mc0: 1 uncorrected memory error in the last 5 s".into(),
    }];
    let a = status_of(&s, now);
    assert_eq!(a.data["health"], "faulty");
    assert_eq!(a.data["health_reasons"].as_array().unwrap().len(), 2);
}

#[test]
fn status_counts_are_unknown_before_libvirt_answers_and_stale_after() {
    let now = Instant::now();
    let s = state(L::DownNever, now, vec![], vec![]);
    let a = status_of(&s, now);
    assert_eq!(a.data["vms_running"], Value::Null);
    assert_eq!(a.data["age_s"], Value::Null);
    let s = state(L::DownKnown, now, vec![vm("a", VmState::Running)], vec![]);
    let a = status_of(&s, now);
    assert_eq!(a.data["vms_running"], 1);
    assert_eq!(
        (a.data["stale"].clone(), a.data["age_s"].clone()),
        (json!(true), json!(20))
    );
}

#[test]
fn vms_is_unavailable_before_the_first_answer_and_stale_after() {
    let now = Instant::now();
    let vms_here = vec![vm("a", VmState::Running)];
    let e = vms(
        &state(L::Connecting, now, vms_here.clone(), vec![]),
        now,
        false,
    )
    .unwrap_err();
    assert_eq!(
        e,
        (
            ErrorCode::Unavailable,
            "libvirt has not answered yet".into()
        )
    );
    let e = vms(
        &state(L::DownNever, now, vms_here.clone(), vec![]),
        now,
        false,
    )
    .unwrap_err();
    assert_eq!(e.0, ErrorCode::Unavailable);
    assert_eq!(
        e.1,
        "libvirt unreachable for 12 s: Failed to connect socket"
    );
    let a = vms(
        &state(L::DownKnown, now, vms_here.clone(), vec![]),
        now,
        false,
    )
    .unwrap();
    assert_eq!(
        (a.data["stale"].clone(), a.data["age_s"].clone()),
        (json!(true), json!(20))
    );
    assert!(
        unwrapped(&fits(&a.text)).contains("VM figures are 20 s old"),
        "{}",
        a.text
    );
    let a = vms(&state(L::Up, now, vms_here, vec![]), now, false).unwrap();
    assert_eq!(a.data["stale"], false);
    assert_eq!(a.data["vms"][0]["name"], "a");
}

#[test]
fn hosts_shows_this_hosts_health_and_why() {
    let now = Instant::now();
    for l in [L::Connecting, L::Up, L::DownKnown, L::DownNever] {
        let s = state(l, now, vec![], vec![peer("h2", now, false, &[])]);
        let me = status_of(&s, now);
        let a = hosts(&s, &host(), now, STALE_AFTER, &me);
        let row = &a.data["hosts"][0];
        assert_eq!(row["self"], true);
        assert_eq!(row["health"], me.data["health"], "{l:?}");
        assert_eq!(row["health_reasons"], me.data["health_reasons"]);
        assert_eq!(row["stale"], me.data["stale"]);
        assert!(a
            .text
            .to_string()
            .contains("note: h2 unreachable: Connection refused"));
        // The table itself says why, in a word.
        let h2 = a.text.to_string();
        let h2 = h2.lines().find(|l| l.starts_with("h2 ")).unwrap();
        assert!(h2.contains("down (refused)"), "{h2}");
        if matches!(l, L::Up) {
            assert_eq!(row["health"], "ok");
            assert!(!a.text.to_string().contains("note: h1"));
        } else {
            assert_eq!(row["health"], "degraded", "{l:?}");
            assert!(
                a.text.to_string().contains("note: h1: libvirt "),
                "{}",
                a.text
            );
        }
    }
}

#[test]
fn locate_never_says_not_found_while_blind() {
    let now = Instant::now();
    for l in [L::Connecting, L::DownNever, L::DownKnown] {
        let s = state(l, now, vec![], vec![peer("h2", now, true, &[])]);
        let (code, why) = locate(&s, &host(), "web1", now, STALE_AFTER).unwrap_err();
        assert_eq!(code, ErrorCode::Unavailable, "{l:?}");
        assert!(why.ends_with("no reachable peer shows web1"), "{why}");
        assert!(why.starts_with("libvirt "), "{why}");
    }
    // Only an unreachable peer shows it: that is not a reachable truth.
    let s = state(
        L::DownNever,
        now,
        vec![],
        vec![peer("h2", now, false, &[("web1", VmState::Running)])],
    );
    let e = locate(&s, &host(), "web1", now, STALE_AFTER).unwrap_err();
    assert_eq!(e.0, ErrorCode::Unavailable);
}

#[test]
fn locate_while_blind_gives_a_reachable_peers_word_with_this_side_unknown() {
    let now = Instant::now();
    let s = state(
        L::DownNever,
        now,
        vec![],
        vec![peer("h2", now, true, &[("web1", VmState::Running)])],
    );
    let a = locate(&s, &host(), "web1", now, STALE_AFTER).unwrap();
    assert_eq!(a.data["host"], "h2");
    assert_eq!(a.data["state"], "live");
    assert_eq!(a.data["local"], "unknown");
    assert!(
        unwrapped(&fits(&a.text)).contains("whether h1 also has it is unknown"),
        "{}",
        a.text
    );
}

#[test]
fn locate_while_blind_gives_the_last_known_local_state_as_stale() {
    let now = Instant::now();
    let s = state(
        L::DownKnown,
        now,
        vec![vm("web1", VmState::Running)],
        vec![],
    );
    let a = locate(&s, &host(), "web1", now, STALE_AFTER).unwrap();
    assert_eq!(a.data["host"], "h1");
    assert_eq!(
        (a.data["stale"].clone(), a.data["age_s"].clone()),
        (json!(true), json!(20))
    );
    assert!(
        unwrapped(&fits(&a.text)).contains("last known 20 s ago"),
        "{}",
        a.text
    );
}

#[test]
fn locate_with_libvirt_up_answers_as_before() {
    let now = Instant::now();
    let s = state(
        L::Up,
        now,
        vec![vm("here", VmState::Running)],
        vec![
            peer("h2", now, true, &[("there", VmState::Running)]),
            peer("h3", now, false, &[("gone", VmState::Running)]),
        ],
    );
    let a = locate(&s, &host(), "here", now, STALE_AFTER).unwrap();
    assert_eq!(
        (a.data["host"].clone(), a.data.get("stale")),
        (json!("h1"), None)
    );
    let a = locate(&s, &host(), "there", now, STALE_AFTER).unwrap();
    assert_eq!(
        (a.data["host"].clone(), a.data.get("stale")),
        (json!("h2"), None)
    );
    // Last seen on a peer that stopped answering: said, and marked stale.
    let a = locate(&s, &host(), "gone", now, STALE_AFTER).unwrap();
    assert_eq!(
        (a.data["host"].clone(), a.data["stale"].clone()),
        (json!("h3"), json!(true))
    );
    assert_eq!(a.data["age_s"], 100);
    // Not found: says which peers could not be asked.
    let a = locate(&s, &host(), "nowhere", now, STALE_AFTER).unwrap();
    assert_eq!(a.data["state"], "unknown");
    assert_eq!(a.data["unreachable_peers"], json!(["h3"]));
    assert!(
        a.text.to_string().contains("not reachable: h3"),
        "{}",
        a.text
    );
}

#[test]
fn the_status_line_for_systemd_says_why_when_blind() {
    let now = Instant::now();
    let up = state(L::Up, now, vec![vm("a", VmState::Running)], vec![]);
    assert_eq!(summary(&up, now), "1 VMs running, libvirt up");
    let never = state(L::DownNever, now, vec![], vec![]);
    assert_eq!(
        summary(&never, now),
        "libvirt unreachable for 12 s: Failed to connect socket; VMs unknown"
    );
    let known = state(L::DownKnown, now, vec![vm("a", VmState::Running)], vec![]);
    assert!(summary(&known, now).ends_with("; 1 VMs running 20 s ago"));
}
