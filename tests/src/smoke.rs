//! The lab's smoke scenario: one guest full of random data, live-migrated
//! peer to peer with virsh, and everything a person would check afterwards.
//! Shared by `make lab-smoke` (which asserts) and `make demo` (which shows).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::lab::{Lab, LabError};
use crate::{guest::GuestSpec, net, virsh};

/// What was seen around one migration.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub guest: String,
    pub src: String,
    pub dst: String,
    /// Last tick the source's serial log showed before the migration.
    pub tick_before: u64,
    /// Lowest tick the destination's serial log shows.
    pub first_tick_on_dst: Option<u64>,
    /// A tick seen on the destination some seconds after the move.
    pub tick_later: Option<u64>,
    pub state_on_dst: Option<String>,
    pub persistent_on_dst: bool,
    pub defined_on_src: bool,
    /// QEMU processes for this guest still alive in the source host.
    pub qemu_on_src: usize,
    pub qemu_on_dst: usize,
    pub migrate_secs: f64,
    /// From the destination's completed job stats, when libvirt gives them.
    pub data_mib: Option<f64>,
    pub downtime_ms: Option<u64>,
}

/// Live-migrates `guest` from `src` to `dst` the way an administrator would,
/// encrypted (`--tls`) as the agent does by default.
pub fn virsh_migrate(lab: &Lab, src: &str, dst: &str, guest: &str) -> Result<f64, LabError> {
    let d = lab.host(dst)?.clone();
    let t0 = Instant::now();
    lab.virsh(
        src,
        &[
            "migrate",
            "--live",
            "--p2p",
            "--persistent",
            "--undefinesource",
            "--tls",
            guest,
            &d.uri,
            "--migrateuri",
            &d.migrate_uri,
        ],
    )?;
    Ok(t0.elapsed().as_secs_f64())
}

/// QEMU processes of `guest` inside host `host`.
pub fn qemu_processes(lab: &Lab, host: &str, guest: &str) -> Result<usize, LabError> {
    Ok(qemu_pids(lab, host, guest)?.len())
}

/// Pids of the QEMU processes running `guest` inside host `host`.
pub fn qemu_pids(lab: &Lab, host: &str, guest: &str) -> Result<Vec<i32>, LabError> {
    let h = lab.host(host)?;
    let pids = net::netns_pids(&h.netns).map_err(LabError::Network)?;
    // QEMU doubles a comma in a name; the name ends at the next single one.
    let needle = format!("guest={},", guest.replace(',', ",,"));
    Ok(pids
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c).replace('\0', " ");
                    c.contains("qemu-system") && c.contains(&needle)
                })
                .unwrap_or(false)
        })
        .collect())
}

/// CPU time (user + system, clock ticks) a process has used, if it runs.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of stat, utime 14 and stime 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Starts a guest holding `fill_mib` of random data on `src`, migrates it
/// to `dst` and records what each host shows. `say` narrates for people.
pub fn run(
    lab: &Lab,
    src: &str,
    dst: &str,
    guest: &str,
    fill_mib: u64,
    say: &mut dyn Write,
) -> Result<Observation, LabError> {
    let spec = GuestSpec::new(guest, fill_mib);
    let _ = writeln!(
        say,
        "starting {guest} on {src}: {} MiB of memory, {fill_mib} MiB of random data, dirtying {} MiB/s",
        spec.mem_mib, spec.dirty_mib
    );
    let first = lab.start_guest(src, &spec)?;
    // A few ticks so the guest is clearly running its workload.
    let tick_before = lab.wait_tick(src, guest, first + 2, Duration::from_secs(30))?;
    let _ = writeln!(
        say,
        "{guest} is alive on {src} (tick {tick_before}); migrating to {dst} ..."
    );

    let migrate_secs = virsh_migrate(lab, src, dst, guest)?;
    let dst_uri = lab.host(dst)?.local_uri.clone();
    let src_uri = lab.host(src)?.local_uri.clone();

    let job = lab
        .virsh(dst, &["domjobinfo", "--completed", guest])
        .unwrap_or_default();
    let data_mib = virsh::field(&job, "Memory processed").and_then(|v| virsh::parse_mib(&v));
    let downtime_ms = virsh::field(&job, "Total downtime")
        .and_then(|v| v.split_whitespace().next()?.parse().ok());

    // The guest ticks once a second: right after the move the
    // destination's log may hold none yet (virsh returns as soon as the
    // source QEMU is reaped, which the lab now does at once).
    let _ = lab.wait_tick(dst, guest, 0, Duration::from_secs(30));
    let dst_log = lab.serial_log(dst, guest)?;
    let first_tick_on_dst = crate::guest::first_tick(&dst_log);
    let now = crate::guest::last_tick(&dst_log).unwrap_or(0);
    let tick_later = lab
        .wait_tick(dst, guest, now + 2, Duration::from_secs(30))
        .ok();
    let info = lab.virsh(dst, &["dominfo", guest]).unwrap_or_default();

    let obs = Observation {
        guest: guest.to_owned(),
        src: src.to_owned(),
        dst: dst.to_owned(),
        tick_before,
        first_tick_on_dst,
        tick_later,
        state_on_dst: virsh::domstate(&dst_uri, guest),
        persistent_on_dst: virsh::field(&info, "Persistent").as_deref() == Some("yes"),
        defined_on_src: virsh::all(&src_uri)
            .map_err(|source| LabError::Virsh {
                host: src.to_owned(),
                source,
            })?
            .iter()
            .any(|n| n == guest),
        qemu_on_src: qemu_processes(lab, src, guest)?,
        qemu_on_dst: qemu_processes(lab, dst, guest)?,
        migrate_secs,
        data_mib,
        downtime_ms,
    };
    let _ = writeln!(
        say,
        "migrated in {:.2} s (virsh wall time); {} MiB moved, downtime {} ms",
        obs.migrate_secs,
        obs.data_mib.map_or("?".into(), |m| format!("{m:.1}")),
        obs.downtime_ms.map_or("?".into(), |d| d.to_string()),
    );
    let _ = writeln!(
        say,
        "{dst}: {guest} {} (persistent: {}), first tick there {}, later {}",
        obs.state_on_dst.as_deref().unwrap_or("absent"),
        obs.persistent_on_dst,
        obs.first_tick_on_dst
            .map_or("none".into(), |t| t.to_string()),
        obs.tick_later.map_or("none".into(), |t| t.to_string()),
    );
    let _ = writeln!(
        say,
        "{src}: {guest} {}, {} QEMU process(es) left",
        if obs.defined_on_src {
            "still defined"
        } else {
            "gone"
        },
        obs.qemu_on_src
    );
    Ok(obs)
}
