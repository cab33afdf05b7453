//! Did the clients notice? Guests with a NIC on the guests' network and a
//! disk, a client pinging each every 20 ms and holding a TCP connection to
//! its echo port, and live migrations under it: each guest answers from
//! its new host, the connection survives, the disk counter carries on with
//! nothing lost, the destination announced the VM's MAC and the switch
//! follows it. Silences are printed, never judged (a shared noisy machine).

use std::time::Duration;

use rackside_lab::capture::{self, RarpWatch};
use rackside_lab::judge::{assert_clients_did_not_notice, assert_disk_carried_on};
use rackside_lab::probe::{Probe, ProbeTarget};
use rackside_lab::{names, smoke, GuestDisk, GuestSpec, Lab, LabSpec};

const T: Duration = Duration::from_secs(120);

fn target(g: &GuestSpec) -> ProbeTarget {
    ProbeTarget {
        guest: g.name.clone(),
        addr: g.net_addr.expect("a networked guest"),
    }
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn clients_do_not_notice_a_live_migration() {
    let lab = Lab::up(&LabSpec::new("clients", 3)).expect("lab up");
    let d = lab.desc().clone();
    let web = GuestSpec::new("web1", 32)
        .with_net(names::guest_addr(1))
        .with_disk(GuestDisk::Shared { mib: 16 });
    let db = GuestSpec::new("db1", 32)
        .with_net(names::guest_addr(2))
        .with_disk(GuestDisk::Shared { mib: 16 });
    std::thread::scope(|s| {
        for g in [&web, &db] {
            let lab = &lab;
            s.spawn(move || lab.start_guest("ha", g).expect("guest"));
        }
    });
    let before: Vec<u64> = [&web, &db]
        .iter()
        .map(|g| lab.wait_disk("ha", &g.name, 1, T).expect("disk counter"))
        .collect();

    let probe = Probe::start(&d.guest_net.client_netns, &[target(&web), target(&db)])
        .expect("client probe");
    let rarp = RarpWatch::start(&d.switch_netns).expect("capture");
    std::thread::sleep(Duration::from_secs(2));
    let mut moved_at = 0.0;
    for (g, dst) in [(&web, "hb"), (&db, "hc")] {
        let secs = smoke::virsh_migrate(&lab, "ha", dst, &g.name).expect("migrate");
        moved_at = probe.elapsed();
        eprintln!("{} ha -> {dst}: virsh migrate took {secs:.2} s", g.name);
    }
    for (g, dst) in [(&web, "hb"), (&db, "hc")] {
        lab.wait_tick(dst, &g.name, 0, T)
            .expect("ticks on the destination");
    }
    std::thread::sleep(Duration::from_secs(2));
    let seen = probe.finish();
    let frames = rarp.finish().expect("capture");

    let at = lab.assert_each_runs_once(&["web1", "db1"]);
    assert_eq!(at["web1"], "hb");
    assert_eq!(at["db1"], "hc");
    for p in &seen {
        assert_clients_did_not_notice(p, moved_at);
    }
    for (g, dst) in [(&web, "hb"), (&db, "hc")] {
        let port = &lab.host(dst).unwrap().guest_port;
        let mac = g.mac();
        let rarps = frames
            .iter()
            .filter(|f| f.src_mac == mac && f.incoming)
            .count();
        eprintln!(
            "{}: {rarps} RARP frame(s) from {mac} came in, on {:?}",
            g.name,
            frames
                .iter()
                .filter(|f| f.src_mac == mac && f.incoming)
                .map(|f| f.port.as_str())
                .collect::<std::collections::BTreeSet<_>>()
        );
        assert!(
            capture::saw_rarp(&frames, port, &mac),
            "{}: no RARP from {mac} on {port}: {frames:?}",
            g.name
        );
        let fdb = capture::fdb_port(&d.switch_netns, &d.guest_net.switch_bridge, &mac)
            .expect("bridge fdb");
        assert_eq!(fdb.as_deref(), Some(port.as_str()), "{}", g.name);
    }
    for (i, (g, dst)) in [(&web, "hb"), (&db, "hc")].into_iter().enumerate() {
        assert_disk_carried_on(&lab, g, "ha", dst, before[i]);
    }

    // A local disk goes along only with a storage copy: the guest itself
    // (qcow2 in the host's images directory) works and moves with one.
    let local = GuestSpec::new("loc1", 16)
        .with_net(names::guest_addr(3))
        .with_disk(GuestDisk::Local { mib: 16 });
    lab.start_guest("ha", &local).expect("local-disk guest");
    let before = lab.wait_disk("ha", "loc1", 1, T).expect("disk counter");
    let probe = Probe::start(&d.guest_net.client_netns, &[target(&local)]).expect("probe");
    std::thread::sleep(Duration::from_secs(1));
    let hb = lab.host("hb").unwrap().clone();
    let t0 = std::time::Instant::now();
    lab.virsh(
        "ha",
        &[
            "migrate",
            "--live",
            "--p2p",
            "--persistent",
            "--undefinesource",
            "--copy-storage-all",
            "loc1",
            &hb.uri,
            "--migrateuri",
            &hb.migrate_uri,
        ],
    )
    .expect("migrate with storage copy");
    let moved_at = probe.elapsed();
    eprintln!(
        "loc1 ha -> hb with --copy-storage-all: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    lab.wait_tick("hb", "loc1", 0, T).expect("ticks on hb");
    std::thread::sleep(Duration::from_secs(2));
    let seen = probe.finish();
    assert_eq!(lab.assert_runs_once("loc1"), "hb");
    assert_clients_did_not_notice(&seen[0], moved_at);
    assert!(
        hb.outside_path(&local.local_disk_in_host().unwrap())
            .exists(),
        "no image on hb"
    );
    assert_disk_carried_on(&lab, &local, "ha", "hb", before);

    lab.teardown().expect("teardown");
}
