//! The agent and rackside-hook are two binaries with one contract
//! (`rackside-contract`): the state the agent publishes (the hook admits
//! everything when it cannot read it, so a drift would silently let
//! migrations into a host in maintenance), the reports the hook sends, and
//! where both look for them. Each side's real code runs against the
//! other's, from the same configuration file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rackside_agent::config::Config;
use rackside_agent::events::Bus;
use rackside_agent::hookio::{self, Published, Report};
use rackside_hook::Env;

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn dir(tag: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("rackside-contract-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The agent's configuration with `[state]` pointing into `d`.
fn config(d: &Path) -> PathBuf {
    let path = d.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[host]\nname = \"kvm3\"\n[state]\ndir = \"{}\"\nrun_dir = \"{}\"\n",
            d.join("state").display(),
            d.join("run").display()
        ),
    )
    .unwrap();
    path
}

fn hook_env(config: &Path) -> Env {
    Env {
        force_qemu: true,
        config: Some(config.to_owned()),
        nft: Some(PathBuf::from("/nonexistent/nft")),
    }
}

/// The hook's whole program, as libvirt runs it: (exit code, stderr).
fn run_hook(env: &Env, args: &[&str]) -> (i32, String) {
    let argv: Vec<OsString> = std::iter::once("rackside-hook")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let xml = b"<domain><name>web1</name><uuid>6695eb01-f6a4-8304-79aa-97f2502e0001</uuid><memory unit='MiB'>64</memory></domain>";
    let code = rackside_hook::run(&argv, env, &xml[..], false, &mut out, &mut err);
    assert!(out.is_empty(), "the hook printed on stdout");
    (code, String::from_utf8(err).unwrap())
}

#[test]
fn both_sides_find_the_same_run_dir_in_the_same_file() {
    let d = dir("rundir");
    let cases = [
        ("default", String::new()),
        ("state dir only", "[state]\ndir = \"/srv/j\"\n".to_owned()),
        (
            "custom",
            format!("[state]\nrun_dir = \"{}\"\n", d.0.join("run").display()),
        ),
        ("dotted key", "state.run_dir = \"/srv/run\"\n".to_owned()),
        (
            "with every other section",
            include_str!("../../packaging/agent.toml").replace("#run_dir", "run_dir"),
        ),
    ];
    for (what, text) in cases {
        let path = d.0.join("agent.toml");
        std::fs::write(&path, &text).unwrap();
        let agent = Config::load(&path)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .state
            .run_dir;
        let hook = rackside_hook::locate_run_dir(&hook_env(&path))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(agent, hook, "{what}");
    }
    let path = d.0.join("agent.toml");
    std::fs::write(&path, "").unwrap();
    assert_eq!(
        rackside_hook::locate_run_dir(&hook_env(&path)).unwrap(),
        Path::new(rackside_contract::DEFAULT_RUN_DIR)
    );
    // What the agent refuses to start with, the hook does not guess at.
    std::fs::write(&path, "[state]\nrun_dir = \"run\"\n").unwrap();
    assert!(Config::load(&path).is_err());
    assert!(rackside_hook::locate_run_dir(&hook_env(&path)).is_err());
    // Both default to the same file.
    assert_eq!(
        rackside_agent::cli::DEFAULT_CONFIG,
        rackside_contract::DEFAULT_CONFIG
    );
}

#[test]
fn the_hook_refuses_by_what_the_agent_publishes_where_its_config_says() {
    let d = dir("publish");
    let path = config(&d.0);
    let cfg = Config::load(&path).unwrap();
    let now = now();
    let mut p = Published {
        host: Some(cfg.host_name()),
        state: "maintenance".into(),
        maintenance: true,
        mem_total_mib: 8192,
        mem_committed_mib: 1024,
        mem_reserve_mib: 512,
        updated_unix: now,
        health: None,
        health_reasons: Vec::new(),
    };
    hookio::publish(&cfg.state.run_dir, &p).unwrap();
    let seen = rackside_hook::state::load(&cfg.state.run_dir, now)
        .expect("the hook cannot read the agent's state");
    assert_eq!(seen, p);
    assert!(seen.in_maintenance());
    assert_eq!(seen.free_mib(), 8192 - 1024 - 512);

    let (code, err) = run_hook(&hook_env(&path), &["web1", "migrate", "begin", "-"]);
    assert_eq!(code, 1);
    // Named as the agent is named, not by the machine's hostname.
    assert_eq!(err, "rackside: kvm3 is in maintenance; not accepting VM\n");

    // Out of maintenance but full: the memory figures are read as meant.
    p.state = "active".into();
    p.maintenance = false;
    p.mem_total_mib = 1024 + 512 + 63;
    hookio::publish(&cfg.state.run_dir, &p).unwrap();
    let (code, err) = run_hook(&hook_env(&path), &["web1", "migrate", "begin", "-"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "rackside: kvm3 has 63 MiB free for VMs, VM needs 64 MiB\n"
    );

    // Published longer ago than the contract's staleness limit: admitted.
    p.maintenance = true;
    p.updated_unix = now - rackside_contract::STALE_AFTER.as_secs() - 60;
    hookio::publish(&cfg.state.run_dir, &p).unwrap();
    assert_eq!(
        run_hook(&hook_env(&path), &["web1", "migrate", "begin", "-"]).0,
        0
    );
}

#[tokio::test]
async fn the_agent_hears_the_hook_where_its_config_says() {
    let d = dir("report");
    let path = config(&d.0);
    let cfg = Config::load(&path).unwrap();
    let bus = Bus::new();
    let mut rx = bus.subscribe();
    let stop = Arc::new(AtomicBool::new(false));
    let listener = hookio::spawn_listener(&cfg.state.run_dir, bus, stop.clone()).unwrap();

    let (code, _) = run_hook(&hook_env(&path), &["web1", "stopped", "end", "-"]);
    assert_eq!(code, 0);
    let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no report from the hook")
        .unwrap();
    let data = serde_json::to_value(&e.data).unwrap();
    assert_eq!(data["vm"], "web1");
    assert_eq!(data["what"], "stopped");
    assert_eq!(data["uuid"], "6695eb01-f6a4-8304-79aa-97f2502e0001");
    assert_eq!(data["source"], "hook");
    stop.store(true, Ordering::Relaxed);
    listener.join().unwrap();
}

#[test]
fn one_report_type_both_ways() {
    let r = Report {
        vm: "web1".into(),
        uuid: Some("6695eb01-f6a4-8304-79aa-97f2502e0001".into()),
        op: "migrate".into(),
        subop: "begin".into(),
        extra: "-".into(),
        refused: Some("rackside: hb is in maintenance; not accepting VM".into()),
    };
    assert_eq!(Report::decode(&r.encode()).unwrap(), r);
    assert_eq!(hookio::report_word(&r), "refused");
    assert!(r.encode().len() <= rackside_contract::MAX_DATAGRAM);
}
