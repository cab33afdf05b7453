//! The built binary, run as libvirt runs it: arguments, domain XML on
//! stdin, a run directory with the agent's state file, and a fake `nft`
//! that records what it was asked to do. Needs no root and no libvirt.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_rackside-hook");

struct RunDir(PathBuf);

impl RunDir {
    fn new(tag: &str) -> RunDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "rackside-hook-it-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let nft = d.join("fake-nft");
        let log = d.join("nft.log");
        std::fs::write(
            &nft,
            format!(
                "#!/bin/sh\necho \"ARGS: $*\" >> '{log}'\nif [ \"$1\" = \"-f\" ]; then cat >> '{log}'; fi\nexit 0\n",
                log = log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o755)).unwrap();
        // The hook finds the run directory where the agent does: in the
        // agent's configuration.
        std::fs::write(
            d.join("agent.toml"),
            format!("[state]\nrun_dir = \"{}\"\n", d.display()),
        )
        .unwrap();
        RunDir(d)
    }

    fn config(&self) -> PathBuf {
        self.0.join("agent.toml")
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn state(&self, state: &str, maintenance: bool, total: u64, committed: u64, reserve: u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        std::fs::write(
            self.0.join("state.json"),
            format!(
                r#"{{"state":"{state}","maintenance":{maintenance},"mem_total_mib":{total},"mem_committed_mib":{committed},"mem_reserve_mib":{reserve},"updated_unix":{now}}}"#
            ),
        )
        .unwrap();
    }

    fn nft_log(&self) -> String {
        std::fs::read_to_string(self.0.join("nft.log")).unwrap_or_default()
    }

    /// Runs the hook as a forced qemu hook.
    fn hook(&self, args: &[&str], stdin: &[u8]) -> Output {
        self.run(Path::new(BIN), true, args, stdin)
    }

    fn run(&self, program: &Path, force: bool, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_remove("RACKSIDE_HOOK_FORCE_QEMU")
            .env("RACKSIDE_HOOK_CONFIG", self.config())
            .env("RACKSIDE_NFT", self.0.join("fake-nft"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if force {
            cmd.env("RACKSIDE_HOOK_FORCE_QEMU", "1");
        }
        let mut child = cmd.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A UUID per name, as libvirt gives each VM its own.
fn uuid_of(name: &str) -> String {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("00000000-0000-4000-8000-{:012x}", h & 0xffff_ffff_ffff)
}

fn table_of(name: &str) -> String {
    rackside_hook::ruleset::table_name(&rackside_hook::policy::parse_uuid(&uuid_of(name)).unwrap())
}

fn domain(name: &str, mem_mib: u64) -> Vec<u8> {
    format!(
        r#"<domain type='kvm'>
  <name>{name}</name>
  <uuid>{}</uuid>
  <memory unit='MiB'>{mem_mib}</memory>
  <metadata>
    <rs:policy xmlns:rs="https://rackside.dev/xmlns/policy/1">
      <rs:allow proto="tcp" port="22" from="10.0.0.0/8"/>
      <rs:allow proto="udp" port="53"/>
      <rs:allow proto="icmp"/>
    </rs:policy>
  </metadata>
  <devices>
    <interface type='bridge'><target dev='vnet3'/></interface>
  </devices>
</domain>"#,
        uuid_of(name)
    )
    .into_bytes()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn maintenance_refuses_with_reason_on_stderr_only() {
    let d = RunDir::new("maint");
    d.state("maintenance", true, 65536, 0, 0);
    let o = d.hook(&["web1", "migrate", "begin", "-"], &domain("web1", 512));
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let err = stderr(&o);
    assert!(
        err.starts_with("rackside: ") && err.ends_with(" is in maintenance; not accepting VM\n"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn admission_prints_nothing() {
    let d = RunDir::new("admit");
    d.state("active", false, 65536, 0, 0);
    let o = d.hook(&["web1", "migrate", "begin", "-"], &domain("web1", 512));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
}

#[test]
fn two_vms_with_room_for_one() {
    let d = RunDir::new("room");
    d.state("active", false, 2000, 700, 300); // 1000 MiB free
    let a = d.hook(&["a", "migrate", "begin", "-"], &domain("a", 600));
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    let b = d.hook(&["b", "migrate", "begin", "-"], &domain("b", 600));
    assert_eq!(b.status.code(), Some(1));
    assert!(b.stdout.is_empty());
    assert!(
        stderr(&b).ends_with(" has 400 MiB free for VMs, VM needs 600 MiB\n"),
        "{}",
        stderr(&b)
    );
}

#[test]
fn concurrent_admissions_take_the_last_room_once() {
    let d = RunDir::new("race");
    d.state("active", false, 2000, 700, 300); // room for one 600 MiB VM
    let names: Vec<String> = (0..8).map(|i| format!("vm{i}")).collect();
    let codes: Vec<Option<i32>> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                let d = &d;
                s.spawn(move || {
                    d.hook(&[n, "migrate", "begin", "-"], &domain(n, 600))
                        .status
                        .code()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        codes.iter().filter(|c| **c == Some(0)).count(),
        1,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == Some(1)).count(),
        7,
        "{codes:?}"
    );
}

#[test]
fn reports_reach_the_agent_socket() {
    let d = RunDir::new("sock");
    d.state("maintenance", true, 1, 0, 0);
    let rx = UnixDatagram::bind(d.path().join("hook.sock")).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let o = d.hook(&["web1", "migrate", "begin", "-"], &domain("web1", 1));
    assert_eq!(o.status.code(), Some(1));
    let mut buf = [0u8; 65536];
    let n = rx.recv(&mut buf).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
    assert_eq!(v["vm"], "web1");
    assert_eq!(v["uuid"], uuid_of("web1"));
    assert_eq!(v["op"], "migrate");
    assert_eq!(v["subop"], "begin");
    assert_eq!(v["extra"], "-");
    assert!(v["refused"].as_str().unwrap().contains("maintenance"));

    let o = d.hook(&["web1", "release", "end", "-"], b"not xml");
    assert_eq!(o.status.code(), Some(0));
    let n = rx.recv(&mut buf).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
    assert_eq!(v["op"], "release");
    assert_eq!(v["uuid"], serde_json::Value::Null);
    assert_eq!(v["refused"], serde_json::Value::Null);
}

#[test]
fn started_loads_a_ruleset_and_release_deletes_it() {
    let d = RunDir::new("nft");
    let o = d.hook(&["web1", "started", "begin", "-"], &domain("web1", 1));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{}", stderr(&o));
    let log = d.nft_log();
    let table = table_of("web1");
    let removal = format!(
        "table bridge {table} {{}}\ndelete table bridge {table}\ntable inet {table} {{}}\ndelete table inet {table}\n"
    );
    assert!(
        log.starts_with(&format!(
            "ARGS: -f -\n{removal}table bridge {table} {{\n\tcomment \"rackside vm {}\"\n",
            uuid_of("web1")
        )),
        "{log}"
    );
    assert!(log.contains("oifname { \"vnet3\" } jump guest"), "{log}");
    assert!(
        log.contains("ip saddr 10.0.0.0/8 tcp dport 22 accept"),
        "{log}"
    );

    let o = d.hook(&["web1", "release", "end", "-"], &domain("web1", 1));
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    assert!(
        d.nft_log().ends_with(&format!("ARGS: -f -\n{removal}")),
        "{}",
        d.nft_log()
    );
}

#[test]
fn failing_nft_is_logged_and_exits_zero() {
    let d = RunDir::new("nftfail");
    std::fs::write(
        d.path().join("fake-nft"),
        "#!/bin/sh\ncat >/dev/null\necho 'Error: nope' >&2\nexit 1\n",
    )
    .unwrap();
    let o = d.hook(&["web1", "started", "begin", "-"], &domain("web1", 1));
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("cannot load policy: nft failed (exit status: 1): Error: nope"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn garbage_and_oversized_stdin() {
    let d = RunDir::new("garbage");
    d.state("active", false, 65536, 0, 0);
    for input in [&b"\xff\xfe garbage <<<"[..], b"", b"<domain><memory>1"] {
        for (op, sub) in [
            ("started", "begin"),
            ("release", "end"),
            ("reconnect", "begin"),
        ] {
            let o = d.hook(&["web1", op, sub, "-"], input);
            assert_eq!(o.status.code(), Some(0), "{op} {sub}: {}", stderr(&o));
            assert!(o.stdout.is_empty());
        }
        // The agent speaks for this host: what cannot be measured is
        // refused, with the reason on stderr, nothing on stdout.
        let o = d.hook(&["web1", "migrate", "begin", "-"], input);
        assert_eq!(o.status.code(), Some(1));
        assert!(o.stdout.is_empty());
        let err = stderr(&o);
        assert!(
            err.starts_with("rackside: ")
                && err.contains(" cannot read the incoming domain XML (")
                && err.ends_with("); not accepting VM\n")
                && err.lines().count() == 1,
            "{err}"
        );
    }
    assert_eq!(d.nft_log(), "", "no table touched without a UUID");
    // Beyond 4 MiB: read to the end, refused as unreadable.
    let mut big = domain("web1", 1);
    big.resize(5 << 20, b' ');
    let o = d.hook(&["web1", "migrate", "begin", "-"], &big);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("larger than 4194304 bytes"),
        "{}",
        stderr(&o)
    );
    // The same XML under the cap is read and admitted.
    let o = d.hook(&["web1", "migrate", "begin", "-"], &domain("web1", 1));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Without an agent's state, unreadable XML is admitted as before.
    std::fs::remove_file(d.path().join("state.json")).unwrap();
    let o = d.hook(&["web1", "migrate", "begin", "-"], b"garbage");
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
}

#[test]
fn a_promise_that_cannot_be_written_refuses() {
    let d = RunDir::new("nopromise");
    d.state("active", false, 65536, 0, 0);
    std::fs::create_dir(d.path().join("promises.lock")).unwrap();
    let o = d.hook(&["web1", "migrate", "begin", "-"], &domain("web1", 512));
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let err = stderr(&o);
    assert!(
        err.contains(" cannot promise room to the VM (cannot open promises.lock")
            && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn stale_state_admits() {
    let d = RunDir::new("stale");
    std::fs::write(
        d.path().join("state.json"),
        r#"{"state":"maintenance","maintenance":true,"mem_total_mib":1,"mem_committed_mib":1,"mem_reserve_mib":1,"updated_unix":1000}"#,
    )
    .unwrap();
    let o = d.hook(&["web1", "migrate", "begin", "-"], &domain("web1", 4096));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
}

#[test]
fn missing_run_dir_admits() {
    let d = RunDir::new("norun");
    std::fs::write(
        d.config(),
        format!(
            "[state]\nrun_dir = \"{}\"\n",
            d.path().join("absent").display()
        ),
    )
    .unwrap();
    let o = d.hook(&["web1", "migrate", "begin", "-"], &domain("web1", 4096));
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
}

#[test]
fn an_unreadable_config_admits_and_says_so() {
    let d = RunDir::new("badcfg");
    d.state("maintenance", true, 1, 0, 0);
    std::fs::write(d.config(), "[state]\nrun_dir = ").unwrap();
    let o = d.hook(&["web1", "migrate", "begin", "-"], &domain("web1", 1));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
    let o = d.hook(&["web1", "started", "begin", "-"], &domain("web1", 1));
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty());
    let err = stderr(&o);
    assert!(
        err.contains("agent.toml") && err.contains("admitting"),
        "{err}"
    );
    // The policy is still applied.
    assert!(d.nft_log().contains("table inet"), "{}", d.nft_log());
}

#[test]
fn only_qemu_invocations_act() {
    let d = RunDir::new("argv0");
    d.state("maintenance", true, 1, 0, 0);
    // Not a qemu hook: nothing happens, even in maintenance.
    let o = d.run(
        Path::new(BIN),
        false,
        &["web1", "migrate", "begin", "-"],
        &domain("web1", 1),
    );
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
    // Too few arguments.
    let o = d.hook(&["web1", "migrate"], b"");
    assert_eq!(o.status.code(), Some(0));
    // Installed in a qemu.d directory: acts.
    let hooks = d.path().join("qemu.d");
    std::fs::create_dir(&hooks).unwrap();
    std::os::unix::fs::symlink(BIN, hooks.join("50-rackside")).unwrap();
    let o = d.run(
        &hooks.join("50-rackside"),
        false,
        &["web1", "migrate", "begin", "-"],
        &domain("web1", 1),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // In some other hook directory: ignored.
    let other = d.path().join("network.d");
    std::fs::create_dir(&other).unwrap();
    std::os::unix::fs::symlink(BIN, other.join("50-rackside")).unwrap();
    let o = d.run(
        &other.join("50-rackside"),
        false,
        &["web1", "migrate", "begin", "-"],
        &domain("web1", 1),
    );
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn help_and_version() {
    let o = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("rackside-hook VM OPERATION"));
    let o = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("rackside-hook "));
}

#[test]
fn a_thousand_starts_with_a_big_domain() {
    let d = RunDir::new("many");
    // A heavy but plausible domain: 64 interfaces, a 200-rule policy and
    // some 200 KiB of other devices.
    let mut x = String::from(
        "<domain type='kvm'><name>big</name><uuid>11111111-2222-3333-4444-555555555555</uuid><memory unit='GiB'>8</memory><metadata><rs:policy xmlns:rs=\"https://rackside.dev/xmlns/policy/1\">",
    );
    for i in 0..200 {
        x.push_str(&format!(
            "<rs:allow proto='tcp' port='{}' from='10.{}.0.0/16'/>",
            1000 + i,
            i
        ));
    }
    x.push_str("</rs:policy></metadata><devices>");
    for i in 0..64 {
        x.push_str(&format!("<interface type='bridge'><mac address='52:54:00:00:00:{i:02x}'/><source bridge='br0'/><target dev='vnet{i}'/><model type='virtio'/></interface>"));
    }
    while x.len() < 200 << 10 {
        x.push_str("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/a.qcow2'/><target dev='vda' bus='virtio'/></disk>");
    }
    x.push_str("</devices></domain>");
    // The fake nft only swallows its input here.
    std::fs::write(d.path().join("fake-nft"), "#!/bin/sh\ncat >/dev/null\n").unwrap();

    let runs = 100;
    let t = Instant::now();
    for _ in 0..runs {
        let o = d.hook(&["big", "started", "begin", "-"], x.as_bytes());
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
    let mean = t.elapsed() / runs;
    eprintln!("rackside-hook: started begin with {} KiB of XML: {mean:?} per run (including the fake nft)", x.len() >> 10);
}
