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

/// The host's hardware health from EDAC memory-error counters: any
/// uncorrectable error is `faulty`, correctable ones `degraded`.
pub fn edac_health(counts: &[(u64, u64)]) -> &'static str {
    if counts.iter().any(|(_, ue)| *ue > 0) {
        "faulty"
    } else if counts.iter().any(|(ce, _)| *ce > 0) {
        "degraded"
    } else {
        "ok"
    }
}

/// (correctable, uncorrectable) per memory controller.
pub fn read_edac() -> Vec<(u64, u64)> {
    let Ok(dir) = fs::read_dir("/sys/devices/system/edac/mc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("mc"))
        .map(|e| {
            let n = |f: &str| {
                fs::read_to_string(e.path().join(f))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0)
            };
            (n("ce_count"), n("ue_count"))
        })
        .collect()
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

    #[test]
    fn edac_counts_decide_health() {
        assert_eq!(edac_health(&[]), "ok");
        assert_eq!(edac_health(&[(0, 0), (3, 0)]), "degraded");
        assert_eq!(edac_health(&[(3, 1)]), "faulty");
    }
}
