//! `rackside-lab bench-console`: the agent's cost at rest and the size and
//! speed of its answers, with 200 domains on libvirt's test driver (real
//! libvirt, no guests: the figures are the agent's own, not QEMU's).
//!
//! `rackside-lab bench-evacuate`: a host emptied of four guests by virsh
//! loops and by rackside, with shared then local disks, timed and watched
//! by the guests' clients.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::pty::PtyLine;

fn node_xml(n: usize) -> String {
    let mut x = String::from("<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>32</cores><threads>1</threads></cpu><memory>536870912</memory>");
    for i in 0..n {
        x.push_str(&format!(
            "<domain type='test'><name>bench-vm-{i:03}</name><memory unit='MiB'>{}</memory><vcpu>{}</vcpu><os><type>hvm</type></os></domain>",
            512 * (1 + i % 8),
            1 + i % 4
        ));
    }
    x + "</node>"
}

fn proc_field(pid: u32, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn console(
    agent: &Path,
    idle: Duration,
    out: &mut dyn Write,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("rackside-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let node = dir.join("node.xml");
    std::fs::write(&node, node_xml(200))?;
    let link = dir.join("tty");
    let mut line = PtyLine::open(&link)?;
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[host]\nname = \"bench\"\n[libvirt]\nuri = \"test://{}\"\npoll_interval_s = 5\n[[console]]\npath = \"{}\"\n[state]\ndir = \"{}\"\nrun_dir = \"{}\"\n",
            node.display(),
            link.display(),
            dir.join("state").display(),
            dir.join("run").display()
        ),
    )?;
    let child = Command::new(agent)
        .arg("--config")
        .arg(&cfg)
        .env("RACKSIDE_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let _guard = Killed(child);
    line.wake(Duration::from_secs(30))?;
    let first = line.request(1, "vms", json!({}), Duration::from_secs(30))?;
    let n = first["data"]["vms"].as_array().map_or(0, |v| v.len());
    std::thread::sleep(Duration::from_secs(2));
    let rss_start = proc_field(pid, "VmRSS:").unwrap_or(0);
    let ticks_start = cpu_ticks(pid).unwrap_or(0);
    let t0 = Instant::now();
    let mut rss_samples = vec![rss_start];
    while t0.elapsed() < idle {
        std::thread::sleep(
            Duration::from_secs(5)
                .min(idle.saturating_sub(t0.elapsed()))
                .max(Duration::from_millis(10)),
        );
        rss_samples.push(proc_field(pid, "VmRSS:").unwrap_or(0));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let ticks = cpu_ticks(pid).unwrap_or(0).saturating_sub(ticks_start);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    let cpu_pct = ticks as f64 / hz / elapsed * 100.0;
    let rss_end = *rss_samples.last().unwrap_or(&0);
    let anon = proc_field(pid, "RssAnon:").unwrap_or(0);
    let file = proc_field(pid, "RssFile:").unwrap_or(0);
    let rss_max = rss_samples.iter().copied().max().unwrap_or(0);

    // `vms` as a person types it, and as a controller asks for it.
    let mut text_ms = Vec::new();
    let mut text_bytes = 0;
    for _ in 0..5 {
        line.clear();
        let t = Instant::now();
        line.write(b"vms\r")?;
        let got = line.expect_text(Duration::from_secs(30), "bench> ")?;
        text_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        text_bytes = got.len();
    }
    let mut json_ms = Vec::new();
    let mut json_bytes = 0;
    for i in 0..5 {
        line.clear();
        let t = Instant::now();
        let r = line.request(100 + i, "vms", json!({}), Duration::from_secs(30))?;
        json_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        json_bytes = r.to_string().len() + 2;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let wire = |bytes: usize| bytes as f64 * 10.0 / 115_200.0 * 1000.0; // 8N1: 10 bits a byte
    let (tm, jm) = (median(&mut text_ms), median(&mut json_ms));
    writeln!(
        out,
        "bench-console: {n} domains (libvirt test driver), poll every 5 s, idle {:.0} s",
        elapsed
    )?;
    writeln!(
        out,
        "  RSS: {} KiB after start, {} KiB at the end, {} KiB max ({:+} KiB)",
        rss_start,
        rss_end,
        rss_max,
        rss_end as i64 - rss_start as i64
    )?;
    writeln!(out, "  RSS at the end: {anon} KiB anonymous (the agent's own heap and stacks), {file} KiB file-backed (shared libraries: libvirt, gnutls, libxml2, ...)")?;
    writeln!(out, "  idle CPU: {cpu_pct:.3} % of one core")?;
    writeln!(out, "  vms (text): {text_bytes} bytes, {tm:.1} ms over a pty; at 115200 baud {:.0} ms on the wire ({:.1}x the pty time)", wire(text_bytes), wire(text_bytes) / tm)?;
    writeln!(out, "  vms (json): {json_bytes} bytes, {jm:.1} ms over a pty; at 115200 baud {:.0} ms on the wire ({:.1}x the pty time)", wire(json_bytes), wire(json_bytes) / jm)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Where the bench's guests live and what they are made of.
const BENCH_GUESTS: [&str; 4] = ["b1", "b2", "b3", "b4"];
const SOURCE: &str = "ha";
/// Guest `i` goes to `DESTS[i % 2]` in the virsh loops.
const DESTS: [&str; 2] = ["hb", "hc"];

/// The disk kinds compared, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskKind {
    Shared,
    Local,
}

impl DiskKind {
    fn disk(self, mib: u64) -> crate::GuestDisk {
        match self {
            DiskKind::Shared => crate::GuestDisk::Shared { mib },
            DiskKind::Local => crate::GuestDisk::Local { mib },
        }
    }

    fn label(self) -> &'static str {
        match self {
            DiskKind::Shared => "shared disks (NBD)",
            DiskKind::Local => "local disks (qcow2, copied)",
        }
    }
}

/// What the destination recorded of one guest's move.
#[derive(Debug, Clone, Default, PartialEq)]
struct Moved {
    guest: String,
    /// Where it runs after the drain, when it runs exactly once.
    host: Option<String>,
    mem_mib: f64,
    disk_mib: f64,
    downtime_ms: Option<u64>,
}

/// One way of emptying ha, measured.
#[derive(Debug, Clone)]
struct Drain {
    how: String,
    wall_s: f64,
    moved: Vec<Moved>,
    seen: Vec<crate::probe::GuestProbe>,
    safe: bool,
    errors: Vec<String>,
    /// Seconds of the first migration of a sequential loop (for the
    /// single-migration throughput line).
    first_s: Option<f64>,
    /// Per VM, where its migration's time went (the agent's rows only).
    timelines: Vec<(String, String)>,
    /// When the drain ran, in seconds since the client probe started.
    ran_s: (f64, f64),
}

/// The seconds of one step in a `jobs` timeline (JSON), if it is there.
fn step_at(timeline: &serde_json::Value, step: &str) -> Option<f64> {
    timeline.as_array()?.iter().find(|m| m["step"] == step)?["at_s"].as_f64()
}

/// A `jobs` timeline for the bench's output: the steps, then rackside's
/// own share (accepted to prepared, ended to done) apart from the rest.
pub fn timeline_text(timeline: &serde_json::Value) -> String {
    let steps: Vec<String> = timeline
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            format!(
                "{} {:.2}",
                m["step"].as_str().unwrap_or("?"),
                m["at_s"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    let span = |a: &str, b: &str| Some(step_at(timeline, b)? - step_at(timeline, a)?);
    let own = match (span("accepted", "prepared"), span("ended", "done")) {
        (Some(x), Some(y)) => format!("; rackside's own: {:.2} s", x + y),
        _ => String::new(),
    };
    format!("{}{own}", steps.join(", "))
}

impl Drain {
    fn data_mib(&self) -> f64 {
        self.moved.iter().map(|m| m.mem_mib + m.disk_mib).sum()
    }
    fn mem_mib(&self) -> f64 {
        self.moved.iter().map(|m| m.mem_mib).sum()
    }
    fn disk_mib(&self) -> f64 {
        self.moved.iter().map(|m| m.disk_mib).sum()
    }
    fn longest_silences(&self) -> Vec<f64> {
        self.seen
            .iter()
            .map(|p| p.ping_silence.longest_ms)
            .collect()
    }
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn specs(kind: DiskKind, fill: u64, disk_mib: u64) -> Vec<crate::GuestSpec> {
    BENCH_GUESTS
        .iter()
        .enumerate()
        .map(|(i, g)| {
            crate::GuestSpec::new(g, fill)
                .with_net(crate::names::guest_addr(i as u8 + 1))
                .with_disk(kind.disk(disk_mib))
        })
        .collect()
}

/// Every host emptied, the guests started afresh on ha, their workloads
/// (memory and disk) running.
fn fresh_guests(lab: &crate::Lab, specs: &[crate::GuestSpec]) -> BenchResult<()> {
    for h in &lab.desc().hosts {
        for g in crate::virsh::all(&h.local_uri)? {
            let _ = crate::virsh::run(&h.local_uri, &["destroy", &g]);
            let _ = crate::virsh::run(&h.local_uri, &["undefine", &g]);
        }
        // A copied image left by the previous drain would spare the next
        // one its creation on the destination.
        for g in specs {
            if let Some(p) = g.local_disk_in_host() {
                let _ = std::fs::remove_file(h.outside_path(&p));
            }
        }
        let _ = crate::virsh::run(&h.local_uri, &["pool-refresh", "default"]);
    }
    let results: Vec<Result<u64, crate::LabError>> = std::thread::scope(|s| {
        let hs: Vec<_> = specs
            .iter()
            .map(|g| s.spawn(move || lab.start_guest(SOURCE, g)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("guest thread"))
            .collect()
    });
    for r in results {
        r?;
    }
    for g in specs {
        lab.wait_disk(SOURCE, &g.name, 1, Duration::from_secs(120))?;
    }
    // Let the workload settle into its dirtying loop.
    std::thread::sleep(Duration::from_secs(3));
    Ok(())
}

/// The administrator's command: `virsh migrate --live --p2p --persistent
/// --undefinesource`, with `--copy-storage-all` for local disks.
fn virsh_migrate(lab: &crate::Lab, kind: DiskKind, guest: &str, dest: &str) -> Result<f64, String> {
    let d = lab.host(dest).map_err(|e| e.to_string())?.clone();
    let mut args = vec![
        "migrate",
        "--live",
        "--p2p",
        "--persistent",
        "--undefinesource",
        // Encrypted, as rackside migrates by default: like for like.
        "--tls",
    ];
    if kind == DiskKind::Local {
        args.push("--copy-storage-all");
    }
    args.extend([guest, &d.uri, "--migrateuri", &d.migrate_uri]);
    let t = Instant::now();
    lab.virsh(SOURCE, &args)
        .map_err(|e| format!("{guest} -> {dest}: {e}"))?;
    Ok(t.elapsed().as_secs_f64())
}

/// One virsh migration after the other. Returns the wall time, the first
/// migration's seconds, and the migrations that failed.
fn virsh_baseline(lab: &crate::Lab, kind: DiskKind) -> (f64, Option<f64>, Vec<String>) {
    let t0 = Instant::now();
    let mut first = None;
    let mut errors = Vec::new();
    for (i, g) in BENCH_GUESTS.iter().enumerate() {
        match virsh_migrate(lab, kind, g, DESTS[i % 2]) {
            Ok(s) if i == 0 => first = Some(s),
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    (t0.elapsed().as_secs_f64(), first, errors)
}

/// Two virsh loops side by side, as bulk-migration scripts run them:
/// worker `w` migrates the guests `i` with `i % 2 == w`, to `DESTS[w]`.
fn virsh_parallel(lab: &crate::Lab, kind: DiskKind) -> (f64, Vec<String>) {
    let t0 = Instant::now();
    let errors: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                s.spawn(move || {
                    BENCH_GUESTS
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| i % 2 == w)
                        .filter_map(|(_, g)| virsh_migrate(lab, kind, g, DESTS[w]).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|h| h.join().expect("virsh worker"))
            .collect()
    });
    (t0.elapsed().as_secs_f64(), errors)
}

/// rackside at its default configuration, on ha, evacuating. Returns the
/// wall time from the request to `evacuation.done`, and what went wrong.
#[allow(clippy::type_complexity)]
fn agent_drain(
    lab: &crate::Lab,
    agent: &Path,
    kind: DiskKind,
) -> BenchResult<(f64, Vec<String>, Vec<(String, String)>)> {
    let dir = lab
        .desc()
        .dir
        .join(format!("bench-agent-{kind:?}").to_lowercase());
    std::fs::create_dir_all(&dir)?;
    let link = dir.join("tty");
    let mut line = PtyLine::open(&link)?;
    let cfg = crate::agent::lab_config(lab, SOURCE, &dir, &link, "");
    let mut proc = crate::agent::AgentProcess::start(lab, SOURCE, agent, &dir, &cfg)?;
    line.wake(Duration::from_secs(30))?;
    // Placement needs every peer's first poll and the guests' disks.
    let mut planned = 0;
    for _ in 0..120 {
        let plan = line.request(1, "plan", json!({}), Duration::from_secs(20))?;
        planned = plan["data"]["moves"].as_array().map_or(0, Vec::len);
        if planned == BENCH_GUESTS.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut errors = Vec::new();
    if planned != BENCH_GUESTS.len() {
        errors.push(format!(
            "the plan placed {planned} of {} guests",
            BENCH_GUESTS.len()
        ));
    }
    line.request(2, "subscribe", json!({}), Duration::from_secs(20))?;
    let t0 = Instant::now();
    let r = line.request(3, "evacuate", json!({}), Duration::from_secs(20))?;
    if r["ok"] != json!(true) {
        return Err(format!("evacuate refused: {r}").into());
    }
    let done = line.expect_event("evacuation.done", Duration::from_secs(900), |_| true)?;
    let wall = t0.elapsed().as_secs_f64();
    let jobs = line.request(4, "jobs", json!({}), Duration::from_secs(20))?;
    proc.stop();
    if done["data"]["safe_to_power_off"] != json!(true) {
        errors.push(format!("rackside's verdict: not safe: {}", done["data"]));
    }
    let mut timelines = Vec::new();
    for j in jobs["data"]["jobs"].as_array().into_iter().flatten() {
        if let Some(e) = j["error"].as_str() {
            errors.push(format!("{}: {e}", j["vm"].as_str().unwrap_or("?")));
        }
        timelines.push((
            j["vm"].as_str().unwrap_or("?").to_owned(),
            timeline_text(&j["timeline"]),
        ));
    }
    Ok((wall, errors, timelines))
}

/// What the destination's libvirt recorded of `guest`'s completed move
/// (a copied local disk: what the copy allocated there).
fn moved(lab: &crate::Lab, kind: DiskKind, guest: &str) -> Moved {
    let host = lab
        .whereabouts(guest)
        .ok()
        .and_then(|w| w.runs_once().ok())
        .filter(|h| h != SOURCE);
    let job = host
        .as_deref()
        .and_then(|h| lab.virsh(h, &["domjobinfo", "--completed", guest]).ok())
        .unwrap_or_default();
    let mib = |key| {
        crate::virsh::field(&job, key)
            .and_then(|v| crate::virsh::parse_mib(&v))
            .unwrap_or(0.0)
    };
    let mut disk_mib = mib("File processed");
    if disk_mib == 0.0 && kind == DiskKind::Local {
        // libvirt's record of an incoming migration has no disk figures
        // (9.0 and 11.3 alike; the table's footnote says so): count what
        // the storage copy wrote on the destination.
        disk_mib = host
            .as_deref()
            .and_then(|h| lab.virsh(h, &["domblkinfo", guest, "vda"]).ok())
            .and_then(|info| {
                crate::virsh::field(&info, "Allocation")?
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |bytes| bytes / (1024.0 * 1024.0));
    }
    Moved {
        guest: guest.to_owned(),
        host,
        mem_mib: mib("Memory processed"),
        disk_mib,
        downtime_ms: crate::virsh::field(&job, "Total downtime")
            .and_then(|v| v.split_whitespace().next()?.parse().ok()),
    }
}

/// Which of the three ways a drain goes.
#[derive(Debug, Clone, Copy)]
enum How {
    VirshSequential,
    VirshParallel,
    Rackside,
}

/// The words BENCH_ONLY may hold: disk kinds, then ways of draining.
const ONLY_WORDS: [&str; 5] = ["shared", "local", "sequential", "workers", "rackside"];

/// BENCH_ONLY's words (space or comma separated, any case), each one of
/// [`ONLY_WORDS`]; none means everything.
pub fn only_words(s: &str) -> Result<Vec<String>, String> {
    s.split([' ', ','])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let w = w.to_lowercase();
            if ONLY_WORDS.contains(&w.as_str()) {
                Ok(w)
            } else {
                Err(format!(
                    "BENCH_ONLY: unknown word {w:?} (known: {})",
                    ONLY_WORDS.join(", ")
                ))
            }
        })
        .collect()
}

/// Fresh guests, the client probe on, one drain, then where each guest
/// went, what libvirt recorded and what the clients saw.
fn measured(
    lab: &crate::Lab,
    agent: &Path,
    kind: DiskKind,
    specs: &[crate::GuestSpec],
    how: How,
) -> BenchResult<Drain> {
    fresh_guests(lab, specs)?;
    let targets: Vec<crate::probe::ProbeTarget> = specs
        .iter()
        .map(|g| crate::probe::ProbeTarget {
            guest: g.name.clone(),
            addr: g.net_addr.expect("bench guests are networked"),
        })
        .collect();
    let probe = crate::probe::Probe::start(&lab.desc().guest_net.client_netns, &targets)?;
    std::thread::sleep(Duration::from_secs(1));
    let (label, wall_s, first_s, mut errors, timelines) = match how {
        How::VirshSequential => {
            let (w, f, e) = virsh_baseline(lab, kind);
            ("virsh loop, sequential".to_owned(), w, f, e, Vec::new())
        }
        How::VirshParallel => {
            let (w, e) = virsh_parallel(lab, kind);
            ("virsh loops, 2 workers".to_owned(), w, None, e, Vec::new())
        }
        How::Rackside => {
            let (w, e, t) = agent_drain(lab, agent, kind)?;
            ("rackside, default config".to_owned(), w, None, e, t)
        }
    };
    let ran_s = (probe.elapsed() - wall_s, probe.elapsed());
    let moved: Vec<Moved> = BENCH_GUESTS.iter().map(|g| moved(lab, kind, g)).collect();
    for m in &moved {
        match &m.host {
            Some(h) => {
                if let Err(e) = lab.wait_tick(h, &m.guest, 0, Duration::from_secs(60)) {
                    errors.push(format!("{}: not ticking on {h}: {e}", m.guest));
                }
            }
            None => errors.push(format!(
                "{}: did not move (not running exactly once off {SOURCE})",
                m.guest
            )),
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let seen = probe.finish();
    for p in seen.iter().filter(|p| !p.tcp_survived) {
        errors.push(format!(
            "{}: client's TCP connection lost ({})",
            p.guest,
            p.tcp_error.as_deref().unwrap_or("echo missing")
        ));
    }
    let safe = crate::virsh::active(&lab.host(SOURCE)?.local_uri)?.is_empty()
        && moved.iter().all(|m| m.host.is_some());
    Ok(Drain {
        how: label,
        wall_s,
        moved,
        seen,
        safe,
        errors,
        first_s,
        timelines,
        ran_s,
    })
}

fn list<T: std::fmt::Display>(v: impl IntoIterator<Item = T>) -> String {
    v.into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table for one disk kind; ratios against the better virsh loop of
/// the same run.
fn table(kind: DiskKind, rows: &[Drain], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "\n### {}\n", kind.label())?;
    if let Some(first) = rows.iter().find_map(|r| {
        let s = r.first_s?;
        let m = r.moved.first()?;
        Some((m.mem_mib + m.disk_mib) / s)
    }) {
        writeln!(
            out,
            "single-migration throughput (first sequential virsh migration, memory + disk): {first:.0} MiB/s\n"
        )?;
    }
    writeln!(out, "| how | wall s | MiB moved (memory + disk) | longest client silence per VM, ms | silence p50 / p95 over VMs, ms | libvirt downtime per VM, ms | TCP kept | wall vs best loop | SAFE |")?;
    writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )?;
    let best_loop = rows
        .iter()
        .filter(|r| r.how.starts_with("virsh"))
        .map(|r| r.wall_s)
        .reduce(f64::min)
        .unwrap_or(0.0);
    for r in rows {
        let silences = r.longest_silences();
        let pct = |p| crate::probe::percentile(&silences, p).unwrap_or(0.0);
        writeln!(
            out,
            "| {} | {:.1} | {:.0} ({:.0} + {:.0}) | {} | {:.0} / {:.0} | {} | {}/{} | {} | {} |",
            r.how,
            r.wall_s,
            r.data_mib(),
            r.mem_mib(),
            r.disk_mib(),
            list(silences.iter().map(|s| format!("{s:.0}"))),
            pct(50.0),
            pct(95.0),
            list(
                r.moved
                    .iter()
                    .map(|m| m.downtime_ms.map_or("?".to_owned(), |d| d.to_string()))
            ),
            r.seen.iter().filter(|p| p.tcp_survived).count(),
            r.seen.len(),
            if best_loop > 0.0 {
                format!("{:.2}x", r.wall_s / best_loop)
            } else {
                "?".to_owned()
            },
            if r.safe { "yes" } else { "NO" }
        )?;
    }
    if kind == DiskKind::Local {
        writeln!(
            out,
            "\ndisk MiB: what the copy allocated on the destination (libvirt keeps no disk figures for an incoming migration): a footprint, not bytes on the wire."
        )?;
    }
    for r in rows.iter().filter(|r| !r.timelines.is_empty()) {
        writeln!(
            out,
            "\nwhere each migration's time went ({}; s since the agent accepted it):",
            r.how
        )?;
        for (vm, t) in &r.timelines {
            writeln!(out, "- {vm}: {t}")?;
        }
    }
    // A silence past a second is placed against the drain, to tell the
    // switchover from what came before or after it.
    for r in rows {
        for p in r.seen.iter().filter(|p| p.ping_silence.longest_ms > 1000.0) {
            writeln!(
                out,
                "\nlong silence ({}): {} silent {:.0} ms from +{:.1} s; the drain ran +{:.1} to +{:.1} s",
                r.how,
                p.guest,
                p.ping_silence.longest_ms,
                p.ping_silence.longest_from_s,
                r.ran_s.0,
                r.ran_s.1
            )?;
        }
    }
    for r in rows {
        for e in &r.errors {
            writeln!(out, "\nERROR ({}): {e}", r.how)?;
        }
    }
    Ok(())
}

pub fn evacuate(
    agent: &Path,
    fill: u64,
    disk_mib: u64,
    out: &mut dyn Write,
) -> Result<(), Box<dyn std::error::Error>> {
    // BENCH_ONLY narrows a run to the kinds and ways it names; a word it
    // does not know stops the bench before any lab comes up.
    let only = only_words(&std::env::var("BENCH_ONLY").unwrap_or_default())?;
    let lab = crate::Lab::up(&crate::LabSpec::new("bench", 3))?;
    // libvirtd builds its host capabilities (seconds of QEMU probing) the
    // first time something needs them, such as the first guest to arrive.
    // A host in service has long done so: do it now, so the first drain
    // does not pay for it.
    for h in &lab.desc().hosts {
        lab.virsh(&h.name, &["capabilities"])?;
    }
    writeln!(
        out,
        "bench-evacuate: {} guests x {} MiB ({fill} MiB random data each, rewriting 1 MiB/s; a {disk_mib} MiB disk whose first block it keeps rewriting), {SOURCE} -> {}; a client pings each every 20 ms and holds a TCP echo",
        BENCH_GUESTS.len(),
        fill + 96,
        DESTS.join(", ")
    )?;
    let wanted = |label: &str, words: &[&str]| {
        let named: Vec<&String> = only
            .iter()
            .filter(|w| words.contains(&w.as_str()))
            .collect();
        named.is_empty() || named.iter().any(|w| label.contains(w.as_str()))
    };
    for kind in [DiskKind::Shared, DiskKind::Local] {
        if !wanted(kind.label(), &["shared", "local"]) {
            continue;
        }
        let specs = specs(kind, fill, disk_mib);
        let mut rows = Vec::new();
        for how in [How::VirshSequential, How::VirshParallel, How::Rackside] {
            let name = match how {
                How::VirshSequential => "sequential",
                How::VirshParallel => "workers",
                How::Rackside => "rackside",
            };
            if !wanted(name, &["sequential", "workers", "rackside"]) {
                continue;
            }
            match measured(&lab, agent, kind, &specs, how) {
                Ok(d) => rows.push(d),
                Err(e) => writeln!(out, "\nERROR ({how:?}, {}): {e}", kind.label())?,
            }
        }
        table(kind, &rows, out)?;
        out.flush()?;
    }
    lab.teardown()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::only_words;

    #[test]
    fn bench_only_knows_its_words_and_refuses_others() {
        assert_eq!(only_words("").unwrap(), Vec::<String>::new());
        assert_eq!(
            only_words("Local, rackside").unwrap(),
            vec!["local".to_string(), "rackside".to_string()]
        );
        let err = only_words("locla rackside").unwrap_err();
        assert!(err.contains("unknown word \"locla\""), "{err}");
    }
}
