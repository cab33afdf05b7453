//! `make lab-smoke`: two lab hosts, one guest with 64 MiB of random data,
//! live-migrated peer to peer with virsh. Needs root and the lab packages:
//! ignored by plain `cargo test`, run by `make test`.

use rackside_lab::{smoke, Lab, LabSpec, Sampler};

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make lab-smoke)"]
fn live_migration_between_lab_hosts() {
    let lab = Lab::up(&LabSpec::new("smoke", 2)).expect("lab up");
    // Watched from before it exists until after it moved: never on two
    // hosts outside the migration's own pause, never left paused.
    let watch = Sampler::start(&lab, &["smoke1"]);
    let obs = smoke::run(&lab, "ha", "hb", "smoke1", 64, &mut std::io::stderr()).expect("scenario");
    let at = watch.finish().assert_clean();
    assert_eq!(at["smoke1"], "hb");
    assert_eq!(lab.assert_runs_once("smoke1"), "hb");

    assert_eq!(obs.state_on_dst.as_deref(), Some("running"), "{obs:?}");
    assert!(
        obs.persistent_on_dst,
        "not persistent on the destination: {obs:?}"
    );
    assert!(!obs.defined_on_src, "still defined on the source: {obs:?}");
    assert_eq!(obs.qemu_on_src, 0, "a QEMU is left on the source: {obs:?}");
    assert_eq!(
        obs.qemu_on_dst, 1,
        "not exactly one QEMU on the destination: {obs:?}"
    );
    // The tick counter lives in guest memory: the destination carries on
    // from where the source was, it does not start again at 1.
    let first = obs.first_tick_on_dst.expect("no tick on the destination");
    assert!(
        first > obs.tick_before,
        "guest restarted instead of moving: {obs:?}"
    );
    let later = obs.tick_later.expect("ticks stopped after the move");
    assert!(later > first, "{obs:?}");
    if let Some(mib) = obs.data_mib {
        assert!(
            mib >= 64.0,
            "only {mib} MiB moved for 64 MiB of random data"
        );
    }

    lab.teardown().expect("teardown");
}
