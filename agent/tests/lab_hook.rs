//! rackside-hook in every lab host's qemu.d, real libvirtd, real nftables
//! in each host's namespace, agents where a test needs them.
//! Needs root: run by `make test-lab`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rackside_lab::agent::LineAgent;
use rackside_lab::health::{self, put, ErrorStream};
use rackside_lab::{smoke, GuestSpec, Lab, LabSpec, Sampler};
use serde_json::json;

const AGENT: &str = env!("CARGO_BIN_EXE_rackside-agent");
const T: Duration = Duration::from_secs(20);

/// rackside-hook is built beside the agent (`make build` builds both).
fn hook_binary() -> PathBuf {
    let p = Path::new(AGENT).with_file_name("rackside-hook");
    assert!(
        p.exists(),
        "{} missing: build the workspace first (make build)",
        p.display()
    );
    p
}

/// An agent on `host`, its files in the lab's `agent-HOST`.
fn start_agent(lab: &Lab, host: &str, extra: &str) -> LineAgent {
    let dir = lab.desc().dir.join(format!("agent-{host}"));
    LineAgent::start(lab, host, Path::new(AGENT), &dir, extra)
}

/// Running exactly once (see rackside_lab::whereabouts): the host.
fn runs_once_on(lab: &Lab, vm: &str) -> String {
    lab.assert_runs_once(vm)
}

