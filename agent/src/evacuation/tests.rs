//! The controller against the simulated hypervisor: real threads, short
//! deadlines, no libvirt. Every test ends with a verdict (or the end of
//! its run) and waits for it at most `BOUND`, so a run that never ends
//! fails the test rather than hanging it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rackside_protocol::{Dest, ErrorCode};
use tokio::sync::broadcast::Receiver;

use super::journal::{Journal, Recovered};
use super::model::{Job, Kind, Phase, Run};
use super::{Controller, Ctx, Spawner, Threads};
use crate::config::{Config, PeerSection, Strategy};
use crate::events::{Bus, Event, MigrationFailed, Payload};
use crate::hypervisor::sim::{Announcing, Reach, Script, Sim};
use crate::hypervisor::{
    DomState, DomainInfo, HvError, Hypervisor, Limits, Outcome, PeerAddr, Progress, Spec,
};
use crate::inventory::model::{Vm, VmState};
use crate::inventory::{Inventory, Link};
use crate::migration::announce::Announce;
use crate::placement::VmDemand;
use crate::report::Verdict;

/// Longest a test waits for a run to end: a bound against hanging, not a
/// timing assertion.
const BOUND: Duration = Duration::from_secs(30);

/// Faults the simulator does not have: a migration call that never
/// returns, one that returns only when aborted, one that panics.
#[derive(Debug, Clone, PartialEq)]
enum Fault {
    /// Never returns, abort or not (until the test ends).
    Wedge(String),
    /// Returns when aborted, leaving the VM paused on the source.
    UntilAbortPaused(String),
    Panic(String),
}

#[derive(Debug)]
struct Faulty {
    sim: Sim,
    faults: Vec<Fault>,
    released: Arc<AtomicBool>,
}

impl Hypervisor for Faulty {
    fn local_domains(&self) -> Result<Vec<DomainInfo>, HvError> {
        self.sim.local_domains()
    }
    fn peer_domain(&self, peer: &PeerAddr, vm: &str) -> Result<Option<DomState>, HvError> {
        self.sim.peer_domain(peer, vm)
    }
    fn local_job_active(&self, vm: &str) -> Result<bool, HvError> {
        self.sim.local_job_active(vm)
    }
    fn resume_local(&self, vm: &str) -> Result<(), HvError> {
        self.sim.resume_local(vm)
    }
    fn migrate(
        &self,
        spec: &Spec,
        limits: &Limits,
        abort: &AtomicBool,
        progress: &mut dyn FnMut(&Progress),
    ) -> Outcome {
        for f in &self.faults {
            match f {
                Fault::Wedge(vm) if *vm == spec.vm => {
                    while !self.released.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    return Outcome::Failed {
                        error: "released".into(),
                        aborted: false,
                    };
                }
                Fault::UntilAbortPaused(vm) if *vm == spec.vm => {
                    while !abort.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    self.sim.add_domain("ha", vm, DomState::Paused);
                    return Outcome::Failed {
                        error: "aborted by request".into(),
                        aborted: true,
                    };
                }
                Fault::Panic(vm) if *vm == spec.vm => panic!("injected panic"),
                _ => {}
            }
        }
        self.sim.migrate(spec, limits, abort, progress)
    }
}

/// Threads, except that those whose name starts with `refuse` do not
/// start.
#[derive(Debug)]
struct Refusing {
    refuse: &'static str,
    refused: Mutex<u32>,
}

impl Spawner for Refusing {
    fn spawn(&self, name: &str, f: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        if name.starts_with(self.refuse) {
            *self.refused.lock().unwrap() += 1;
            return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
        }
        Threads.spawn(name, f)
    }
}

fn refusing(refuse: &'static str) -> Arc<dyn Spawner> {
    Arc::new(Refusing {
        refuse,
        refused: Mutex::new(0),
    })
}

