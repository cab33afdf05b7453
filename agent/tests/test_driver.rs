//! The inventory against libvirt's test driver: real libvirt, a fake
//! hypervisor, hundreds of domains, no daemon and no root.

use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rackside_agent::backend::AgentBackend;
use rackside_agent::console::answer::{Backend, HostInfo};
use rackside_agent::evacuation::{journal::Journal, Controller, Ctx, Threads};
use rackside_agent::events::Bus;
use rackside_agent::hypervisor::libvirt::Libvirt;
use rackside_agent::inventory::local::LocalPoller;
use rackside_agent::inventory::Inventory;
use rackside_agent::libvirt_ffi;
use rackside_protocol::Command;

/// A test-driver node with `n` domains of varied sizes; every third one is
/// defined but not running.
fn node_xml(n: usize) -> String {
    let mut x = String::from(
        "<node>\n<cpu><mhz>2000</mhz><model>i686</model><active>16</active><nodes>1</nodes><sockets>1</sockets><cores>16</cores><threads>1</threads></cpu>\n<memory>268435456</memory>\n",
    );
    for i in 0..n {
        let state = if i % 3 == 2 { "shutoff" } else { "running" };
        x.push_str(&format!(
            "<domain type='test'><name>vm{i:03}</name><uuid>6695eb01-f6a4-8304-79aa-97f2502e{i:04x}</uuid>\
             <memory unit='MiB'>{}</memory><vcpu>{}</vcpu><os><type>hvm</type></os>\
             <test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>{}</test:runstate></domain>\n",
            256 * (1 + i % 4),
            1 + i % 2,
            if state == "running" { 1 } else { 5 },
        ));
    }
    x.push_str("</node>\n");
    x
}

fn write_node(n: usize) -> (tempdir::Dir, String) {
    let dir = tempdir::Dir::new();
    let path = dir.0.join("node.xml");
    std::fs::write(&path, node_xml(n)).unwrap();
    let uri = format!("test://{}", path.display());
    (dir, uri)
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!(
                "rackside-test-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn virsh_list(uri: &str) -> Vec<(String, String)> {
    let out = std::process::Command::new("virsh")
        .args(["-q", "-c", uri, "list", "--all"])
        .output()
        .expect("virsh (install libvirt-clients)");
    let mut v: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| {
                let state = f[2..].join(" ");
                let state = if state == "shut off" {
                    "shutoff".to_string()
                } else {
                    state
                };
                (f[1].to_string(), state)
            })
        })
        .collect();
    v.sort();
    v
}

#[test]
fn vms_lists_two_hundred_domains_as_libvirt_does() {
    let (_dir, uri) = write_node(200);
    libvirt_ffi::start_event_loop();
    let inv = Inventory::new(&[], Duration::from_secs(5));
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    LocalPoller {
        uri: uri.clone(),
        inventory: inv.clone(),
        bus: Bus::new(),
        stop: stop.clone(),
        first_poll: Some(tx),
        crashes: None,
    }
    .spawn()
    .unwrap();
    rx.recv_timeout(Duration::from_secs(30))
        .expect("first poll")
        .expect("the test driver answers");
    let dir = std::env::temp_dir().join(format!("rackside-td-{}", std::process::id()));
    let (journal, recovered) = Journal::open(&dir).unwrap();
    let cfg = rackside_agent::config::Config::parse("", std::path::Path::new("x")).unwrap();
    let controller = Controller::new(
        Ctx::from_config(&cfg),
        inv.clone(),
        Bus::new(),
        journal,
        &recovered,
        Arc::new(Libvirt::new(&uri)),
        Arc::new(Threads),
    );
    let backend = AgentBackend {
        controller,
        inventory: inv,
        host: HostInfo {
            name: "t".into(),
            location: String::new(),
            libvirt_uri: uri.clone(),
            version: "test",
        },
    };
    let a = backend
        .answer(&Command::Vms { long: false }, "test")
        .expect("vms");
    let _ = std::fs::remove_dir_all(&dir);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let vms = a.data["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 200);
    let mut ours: Vec<(String, String)> = vms
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    ours.sort();
    assert_eq!(ours, virsh_list(&uri));
    let vm7 = vms.iter().find(|v| v["name"] == "vm007").unwrap();
    assert_eq!(vm7["mem_mib"], 256 * 4);
    assert_eq!(vm7["vcpus"], 2);
    // 200 rows and a header, aligned.
    assert_eq!(a.text.lines().len(), 201);
}
