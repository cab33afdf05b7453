//! A damaged journal through the console backend: evacuate and migrate are
//! refused until `journal ack`, `status` and `journal` say so, and the
//! acknowledgement survives a restart. No libvirt is touched: the refusal
//! comes before any question to it, and after the acknowledgement the
//! (empty) inventory answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use rackside_agent::backend::AgentBackend;
use rackside_agent::console::answer::{Backend, HostInfo};
use rackside_agent::evacuation::journal::{Journal, FILE};
use rackside_agent::evacuation::{Controller, Ctx, Threads};
use rackside_agent::events::Bus;
use rackside_agent::hypervisor::sim::Sim;
use rackside_agent::inventory::Inventory;
use rackside_protocol::{Command, Dest, ErrorCode};

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn backend(dir: &Path) -> AgentBackend {
    let (journal, recovered) = Journal::open(dir).unwrap();
    let cfg = rackside_agent::config::Config::parse("", Path::new("x")).unwrap();
    let inventory = Inventory::new(&[], Duration::from_secs(5));
    let controller = Controller::new(
        Ctx::from_config(&cfg),
        inventory.clone(),
        Bus::new(),
        journal,
        &recovered,
        Arc::new(Sim::new("t")),
        Arc::new(Threads),
    );
    AgentBackend {
        controller,
        inventory,
        host: HostInfo {
            name: "t".into(),
            location: String::new(),
            libvirt_uri: "test:///nowhere".into(),
            version: "test",
        },
    }
}

#[test]
fn evacuate_is_refused_until_the_damage_is_acknowledged() {
    let dir =
        Dir(std::env::temp_dir().join(format!("rackside-journal-damage-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(
        dir.0.join(FILE),
        b"{\"type\":\"maintenance\",\"ts\":\"t\",\"on\":false,\"line\":null}\n\xff\xfe\n",
    )
    .unwrap();
    let b = backend(&dir.0);
    let evacuate = Command::Evacuate {
        dest: Dest::Auto,
        poweroff: false,
    };
    let migrate = Command::Migrate {
        vm: "web1".into(),
        dest: Dest::Auto,
    };
    for cmd in [&evacuate, &migrate] {
        let (code, msg) = b.answer(cmd, "/dev/ttyS0").unwrap_err();
        assert_eq!(code, ErrorCode::Unavailable, "{cmd:?}");
        assert!(msg.contains("journal ack"), "{msg}");
        assert!(msg.contains(".damaged-"), "{msg}");
    }
    let st = b.answer(&Command::Status, "l").unwrap();
    assert_eq!(st.data["journal"], "damaged");
    assert!(st.data["journal_note"]
        .as_str()
        .unwrap()
        .contains("journal ack"));
    assert!(
        st.text
            .to_string()
            .contains("WARNING: the journal was damaged"),
        "{}",
        st.text
    );
    let j = b.answer(&Command::Journal { ack: false }, "l").unwrap();
    assert_eq!(j.data["journal"], "damaged");
    assert_eq!(j.data["damage"]["lines_bad"], 1);
    assert!(b.controller.warning().is_some());

    // A restart does not forget it.
    drop(b);
    let b = backend(&dir.0);
    assert_eq!(
        b.answer(&evacuate, "l").unwrap_err().0,
        ErrorCode::Unavailable
    );
    let ack = b
        .answer(&Command::Journal { ack: true }, "/dev/ttyS0")
        .unwrap();
    assert_eq!(ack.data["acknowledged"], true);
    assert_eq!(b.controller.warning(), None);
    // Past the guard: whatever the empty inventory says, not the journal.
    let (_, msg) = b.answer(&migrate, "l").unwrap_err();
    assert!(!msg.contains("journal"), "{msg}");
    let st = b.answer(&Command::Status, "l").unwrap();
    assert_eq!(st.data["journal"], "ok");
    assert_eq!(st.data["journal_note"], serde_json::Value::Null);

    // Nor does it forget the acknowledgement.
    drop(b);
    let b = backend(&dir.0);
    assert_eq!(b.controller.warning(), None);
    let again = b.answer(&Command::Journal { ack: true }, "l").unwrap();
    assert_eq!(again.data["acknowledged"], false);
}
