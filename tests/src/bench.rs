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
            "[host]\nname = \"bench\"\n[libvirt]\nuri = \"test://{}\"\npoll_interval_s = 5\n[[console]]\npath = \"{}\"\n[state]\ndir = \"{}\"\n",
            node.display(),
            link.display(),
            dir.join("state").display()
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
