//! The reading answers fit 80 columns with long names, many VMs and
//! peers that do not answer.

use std::time::{Duration, Instant};

use serde_json::json;

use super::blind_tests::{peer, state, vm, L, STALE_AFTER};
use super::*;
use crate::console::fit::{fits, vm_name, HOST_A, HOST_B, HOST_C};

fn long_host() -> HostInfo {
    HostInfo {
        name: HOST_A.into(),
        location: "DC2 hall B rack 12 U07".into(),
        libvirt_uri: "qemu:///system".into(),
        version: "0.9.0",
    }
}

fn crowded(now: Instant) -> State {
    let vms = (0..12)
        .map(|i| {
            let mut v = vm(&vm_name(i), VmState::Running);
            v.uuid = format!("6f1c2d3e-4b5a-4c6d-8e7f-{i:012}");
            v.mem_mib = 131_072;
            v.vcpus = 64;
            v.cpu_pct = Some(99.9);
            v
        })
        .collect();
    let mut down = peer(HOST_C, now, false, &[]);
    down.error = Some(format!(
        "unable to connect to server at '{HOST_C}.mgmt.example.net:16509': Connection timed out"
    ));
    let mut never = peer("kvm-r14-u05d", now, false, &[]);
    never.ok_at = None;
    never.error = Some("not polled yet".into());
    let mut busy = peer(HOST_B, now, true, &[("a", VmState::Running)]);
    busy.cpu_pct = Some(12.345_678);
    busy.mem_free_mib = 1_048_576;
    state(L::Up, now, vms, vec![busy, down, never])
}

#[test]
fn vms_short_and_long_fit_and_only_the_long_form_shows_uuids() {
    let now = Instant::now();
    let s = crowded(now);
    let a = vms(&s, now, false).unwrap();
    let t = fits(&a.text);
    assert!(
        t.starts_with("NAME                  STATE    VCPUS  MEM_MIB  CPU%\r\n"),
        "{t}"
    );
    assert!(!t.contains("UUID") && !t.contains("6f1c2d3e"), "{t}");
    let long = vms(&s, now, true).unwrap();
    let t = fits(&long.text);
    assert!(t.starts_with("NAME                  UUID\r\n"), "{t}");
    assert!(
        t.contains(&format!(
            "\r\n{}  6f1c2d3e-4b5a-4c6d-8e7f-000000000003\r\n",
            vm_name(3)
        )),
        "{t}"
    );
    // JSON is the same either way, with the UUID.
    assert_eq!(a.data, long.data);
    assert_eq!(
        a.data["vms"][3]["uuid"],
        json!("6f1c2d3e-4b5a-4c6d-8e7f-000000000003")
    );
    // Blind: the warning under the table fits too.
    let blind = state(L::DownKnown, now, crowded(now).local.vms, vec![]);
    fits(&vms(&blind, now, false).unwrap().text);
}

