//! The agent and rackside-hook are two binaries sharing two formats: the
//! state the agent publishes (the hook admits everything when it cannot
//! read it, so a drift would silently let migrations into a host in
//! maintenance) and the reports the hook sends. Each side's real code is
//! checked against the other's.

use rackside_agent::hookio::{self, Published, Report};

#[test]
fn the_hook_reads_what_the_agent_publishes() {
    let dir = std::env::temp_dir().join(format!("rackside-contract-{}", std::process::id()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let p = Published {
        state: "maintenance".into(),
        maintenance: true,
        mem_total_mib: 8192,
        mem_committed_mib: 1024,
        mem_reserve_mib: 512,
        updated_unix: now,
    };
    hookio::publish(&dir, &p).unwrap();
    let seen =
        rackside_hook::state::load(&dir, now).expect("the hook cannot read the agent's state");
    assert!(seen.in_maintenance());
    assert_eq!(seen.free_mib(), 8192 - 1024 - 512);
    assert_eq!(
        (
            seen.mem_total_mib,
            seen.mem_committed_mib,
            seen.mem_reserve_mib,
            seen.updated_unix
        ),
        (8192, 1024, 512, now)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_agent_reads_what_the_hook_reports() {
    let bytes = rackside_hook::notify::encode(&rackside_hook::notify::Report {
        vm: "web1",
        uuid: Some("6695eb01-f6a4-8304-79aa-97f2502e0001"),
        op: "migrate",
        subop: "begin",
        extra: "-",
        refused: Some("rackside: hb is in maintenance; not accepting web1".into()),
    });
    let r: Report =
        serde_json::from_slice(&bytes).expect("the agent cannot read the hook's report");
    assert_eq!(r.vm, "web1");
    assert_eq!((r.op.as_str(), r.subop.as_str()), ("migrate", "begin"));
    assert_eq!(hookio::report_word(&r), "refused");
}
