//! This host's own figures from /proc and sysfs. Parsers are pure; the
//! readers are one line each.

use std::fs;

/// Aggregate CPU counters from the first line of /proc/stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

pub fn parse_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user/nice).
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Busy percent of all CPUs between two readings.
pub fn cpu_pct(before: CpuTimes, after: CpuTimes) -> Option<f64> {
    let total = after.total.checked_sub(before.total)?;
    let busy = after.busy.checked_sub(before.busy)?;
    (total > 0).then(|| super::model::round1(busy as f64 / total as f64 * 100.0))
}

pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// (total, available) MiB from /proc/meminfo.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let get = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.split_whitespace().next()?.parse::<u64>().ok())?
        })
    };
    let total = get("MemTotal")?;
    let avail = get("MemAvailable").or_else(|| get("MemFree"))?;
    Some((total / 1024, avail.min(total) / 1024))
}

pub fn cpus_online(stat: &str) -> u32 {
    let n = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    n.max(1) as u32
}

pub fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1\n";
        let t = parse_stat(stat).unwrap();
        assert_eq!(
            t,
            CpuTimes {
                busy: 150,
                total: 1000
            }
        );
        assert_eq!(cpus_online(stat), 2);
        let later = CpuTimes {
            busy: 250,
            total: 1200,
        };
        assert_eq!(cpu_pct(t, later), Some(50.0));
        assert_eq!(cpu_pct(later, t), None);
        assert_eq!(parse_loadavg("0.42 0.30 0.10 1/100 42\n"), Some(0.42));
        assert_eq!(parse_loadavg(""), None);
        let mem = "MemTotal:  2097152 kB\nMemFree: 100 kB\nMemAvailable: 1048576 kB\n";
        assert_eq!(parse_meminfo(mem), Some((2048, 1024)));
        assert_eq!(parse_meminfo("garbage"), None);
    }
}

/// CPU time (ns) a process has used, from `/proc/PID/stat`'s utime and
/// stime (clock ticks; Linux reports them at USER_HZ = 100 to user space).
/// The command name, which may hold spaces or parentheses, ends at the
/// last `)`.
pub fn parse_proc_cpu_ns(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    // After the name: state is field 3; utime and stime are 14 and 15.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) * 10_000_000)
}

/// A running guest's CPU time, read from its QEMU's /proc entry through
/// the pid file libvirt's QEMU driver keeps, so that measuring a guest
/// never asks libvirt, and through it QEMU's monitor, anything (libvirt's
/// own `cpu` stats group sends `query-stats` to QEMU on every call). A
/// pid file whose process is no QEMU (stale, pid reused) gives nothing.
pub fn guest_cpu_ns(run_dir: &std::path::Path, name: &str) -> Option<u64> {
    let pid = std::fs::read_to_string(run_dir.join(format!("{name}.pid"))).ok()?;
    let pid: u32 = pid.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if !comm.starts_with("qemu") {
        return None;
    }
    parse_proc_cpu_ns(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

#[cfg(test)]
mod guest_cpu_tests {
    use super::*;

    #[test]
    fn proc_stat_cpu_is_read_past_an_odd_command_name() {
        let stat =
            "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 5000 0 0 0 250 50 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_proc_cpu_ns(stat), Some(300 * 10_000_000));
        assert_eq!(parse_proc_cpu_ns("4242 (qemu) S 1 2"), None);
        assert_eq!(parse_proc_cpu_ns("garbage"), None);
    }

    #[test]
    fn a_missing_or_foreign_pid_file_gives_nothing() {
        let dir = std::env::temp_dir().join(format!("rs-guestcpu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(guest_cpu_ns(&dir, "nope"), None);
        // Our own pid: a process, but no QEMU.
        std::fs::write(dir.join("me.pid"), std::process::id().to_string()).unwrap();
        assert_eq!(guest_cpu_ns(&dir, "me"), None);
        std::fs::write(dir.join("bad.pid"), "x").unwrap();
        assert_eq!(guest_cpu_ns(&dir, "bad"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
