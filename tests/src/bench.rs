//! `rackside-lab bench-console`: the agent's cost at rest and the size and
//! speed of its answers, with 200 domains on libvirt's test driver (real
//! libvirt, no guests: the figures are the agent's own, not QEMU's).

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
    line.expect_text(Duration::from_secs(30), "bench> ")?;
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

/// One way of emptying ha, measured.
#[derive(Debug, Clone)]
struct Drain {
    how: String,
    wall_s: f64,
    data_mib: f64,
    downtimes: Vec<u64>,
    safe: bool,
}

const BENCH_GUESTS: [&str; 4] = ["b1", "b2", "b3", "b4"];

fn fresh_guests(lab: &crate::Lab, fill: u64) -> Result<(), Box<dyn std::error::Error>> {
    for h in &lab.desc().hosts {
        for g in crate::virsh::all(&h.local_uri)? {
            let _ = crate::virsh::run(&h.local_uri, &["destroy", &g]);
            let _ = crate::virsh::run(&h.local_uri, &["undefine", &g]);
        }
    }
    let specs: Vec<crate::GuestSpec> = BENCH_GUESTS
        .iter()
        .map(|g| crate::GuestSpec::new(g, fill))
        .collect();
    let results: Vec<Result<u64, crate::LabError>> = std::thread::scope(|s| {
        let hs: Vec<_> = specs
            .iter()
            .map(|g| s.spawn(move || lab.start_guest("ha", g)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("guest thread"))
            .collect()
    });
    for r in results {
        r?;
    }
    // Let the workload settle into its dirtying loop.
    std::thread::sleep(Duration::from_secs(3));
    Ok(())
}

fn virsh_baseline(lab: &crate::Lab) -> Result<(Drain, f64), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let mut data = 0.0;
    let mut downtimes = Vec::new();
    let mut first_rate = 0.0;
    for (i, g) in BENCH_GUESTS.iter().enumerate() {
        let dest = if i % 2 == 0 { "hb" } else { "hc" };
        let t = Instant::now();
        crate::smoke::virsh_migrate(lab, "ha", dest, g)?;
        let secs = t.elapsed().as_secs_f64();
        let job = lab.virsh(dest, &["domjobinfo", "--completed", g])?;
        let mib = crate::virsh::field(&job, "Memory processed")
            .and_then(|v| crate::virsh::parse_mib(&v))
            .unwrap_or(0.0);
        let dt = crate::virsh::field(&job, "Total downtime")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        if i == 0 {
            first_rate = mib / secs;
        }
        data += mib;
        downtimes.push(dt);
    }
    let safe = crate::virsh::active(&lab.host("ha")?.local_uri)?.is_empty();
    Ok((
        Drain {
            how: "virsh loop (sequential)".into(),
            wall_s: t0.elapsed().as_secs_f64(),
            data_mib: data,
            downtimes,
            safe,
        },
        first_rate,
    ))
}

fn agent_drain(
    lab: &crate::Lab,
    agent: &Path,
    parallel: u32,
) -> Result<Drain, Box<dyn std::error::Error>> {
    let dir = lab.desc().dir.join(format!("bench-p{parallel}"));
    std::fs::create_dir_all(&dir)?;
    let link = dir.join("tty");
    let mut line = PtyLine::open(&link)?;
    let mut cfg = format!(
        "[host]\nname = \"ha\"\n[libvirt]\npoll_interval_s = 1\n[[console]]\npath = \"{}\"\n[state]\ndir = \"{}\"\n[migration]\nmax_parallel = {parallel}\nmax_per_destination = {parallel}\n[placement]\nmem_reserve_mib = 256\nload_threshold = 1.0\n",
        link.display(),
        dir.join("state").display()
    );
    for p in ["hb", "hc"] {
        let h = lab.host(p)?;
        cfg.push_str(&format!(
            "[[peer]]\nname = \"{p}\"\nuri = \"{}\"\nmigrate_uri = \"{}\"\n",
            h.uri, h.migrate_uri
        ));
    }
    let mut proc = crate::agent::AgentProcess::start(lab, "ha", agent, &dir, &cfg)?;
    line.expect_text(Duration::from_secs(30), "ha> ")?;
    for _ in 0..60 {
        let h = line.request(1, "hosts", json!({}), Duration::from_secs(20))?;
        if h["data"]["hosts"]
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x["reachable"] == json!(true)))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
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
    let mut data = 0.0;
    let mut downtimes = Vec::new();
    for j in jobs["data"]["jobs"].as_array().into_iter().flatten() {
        downtimes.push(j["downtime_ms"].as_u64().unwrap_or(0));
        let dest = j["dest"].as_str().unwrap_or("hb");
        let vm = j["vm"].as_str().unwrap_or("");
        if let Ok(job) = lab.virsh(dest, &["domjobinfo", "--completed", vm]) {
            data += crate::virsh::field(&job, "Memory processed")
                .and_then(|v| crate::virsh::parse_mib(&v))
                .unwrap_or(0.0);
        }
    }
    Ok(Drain {
        how: format!("rackside, max_parallel {parallel}"),
        wall_s: wall,
        data_mib: data,
        downtimes,
        safe: done["data"]["safe_to_power_off"] == json!(true),
    })
}

pub fn evacuate(
    agent: &Path,
    fill: u64,
    out: &mut dyn Write,
) -> Result<(), Box<dyn std::error::Error>> {
    let lab = crate::Lab::up(&crate::LabSpec::new("bench", 3))?;
    writeln!(out, "bench-evacuate: 4 guests x {} MiB ({fill} MiB random data each, rewriting 1 MiB/s), ha -> hb, hc", fill + 96)?;
    fresh_guests(&lab, fill)?;
    let (base, single_rate) = virsh_baseline(&lab)?;
    let mut rows = vec![base];
    for p in [1, 2, 4] {
        fresh_guests(&lab, fill)?;
        rows.push(agent_drain(&lab, agent, p)?);
    }
    writeln!(
        out,
        "single-migration throughput (first virsh migration): {single_rate:.0} MiB/s"
    )?;
    writeln!(out, "| how | wall s | MiB moved | MiB/s | downtime ms per VM | wall / (MiB / single rate) | vs virsh loop | SAFE |")?;
    writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |")?;
    let base_wall = rows[0].wall_s;
    for r in &rows {
        let ideal = if single_rate > 0.0 {
            r.data_mib / single_rate
        } else {
            0.0
        };
        writeln!(
            out,
            "| {} | {:.1} | {:.0} | {:.0} | {:?} | {:.2} | {:.2}x | {} |",
            r.how,
            r.wall_s,
            r.data_mib,
            r.data_mib / r.wall_s,
            r.downtimes,
            if ideal > 0.0 { r.wall_s / ideal } else { 0.0 },
            r.wall_s / base_wall,
            if r.safe { "yes" } else { "no" }
        )?;
    }
    lab.teardown()?;
    Ok(())
}
