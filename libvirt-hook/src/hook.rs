//! One libvirt call, start to end: which stage does what. The clock, the
//! host name, the run directory and the firewall come in from outside.
//!
//! | call                | here                                          |
//! |---------------------|-----------------------------------------------|
//! | `migrate begin`     | admission (refusal = exit 1), promise room    |
//! | `start begin`       | load the VM's ruleset if the XML names taps   |
//! | `started begin`     | release the promise, load the VM's ruleset    |
//! | `reconnect begin`   | load the VM's ruleset                         |
//! | `stopped end`       | release the promise, remove the VM's tables   |
//! | `release end`       | release the promise, remove the VM's tables   |
//!
//! Every call is reported to the agent. Only a decision refuses a VM, and
//! only on `migrate begin` while the agent speaks for this host (a fresh
//! state file): maintenance, no room, a domain XML whose size cannot be
//! read, or room that cannot be promised. Any other trouble is logged and
//! the call succeeds.
//!
//! The ruleset is loaded at `start begin` when libvirt has named the taps
//! by then (so the tables are in place before QEMU runs) and again at
//! `started begin`, when it certainly has; both before an incoming VM runs
//! on the destination. Tables are matched by tap name, so they can exist
//! before the tap does.

use std::path::{Path, PathBuf};

use crate::admission::{self, Decision, Incoming, Promise, Refusal};
use crate::args::Call;
use crate::input::InputError;
use crate::nft::{self, NftError};
use crate::policy::{self, VmUuid};
use crate::xml::{self, Domain};
use rackside_contract::Report;

use crate::{chain, notify, promises, ruleset, state};

/// Where rulesets go. The real one runs `nft`; tests record.
pub trait Firewall {
    /// Loads a whole ruleset atomically.
    fn load(&mut self, ruleset: &str) -> Result<(), NftError>;
}

#[derive(Debug, Clone)]
pub struct NftBinary {
    pub program: PathBuf,
}