#[test]
fn hosts_fit_with_unreachable_peers_and_say_what_the_star_is() {
    let now = Instant::now();
    let s = crowded(now);
    let control = Control {
        state: "maintenance",
        maintenance: true,
        ..Control::default()
    };
    let me = status(&s, &long_host(), now, &control);
    let a = hosts(&s, &long_host(), now, STALE_AFTER, &me);
    let t = fits(&a.text);
    eprintln!("{}", t.replace("\r\n", "\n"));
    let lines: Vec<&str> = t.split("\r\n").collect();
    assert_eq!(
        lines[0],
        "HOST            STATE                  HEALTH   VMS  CPUS  CPU%  FREE     AGE"
    );
    assert!(
        lines[1].starts_with(&format!("{HOST_A} *  maintenance")),
        "{t}"
    );
    assert!(t.contains(&format!("{HOST_B}    active")), "{t}");
    assert!(t.contains(&format!("{HOST_C}    down (timed out)")), "{t}");
    assert!(t.contains("kvm-r14-u05d    down (not polled yet)"), "{t}");
    assert!(
        t.contains("\r\n* this host; FREE: free memory, MiB; AGE: s since read\r\n"),
        "{t}"
    );
    // This host's health is its own; a peer's is never guessed.
    assert!(lines[1].contains("maintenance            ok "), "{t}");
    assert!(
        t.contains(&format!("{HOST_B}    active                 unknown")),
        "{t}"
    );
    assert!(
        t.contains(&format!("note: {HOST_C} unreachable: unable to connect")),
        "{t}"
    );
    // The CPU figure is a whole percent on the screen, as sent in JSON.
    assert!(t.contains("  12    1048576"), "{t}");
    assert_eq!(a.data["hosts"][1]["cpu_pct"], json!(12.345_678));
    // A blind host's health reasons wrap under the table.
    let blind = state(L::DownKnown, now, vec![], crowded(now).peers);
    let me = status(&blind, &long_host(), now, &control);
    fits(&hosts(&blind, &long_host(), now, STALE_AFTER, &me).text);
}

fn last(safe: bool, checked: bool) -> LastResult {
    LastResult {
        evacuation: 12,
        at: "2026-03-01T14:31:31.123456789Z".into(),
        safe_to_power_off: safe,
        moved: 9,
        still_here: if safe { 0 } else { 3 },
        checked,
    }
}

#[test]
fn status_fits_and_shows_the_last_result_while_it_stands() {
    let now = Instant::now();
    let s = crowded(now);
    let r = last(false, true);
    let note = "the journal was damaged (line 7: not a journal record: expected value at line 1 \
                column 1); it was moved to /var/lib/rackside/journal.damaged-2026-03-01T14:31:31Z \
                and 6 lines were recovered; evacuate and migrate are refused until an operator \
                checks it and types 'journal ack'";
    let control = Control {
        state: "maintenance",
        maintenance: true,
        journal_note: Some(note),
        last_result: Some(&r),
        utc_offset_s: 3600,
    };
    let a = status(&s, &long_host(), now, &control);
    let t = fits(&a.text);
    eprintln!("{}", t.replace("\r\n", "\n"));
    assert!(
        t.contains(
            "\r\nlast result:  NOT SAFE at 15:31:31 (evacuation 12): 9 moved, 3 still here\r\n"
        ),
        "{t}"
    );
    assert!(!t.to_ascii_lowercase().contains("power off"), "{t}");
    assert_eq!(
        a.data["last_result"],
        json!({"evacuation": 12, "at": "2026-03-01T14:31:31.123456789Z",
               "safe_to_power_off": false, "moved": 9, "still_here": 3, "checked": true})
    );
    assert_eq!(
        last_result_text(&last(true, true), 0),
        "SAFE at 14:31:31 (evacuation 12): 9 moved, none still here"
    );
    assert_eq!(
        last_result_text(&last(false, false), 0),
        "NOT SAFE at 14:31:31 (evacuation 12): 9 moved, not verified what still runs here"
    );
    // None: the key is there, null, and no line says it.
    let a = status(&s, &long_host(), now, &Control::default());
    assert_eq!(a.data["last_result"], Value::Null);
    assert!(!fits(&a.text).contains("last result"));
    // Blind and degraded: the long reasons wrap.
    let blind = state(L::DownKnown, now, vec![], vec![]);
    fits(&status(&blind, &long_host(), now, &control).text);
}

#[test]
fn locate_fits_with_long_names() {
    let now = Instant::now();
    let s = crowded(now);
    let a = locate(&s, &long_host(), &vm_name(30), now, STALE_AFTER).unwrap();
    fits(&a.text);
    let blind = state(L::DownKnown, now, vec![], crowded(now).peers);
    let _ = Duration::ZERO;
    if let Ok(a) = locate(&blind, &long_host(), &vm_name(3), now, STALE_AFTER) {
        fits(&a.text);
    }
}