fn migrate_virsh(lab: &Lab, vm: &str, from: &str, to: &str) -> Result<(), String> {
    smoke::virsh_migrate(lab, from, to, vm)
        .map(|_| ())
        .map_err(|e| {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(x) = src {
                s.push_str(&format!(": {x}"));
                src = x.source();
            }
            s
        })
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn a_host_in_maintenance_refuses_and_the_evacuation_goes_elsewhere() {
    // hb is big and empty, so placement prefers it; hc is small and busy.
    let spec = LabSpec::new("hookm", 3)
        .with_mem("hb", 8192)
        .with_mem("hc", 2048)
        .with_hook(&hook_binary());
    let lab = Lab::up(&spec).expect("lab up");
    lab.start_guest("ha", &GuestSpec::new("m1", 16)).unwrap();
    lab.start_guest("ha", &GuestSpec::new("m2", 16)).unwrap();
    lab.start_guest("hc", &GuestSpec::new("h1", 8)).unwrap();
    let mut hb = start_agent(&lab, "hb", "");
    hb.req("subscribe", json!({}));
    let watch = Sampler::start(&lab, &["m1", "m2", "h1"]);

    // The hook on the destination reports an arrival to its agent.
    migrate_virsh(&lab, "m1", "ha", "hb").expect("migration into hb");
    let e = hb
        .line
        .expect_event("vm.state", T, |e| {
            e["data"]["source"] == "hook" && e["data"]["vm"] == "m1"
        })
        .unwrap_or_else(|e| panic!("no hook report: {e}\n{}", hb.agent.log_text()));
    assert!(
        ["incoming", "preparing", "starting", "started"]
            .contains(&e["data"]["what"].as_str().unwrap()),
        "{e}"
    );

    // hb goes into maintenance: a migration into it is refused at hb, and
    // the VM keeps running at home.
    assert_eq!(hb.req("maintenance", json!({"on": true}))["ok"], true);
    published(&lab, "hb", |v| v["maintenance"] == true);
    let err =
        migrate_virsh(&lab, "m2", "ha", "hb").expect_err("hb admitted a migration in maintenance");
    assert!(err.contains("maintenance"), "{err}");
    assert_eq!(runs_once_on(&lab, "m2"), "ha");

    // An evacuation of ha first tries hb (the emptier), is refused, and
    // moves m2 to hc instead.
    let mut ha = start_agent(&lab, "ha", "[placement]\nmem_reserve_mib = 256\n");
    let plan = ha.req("plan", json!({}));
    assert_eq!(plan["data"]["moves"][0]["dest"], "hb", "{plan}");
    ha.req("subscribe", json!({}));
    assert_eq!(ha.req("evacuate", json!({}))["ok"], true);
    let failed = ha
        .line
        .expect_event("migration.failed", Duration::from_secs(120), |_| true)
        .unwrap_or_else(|e| panic!("{e}\n{}", ha.agent.log_text()));
    assert!(
        failed["data"]["error"]
            .as_str()
            .unwrap()
            .contains("maintenance"),
        "{failed}"
    );
    assert_eq!(failed["data"]["now_on"], "ha");
    let done = ha
        .line
        .expect_event("evacuation.done", Duration::from_secs(180), |_| true)
        .unwrap_or_else(|e| panic!("{e}\n{}", ha.agent.log_text()));
    assert_eq!(done["data"]["safe_to_power_off"], true, "{done}");
    lab.assert_verdict_true("ha", &done["data"]);
    let at = watch.finish().assert_clean();
    assert_eq!(at["m2"], "hc");
    assert_eq!(runs_once_on(&lab, "m2"), "hc");
    assert_eq!(runs_once_on(&lab, "m1"), "hb");
    ha.agent.stop();
    hb.agent.stop();
    lab.teardown().expect("teardown");
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn two_migrations_into_room_for_one_admit_exactly_one() {
    // hb: 1536 MiB, its agent keeps 1024 in reserve: room for one 300 MiB VM.
    let spec = LabSpec::new("hookr", 2)
        .with_mem("hb", 1536)
        .with_hook(&hook_binary());
    let lab = Lab::up(&spec).expect("lab up");
    for n in ["r1", "r2"] {
        let mut g = GuestSpec::new(n, 16);
        g.mem_mib = 300;
        lab.start_guest("ha", &g).unwrap();
    }
    let mut hb = start_agent(&lab, "hb", "[placement]\nmem_reserve_mib = 1024\n");
    published(&lab, "hb", |v| v["mem_total_mib"] == 1536);
    let watch = Sampler::start(&lab, &["r1", "r2"]);
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let a = s.spawn(|| migrate_virsh(&lab, "r1", "ha", "hb"));
        let b = s.spawn(|| migrate_virsh(&lab, "r2", "ha", "hb"));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 1, "{results:?}");
    let refusal = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!(refusal.contains("free"), "{refusal}");
    watch.finish().assert_clean();
    let on_hb: Vec<String> = ["r1", "r2"].iter().map(|v| runs_once_on(&lab, v)).collect();
    assert_eq!(on_hb.iter().filter(|h| *h == "hb").count(), 1, "{on_hb:?}");
    hb.req("status", json!({}));
    hb.agent.stop();
    lab.teardown().expect("teardown");
}

fn nft(lab: &Lab, host: &str, args: &[&str]) -> String {
    let out = lab.exec(host, "nft").unwrap().args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nft_tables(lab: &Lab, host: &str) -> String {
    nft(lab, host, &["list", "tables"])
}

/// The VM's policy tables' name, from its UUID as libvirt reports it.
fn policy_table(lab: &Lab, host: &str, vm: &str) -> String {
    let uuid = lab.virsh(host, &["domuuid", vm]).unwrap();
    let uuid = rackside_hook::policy::parse_uuid(uuid.trim()).unwrap();
    rackside_hook::ruleset::table_name(&uuid)
}

/// The VM's first tap on `host`, as libvirt names it there.
fn tap_of(lab: &Lab, host: &str, vm: &str) -> String {
    let list = lab.virsh(host, &["domiflist", vm]).unwrap();
    // With or without virsh's header (`Interface  Type ...`, dashes).
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .find(|w| *w != "Interface" && !w.starts_with('-'))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no interface in {list}"))
}

/// Both of the VM's tables are on `host` and filter the tap it has there.
fn assert_policy_on(lab: &Lab, host: &str, table: &str, tap: &str) {
    let tables = nft_tables(lab, host);
    for family in ["bridge", "inet"] {
        assert!(
            tables.contains(&format!("table {family} {table}\n")),
            "no {family} policy table on {host}: {tables}"
        );
        let t = nft(lab, host, &["list", "table", family, table]);
        assert!(t.contains(&format!("oifname \"{tap}\"")), "{t}");
    }
}

#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn network_policy_and_nwfilters_follow_the_vm_and_no_agent_is_needed() {
    let spec = LabSpec::new("hookp", 3).with_hook(&hook_binary());
    let lab = Lab::up(&spec).expect("lab up");
    // A filter only ha knows.
    let filter = lab.desc().dir.join("rs-web-filter.xml");
    std::fs::write(
        &filter,
        "<filter name='rs-web-allow' chain='root'><rule action='accept' direction='inout' priority='500'><all/></rule></filter>",
    )
    .unwrap();
    lab.virsh("ha", &["nwfilter-define", &filter.to_string_lossy()])
        .unwrap();
    assert!(lab
        .virsh("hb", &["nwfilter-dumpxml", "rs-web-allow"])
        .is_err());
    let mut g = GuestSpec::new("web", 16);
    g.nic = true;
    g.filterref = Some("rs-web-allow".into());
    g.metadata = Some(
        "<rs:policy xmlns:rs='https://rackside.dev/xmlns/policy/1'><rs:allow proto='tcp' port='22' from='10.0.0.0/8'/><rs:allow proto='icmp'/></rs:policy>"
            .into(),
    );
    lab.start_guest("ha", &g).unwrap();
    let table = policy_table(&lab, "ha", "web");
    assert_policy_on(&lab, "ha", &table, &tap_of(&lab, "ha", "web"));
    assert!(!nft_tables(&lab, "hb").contains(&table));

    // The agent on ha moves it to hb: the filter is defined there first.
    let mut ha = start_agent(&lab, "ha", "[placement]\nmem_reserve_mib = 256\n");
    ha.req("subscribe", json!({}));
    let watch = Sampler::start(&lab, &["web", "late"]);
    let r = ha.req("migrate", json!({"vm": "web", "dest": "hb"}));
    assert_eq!(r["ok"], true, "{r}");
    let done = ha
        .line
        .expect_line(Duration::from_secs(120), |l| {
            l.contains("\"migration.done\"") || l.contains("\"migration.failed\"")
        })
        .unwrap();
    assert!(
        done.contains("migration.done"),
        "{done}\n{}",
        ha.agent.log_text()
    );
    assert_eq!(runs_once_on(&lab, "web"), "hb");
    assert!(
        lab.virsh("hb", &["nwfilter-dumpxml", "rs-web-allow"])
            .is_ok(),
        "filter not copied"
    );
    assert_policy_on(&lab, "hb", &table, &tap_of(&lab, "hb", "web"));
    assert!(
        !nft_tables(&lab, "ha").contains(&table),
        "policy left behind: {}",
        nft_tables(&lab, "ha")
    );

    // With the agent stopped (and none ever on hc), guests still start and
    // migrate normally: the hook admits when no agent speaks for a host.
    ha.agent.stop();
    lab.start_guest("ha", &GuestSpec::new("late", 8))
        .expect("a guest starts without the agent");
    migrate_virsh(&lab, "late", "ha", "hc").expect("migration into a host without an agent");
    // Without an agent nobody copies nwfilters: an administrator using
    // virsh defines it on hc first, as libvirt demands.
    lab.virsh("hc", &["nwfilter-define", &filter.to_string_lossy()])
        .unwrap();
    migrate_virsh(&lab, "web", "hb", "hc").expect("migration with a policy into hc");
    let at = watch.finish().assert_clean();
    assert_eq!((at["late"].as_str(), at["web"].as_str()), ("hc", "hc"));
    assert_eq!(runs_once_on(&lab, "late"), "hc");
    assert_eq!(runs_once_on(&lab, "web"), "hc");
    assert_policy_on(&lab, "hc", &table, &tap_of(&lab, "hc", "web"));
    assert!(!nft_tables(&lab, "hb").contains(&table));
    lab.teardown().expect("teardown");
}

/// Runs `sh -c script` in a lab host's network and mount namespaces.
fn in_host(lab: &Lab, host: &str, script: &str) {
    let out = lab
        .exec(host, "sh")
        .unwrap()
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until what the agent on `host` publishes for its hook (what
/// admission is decided from) satisfies `pred`.
fn published(lab: &Lab, host: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    health::wait_published(lab, host, T, pred).unwrap();
}

/// hb's health comes from a sysfs tree of its own: EDAC counters from
/// fixture files, and `class/net` from a sysfs mounted inside hb's network
/// namespace, where a real veth is taken down and up again.
#[test]
#[ignore = "lab: needs root, libvirtd and QEMU (make test-lab)"]
fn an_unhealthy_host_refuses_incoming_migrations_until_it_recovers() {
    let spec = LabSpec::new("hookh", 2).with_hook(&hook_binary());
    let lab = Lab::up(&spec).expect("lab up");
    lab.start_guest("ha", &GuestSpec::new("m1", 8)).unwrap();
    let root = lab.desc().dir.join("hb-health");
    let sys = lab.desc().dir.join("hb-sys");
    let mc = root.join("devices/system/edac/mc/mc0");
    put(&mc.join("ce_count"), "7");
    put(&mc.join("ue_count"), "2");
    std::fs::create_dir_all(root.join("class")).unwrap();
    std::os::unix::fs::symlink(sys.join("class/net"), root.join("class/net")).unwrap();
    in_host(
        &lab,
        "hb",
        &format!(
            "mkdir -p {s} && mount -t sysfs sysfs {s} && \
             ip link add rsl0 type veth peer name rsl1 && \
             ip link set rsl0 up && ip link set rsl1 up",
            s = sys.display()
        ),
    );
    let extra = format!(
        "[health]\nsysfs_root = \"{}\"\nperiod_s = 1\nhold_s = 3\nlinks = [\"rsl0\"]\n",
        root.display()
    );
    let mut hb = start_agent(&lab, "hb", &extra);
    // Errors counted before the agent started are history, not news.
    let st = hb.req("status", json!({}));
    assert_eq!(st["data"]["health"], "ok", "{st}");
    hb.req("subscribe", json!({}));

    // Two new uncorrected memory errors: faulty, and nothing comes in.
    put(&mc.join("ue_count"), "4");
    let e = hb
        .line
        .expect_event("host.health", T, |e| e["data"]["health"] == "faulty")
        .unwrap_or_else(|e| panic!("{e}\n{}", hb.agent.log_text()));
    let why = e["data"]["reasons"][0].as_str().unwrap().to_owned();
    assert!(
        why.starts_with("mc0: 2 uncorrected memory errors in the last"),
        "{e}"
    );
    // More keep coming while the migration is tried: one error alone is
    // forgotten after the hold time, however slow the machine.
    let errors = ErrorStream::start(mc.join("ue_count"), 4);
    published(&lab, "hb", |v| v["health"] == "faulty");
    let err = migrate_virsh(&lab, "m1", "ha", "hb").expect_err("a faulty host admitted a VM");
    assert!(
        err.contains("hb is faulty") && err.contains("uncorrected"),
        "{err}"
    );
    assert_eq!(runs_once_on(&lab, "m1"), "ha");
    // No new errors: ok again once the hold time has passed.
    errors.stop();
    hb.line
        .expect_event("host.health", T, |e| e["data"]["health"] == "ok")
        .unwrap_or_else(|e| panic!("{e}\n{}", hb.agent.log_text()));

    // The link goes down: degraded, refused; it comes back: ok, admitted.
    in_host(&lab, "hb", "ip link set rsl1 down");
    let e = hb
        .line
        .expect_event("host.health", T, |e| e["data"]["health"] == "degraded")
        .unwrap_or_else(|e| panic!("{e}\n{}", hb.agent.log_text()));
    // The kernel's word for a veth whose peer is down (lowerlayerdown).
    let why = e["data"]["reasons"][0].as_str().unwrap();
    assert!(
        why.starts_with("link rsl0 is ") && !why.ends_with(" up"),
        "{e}"
    );
    let st = hb.req("status", json!({}));
    assert_eq!(st["data"]["health"], "degraded", "{st}");
    published(&lab, "hb", |v| v["health"] == "degraded");
    let err = migrate_virsh(&lab, "m1", "ha", "hb").expect_err("a degraded host admitted a VM");
    assert!(err.contains("hb is degraded"), "{err}");
    assert_eq!(runs_once_on(&lab, "m1"), "ha");
    in_host(&lab, "hb", "ip link set rsl1 up");
    hb.line
        .expect_event("host.health", T, |e| e["data"]["health"] == "ok")
        .unwrap_or_else(|e| panic!("{e}\n{}", hb.agent.log_text()));
    published(&lab, "hb", |v| v["health"] == "ok");
    migrate_virsh(&lab, "m1", "ha", "hb").expect("a sound host admits the VM again");
    assert_eq!(runs_once_on(&lab, "m1"), "hb");

    hb.agent.stop();
    in_host(&lab, "hb", &format!("umount {}", sys.display()));
    lab.teardown().expect("teardown");
}