struct World {
    sim: Sim,
    ctl: Arc<Controller>,
    events: Receiver<Event>,
    dir: std::path::PathBuf,
    released: Arc<AtomicBool>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.released.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rackside-ctl-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn ctx() -> Ctx {
    let cfg = Config::parse("", std::path::Path::new("test.toml")).unwrap();
    let mut ctx = Ctx::from_config(&cfg);
    ctx.host = "ha".into();
    ctx.policy.strategy = Strategy::Balance;
    // Long enough never to fire in a test that is not about them (a
    // panic's backtrace on a loaded machine takes a while).
    ctx.machine.answer_timeout = BOUND / 2;
    ctx.machine.abort_grace = BOUND / 2;
    ctx.machine.check_timeout = Duration::from_secs(5);
    ctx.machine.reconcile_timeout = Duration::from_secs(5);
    ctx.tick = Duration::from_millis(5);
    ctx.follow_every = Duration::from_millis(5);
    ctx.restart_settle = Duration::from_millis(5);
    ctx
}

/// An inventory that sees `vms` running here and peers hb (64 GiB) and
/// hc (32 GiB), both answering: balance places on hb first.
fn inventory(vms: &[&str]) -> Arc<Inventory> {
    let peers: Vec<PeerSection> = ["hb", "hc"]
        .iter()
        .map(|n| PeerSection {
            name: (*n).into(),
            uri: format!("sim://{n}/system"),
            migrate_uri: None,
            location: String::new(),
        })
        .collect();
    let inv = Inventory::new(&peers, Duration::from_secs(5));
    let now = Instant::now();
    inv.update(|s| {
        s.local.link = Link::Up;
        s.local.vms_at = Some(now);
        s.local.vms = vms
            .iter()
            .map(|n| Vm {
                name: (*n).into(),
                uuid: format!("uuid-{n}"),
                state: VmState::Running,
                vcpus: 1,
                mem_mib: 1024,
                cpu_pct: None,
                cpu_time_ns: None,
                storage: None,
            })
            .collect();
        for p in &mut s.peers {
            p.ok_at = Some(now);
            p.error = None;
            p.cpus = 16;
            p.mem_total_mib = if p.name == "hb" { 65536 } else { 32768 };
            p.mem_free_mib = p.mem_total_mib;
        }
    });
    inv
}

fn world_from(
    name: &str,
    vms: &[&str],
    faults: Vec<Fault>,
    spawner: Arc<dyn Spawner>,
    setup: impl FnOnce(&Sim),
    journal: impl FnOnce(&Journal),
    ctx: Ctx,
) -> (World, Recovered) {
    let sim = Sim::new("ha");
    sim.add_host("hb");
    sim.add_host("hc");
    for vm in vms {
        sim.add_domain("ha", vm, DomState::Running);
    }
    setup(&sim);
    let dir = temp_dir(name);
    {
        let (j, _) = Journal::open(&dir).unwrap();
        journal(&j);
    }
    let (j, recovered) = Journal::open(&dir).unwrap();
    let bus = Bus::new();
    let events = bus.subscribe();
    let released = Arc::new(AtomicBool::new(false));
    let hv = Arc::new(Faulty {
        sim: sim.clone(),
        faults,
        released: released.clone(),
    });
    let ctl = Controller::new(ctx, inventory(vms), bus, j, &recovered, hv, spawner);
    (
        World {
            sim,
            ctl,
            events,
            dir,
            released,
        },
        recovered,
    )
}

fn world(name: &str, vms: &[&str], faults: Vec<Fault>, setup: impl FnOnce(&Sim)) -> World {
    world_from(name, vms, faults, Arc::new(Threads), setup, |_| {}, ctx()).0
}

impl World {
    /// Waits for the evacuation's verdict; the events before it too.
    fn verdict(&mut self) -> (Verdict, Vec<Event>) {
        let end = Instant::now() + BOUND;
        let mut seen = Vec::new();
        while Instant::now() < end {
            match self.events.try_recv() {
                Ok(e) => {
                    if let Payload::EvacuationDone(v) = &e.data {
                        return ((**v).clone(), seen);
                    }
                    seen.push(e);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        panic!("no verdict; jobs: {:?}", self.ctl.jobs());
    }

    /// Waits for the current run (a `migrate`) to end.
    fn run_ends(&self) {
        let end = Instant::now() + BOUND;
        while self.ctl.jobs().running {
            assert!(
                Instant::now() < end,
                "run never ended: {:?}",
                self.ctl.jobs()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn job(&self, vm: &str) -> crate::report::JobRow {
        self.ctl
            .jobs()
            .jobs
            .into_iter()
            .rev()
            .find(|j| j.vm == vm)
            .unwrap()
    }

    /// Waits until `vm`'s job is running.
    fn running(&self, vm: &str) {
        let end = Instant::now() + BOUND;
        while self.job(vm).phase != Phase::Running {
            assert!(Instant::now() < end, "never ran: {:?}", self.ctl.jobs());
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn auto() -> Dest {
    Dest::Auto
}

fn to(h: &str) -> Dest {
    Dest::Host(h.into())
}

fn failures(events: &[Event]) -> Vec<MigrationFailed> {
    events
        .iter()
        .filter_map(|e| match &e.data {
            Payload::MigrationFailed(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_evacuation_moves_everything_and_says_safe() {
    let mut w = world("happy", &["a", "b", "c"], vec![], |_| {});
    let started = w.ctl.evacuate(&auto(), false, "t").unwrap();
    assert_eq!(started.moves.len(), 3);
    let (v, _) = w.verdict();
    assert!(v.safe_to_power_off, "{v:?}");
    assert_eq!(v.moved.len(), 3);
    assert!(w.sim.domains_on("ha").is_empty());
    assert!(w.ctl.maintenance_on());
}

#[test]
fn a_failed_job_is_retried_once_on_the_next_host() {
    let mut w = world("retry", &["a"], vec![], |s| {
        s.reach("hb", Reach::Unreachable)
    });
    w.ctl.evacuate(&auto(), false, "t").unwrap();
    let (v, events) = w.verdict();
    assert!(v.safe_to_power_off, "{v:?}");
    let j = w.job("a");
    assert_eq!(j.tried, vec!["hb", "hc"]);
    assert_eq!(j.phase, Phase::Done);
    assert_eq!(w.sim.state_of("hc", "a"), Some(DomState::Running));
    let f = failures(&events);
    assert_eq!(f[0].retrying_on.as_deref(), Some("hc"));
    assert_eq!(f[0].now_on.as_deref(), Some("ha"));
}

#[test]
fn a_job_is_retried_only_once() {
    let mut w = world("retry-once", &["a"], vec![], |s| {
        s.script(
            "a",
            Script::Fail {
                after: 1,
                message: "operation failed: no".into(),
            },
        )
    });
    w.ctl.evacuate(&auto(), false, "t").unwrap();
    let (v, _) = w.verdict();
    assert!(!v.safe_to_power_off);
    assert_eq!(v.remaining, vec!["a"]);
    let j = w.job("a");
    assert_eq!((j.phase, j.tried.len()), (Phase::Failed, 2));
    assert_eq!(w.sim.counters().migrations_started, 2);
}

#[test]
fn a_named_destination_is_never_retried_elsewhere() {
    let w = world("named", &["a"], vec![], |s| {
        s.reach("hb", Reach::Unreachable)
    });
    w.ctl.migrate("a", &to("hb"), "t").unwrap();
    w.run_ends();
    let j = w.job("a");
    assert_eq!(j.phase, Phase::Failed);
    assert_eq!(j.tried, vec!["hb"]);
    assert_eq!(w.sim.state_of("ha", "a"), Some(DomState::Running));
}

#[test]
fn abort_ends_queued_jobs_at_once_and_running_ones_when_they_stop() {
    // One at a time: b waits while a runs (until aborted).
    let mut c = ctx();
    c.machine.max_parallel = 1;
    let (mut w, _) = world_from(
        "abort",
        &["a", "b"],
        vec![
            Fault::UntilAbortPaused("a".into()),
            Fault::UntilAbortPaused("b".into()),
        ],
        Arc::new(Threads),
        |_| {},
        |_| {},
        c,
    );
    w.ctl.evacuate(&auto(), false, "t").unwrap();
    let first = loop {
        let jobs = w.ctl.jobs().jobs;
        if let Some(j) = jobs.iter().find(|j| j.phase == Phase::Running) {
            break j.vm.clone();
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let other = if first == "a" { "b" } else { "a" };
    let r = w.ctl.abort(None, "t").unwrap();
    assert_eq!(r.aborted.len(), 2);
    assert_eq!(w.job(other).phase, Phase::Aborted);
    let (v, events) = w.verdict();
    assert_eq!(w.job(&first).phase, Phase::Aborted);
    assert!(!v.safe_to_power_off);
    // Running means running: libvirt left it paused, the agent resumed it
    // and said so.
    assert_eq!(w.sim.state_of("ha", &first), Some(DomState::Running));
    assert!(w.job(&first).note.unwrap().contains("resumed"));
    assert!(failures(&events)[0]
        .note
        .as_ref()
        .unwrap()
        .contains("resumed"));
    assert_eq!(w.sim.counters().resumes, 1);
    assert_eq!(w.ctl.abort(None, "t").unwrap_err().0, ErrorCode::NotFound);
}

#[test]
fn a_second_evacuate_is_busy_and_maintenance_off_is_refused_meanwhile() {
    let mut w = world(
        "busy",
        &["a"],
        vec![Fault::UntilAbortPaused("a".into())],
        |_| {},
    );
    w.ctl.evacuate(&auto(), false, "t").unwrap();
    let e = w.ctl.evacuate(&auto(), false, "t").unwrap_err();
    assert_eq!(e.0, ErrorCode::Busy);
    assert_eq!(
        w.ctl.migrate("a", &auto(), "t").unwrap_err().0,
        ErrorCode::Busy
    );
    assert_eq!(
        w.ctl.maintenance(false, "t").unwrap_err().0,
        ErrorCode::Busy
    );
    w.running("a");
    w.ctl.abort(None, "t").unwrap();
    w.verdict();
    // Over: no longer busy.
    assert!(w.ctl.maintenance(false, "t").is_ok());
}

#[test]
fn a_job_thread_that_cannot_start_fails_its_job_and_the_run_ends() {
    let (mut w, _) = world_from(
        "nostart",
        &["a"],
        vec![],
        refusing("job-"),
        |_| {},
        |_| {},
        ctx(),
    );
    w.ctl.evacuate(&auto(), false, "t").unwrap();
    let (v, _) = w.verdict();
    assert!(!v.safe_to_power_off);
    let j = w.job("a");
    assert_eq!(j.phase, Phase::Failed);
    assert!(j
        .error
        .unwrap()
        .contains("cannot start the migration thread"));
    assert_eq!(v.remaining, vec!["a"]);
}

#[test]
fn a_job_thread_that_panics_fails_its_job_and_the_run_ends() {
    let mut w = world("panic", &["a"], vec![Fault::Panic("a".into())], |_| {});
    w.ctl.evacuate(&auto(), false, "t").unwrap();
    let (v, _) = w.verdict();
    let j = w.job("a");
    assert_eq!(j.phase, Phase::Failed);
    let e = j.error.unwrap();
    assert!(e.contains("panicked: injected panic"), "{e}");
    assert_eq!(v.remaining, vec!["a"]);
}

#[test]
fn a_run_whose_thread_cannot_start_ends_not_safe_at_once() {
    let (mut w, _) = world_from(
        "norun",
        &["a"],
        vec![],
        refusing("run-"),
        |_| {},
        |_| {},
        ctx(),
    );
    w.ctl.evacuate(&auto(), false, "t").unwrap();
    let (v, _) = w.verdict();
    assert!(!v.safe_to_power_off);
    assert!(v
        .check_error
        .unwrap()
        .contains("cannot start the run thread"));
    assert!(!w.ctl.jobs().running);
}

#[test]
fn a_hung_peer_fails_the_job_with_the_reason() {
    let w = world("hung-peer", &["a"], vec![], |s| {
        s.set_peer_deadline(Duration::from_millis(50));
        s.reach("hb", Reach::Hangs);
        s.filters("a", &["clean-traffic"]);
    });
    w.ctl.migrate("a", &to("hb"), "t").unwrap();
    w.run_ends();
    let j = w.job("a");
    assert_eq!(j.phase, Phase::Failed);
    assert!(j.error.unwrap().contains("did not answer within"));
    assert_eq!(w.sim.state_of("ha", "a"), Some(DomState::Running));
}

#[test]
fn abort_works_while_a_peer_hangs() {
    let mut w = world("hung-abort", &["a"], vec![], |s| {
        s.reach("hb", Reach::Hangs);
        s.filters("a", &["clean-traffic"]);
        s.set_peer_deadline(BOUND * 2);
    });
    w.ctl.evacuate(&to("hb"), false, "t").unwrap();
    w.sim.wait_until_hanging(1);
    w.ctl.abort(None, "t").unwrap();
    let (v, _) = w.verdict();
    assert_eq!(w.job("a").phase, Phase::Aborted);
    assert_eq!(v.remaining, vec!["a"]);
}

#[test]
fn a_migration_that_never_answers_fails_at_its_deadline_and_abort_still_works() {
    let short = || {
        let mut c = ctx();
        c.machine.answer_timeout = Duration::from_millis(300);
        c.machine.abort_grace = Duration::from_millis(300);
        c
    };
    let wedged = |name: &str, vms: &[&str]| {
        world_from(
            name,
            vms,
            vec![Fault::Wedge("a".into())],
            Arc::new(Threads),
            |_| {},
            |_| {},
            short(),
        )
        .0
    };
    let mut w = wedged("wedged", &["a", "b"]);
    w.ctl.evacuate(&auto(), false, "t").unwrap();
    let (v, _) = w.verdict();
    let j = w.job("a");
    assert_eq!(j.phase, Phase::Failed);
    assert_eq!(j.error.as_deref(), Some("no answer from hb for 300 ms"));
    // The run went on: b moved.
    assert_eq!(w.job("b").phase, Phase::Done);
    assert_eq!(v.remaining, vec!["a"]);

    let mut w = wedged("wedged-abort", &["a"]);
    w.ctl.evacuate(&auto(), false, "t").unwrap();
    w.running("a");
    w.ctl.abort(Some("a"), "t").unwrap();
    w.verdict();
    let j = w.job("a");
    assert_eq!(j.phase, Phase::Aborted);
    assert!(j.error.unwrap().contains("after the abort"));
}

#[test]
fn poweroff_enters_maintenance_before_it_checks_and_refuses_a_paused_vm() {
    let w = world("poweroff", &["a"], vec![], |s| {
        s.add_domain("ha", "a", DomState::Paused);
        s.add_domain("ha", "parked", DomState::ShutOff);
    });
    let mut c = ctx();
    c.power.allow = true;
    c.power.command = vec!["true".into()];
    let dir = w.dir.join("p");
    let ctl = Controller::new(
        c,
        inventory(&["a"]),
        Bus::new(),
        Journal::open(&dir).unwrap().0,
        &Recovered::default(),
        w.ctl.hv.clone(),
        Arc::new(Threads),
    );
    let e = ctl.poweroff("t").unwrap_err();
    assert_eq!(e.0, ErrorCode::Busy);
    // A paused VM is still here; a shut-off definition is not.
    assert_eq!(e.1, "not empty: a (paused) still here");
    // Maintenance was on (journalled) while libvirt was asked, and is off
    // again now that the poweroff was refused.
    assert!(!ctl.maintenance_on());
    let journal = std::fs::read_to_string(dir.join(super::journal::FILE)).unwrap();
    let flags: Vec<bool> = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["type"] == "maintenance" && r["line"] == "t")
        .map(|r| r["on"] == true)
        .collect();
    assert_eq!(flags, vec![true, false]);
    // Empty: it powers off, in maintenance.
    w.sim.remove_domain("ha", "a");
    assert!(ctl.poweroff("t").unwrap().powering_off);
    assert!(ctl.maintenance_on());
}

#[test]
fn plans_refuse_while_libvirt_is_blind_and_unknown_hosts_are_not_found() {
    let w = world("blind", &["a", "b", "c"], vec![], |_| {});
    // A mistyped host is one error, not one line per VM.
    assert_eq!(
        w.ctl.plan(&to("nowhere")).unwrap_err(),
        (ErrorCode::NotFound, "no peer named 'nowhere'".to_owned())
    );
    assert_eq!(
        w.ctl.migrate("a", &to("nosuchhost"), "t").unwrap_err().0,
        ErrorCode::NotFound
    );
    assert_eq!(
        w.ctl.evacuate(&to("nosuchhost"), false, "t").unwrap_err().0,
        ErrorCode::NotFound
    );
    assert_eq!(
        w.ctl.migrate("a", &to("ha"), "t").unwrap_err().0,
        ErrorCode::BadRequest
    );
    assert!(
        !w.ctl.maintenance_on(),
        "a refused evacuate changes nothing"
    );
    w.ctl.inventory.update(|s| {
        s.local.link = Link::Down {
            since: Instant::now(),
            error: "connection refused".into(),
        }
    });
    for e in [
        w.ctl.plan(&auto()).unwrap_err(),
        w.ctl.evacuate(&auto(), false, "t").unwrap_err(),
        w.ctl.migrate("a", &auto(), "t").unwrap_err(),
    ] {
        assert_eq!(e.0, ErrorCode::Unavailable);
        assert!(e.1.contains("connection refused"), "{}", e.1);
    }
    assert!(
        !w.ctl.maintenance_on(),
        "a refused evacuate changes nothing"
    );
    w.ctl.inventory.update(|s| {
        s.local.link = Link::Connecting;
        s.local.vms_at = None;
    });
    assert_eq!(w.ctl.plan(&auto()).unwrap_err().0, ErrorCode::Unavailable);
}

#[test]
fn identify_returns_at_once_and_its_command_is_killed_at_its_limit() {
    let w = world("identify", &[], vec![], |_| {});
    std::fs::create_dir_all(&w.dir).unwrap();
    let pid_file = w.dir.join("pid");
    let mut c = ctx();
    // Writes its pid, then would blink for as long as it is told (255 s).
    c.power.identify_command = vec![
        "sh".into(),
        "-c".into(),
        format!("echo $$ > {}; exec sleep \"$0\"", pid_file.display()),
    ];
    c.identify_limit = Duration::from_millis(50);
    let ctl = Controller::new(
        c,
        inventory(&[]),
        Bus::new(),
        Journal::open(&w.dir.join("i")).unwrap().0,
        &Recovered::default(),
        w.ctl.hv.clone(),
        Arc::new(Threads),
    );
    ctl.identify(&rackside_protocol::Identify::On).unwrap();
    // The answer came back; the command is killed at its limit.
    let end = Instant::now() + BOUND;
    let pid = loop {
        if let Some(p) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            break p;
        }
        assert!(Instant::now() < end, "identify never ran");
        std::thread::sleep(Duration::from_millis(2));
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(Instant::now() < end, "identify's command was never killed");
        std::thread::sleep(Duration::from_millis(2));
    }
}

// Recovery from each journal state.

fn job(id: u64, vm: &str, dest: &str, phase: Phase) -> Job {
    let mut j = Job::new(
        id,
        &VmDemand {
            name: vm.into(),
            vcpus: 1,
            mem_mib: 1024,
            ..Default::default()
        },
        dest,
        false,
    );
    if phase != Phase::Queued {
        j.tried.push(dest.into());
    }
    j.phase = phase;
    j
}

fn journalled(jobs: Vec<Job>, aborting: bool) -> impl FnOnce(&Journal) {
    move |j: &Journal| {
        j.write(&super::journal::Record::Maintenance {
            ts: "t".into(),
            on: true,
            line: None,
        });
        let mut run = Run::new(5, Kind::Evacuate, false, jobs, vec![]);
        run.aborting = aborting;
        j.run(&run);
    }
}

fn recovered_world(
    name: &str,
    vms: &[&str],
    setup: impl FnOnce(&Sim),
    jobs: Vec<Job>,
    aborting: bool,
    spawner: Arc<dyn Spawner>,
) -> World {
    let (w, rec) = world_from(
        name,
        vms,
        vec![],
        spawner,
        setup,
        journalled(jobs, aborting),
        ctx(),
    );
    assert!(w.ctl.maintenance_on());
    w.ctl.recover(&rec);
    w
}

#[test]
fn recovery_of_queued_jobs_closes_them_not_started() {
    let mut w = recovered_world(
        "rec-queued",
        &["a"],
        |_| {},
        vec![job(1, "a", "hb", Phase::Queued)],
        false,
        Arc::new(Threads),
    );
    let (v, _) = w.verdict();
    assert_eq!(w.job("a").phase, Phase::Aborted);
    assert_eq!(v.remaining, vec!["a"]);
    assert_eq!(w.sim.counters().migrations_started, 0);
    // Not busy after.
    w.ctl.evacuate(&auto(), false, "t").unwrap();
    assert!(w.verdict().0.safe_to_power_off);
}

#[test]
fn recovery_of_running_jobs_finds_each_vm() {
    // a moved while the agent was down; b is still here, paused.
    let mut w = recovered_world(
        "rec-running",
        &["b"],
        |s| {
            s.add_domain("hb", "a", DomState::Running);
            s.add_domain("ha", "b", DomState::Paused);
        },
        vec![
            job(1, "a", "hb", Phase::Running),
            job(2, "b", "hb", Phase::Running),
        ],
        false,
        Arc::new(Threads),
    );
    let (v, _) = w.verdict();
    assert_eq!(w.job("a").phase, Phase::Done);
    assert_eq!(w.job("b").phase, Phase::Failed);
    assert!(w.job("b").note.unwrap().contains("resumed"));
    assert_eq!(w.sim.state_of("ha", "b"), Some(DomState::Running));
    assert_eq!(v.remaining, vec!["b"]);
}

#[test]
fn recovery_of_an_aborting_run_ends_it_aborted() {
    let mut w = recovered_world(
        "rec-aborting",
        &["a"],
        |_| {},
        vec![
            job(1, "a", "hb", Phase::Running),
            job(2, "x", "hb", Phase::Queued),
        ],
        true,
        Arc::new(Threads),
    );
    w.verdict();
    assert_eq!(w.job("a").phase, Phase::Aborted);
    assert_eq!(w.job("x").phase, Phase::Aborted);
}

#[test]
fn recovery_of_a_run_whose_verdict_was_pending_gives_it() {
    let mut w = recovered_world(
        "rec-pending",
        &[],
        |s| s.add_domain("hb", "a", DomState::Running),
        vec![job(1, "a", "hb", Phase::Done)],
        false,
        Arc::new(Threads),
    );
    let (v, _) = w.verdict();
    assert!(v.safe_to_power_off);
}

#[test]
fn a_recovery_whose_thread_cannot_start_still_closes_the_run() {
    let mut w = recovered_world(
        "rec-nothread",
        &["a"],
        |_| {},
        vec![job(1, "a", "hb", Phase::Running)],
        false,
        refusing("recovery-"),
    );
    let (v, _) = w.verdict();
    assert!(!v.safe_to_power_off);
    assert!(v
        .check_error
        .unwrap()
        .contains("cannot start the recovery thread"));
    assert!(!w.ctl.jobs().running, "never busy forever");
    assert_eq!(w.ctl.abort(None, "t").unwrap_err().0, ErrorCode::NotFound);
}

#[test]
fn recovery_with_maintenance_on_or_off_and_no_run_starts_idle() {
    for on in [true, false] {
        let (w, rec) = world_from(
            &format!("rec-maint-{on}"),
            &["a"],
            vec![],
            Arc::new(Threads),
            |_| {},
            move |j| {
                j.write(&super::journal::Record::Maintenance {
                    ts: "t".into(),
                    on,
                    line: None,
                })
            },
            ctx(),
        );
        w.ctl.recover(&rec);
        assert_eq!(w.ctl.maintenance_on(), on);
        assert!(!w.ctl.jobs().running);
        assert_eq!(
            w.ctl.host_state(Some(1)),
            if on { "maintenance" } else { "active" }
        );
    }
}

#[test]
fn checks_whose_threads_cannot_start_still_end_the_run_not_safe() {
    // The verdict's own check cannot start: NOT SAFE, with the reason.
    let (mut w, _) = world_from(
        "noverdict",
        &["a"],
        vec![],
        refusing("verdict-"),
        |_| {},
        |_| {},
        ctx(),
    );
    w.ctl.evacuate(&auto(), false, "t").unwrap();
    let (v, _) = w.verdict();
    assert!(!v.safe_to_power_off, "everything moved, but nobody checked");
    assert!(v
        .check_error
        .unwrap()
        .contains("cannot start the check thread"));
    // A recovery whose reconciliation cannot start: the job fails with the
    // reason, the run ends.
    let mut w = recovered_world(
        "noreconcile",
        &["a"],
        |_| {},
        vec![job(1, "a", "hb", Phase::Running)],
        false,
        refusing("reconcile-"),
    );
    let (v, _) = w.verdict();
    let j = w.job("a");
    assert_eq!(j.phase, Phase::Failed);
    assert!(j.error.unwrap().contains("whereabouts unknown"));
    assert_eq!(v.remaining, vec!["a"]);
}

#[test]
fn an_unmovable_vm_is_never_tried_and_local_disks_go_where_they_fit() {
    use crate::storage::{Format, LocalDisk, PoolRoom, Storage};
    let mut w = world("storage", &["a", "disky", "gpu"], vec![], |s| {
        s.local_disks("disky", &[("vda", "/img/disky.img", 4 << 30)])
    });
    w.ctl.inventory.update(|s| {
        for vm in &mut s.local.vms {
            vm.storage = Some(match vm.name.as_str() {
                "disky" => Storage {
                    local: vec![LocalDisk {
                        dev: "vda".into(),
                        path: "/img/disky.img".into(),
                        format: Format::Raw,
                        capacity: 4 << 30,
                        allocation: 1 << 30,
                    }],
                    blockers: Vec::new(),
                },
                "gpu" => Storage {
                    local: Vec::new(),
                    blockers: vec!["a host device is passed through to it (<hostdev>)".into()],
                },
                _ => Storage::default(),
            });
        }
        // hb, balance's first choice, has too little room for the disk.
        for (p, gib) in s.peers.iter_mut().zip([2u64, 10]) {
            p.pools = vec![PoolRoom {
                target: "/img".into(),
                available: gib << 30,
            }];
        }
    });
    let started = w.ctl.evacuate(&auto(), false, "t").unwrap();
    assert_eq!(started.unplaceable.len(), 1, "{started:?}");
    assert_eq!(started.unplaceable[0].vm, "gpu");
    assert!(started.unplaceable[0].reason.contains("<hostdev>"));
    let (v, _) = w.verdict();
    assert!(!v.safe_to_power_off, "{v:?}");
    assert_eq!(v.remaining, vec!["gpu"]);
    assert_eq!(w.job("disky").dest, "hc");
    assert_eq!(w.sim.state_of("hc", "disky"), Some(DomState::Running));
    assert!(w.sim.volumes_on("hc").contains("/img/disky.img"));
    assert_eq!(w.sim.counters().migrations_started, 2);
    assert!(
        !w.sim.log().iter().any(|l| l.contains("gpu")),
        "{:?}",
        w.sim.log()
    );
    assert_eq!(w.sim.state_of("ha", "gpu"), Some(DomState::Running));
}

#[test]
fn a_cut_local_connection_is_told_from_an_answer_about_the_migration() {
    use crate::hypervisor::LOCAL_LIBVIRT_LOST;
    // Our own connection died (agent/tests/lab_faults.rs
    // source_libvirtd_restarted_mid_migration).
    assert!(super::connection_lost(&format!(
        "{LOCAL_LIBVIRT_LOST}: End of file while reading data: Input/output error"
    )));
    // The same words about the destination's daemon, relayed by ours over
    // a live connection, are an answer about the migration
    // (agent/tests/lab_evacuate.rs destination_libvirtd_stopped_mid_migration).
    assert!(!super::connection_lost(
        "End of file while reading data: Input/output error"
    ));
    assert!(!super::connection_lost(
        "operation failed: migration out job: unexpectedly failed"
    ));
    assert!(!super::connection_lost("aborted by request"));
}

#[test]
fn jobs_and_the_done_event_say_whether_traffic_followed_the_vm() {
    let mut w = world("announce", &["a", "b"], vec![], |s| {
        s.announcing("a", Announcing::Heard);
        s.announcing("b", Announcing::Silent);
    });
    w.ctl.evacuate(&auto(), false, "t").unwrap();
    let (v, events) = w.verdict();
    assert!(v.safe_to_power_off, "{v:?}");
    let done: Vec<(String, Option<Announce>)> = events
        .iter()
        .filter_map(|e| match &e.data {
            Payload::MigrationDone(d) => Some((d.vm.clone(), d.announce.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 2, "{done:?}");
    for (vm, a) in &done {
        assert_eq!(a, &w.job(vm).announce, "{vm}");
    }
    assert_eq!(w.job("a").announce, Some(Announce::Seen { from_end_ms: 0 }));
    assert!(
        matches!(w.job("b").announce, Some(Announce::Requested { .. })),
        "{:?}",
        w.job("b")
    );
    let asked: Vec<String> = w
        .sim
        .counters()
        .announce_requests
        .into_iter()
        .map(|(_, vm)| vm)
        .collect();
    assert_eq!(asked, ["b"]);
}

#[test]
fn status_keeps_the_last_result_until_maintenance_ends_or_a_run_starts() {
    let mut w = world("last-result", &["a", "b", "c"], vec![], |_| {});
    assert_eq!(w.ctl.last_result(), None);
    w.ctl.evacuate(&auto(), false, "t").unwrap();
    let (v, _) = w.verdict();
    let r = w.ctl.last_result().expect("the result stands");
    assert_eq!(
        (
            r.evacuation,
            r.safe_to_power_off,
            r.moved,
            r.still_here,
            r.checked
        ),
        (v.evacuation, true, 3, 0, true)
    );
    assert!(r.at.ends_with('Z'), "{r:?}");
    // Another run: the old result no longer describes the host.
    w.ctl.migrate("a", &auto(), "t").unwrap();
    assert_eq!(w.ctl.last_result(), None);
    w.run_ends();
    assert_eq!(w.ctl.last_result(), None, "a migrate is not an evacuation");
    w.ctl.evacuate(&auto(), false, "t").unwrap();
    w.verdict();
    assert!(w.ctl.last_result().is_some());
    w.ctl.maintenance(true, "t").unwrap();
    assert!(
        w.ctl.last_result().is_some(),
        "maintenance on changes nothing"
    );
    w.ctl.maintenance(false, "t").unwrap();
    assert_eq!(w.ctl.last_result(), None);
}

#[test]
fn the_last_result_survives_a_restart_while_maintenance_is_on() {
    let mut run = Run::new(4, Kind::Evacuate, false, vec![], vec![]);
    run.finished = true;
    run.verdict = Some(Box::new(super::model::verdict(
        &run,
        "ha",
        Ok(vec![DomainInfo {
            name: "a".into(),
            state: DomState::Paused,
        }]),
    )));
    let mut rec = Recovered {
        maintenance: true,
        runs: vec![run.clone()],
        ..Recovered::default()
    };
    rec.finished_at.insert(4, "2026-03-01T14:31:31Z".into());
    let r = super::recovered_result(&rec).unwrap();
    assert_eq!(
        (
            r.evacuation,
            r.at.as_str(),
            r.safe_to_power_off,
            r.still_here
        ),
        (4, "2026-03-01T14:31:31Z", false, 1)
    );
    rec.maintenance = false;
    assert_eq!(super::recovered_result(&rec), None);
    rec.maintenance = true;
    let mut later = Run::new(5, Kind::Migrate, false, vec![], vec![]);
    later.finished = true;
    rec.runs.push(later);
    assert_eq!(
        super::recovered_result(&rec),
        None,
        "a later run replaced it"
    );
    // The journal gives when the run was first written finished.
    let records = [
        super::journal::Record::Run {
            ts: "2026-03-01T14:30:00Z".into(),
            run: Run {
                finished: false,
                ..run.clone()
            },
        },
        super::journal::Record::Run {
            ts: "2026-03-01T14:31:31Z".into(),
            run: run.clone(),
        },
        super::journal::Record::Run {
            ts: "2026-03-01T14:40:00Z".into(),
            run,
        },
    ];
    let rec = super::journal::summarize(&records);
    assert_eq!(rec.finished_at[&4], "2026-03-01T14:31:31Z");
}
