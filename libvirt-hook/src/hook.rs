//! One libvirt call, start to end: which stage does what. The clock, the
//! host name, the run directory and the firewall come in from outside.
//!
//! | call                | here                                          |
//! |---------------------|-----------------------------------------------|
//! | `migrate begin`     | admission (refusal = exit 1), promise room    |
//! | `started begin`     | release the promise, load the VM's ruleset    |
//! | `reconnect begin`   | load the VM's ruleset                         |
//! | `stopped end`       | release the promise                           |
//! | `release end`       | release the promise, delete the VM's table    |
//!
//! Every call is reported to the agent. Trouble never refuses a VM: only
//! a decision does.

use std::path::{Path, PathBuf};

use crate::admission::{self, Decision, Incoming, Promise, Refusal};
use crate::args::Call;
use crate::input::InputError;
use crate::nft::{self, NftError};
use crate::xml::{self, Domain};
use rackside_contract::Report;

use crate::{chain, notify, policy, promises, state};

/// Where rulesets go. The real one runs `nft`; tests record.
pub trait Firewall {
    /// Loads a whole ruleset atomically.
    fn load(&mut self, ruleset: &str) -> Result<(), NftError>;
    /// Deletes an `inet` table.
    fn delete_table(&mut self, table: &str) -> Result<(), NftError>;
}

#[derive(Debug, Clone)]
pub struct NftBinary {
    pub program: PathBuf,
}

impl Firewall for NftBinary {
    fn load(&mut self, ruleset: &str) -> Result<(), NftError> {
        nft::load(&self.program, ruleset)
    }
    fn delete_table(&mut self, table: &str) -> Result<(), NftError> {
        nft::delete_table(&self.program, table)
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
            out.refusal = admit(ctx, call, domain.as_ref().ok());
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
        ("stopped", "end") => release_promise(ctx, call, uuid, &mut out.log),
        ("release", "end") => {
            release_promise(ctx, call, uuid, &mut out.log);
            // Usually there is no table: a failure here is the normal case.
            let _ = fw.delete_table(&policy::table_name(&call.vm));
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

/// The destination's first call for an incoming migration.
fn admit(ctx: &Context<'_>, call: &Call, domain: Option<&Domain>) -> Option<Refusal> {
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
    let incoming = Incoming {
        vm: &call.vm,
        uuid: domain.and_then(|d| d.uuid.as_deref()),
        mem_mib: Some(domain?.memory_mib?),
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
        // No lock, no run dir, unwritable file: admit without a promise.
        Ok(Decision::Admit { .. }) | Err(_) => None,
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

/// Loads the VM's ruleset, or removes its table when it has no policy or
/// no usable tap device. Rules that fail validation are skipped (and
/// logged): a policy only ever allows less than its author meant, never
/// more.
fn apply_policy(
    fw: &mut dyn Firewall,
    call: &Call,
    domain: &Result<Domain, String>,
    log: &mut Vec<String>,
) {
    let d = match domain {
        Ok(d) => d,
        Err(e) => {
            log.push(format!(
                "rackside-hook: {}: policy not applied: {e}",
                call.vm
            ));
            return;
        }
    };
    let devices = policy::valid_devices(&d.taps);
    for bad in d.taps.iter().filter(|t| !policy::valid_device(t)) {
        log.push(format!(
            "rackside-hook: {}: skipping device {bad:?}",
            call.vm
        ));
    }
    let Some(raw_rules) = &d.policy else {
        let _ = fw.delete_table(&policy::table_name(&call.vm));
        return;
    };
    if devices.is_empty() {
        let _ = fw.delete_table(&policy::table_name(&call.vm));
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
    let ruleset = policy::render(&call.vm, &devices, &rules);
    if let Err(e) = fw.load(&ruleset) {
        log.push(format!(
            "rackside-hook: {}: cannot load policy: {}",
            call.vm,
            chain(&e)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Recorder {
        loads: Vec<String>,
        deletes: Vec<String>,
        fail: bool,
    }

    impl Firewall for Recorder {
        fn load(&mut self, ruleset: &str) -> Result<(), NftError> {
            self.loads.push(ruleset.to_owned());
            if self.fail {
                return Err(NftError::Timeout(std::time::Duration::ZERO));
            }
            Ok(())
        }
        fn delete_table(&mut self, table: &str) -> Result<(), NftError> {
            self.deletes.push(table.to_owned());
            Ok(())
        }
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
            "<domain><name>{name}</name><uuid>uuid-{name}</uuid><memory unit='MiB'>{mem_mib}</memory>{p}<devices><interface><target dev='vnet0'/></interface><interface><target dev='bad\"dev'/></interface></devices></domain>"
        )
        .into_bytes()
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
    fn unreadable_xml_skips_capacity() {
        let d = dir("noxml");
        write_state(&d.0, false, 0);
        let ctx = Context {
            run_dir: Some(&d.0),
            host: "h",
            now_unix: NOW,
        };
        let o = handle(
            &ctx,
            &mut Recorder::default(),
            &call("a", "migrate", "begin"),
            Ok(b"<garbage".to_vec()),
        );
        assert!(o.refusal.is_none() && o.log.is_empty());
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
        assert_eq!(fw.loads.len(), 2);
        handle(&ctx, &mut fw, &call("web1", "release", "end"), Ok(vec![]));
        assert_eq!(fw.deletes, vec![policy::table_name("web1")]);
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
        assert!(fw.loads.is_empty());
        assert_eq!(fw.deletes, vec![policy::table_name("web1")]);
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
            ("start", "begin"),
            ("migrate", "end"),
            ("restore", "begin"),
        ] {
            let o = handle(&ctx, &mut fw, &call("a", op, sub), Ok(xml("a", 1, true)));
            assert!(o.refusal.is_none() && o.log.is_empty());
        }
        assert!(fw.loads.is_empty() && fw.deletes.is_empty());
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
        let o = handle(&ctx, &mut fw, &call("web1", "release", "end"), Ok(vec![]));
        assert!(o.log.is_empty(), "{:?}", o.log);
    }
}
