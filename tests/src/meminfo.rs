//! Generated /proc/meminfo and node0 meminfo for a host with a chosen
//! memory size: bind-mounted into the host's mount namespace so libvirt
//! (and the agent) inside that host see the size the test asked for.

/// Renders /proc/meminfo for `total_mib`, keeping the real file's other
/// fields and shaping free/available figures as the same share of total.
pub fn proc_meminfo(real: &str, total_mib: u64) -> String {
    let total_kib = total_mib * 1024;
    let real_total = field(real, "MemTotal").unwrap_or(total_kib).max(1);
    let scale = |v: u64| -> u64 {
        let scaled = (v as u128 * total_kib as u128 / real_total as u128) as u64;
        scaled.min(total_kib)
    };
    let mut out = String::new();
    for line in real.lines() {
        let Some((key, _)) = line.split_once(':') else {
            continue;
        };
        let value = match key {
            "MemTotal" => total_kib,
            "MemFree" | "MemAvailable" | "Buffers" | "Cached" => {
                scale(field(real, key).unwrap_or(0))
            }
            _ => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
        };
        out.push_str(&format!("{:<16}{:>8} kB\n", format!("{key}:"), value));
    }
    out
}

/// Renders /sys/devices/system/node/node0/meminfo consistent with `proc`.
pub fn node_meminfo(proc: &str) -> String {
    let total = field(proc, "MemTotal").unwrap_or(0);
    let free = field(proc, "MemFree").unwrap_or(0);
    format!(
        "Node 0 MemTotal:       {total:>8} kB\nNode 0 MemFree:        {free:>8} kB\nNode 0 MemUsed:        {:>8} kB\n",
        total.saturating_sub(free)
    )
}

/// The value in kB of `key` in a meminfo text.
pub fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = "MemTotal:       24000000 kB\nMemFree:        12000000 kB\nMemAvailable:   18000000 kB\nBuffers:          100000 kB\nCached:          2000000 kB\nSwapTotal:             0 kB\nHugePages_Total:       0\n";

    #[test]
    fn scales_to_requested_total() {
        let m = proc_meminfo(REAL, 2048);
        assert_eq!(field(&m, "MemTotal"), Some(2048 * 1024));
        assert_eq!(field(&m, "MemFree"), Some(1024 * 1024));
        assert_eq!(field(&m, "MemAvailable"), Some(1536 * 1024));
        assert!(m.contains("HugePages_Total:       0"));
        assert_eq!(field(&m, "SwapTotal"), Some(0));
    }

    #[test]
    fn node_file_agrees() {
        let m = proc_meminfo(REAL, 1000);
        let n = node_meminfo(&m);
        assert!(n.contains(&format!("Node 0 MemTotal:       {:>8} kB", 1000 * 1024)));
        assert!(n.contains("Node 0 MemUsed:"));
    }
}
