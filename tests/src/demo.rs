//! `make demo`: three lab hosts, guests on the first, rackside-agent on it
//! with a pty as its management line, and a person's session on that line.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::agent::AgentProcess;
use crate::probe::{Probe, ProbeTarget};
use crate::pty::PtyLine;
use crate::{names, GuestDisk, GuestSpec, Lab, LabSpec};

const T: Duration = Duration::from_secs(30);

/// Types a command as a person would and prints what the line shows.
fn type_command(
    line: &mut PtyLine,
    cmd: &str,
    prompt: &str,
    out: &mut dyn Write,
) -> Result<(), Box<dyn std::error::Error>> {
    line.write(format!("{cmd}\r").as_bytes())?;
    let shown = line.expect_text(T, prompt)?;
    let shown = shown.replace(['\r', '\x07'], "");
    write!(out, "{shown}")?;
    out.flush()?;
    Ok(())
}

pub fn run(agent: &Path, out: &mut dyn Write) -> Result<(), Box<dyn std::error::Error>> {
    writeln!(
        out,
        "== bringing up a lab: hosts ha, hb (3 GiB), hc (4 GiB) =="
    )?;
    let lab = Lab::up(
        &LabSpec::new("demo", 3)
            .with_mem("hb", 3072)
            .with_mem("hc", 4096),
    )?;
    let mut targets = Vec::new();
    for (i, (name, fill)) in [("web1", 64), ("db1", 32), ("cache1", 16)]
        .into_iter()
        .enumerate()
    {
        let addr = names::guest_addr(i as u8 + 1);
        let spec = GuestSpec::new(name, fill)
            .with_net(addr)
            .with_disk(GuestDisk::Shared { mib: 16 });
        lab.start_guest("ha", &spec)?;
        writeln!(
            out,
            "   guest {name} running on ha ({} MiB, {fill} MiB of it random data), \
             serving at {addr}, its disk on the lab's NBD storage",
            spec.mem_mib
        )?;
        targets.push(ProbeTarget {
            guest: name.to_owned(),
            addr,
        });
    }
    let dir = lab.desc().dir.join("demo");
    let link = dir.join("ttyRS0");
    std::fs::create_dir_all(&dir)?;
    let mut line = PtyLine::open(&link)?;
    let mut config = format!(
        "[host]\nname = \"ha\"\nlocation = \"DC1 / room 3 / rack 12 / U07\"\n[libvirt]\npoll_interval_s = 2\n[placement]\nmem_reserve_mib = 512\n# lab hosts share the machine's CPUs: no load filter\nload_threshold = 1.0\n\
         [[console]]\npath = \"{}\"\n[state]\ndir = \"{}\"\n",
        link.display(),
        dir.join("state").display()
    );
    for (i, peer) in ["hb", "hc"].iter().enumerate() {
        let h = lab.host(peer)?;
        config.push_str(&format!(
            "[[peer]]\nname = \"{peer}\"\nuri = \"{}\"\nmigrate_uri = \"{}\"\nlocation = \"DC1 / room 3 / rack 12 / U{:02}\"\n",
            h.uri,
            h.migrate_uri,
            9 + 2 * i
        ));
    }
    let agent = AgentProcess::start(&lab, "ha", agent, &dir, &config)?;
    writeln!(
        out,
        "== rackside-agent runs on ha; its management line is a pty. What the engineer sees: ==\n"
    )?;
    let banner = line
        .wake(T)
        .map_err(|e| format!("{e}\nagent log:\n{}", agent.log_text()))?;
    write!(out, "{}", banner.replace('\r', ""))?;
    // Let the peers' first poll come in.
    std::thread::sleep(Duration::from_secs(3));
    for cmd in ["status", "vms", "hosts"] {
        type_command(&mut line, cmd, "ha> ", out)?;
    }
    writeln!(
        out,
        "\n\n== the engineer types `plan`, then `evacuate`, and watches ==\n"
    )?;
    write!(out, "ha> ")?;
    type_command(&mut line, "subscribe", "ha> ", out)?;
    type_command(&mut line, "plan", "ha> ", out)?;
    // The VMs' users: a client pinging each and holding a TCP connection.
    let probe = Probe::start(&lab.desc().guest_net.client_netns, &targets)?;
    type_command(&mut line, "evacuate", "ha> ", out)?;
    // Events arrive on the line until the verdict.
    let verdict = line
        .expect_text(Duration::from_secs(300), "POWER OFF")
        .map_err(|e| format!("{e}\nagent log:\n{}", agent.log_text()))?;
    write!(out, "{}", verdict.replace(['\r', '\x07'], ""))?;
    let rest = line.expect_text(T, "ha> ")?;
    write!(out, "{}", rest.replace(['\r', '\x07'], ""))?;
    std::thread::sleep(Duration::from_secs(2));
    writeln!(out, "\n== what the VMs' clients saw meanwhile ==")?;
    for p in probe.finish() {
        writeln!(out, "   {}", p.summary())?;
    }
    for cmd in ["jobs", "status", "hosts", "locate web1"] {
        type_command(&mut line, cmd, "ha> ", out)?;
    }
    writeln!(out)?;
    drop(agent);
    lab.teardown()?;
    writeln!(out, "== lab torn down ==")?;
    Ok(())
}