impl Firewall for NftBinary {
    fn load(&mut self, ruleset: &str) -> Result<(), NftError> {
        nft::load(&self.program, ruleset)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// `None`: the agent's configuration cannot say where it is; nothing
    /// is admitted by state, promised or reported.
    pub run_dir: Option<&'a Path>,
    pub host: &'a str,
    pub now_unix: u64,
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// `Some`: exit 1 with this line on stderr.
    pub refusal: Option<Refusal>,
    /// Lines for stderr (never on `migrate`, where stderr reaches the
    /// source host's error message).
    pub log: Vec<String>,
}

pub fn handle(
    ctx: &Context<'_>,
    fw: &mut dyn Firewall,
    call: &Call,
    xml_bytes: Result<Vec<u8>, InputError>,
) -> Outcome {
    let domain = xml_bytes
        .map_err(|e| chain(&e))
        .and_then(|b| xml::parse(&b).map_err(|e| chain(&e)));
    let mut out = Outcome::default();
    let uuid = domain.as_ref().ok().and_then(|d| d.uuid.as_deref());

    match (call.op.as_str(), call.subop.as_str()) {
        ("migrate", "begin") => {
            out.refusal = admit(ctx, call, &domain);
        }
        // A crashed VM an agent starts here from its failing host: only
        // if this host is fit to take it, as for a migration. (A start
        // without the marker is an administrator's, never refused.)
        ("prepare", "begin") if domain.as_ref().is_ok_and(|d| d.recovery.is_some()) => {
            out.refusal = admit(ctx, call, &domain);
        }
        ("start", "begin")
            if domain
                .as_ref()
                .is_ok_and(|d| d.policy.is_some() && !d.taps.is_empty()) =>
        {
            apply_policy(fw, call, &domain, &mut out.log);
        }
        ("started", "begin") => {
            let arrived = ctx
                .run_dir
                .map(|d| promises::arrived(d, &call.vm, uuid, ctx.now_unix));
            if let Some(Err(e)) = arrived {
                out.log.push(format!(
                    "rackside-hook: {}: cannot update promise: {}",
                    call.vm,
                    chain(&e)
                ));
            }
            apply_policy(fw, call, &domain, &mut out.log);
        }
        ("reconnect", "begin") => apply_policy(fw, call, &domain, &mut out.log),
        ("stopped", "end") | ("release", "end") => {
            release_promise(ctx, call, uuid, &mut out.log);
            remove_tables(fw, call, &domain, &mut out.log);
        }
        _ => {}
    }

    if let Some(run_dir) = ctx.run_dir {
        let report = Report {
            vm: call.vm.clone(),
            uuid: uuid.map(str::to_owned),
            op: call.op.clone(),
            subop: call.subop.clone(),
            extra: call.extra.clone(),
            refused: out.refusal.as_ref().map(ToString::to_string),
        };
        // The agent may be down: its loss, never the guest's.
        let _ = notify::send(run_dir, &report);
    }
    out
}

/// The destination's first call for an incoming migration. Without a
/// fresh state file no agent speaks for this host: admit (a host whose
/// agent is down still works). With one, every VM admitted has been
/// measured against the room left and promised its share: what cannot be
/// measured or promised is refused.
fn admit(ctx: &Context<'_>, call: &Call, domain: &Result<Domain, String>) -> Option<Refusal> {
    let run_dir = ctx.run_dir?;
    let host_state = state::load(run_dir, ctx.now_unix).ok();
    // Named as the agent names it, so the refusal matches `hosts`.
    let host = host_state
        .as_ref()
        .and_then(|s| s.host.clone())
        .unwrap_or_else(|| ctx.host.to_owned());
    if let Some(r) = admission::check_maintenance(host_state.as_ref(), &host) {
        return Some(r);
    }
    let host_state = host_state?;
    let unreadable = |reason: &str| {
        Some(Refusal::Unreadable {
            host: host.clone(),
            reason: admission::reason(reason),
        })
    };
    let d = match domain {
        Ok(d) => d,
        Err(e) => return unreadable(e),
    };
    let Some(mem_mib) = d.memory_mib else {
        return unreadable("no readable <memory>");
    };
    let incoming = Incoming {
        vm: &call.vm,
        uuid: d.uuid.as_deref(),
        mem_mib: Some(mem_mib),
    };
    let decided = promises::update(run_dir, ctx.now_unix, promises::LOCK_WAIT, |list| {
        let d = admission::decide(Some(&host_state), list, incoming, ctx.now_unix, &host);
        if let Decision::Admit {
            promise_mib: Some(mem_mib),
        } = d
        {
            list.upsert(Promise {
                vm: call.vm.clone(),
                uuid: incoming.uuid.map(str::to_owned),
                mem_mib,
                until_unix: ctx.now_unix.saturating_add(admission::PROMISE_SECS),
            });
        }
        d
    });
    match decided {
        Ok(Decision::Refuse(r)) => Some(r),
        Ok(Decision::Admit { .. }) => None,
        // No lock, unwritable file: the room is not held for this VM.
        Err(e) => Some(Refusal::NoPromise {
            host,
            reason: admission::reason(&chain(&e)),
        }),
    }
}

fn release_promise(ctx: &Context<'_>, call: &Call, uuid: Option<&str>, log: &mut Vec<String>) {
    let Some(run_dir) = ctx.run_dir else {
        return;
    };
    if let Err(e) = promises::release(run_dir, &call.vm, uuid, ctx.now_unix) {
        log.push(format!(
            "rackside-hook: {}: cannot release promise: {}",
            call.vm,
            chain(&e)
        ));
    }
}

/// The VM's UUID, which names its tables; `None` (logged) when the XML
/// does not give a usable one: then no table is touched.
fn vm_uuid(call: &Call, domain: &Result<Domain, String>, log: &mut Vec<String>) -> Option<VmUuid> {
    let found = match domain {
        Ok(d) => d
            .uuid
            .as_deref()
            .ok_or_else(|| "no <uuid> in the domain XML".to_owned())
            .and_then(|u| policy::parse_uuid(u).map_err(|e| e.to_string())),
        Err(e) => Err(e.clone()),
    };
    match found {
        Ok(u) => Some(u),
        Err(e) => {
            log.push(format!(
                "rackside-hook: {}: network policy not touched: {e}",
                call.vm
            ));
            None
        }
    }
}

fn load(fw: &mut dyn Firewall, call: &Call, ruleset: &str, what: &str, log: &mut Vec<String>) {
    if let Err(e) = fw.load(ruleset) {
        log.push(format!(
            "rackside-hook: {}: cannot {what}: {}",
            call.vm,
            chain(&e)
        ));
    }
}

/// Removes the VM's tables, and only its own: they are named by its UUID.
fn remove_tables(
    fw: &mut dyn Firewall,
    call: &Call,
    domain: &Result<Domain, String>,
    log: &mut Vec<String>,
) {
    if let Some(uuid) = vm_uuid(call, domain, log) {
        load(
            fw,
            call,
            &ruleset::render_removal(&uuid),
            "remove policy",
            log,
        );
    }
}

/// Loads the VM's ruleset, or removes its tables when it has no policy or
/// no usable tap device. Rules that fail validation are skipped (and
/// logged): a policy only ever allows less than its author meant, never
/// more.
fn apply_policy(
    fw: &mut dyn Firewall,
    call: &Call,
    domain: &Result<Domain, String>,
    log: &mut Vec<String>,
) {
    let Some(uuid) = vm_uuid(call, domain, log) else {
        return;
    };
    let Ok(d) = domain else {
        return;
    };
    let devices = policy::valid_devices(&d.taps);
    for bad in d.taps.iter().filter(|t| !policy::valid_device(t)) {
        log.push(format!(
            "rackside-hook: {}: skipping device {bad:?}",
            call.vm
        ));
    }
    let Some(raw_rules) = &d.policy else {
        load(
            fw,
            call,
            &ruleset::render_removal(&uuid),
            "remove policy",
            log,
        );
        return;
    };
    if devices.is_empty() {
        load(
            fw,
            call,
            &ruleset::render_removal(&uuid),
            "remove policy",
            log,
        );
        return;
    }
    let mut rules = Vec::new();
    for (i, raw) in raw_rules.iter().enumerate() {
        match policy::parse_rule(raw) {
            Ok(r) => rules.push(r),
            Err(e) => log.push(format!(
                "rackside-hook: {}: policy rule {} skipped: {e}",
                call.vm,
                i + 1
            )),
        }
    }
    let text = ruleset::render(&uuid, &devices, &rules);
    load(fw, call, &text, "load policy", log);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Recorder {
        loads: Vec<String>,
        fail: bool,
    }

    impl Recorder {
        /// Rulesets that only remove tables.
        fn removals(&self) -> Vec<&String> {
            self.loads.iter().filter(|l| !l.contains("chain")).collect()
        }
        fn full_loads(&self) -> Vec<&String> {
            self.loads.iter().filter(|l| l.contains("chain")).collect()
        }
    }

    impl Firewall for Recorder {
        fn load(&mut self, ruleset: &str) -> Result<(), NftError> {
            self.loads.push(ruleset.to_owned());
            if self.fail {
                return Err(NftError::Timeout(std::time::Duration::ZERO));
            }
            Ok(())
        }
    }

    /// A UUID per name, as libvirt would give each VM its own.
    fn uuid_of(name: &str) -> VmUuid {
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        policy::parse_uuid(&format!(
            "00000000-0000-4000-8000-{:012x}",
            h & 0xffff_ffff_ffff
        ))
        .unwrap()
    }

    fn table_of(name: &str) -> String {
        ruleset::table_name(&uuid_of(name))
    }

    const NOW: u64 = 1_700_000_000;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("rackside-hook-h-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn write_state(d: &Path, maintenance: bool, free: u64) {
        let s = format!(
            r#"{{"state":"active","maintenance":{maintenance},"mem_total_mib":{},"mem_committed_mib":1000,"mem_reserve_mib":1000,"updated_unix":{NOW}}}"#,
            free + 2000
        );
        std::fs::write(d.join(rackside_contract::STATE_FILE), s).unwrap();
    }

    fn call(vm: &str, op: &str, subop: &str) -> Call {
        Call {
            vm: vm.into(),
            op: op.into(),
            subop: subop.into(),
            extra: "-".into(),
        }
    }

    fn xml(name: &str, mem_mib: u64, policy: bool) -> Vec<u8> {
        let p = if policy {
            r#"<metadata><rs:policy xmlns:rs="https://rackside.dev/xmlns/policy/1"><rs:allow proto="tcp" port="22"/><rs:allow proto="tcp" port="x"/></rs:policy></metadata>"#
        } else {
            ""
        };
        format!(
            "<domain><name>{name}</name><uuid>{}</uuid><memory unit='MiB'>{mem_mib}</memory>{p}<devices><interface><target dev='vnet0'/></interface><interface><target dev='bad\"dev'/></interface></devices></domain>",
            uuid_of(name)
        )
        .into_bytes()
    }

    /// A crashed VM an agent starts here is admitted as a migration is;
    /// a plain start (an administrator's) never is refused.
    #[test]
    fn a_recovery_start_is_admitted_only_by_a_fit_host() {
        let d = dir("recovery");
        write_state(&d.0, true, 4000);
        let ctx = Context {
            run_dir: Some(&d.0),
            host: "kvm2",
            now_unix: NOW,
        };
        let mut fw = Recorder::default();
        let marked = String::from_utf8(xml("a", 600, false)).unwrap().replace(
            "<devices>",
            r#"<metadata><r:recovery xmlns:r="https://rackside.dev/xmlns/recovery/1" from="kvm1"/></metadata><devices>"#,
        );
        let o = handle(
            &ctx,
            &mut fw,
            &call("a", "prepare", "begin"),
            Ok(marked.clone().into_bytes()),
        );
        assert_eq!(
            o.refusal.unwrap().to_string(),
            "rackside: kvm2 is in maintenance; not accepting VM"
        );
        let plain = handle(
            &ctx,
            &mut fw,
            &call("a", "prepare", "begin"),
            Ok(xml("a", 600, false)),
        );
        assert!(plain.refusal.is_none());
        write_state(&d.0, false, 4000);
        let o = handle(
            &ctx,
            &mut fw,
            &call("a", "prepare", "begin"),
            Ok(marked.into_bytes()),
        );
        assert!(o.refusal.is_none(), "{:?}", o.refusal);
    }

    #[test]
    fn two_admissions_with_room_for_one() {
        let d = dir("two");
        write_state(&d.0, false, 1000);
        let ctx = Context {
            run_dir: Some(&d.0),
            host: "kvm2",
            now_unix: NOW,
        };
        let mut fw = Recorder::default();
        let a = handle(
            &ctx,
            &mut fw,
            &call("a", "migrate", "begin"),
            Ok(xml("a", 600, false)),
        );
        assert!(a.refusal.is_none() && a.log.is_empty());
        let b = handle(
            &ctx,
            &mut fw,
            &call("b", "migrate", "begin"),
            Ok(xml("b", 600, false)),
        );
        assert_eq!(
            b.refusal.unwrap().to_string(),
            "rackside: kvm2 has 400 MiB free for VMs, VM needs 600 MiB"
        );
        assert!(b.log.is_empty());
        // a arrives: until the agent counts it as committed its promise
        // stands (for a short grace), so b still does not fit.
        handle(
            &ctx,
            &mut fw,
            &call("a", "started", "begin"),
            Ok(xml("a", 600, false)),
        );
        let b = handle(
            &ctx,
            &mut fw,
            &call("b", "migrate", "begin"),
            Ok(xml("b", 600, false)),
        );
        assert!(b.refusal.is_some(), "the room a took was promised twice");
        // After the grace the promise is gone; here the state file (not
        // refreshed in this test) still shows a as not committed, so b fits:
        // in life the agent has counted a by then.
        let later = Context {
            now_unix: ctx.now_unix + rackside_contract::PROMISE_GRACE.as_secs() + 1,
            ..ctx
        };
        let b = handle(
            &later,
            &mut fw,
            &call("b", "migrate", "begin"),
            Ok(xml("b", 600, false)),
        );
        assert!(b.refusal.is_none());
        // A retry of the same VM replaces its own promise.
        let b = handle(
            &ctx,
            &mut fw,
            &call("b", "migrate", "begin"),
            Ok(xml("b", 600, false)),
        );
        assert!(b.refusal.is_none());
    }

    #[test]
    fn maintenance_refuses_even_without_xml() {
        let d = dir("maint");
        write_state(&d.0, true, 100_000);
        let ctx = Context {
            run_dir: Some(&d.0),
            host: "kvm2",
            now_unix: NOW,
        };
        let o = handle(
            &ctx,
            &mut Recorder::default(),
            &call("a", "migrate", "begin"),
            Err(InputError::TooLarge),
        );
        assert_eq!(
            o.refusal.unwrap().to_string(),
            "rackside: kvm2 is in maintenance; not accepting VM"
        );
    }

    #[test]
    fn unreadable_xml_is_refused_while_the_agent_speaks() {
        let d = dir("noxml");
        write_state(&d.0, false, 100_000);
        let ctx = Context {
            run_dir: Some(&d.0),
            host: "kvm2",
            now_unix: NOW,
        };
        for (input, why) in [
            (Ok(b"<garbage".to_vec()), "cannot parse the domain XML"),
            (Err(InputError::TooLarge), "larger than"),
            (
                Ok(b"<domain><name>a</name></domain>".to_vec()),
                "no readable <memory>",
            ),
            (
                Ok(b"<domain><memory unit='furlongs'>1</memory></domain>".to_vec()),
                "no readable <memory>",
            ),
        ] {
            let o = handle(
                &ctx,
                &mut Recorder::default(),
                &call("a", "migrate", "begin"),
                input,
            );
            let r = o.refusal.expect(why).to_string();
            assert!(
                r.starts_with("rackside: kvm2 cannot read the incoming domain XML (")
                    && r.contains(why)
                    && r.ends_with("); not accepting VM"),
                "{r}"
            );
            assert!(o.log.is_empty());
        }
        // Without a fresh state file no agent speaks for the host: admitted.
        std::fs::remove_file(d.0.join(rackside_contract::STATE_FILE)).unwrap();
        let o = handle(
            &ctx,
            &mut Recorder::default(),
            &call("a", "migrate", "begin"),
            Ok(b"<garbage".to_vec()),
        );
        assert!(o.refusal.is_none());
    }

    #[test]
    fn a_promise_that_cannot_be_recorded_refuses() {
        let d = dir("nopromise");
        write_state(&d.0, false, 100_000);
        // The lock file cannot be opened for writing: it is a directory.
        std::fs::create_dir(d.0.join(promises::LOCK_FILE)).unwrap();
        let ctx = Context {
            run_dir: Some(&d.0),
            host: "kvm2",
            now_unix: NOW,
        };
        let o = handle(
            &ctx,
            &mut Recorder::default(),
            &call("a", "migrate", "begin"),
            Ok(xml("a", 600, false)),
        );
        let r = o.refusal.expect("admitted without a promise").to_string();
        assert!(
            r.starts_with(
                "rackside: kvm2 cannot promise room to the VM (cannot open promises.lock"
            ) && r.ends_with("); not accepting VM"),
            "{r}"
        );
        assert!(!d.0.join(promises::FILE).exists());
    }

    #[test]
    fn missing_run_dir_admits() {
        let ctx = Context {
            run_dir: Some(Path::new("/nonexistent/rackside")),
            host: "h",
            now_unix: NOW,
        };
        let o = handle(
            &ctx,
            &mut Recorder::default(),
            &call("a", "migrate", "begin"),
            Ok(xml("a", 1 << 30, true)),
        );
        assert!(o.refusal.is_none() && o.log.is_empty());
    }

    #[test]
    fn started_loads_policy_and_release_deletes() {
        let d = dir("pol");
        let ctx = Context {
            run_dir: Some(&d.0),
            host: "h",
            now_unix: NOW,
        };
        let mut fw = Recorder::default();
        let o = handle(
            &ctx,
            &mut fw,
            &call("web1", "started", "begin"),
            Ok(xml("web1", 1, true)),
        );
        assert_eq!(fw.loads.len(), 1);
        let t = table_of("web1");
        assert!(fw.loads[0].contains(&format!("table bridge {t} {{\n")));
        assert!(fw.loads[0].contains(&format!("table inet {t} {{\n")));
        assert!(fw.loads[0].contains("oifname { \"vnet0\" } jump guest"));
        assert!(fw.loads[0].contains("tcp dport 22 accept"));
        assert!(!fw.loads[0].contains("bad"));
        assert_eq!(o.log.len(), 2, "{:?}", o.log); // bad device, bad rule
        handle(
            &ctx,
            &mut fw,
            &call("web1", "reconnect", "begin"),
            Ok(xml("web1", 1, true)),
        );
        assert_eq!(fw.full_loads().len(), 2);
        for op in [("stopped", "end"), ("release", "end")] {
            let o = handle(
                &ctx,
                &mut fw,
                &call("web1", op.0, op.1),
                Ok(xml("web1", 1, true)),
            );
            assert!(o.log.is_empty(), "{:?}", o.log);
        }
        let want = ruleset::render_removal(&uuid_of("web1"));
        assert_eq!(fw.removals(), vec![&want, &want]);
    }

    #[test]
    fn start_loads_only_when_the_taps_are_named() {
        let d = dir("start");
        let ctx = Context {
            run_dir: Some(&d.0),
            host: "h",
            now_unix: NOW,
        };
        let mut fw = Recorder::default();
        let no_taps = String::from_utf8(xml("web1", 1, true))
            .unwrap()
            .replace("<target dev='vnet0'/>", "")
            .replace("<target dev='bad\"dev'/>", "");
        let o = handle(
            &ctx,
            &mut fw,
            &call("web1", "start", "begin"),
            Ok(no_taps.into_bytes()),
        );
        assert!(fw.loads.is_empty() && o.log.is_empty(), "{:?}", o.log);
        handle(
            &ctx,
            &mut fw,
            &call("web1", "start", "begin"),
            Ok(xml("web1", 1, true)),
        );
        assert_eq!(fw.full_loads().len(), 1);
        assert!(fw.loads[0].contains("\"vnet0\""));
    }

    #[test]
    fn release_removes_only_this_vms_tables() {
        let d = dir("two");
        let ctx = Context {
            run_dir: Some(&d.0),
            host: "h",
            now_unix: NOW,
        };
        let mut fw = Recorder::default();
        let long = "a-very-long-vm-name-that-shares-its-first-forty-characters";
        let (a, b) = (format!("{long}-a"), format!("{long}-b"));
        handle(
            &ctx,
            &mut fw,
            &call(&b, "release", "end"),
            Ok(xml(&b, 1, true)),
        );
        assert_eq!(fw.loads.len(), 1);
        assert!(fw.loads[0].contains(&table_of(&b)));
        assert!(!fw.loads[0].contains(&table_of(&a)));
        // Without a UUID nothing is touched.
        let o = handle(&ctx, &mut fw, &call(&a, "release", "end"), Ok(vec![]));
        assert_eq!(fw.loads.len(), 1);
        assert!(
            o.log[0].contains("network policy not touched"),
            "{:?}",
            o.log
        );
        let o = handle(
            &ctx,
            &mut fw,
            &call(&a, "release", "end"),
            Ok(b"<domain><uuid>web1</uuid></domain>".to_vec()),
        );
        assert_eq!(fw.loads.len(), 1);
        assert!(o.log[0].contains("bad domain UUID"), "{:?}", o.log);
    }

    #[test]
    fn no_policy_removes_the_table() {
        let d = dir("nopol");
        let ctx = Context {
            run_dir: Some(&d.0),
            host: "h",
            now_unix: NOW,
        };
        let mut fw = Recorder::default();
        handle(
            &ctx,
            &mut fw,
            &call("web1", "started", "begin"),
            Ok(xml("web1", 1, false)),
        );
        assert!(fw.full_loads().is_empty());
        assert_eq!(
            fw.removals(),
            vec![&ruleset::render_removal(&uuid_of("web1"))]
        );
    }

    #[test]
    fn failing_firewall_is_logged_not_fatal() {
        let d = dir("fwfail");
        let ctx = Context {
            run_dir: Some(&d.0),
            host: "h",
            now_unix: NOW,
        };
        let mut fw = Recorder {
            fail: true,
            ..Recorder::default()
        };
        let o = handle(
            &ctx,
            &mut fw,
            &call("web1", "started", "begin"),
            Ok(xml("web1", 1, true)),
        );
        assert!(o.refusal.is_none());
        assert!(o.log.iter().any(|l| l.contains("cannot load policy")));
    }

    #[test]
    fn other_stages_do_nothing() {
        let d = dir("other");
        write_state(&d.0, true, 0);
        let ctx = Context {
            run_dir: Some(&d.0),
            host: "h",
            now_unix: NOW,
        };
        let mut fw = Recorder::default();
        for (op, sub) in [
            ("prepare", "begin"),
            ("migrate", "end"),
            ("restore", "begin"),
            ("start", "end"),
        ] {
            let o = handle(&ctx, &mut fw, &call("a", op, sub), Ok(xml("a", 1, true)));
            assert!(o.refusal.is_none() && o.log.is_empty());
        }
        assert!(fw.loads.is_empty());
    }

    #[test]
    fn without_a_run_dir_admits_and_still_applies_policy() {
        let ctx = Context {
            run_dir: None,
            host: "h",
            now_unix: NOW,
        };
        let mut fw = Recorder::default();
        let o = handle(
            &ctx,
            &mut fw,
            &call("a", "migrate", "begin"),
            Ok(xml("a", 1 << 30, false)),
        );
        assert!(o.refusal.is_none() && o.log.is_empty());
        handle(
            &ctx,
            &mut fw,
            &call("web1", "started", "begin"),
            Ok(xml("web1", 1, true)),
        );
        assert_eq!(fw.loads.len(), 1);
        let o = handle(
            &ctx,
            &mut fw,
            &call("web1", "release", "end"),
            Ok(xml("web1", 1, true)),
        );
        assert!(o.log.is_empty(), "{:?}", o.log);
        assert_eq!(fw.removals().len(), 1);
    }
}
