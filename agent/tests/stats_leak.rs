//! RSS stays flat over many bulk stats calls. Its own test binary: RSS is
//! per process, and other tests' threads would blur the figure.

use rackside_agent::libvirt_ffi;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn node(n: usize) -> String {
    let mut x = String::from("<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads></cpu><memory>16777216</memory>");
    for i in 0..n {
        x.push_str(&format!(
            "<domain type='test'><name>vm{i}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>"
        ));
    }
    x + "</node>"
}

/// The bindings' own bulk stats call never frees its records
/// (CRATES.md); ours does. The bindings' call is the control: it shows
/// the measurement sees a leak of this kind when there is one.
#[test]
fn bulk_stats_keep_rss_flat() {
    let path = std::env::temp_dir().join(format!("rackside-leak-{}.xml", std::process::id()));
    std::fs::write(&path, node(200)).unwrap();
    let conn = virt::connect::Connect::open(Some(&format!("test://{}", path.display()))).unwrap();
    for _ in 0..100 {
        libvirt_ffi::all_domain_stats(&conn).unwrap();
    }
    const CALLS: usize = 300;
    let before = rss_kib();
    for _ in 0..CALLS {
        assert_eq!(libvirt_ffi::all_domain_stats(&conn).unwrap().len(), 200);
    }
    let ours = rss_kib().saturating_sub(before);

    let before = rss_kib();
    for _ in 0..CALLS {
        assert_eq!(conn.all_domain_stats(0, 0).unwrap().len(), 200);
    }
    let bindings = rss_kib().saturating_sub(before);
    libvirt_ffi::close(conn);
    let _ = std::fs::remove_file(&path);
    eprintln!(
        "RSS growth over {CALLS} calls x 200 domains: ours {ours} KiB, bindings {bindings} KiB"
    );
    assert!(
        bindings > 4096,
        "control did not leak ({bindings} KiB): the measurement is blind"
    );
    assert!(
        ours < 2048,
        "RSS grew {ours} KiB over {CALLS} bulk stats calls"
    );
}
