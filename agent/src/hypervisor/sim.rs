//! A simulated hypervisor: hosts and domains in memory, migrations that
//! follow a per-VM [`Script`], peers that answer, hang or refuse.
//!
//! Deterministic: a migration advances one step per sample and its clock
//! is virtual (one second a sample), so the policy's time rules play out
//! in microseconds. Only calls to a hanging peer take real time: they
//! block until the deadline ([`Sim::set_peer_deadline`]) cuts them off,
//! exactly as a hung libvirt would be cut off; the blocked threads are
//! released when the last [`Sim`] handle is dropped. The default deadline
//! is long, so that a peer that answers is never cut off on a loaded
//! machine (every peer call runs on a thread of its own); a test that
//! makes a peer hang sets a short one.
//!
//! [`Sim::counters`] and [`Sim::log`] let a test assert what was asked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::deadline;
use super::{DomState, DomainInfo, HvError, Hypervisor, Limits, PeerAddr, Progress};
use crate::libvirt_ffi::JobStats;

/// Long enough that an answering peer's call is never cut off, however
/// loaded the machine; tests of hung peers set their own.
const DEFAULT_PEER_DEADLINE: Duration = Duration::from_secs(10);
use crate::migration::announce::{Heard, Mac, Watched};
use crate::migration::run::{
    drive, may_discard, AnnounceWatch, MigrationJob, MigrationOps, Outcome, Pace, Prepared, Spec,
};

const MIB: u64 = 1024 * 1024;
/// What libvirt says when a job is aborted.
pub const ABORTED_MSG: &str = "operation aborted: migration out job: canceled by client";

/// How one VM's migration behaves. Samples are counted from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    /// Copies in one pass, data moving at every sample; ends well after
    /// `samples` samples.
    Succeed { samples: u32 },
    /// Data moves but the remaining never shrinks, one iteration a sample:
    /// the policy raises the downtime through its steps, then gives up.
    Stall,
    /// libvirt ends the job with `message` after `after` samples; the VM
    /// keeps running on the source (ABORT_ON_ERROR).
    Fail { after: u32, message: String },
    /// Like `Fail`, and the VM is left paused on the source; an abort
    /// leaves it paused too.
    FailPaused { after: u32, message: String },
    /// Never ends on its own, and moves nothing; ends when aborted if
    /// `honours_abort`.
    Hang { honours_abort: bool },
    /// After `after` samples the domain disappears from the source and
    /// the destination; the job ends with libvirt's "not found".
    Vanish { after: u32 },
    /// Runs, moving nothing and with its clock stopped, until the test
    /// ends it with [`Sim::release`] or it is aborted: a job that is
    /// "running" for as long as a test needs (busy, abort of a running
    /// job). Each sample waits up to the loop's poll interval in real time.
    Gated,
}

/// What the source hears of a VM's announcement after it moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcing {
    /// The VM has no NIC (the default).
    NoNic,
    /// Its NIC ([`SIM_MAC`] on `br0`) is heard as the migration ends.
    Heard,
    /// Its NIC is watched and never heard (something drops the RARP).
    Silent,
    /// Its NIC cannot be watched, for this reason.
    Unwatchable(String),
}

/// The MAC of a simulated VM's NIC.
pub const SIM_MAC: Mac = Mac([0x52, 0x54, 0, 0, 0, 1]);

/// How a host's libvirt answers calls from elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Answers,
    /// Every call blocks (until the caller's deadline cuts it off).
    Hangs,
    /// Connection refused.
    Unreachable,
}

/// What `resume_local` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeMode {
    /// Paused becomes running.
    Works,
    /// libvirt refuses with this message.
    Fails(String),
    /// libvirt says yes, and the domain stays paused.
    NoEffect,
}

/// What was asked of the simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub migrations_started: u32,
    pub aborts: u32,
    pub resumes: u32,
    /// (VM, ms) for every virDomainMigrateSetMaxDowntime, in order.
    pub downtimes: Vec<(String, u64)>,
    /// (host, filter) for every nwfilter defined on a peer.
    pub nwfilters_defined: Vec<(String, String)>,
    pub peer_calls: u32,
    /// Calls that blocked on a hanging host.
    pub hung_calls: u32,
    /// Migrations that have ended, whatever their result.
    pub migrations_ended: u32,
    /// (destination, VM) for every announce-self asked of a destination.
    pub announce_requests: Vec<(String, String)>,
}

#[derive(Debug)]
struct Host {
    reach: Reach,
    domains: BTreeMap<String, DomState>,
    nwfilters: BTreeSet<String>,
    /// Storage volumes (image paths).
    volumes: BTreeSet<String>,
}

impl Host {
    fn new() -> Host {
        Host {
            reach: Reach::Answers,
            domains: BTreeMap::new(),
            nwfilters: BTreeSet::new(),
            volumes: BTreeSet::new(),
        }
    }
}

#[derive(Debug)]
struct World {
    local: String,
    local_up: bool,
    hosts: BTreeMap<String, Host>,
    /// By (VM, destination); a None destination is the VM's default.
    scripts: BTreeMap<(String, Option<String>), Script>,
    /// nwfilters each VM's interfaces reference.
    filters: BTreeMap<String, Vec<String>>,
    /// Local disks of each VM: (target dev, image path, bytes).
    disks: BTreeMap<String, Vec<(String, String, u64)>>,
    /// Local VMs with a libvirt job under way.
    jobs: BTreeSet<String>,
    /// What is heard of each VM's announcement (default: no NIC).
    announcing: BTreeMap<String, Announcing>,
    /// Hosts whose QEMU refuses announce-self, with the message.
    announce_refused: BTreeMap<String, String>,
    resume: ResumeMode,
    /// How gated migrations end, once the test says ([`Sim::release`]).
    released_jobs: BTreeMap<String, Result<(), String>>,
    peer_deadline: Duration,
    abort_grace: Duration,
    counters: Counters,
    log: Vec<String>,
    /// Set when the last handle goes: hung calls return.
    released: bool,
}

#[derive(Debug)]
struct Inner {
    world: Mutex<World>,
    /// Signalled whenever a counter changes, a gated job is released, and
    /// when the last handle goes.
    changed: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, World> {
        // A test that panicked while holding the lock must not take every
        // later call down with it.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks like a hung libvirt: until the simulator is dropped.
    fn hang(&self, mut w: MutexGuard<'_, World>, what: String) {
        w.counters.hung_calls += 1;
        w.log.push(format!("hang {what}"));
        self.changed.notify_all();
        while !w.released {
            w = self.changed.wait(w).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A call to `host` from elsewhere: Ok with the lock if it answers.
    fn reach<'a>(&'a self, host: &str, what: &str) -> Result<MutexGuard<'a, World>, HvError> {
        let mut w = self.lock();
        w.counters.peer_calls += 1;
        match w.hosts.get(host).map(|h| h.reach) {
            Some(Reach::Answers) => Ok(w),
            Some(Reach::Hangs) => {
                self.hang(w, format!("{host} {what}"));
                Err(HvError::Unreachable(format!("{host}: released")))
            }
            Some(Reach::Unreachable) | None => Err(HvError::Unreachable(format!(
                "unable to connect to server at '{host}': Connection refused"
            ))),
        }
    }
}

/// Opens hung calls when the last [`Sim`] handle goes.
#[derive(Debug)]
struct Release(Arc<Inner>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.lock().released = true;
        self.0.changed.notify_all();
    }
}

/// The simulated hypervisor, as seen from host `local`. Cheap to clone;
/// clones share the world.
#[derive(Debug, Clone)]
pub struct Sim {
    inner: Arc<Inner>,
    _release: Arc<Release>,
}

impl Sim {
    /// A world with one host, `local`, the one this hypervisor runs on.
    pub fn new(local: &str) -> Sim {
        let mut hosts = BTreeMap::new();
        hosts.insert(local.to_owned(), Host::new());
        let inner = Arc::new(Inner {
            world: Mutex::new(World {
                local: local.to_owned(),
                local_up: true,
                hosts,
                scripts: BTreeMap::new(),
                filters: BTreeMap::new(),
                disks: BTreeMap::new(),
                jobs: BTreeSet::new(),
                announcing: BTreeMap::new(),
                announce_refused: BTreeMap::new(),
                resume: ResumeMode::Works,
                released_jobs: BTreeMap::new(),
                peer_deadline: DEFAULT_PEER_DEADLINE,
                abort_grace: Duration::from_secs(30),
                counters: Counters::default(),
                log: Vec::new(),
                released: false,
            }),
            changed: Condvar::new(),
        });
        Sim {
            _release: Arc::new(Release(inner.clone())),
            inner,
        }
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.inner.lock()
    }

    /// Adds a host (no-op if known).
    pub fn add_host(&self, host: &str) {
        self.lock()
            .hosts
            .entry(host.to_owned())
            .or_insert_with(Host::new);
    }

    /// Defines `vm` on `host` (adding the host if needed) in `state`.
    pub fn add_domain(&self, host: &str, vm: &str, state: DomState) {
        self.lock()
            .hosts
            .entry(host.to_owned())
            .or_insert_with(Host::new)
            .domains
            .insert(vm.to_owned(), state);
    }

    pub fn remove_domain(&self, host: &str, vm: &str) {
        if let Some(h) = self.lock().hosts.get_mut(host) {
            h.domains.remove(vm);
        }
    }

    pub fn state_of(&self, host: &str, vm: &str) -> Option<DomState> {
        self.lock().hosts.get(host)?.domains.get(vm).copied()
    }

    /// The domains on `host`, by name.
    pub fn domains_on(&self, host: &str) -> Vec<DomainInfo> {
        self.lock()
            .hosts
            .get(host)
            .map(|h| infos(&h.domains))
            .unwrap_or_default()
    }

    /// The address the simulator answers to for `host`.
    pub fn peer(&self, host: &str) -> PeerAddr {
        PeerAddr {
            name: host.to_owned(),
            uri: format!("sim://{host}/system"),
        }
    }

    /// How `vm`'s next migrations behave (default: succeed after 3 samples).
    pub fn script(&self, vm: &str, script: Script) {
        self.lock().scripts.insert((vm.to_owned(), None), script);
    }

    /// How `vm`'s migrations to `dest` behave, whatever [`Sim::script`]
    /// says (e.g. fail on the first host, succeed on the next).
    pub fn script_to(&self, vm: &str, dest: &str, script: Script) {
        self.lock()
            .scripts
            .insert((vm.to_owned(), Some(dest.to_owned())), script);
    }

    /// The nwfilters `vm`'s interfaces reference (defined on this host).
    pub fn filters(&self, vm: &str, names: &[&str]) {
        let mut w = self.lock();
        let local = w.local.clone();
        if let Some(h) = w.hosts.get_mut(&local) {
            h.nwfilters.extend(names.iter().map(|n| (*n).to_owned()));
        }
        w.filters.insert(
            vm.to_owned(),
            names.iter().map(|n| (*n).to_owned()).collect(),
        );
    }

    /// Gives local `vm` local disks (target dev, image path, bytes): its
    /// migrations create a volume for each on the destination first.
    pub fn local_disks(&self, vm: &str, disks: &[(&str, &str, u64)]) {
        self.lock().disks.insert(
            vm.to_owned(),
            disks
                .iter()
                .map(|(d, p, b)| ((*d).to_owned(), (*p).to_owned(), *b))
                .collect(),
        );
    }

    /// What the source hears of `vm`'s announcement after a move.
    pub fn announcing(&self, vm: &str, how: Announcing) {
        self.lock().announcing.insert(vm.to_owned(), how);
    }

    /// announce-self on `host` fails with `message`.
    pub fn refuse_announce(&self, host: &str, message: &str) {
        self.lock()
            .announce_refused
            .insert(host.to_owned(), message.to_owned());
    }

    /// Volumes on `host` (image paths), e.g. to plant one in the way.
    pub fn volumes_on(&self, host: &str) -> BTreeSet<String> {
        self.lock()
            .hosts
            .get(host)
            .map(|h| h.volumes.clone())
            .unwrap_or_default()
    }

    pub fn add_volume(&self, host: &str, path: &str) {
        if let Some(h) = self.lock().hosts.get_mut(host) {
            h.volumes.insert(path.to_owned());
        }
    }

    pub fn nwfilters_on(&self, host: &str) -> BTreeSet<String> {
        self.lock()
            .hosts
            .get(host)
            .map(|h| h.nwfilters.clone())
            .unwrap_or_default()
    }

    /// How `host` answers calls from elsewhere (adding it if needed).
    pub fn reach(&self, host: &str, reach: Reach) {
        self.lock()
            .hosts
            .entry(host.to_owned())
            .or_insert_with(Host::new)
            .reach = reach;
    }

    /// Whether the local libvirtd answers.
    pub fn set_local_up(&self, up: bool) {
        self.lock().local_up = up;
    }

    pub fn resume_mode(&self, mode: ResumeMode) {
        self.lock().resume = mode;
    }

    /// Marks a libvirt job as running (or not) on local `vm`.
    pub fn set_job_active(&self, vm: &str, active: bool) {
        let mut w = self.lock();
        if active {
            w.jobs.insert(vm.to_owned());
        } else {
            w.jobs.remove(vm);
        }
    }

    /// The deadline of every peer call (default 50 ms).
    pub fn set_peer_deadline(&self, d: Duration) {
        self.lock().peer_deadline = d;
    }

    /// How long (virtual time) a migration may take to end after an abort.
    pub fn set_abort_grace(&self, d: Duration) {
        self.lock().abort_grace = d;
    }

    /// The loop's pace: real-time parts (peer deadline, abort checks while
    /// a peer hangs) short; the rest runs on the virtual clock.
    pub fn pace(&self) -> Pace {
        let w = self.lock();
        Pace {
            poll: Duration::from_millis(1),
            peer_deadline: w.peer_deadline,
            abort_grace: w.abort_grace,
            // Virtual: a silent watch moves the clock on by this much.
            announce_wait: Duration::from_secs(1),
        }
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    /// What happened, one line an event ("migrate a ha->hb", "abort a", ...).
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// Blocks until at least `n` calls have hung (to act while one hangs).
    pub fn wait_until_hanging(&self, n: u32) {
        self.wait_until(|c| c.hung_calls >= n);
    }

    /// Blocks until the counters satisfy `done` (e.g. a migration started,
    /// to act while it runs). Waits as long as it takes: pair it with
    /// something that will happen.
    pub fn wait_until(&self, done: impl Fn(&Counters) -> bool) {
        let mut w = self.lock();
        while !done(&w.counters) {
            w = self
                .inner
                .changed
                .wait(w)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Ends `vm`'s [`Script::Gated`] migration (now or when it starts):
    /// Ok moves the VM, Err fails with that message.
    pub fn release(&self, vm: &str, result: Result<(), String>) {
        self.lock().released_jobs.insert(vm.to_owned(), result);
        self.inner.changed.notify_all();
    }

    fn ops(&self) -> SimOps {
        SimOps {
            inner: self.inner.clone(),
            clock: Arc::new(AtomicU64::new(0)),
        }
    }
}

fn infos(domains: &BTreeMap<String, DomState>) -> Vec<DomainInfo> {
    domains
        .iter()
        .map(|(name, state)| DomainInfo {
            name: name.clone(),
            state: *state,
        })
        .collect()
}

fn local_unreachable(w: &World) -> HvError {
    HvError::Unreachable(format!("libvirtd on {} does not answer", w.local))
}

impl Hypervisor for Sim {
    fn local_domains(&self) -> Result<Vec<DomainInfo>, HvError> {
        let w = self.lock();
        if !w.local_up {
            return Err(local_unreachable(&w));
        }
        Ok(w.hosts
            .get(&w.local)
            .map(|h| infos(&h.domains))
            .unwrap_or_default())
    }

    fn peer_domain(&self, peer: &PeerAddr, vm: &str) -> Result<Option<DomState>, HvError> {
        let inner = self.inner.clone();
        let (host, name) = (peer.name.clone(), vm.to_owned());
        let limit = self.lock().peer_deadline;
        deadline::bounded(&format!("libvirt on {}", peer.name), limit, move || {
            let w = inner.reach(&host, &format!("lookup {name}"))?;
            Ok(w.hosts
                .get(&host)
                .and_then(|h| h.domains.get(&name))
                .copied())
        })
    }

    fn local_job_active(&self, vm: &str) -> Result<bool, HvError> {
        let w = self.lock();
        if !w.local_up {
            return Err(local_unreachable(&w));
        }
        let here = w
            .hosts
            .get(&w.local)
            .is_some_and(|h| h.domains.contains_key(vm));
        if !here {
            return Err(HvError::NoSuchDomain(vm.to_owned()));
        }
        Ok(w.jobs.contains(vm))
    }

    fn resume_local(&self, vm: &str) -> Result<(), HvError> {
        let mut w = self.lock();
        w.counters.resumes += 1;
        w.log.push(format!("resume {vm}"));
        self.inner.changed.notify_all();
        if !w.local_up {
            return Err(local_unreachable(&w));
        }
        let mode = w.resume.clone();
        let local = w.local.clone();
        let Some(state) = w.hosts.get_mut(&local).and_then(|h| h.domains.get_mut(vm)) else {
            return Err(HvError::NoSuchDomain(vm.to_owned()));
        };
        match mode {
            ResumeMode::Fails(msg) => Err(HvError::Call(msg)),
            _ if *state != DomState::Paused => Err(HvError::Call(
                "Requested operation is not valid: domain is not paused".into(),
            )),
            ResumeMode::Works => {
                *state = DomState::Running;
                Ok(())
            }
            ResumeMode::NoEffect => Ok(()),
        }
    }

    fn migrate(
        &self,
        spec: &Spec,
        limits: &Limits,
        abort: &AtomicBool,
        progress: &mut dyn FnMut(&Progress),
    ) -> Outcome {
        drive(&self.ops(), &self.pace(), spec, limits, abort, progress)
    }
}

/// The migration loop's view of the simulator; one per migration, with
/// its own virtual clock.
#[derive(Debug, Clone)]
struct SimOps {
    inner: Arc<Inner>,
    /// Virtual nanoseconds since the migration began.
    clock: Arc<AtomicU64>,
}

impl MigrationOps for SimOps {
    type Job = SimJob;
    type Watch = SimWatch;

    fn now(&self) -> Duration {
        Duration::from_nanos(self.clock.load(Ordering::Relaxed))
    }

    fn ensure_nwfilters(&self, spec: &Spec) -> Result<Vec<String>, String> {
        let w = self.inner.lock();
        if !w.local_up {
            return Err(format!(
                "cannot reach local libvirt: {}",
                local_unreachable(&w)
            ));
        }
        let needed = w.filters.get(&spec.vm).cloned().unwrap_or_default();
        if needed.is_empty() {
            return Ok(Vec::new());
        }
        drop(w);
        let mut w = self
            .inner
            .reach(&spec.dest, "nwfilter define")
            .map_err(|e| e.to_string())?;
        let mut copied = Vec::new();
        if let Some(h) = w.hosts.get_mut(&spec.dest) {
            for name in needed {
                if h.nwfilters.insert(name.clone()) {
                    copied.push(name);
                }
            }
        }
        for name in &copied {
            w.counters
                .nwfilters_defined
                .push((spec.dest.clone(), name.clone()));
        }
        Ok(copied)
    }

    fn prepare_storage(&self, spec: &Spec) -> Result<Prepared, String> {
        let disks = self.inner.lock().disks.get(&spec.vm).cloned();
        let Some(disks) = disks.filter(|d| !d.is_empty() && !spec.offline) else {
            return Ok(Prepared::default());
        };
        if !spec.copy_local_disks {
            return Err("cannot move: local disks and [migration] copy_local_disks is off".into());
        }
        let mut w = self
            .inner
            .reach(&spec.dest, "volume create")
            .map_err(|e| e.to_string())?;
        let Some(h) = w.hosts.get_mut(&spec.dest) else {
            return Err(format!("no host {}", spec.dest));
        };
        if let Some((_, p, _)) = disks.iter().find(|(_, p, _)| h.volumes.contains(p)) {
            return Err(format!(
                "{} already has a volume {p}: not overwritten",
                spec.dest
            ));
        }
        let mut out = Prepared::default();
        for (dev, path, bytes) in disks {
            h.volumes.insert(path.clone());
            out.copy.push(dev);
            out.created.push(path);
            out.bytes += bytes;
        }
        w.log.push(format!(
            "volumes {} on {}",
            out.created.join(","),
            spec.dest
        ));
        Ok(out)
    }

    fn discard_storage(&self, spec: &Spec, created: &[String]) -> Result<(), String> {
        let here = {
            let w = self.inner.lock();
            if w.local_up {
                Ok(w.hosts
                    .get(&w.local)
                    .and_then(|h| h.domains.get(&spec.vm))
                    .map(|s| (*s, w.jobs.contains(&spec.vm))))
            } else {
                Err(local_unreachable(&w).to_string())
            }
        };
        let mut w = self
            .inner
            .reach(&spec.dest, "volume delete")
            .map_err(|e| e.to_string())?;
        let there = Ok(w
            .hosts
            .get(&spec.dest)
            .and_then(|h| h.domains.get(&spec.vm).copied()));
        may_discard(here, there, &spec.dest)?;
        if let Some(h) = w.hosts.get_mut(&spec.dest) {
            for p in created {
                h.volumes.remove(p);
            }
        }
        w.log.push(format!("volumes deleted on {}", spec.dest));
        Ok(())
    }

    fn start(&self, spec: &Spec, _copy: &[String]) -> Result<SimJob, String> {
        let mut w = self.inner.lock();
        if !w.local_up {
            return Err(format!(
                "cannot reach local libvirt: {}",
                local_unreachable(&w)
            ));
        }
        let local = w.local.clone();
        let state = w.hosts.get(&local).and_then(|h| h.domains.get(&spec.vm));
        match state {
            None => {
                return Err(format!(
                    "no VM {} here: Domain not found: no domain with matching name '{}'",
                    spec.vm, spec.vm
                ))
            }
            Some(DomState::ShutOff) if !spec.offline => {
                return Err("Requested operation is not valid: domain is not running".into())
            }
            Some(_) => {}
        }
        let script = w
            .scripts
            .get(&(spec.vm.clone(), Some(spec.dest.clone())))
            .or_else(|| w.scripts.get(&(spec.vm.clone(), None)))
            .cloned()
            .unwrap_or(Script::Succeed { samples: 3 });
        w.counters.migrations_started += 1;
        self.inner.changed.notify_all();
        w.log
            .push(format!("migrate {} {}->{}", spec.vm, local, spec.dest));
        w.jobs.insert(spec.vm.clone());
        Ok(SimJob {
            inner: self.inner.clone(),
            clock: self.clock.clone(),
            spec: spec.clone(),
            source: local,
            script,
            step: 0,
            abort: AtomicBool::new(false),
            ended: false,
        })
    }

    fn completed_stats(&self, spec: &Spec) -> (Option<u64>, Option<f64>) {
        match self.inner.reach(&spec.dest, "completed job stats") {
            Ok(_) => (Some(42), Some(spec.mem_mib as f64)),
            Err(_) => (None, None),
        }
    }

    fn watch_announce(&self, spec: &Spec) -> SimWatch {
        let how = self
            .inner
            .lock()
            .announcing
            .get(&spec.vm)
            .cloned()
            .unwrap_or(Announcing::NoNic);
        SimWatch {
            clock: self.clock.clone(),
            how,
        }
    }

    fn request_announce(&self, spec: &Spec) -> Result<(), String> {
        let mut w = self
            .inner
            .reach(&spec.dest, "announce-self")
            .map_err(|e| e.to_string())?;
        if let Some(msg) = w.announce_refused.get(&spec.dest) {
            return Err(msg.clone());
        }
        let there = w
            .hosts
            .get(&spec.dest)
            .is_some_and(|h| h.domains.contains_key(&spec.vm));
        if !there {
            return Err(format!(
                "Domain not found: no domain with matching name '{}'",
                spec.vm
            ));
        }
        w.counters
            .announce_requests
            .push((spec.dest.clone(), spec.vm.clone()));
        w.log
            .push(format!("announce-self {} on {}", spec.vm, spec.dest));
        self.inner.changed.notify_all();
        Ok(())
    }
}

/// A simulated watch: hears what [`Sim::announcing`] says, on the
/// migration's virtual clock.
#[derive(Debug)]
pub struct SimWatch {
    clock: Arc<AtomicU64>,
    how: Announcing,
}

impl AnnounceWatch for SimWatch {
    fn wait(&mut self, timeout: Duration) -> Heard {
        let now = Duration::from_nanos(self.clock.load(Ordering::Relaxed));
        let watched = |at| {
            vec![Watched {
                mac: SIM_MAC,
                bridge: "br0".into(),
                at,
            }]
        };
        match &self.how {
            Announcing::NoNic => Heard::default(),
            Announcing::Heard => Heard {
                watched: watched(Some(now)),
                unwatched: Vec::new(),
            },
            Announcing::Silent => {
                let later = now.saturating_add(timeout);
                self.clock.store(
                    u64::try_from(later.as_nanos()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                Heard {
                    watched: watched(None),
                    unwatched: Vec::new(),
                }
            }
            Announcing::Unwatchable(why) => Heard::blind(why.clone()),
        }
    }
}

/// One simulated migration, a step a sample.
#[derive(Debug)]
struct SimJob {
    inner: Arc<Inner>,
    clock: Arc<AtomicU64>,
    spec: Spec,
    source: String,
    script: Script,
    step: u32,
    abort: AtomicBool,
    ended: bool,
}

impl SimJob {
    fn total(&self) -> u64 {
        self.spec.mem_mib.max(1) * MIB
    }

    /// Ends the job: `moved` puts the domain on the destination;
    /// `source_state` is what stays on the source (None: removed).
    fn end(&mut self, w: &mut World, moved: bool, source_state: Option<DomState>) {
        self.ended = true;
        w.jobs.remove(&self.spec.vm);
        w.counters.migrations_ended += 1;
        self.inner.changed.notify_all();
        let vm = self.spec.vm.clone();
        let state = w
            .hosts
            .get(&self.source)
            .and_then(|h| h.domains.get(&vm))
            .copied();
        if let Some(h) = w.hosts.get_mut(&self.source) {
            match source_state {
                Some(s) if h.domains.contains_key(&vm) => {
                    h.domains.insert(vm.clone(), s);
                }
                Some(_) => {}
                None => {
                    h.domains.remove(&vm);
                }
            }
        }
        if moved {
            let arrived = if self.spec.offline {
                state.unwrap_or(DomState::ShutOff)
            } else {
                DomState::Running
            };
            if let Some(h) = w.hosts.get_mut(&self.spec.dest) {
                h.domains.insert(vm, arrived);
            }
        }
    }

    fn fail(&mut self, w: &mut World, message: String, paused: bool) -> Option<Result<(), String>> {
        let keep = w
            .hosts
            .get(&self.source)
            .and_then(|h| h.domains.get(&self.spec.vm))
            .copied();
        let left = if paused { Some(DomState::Paused) } else { keep };
        self.end(w, false, left);
        w.log.push(format!("failed {}: {message}", self.spec.vm));
        Some(Err(message))
    }
}

impl SimJob {
    /// A gated job: real time, stopped clock; ends on release or abort.
    fn wait_gated(
        &mut self,
        mut w: MutexGuard<'_, World>,
        timeout: Duration,
    ) -> Option<Result<(), String>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.abort.load(Ordering::Relaxed) {
                return self.fail(&mut w, ABORTED_MSG.into(), false);
            }
            match w.released_jobs.remove(&self.spec.vm) {
                Some(Ok(())) => {
                    self.end(&mut w, true, None);
                    w.log.push(format!("done {}", self.spec.vm));
                    return Some(Ok(()));
                }
                Some(Err(message)) => return self.fail(&mut w, message, false),
                None => {}
            }
            if w.released {
                return self.fail(&mut w, "the simulator is gone".into(), false);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            w = self
                .inner
                .changed
                .wait_timeout(w, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

impl MigrationJob for SimJob {
    fn wait(&mut self, timeout: Duration) -> Option<Result<(), String>> {
        if self.ended {
            return Some(Err("no migration job".into()));
        }
        let inner = self.inner.clone();
        let mut w = inner.lock();
        if self.script == Script::Gated {
            return self.wait_gated(w, timeout);
        }
        self.clock
            .fetch_add(Duration::from_secs(1).as_nanos() as u64, Ordering::Relaxed);
        let paused_on_failure = matches!(self.script, Script::FailPaused { .. });
        if self.abort.load(Ordering::Relaxed) {
            if self.script
                == (Script::Hang {
                    honours_abort: false,
                })
            {
                return None;
            }
            return self.fail(&mut w, ABORTED_MSG.into(), paused_on_failure);
        }
        self.step = self.step.saturating_add(1);
        // The source libvirtd talks to the destination itself (peer to peer).
        let dest = w.hosts.get(&self.spec.dest);
        let there = dest.is_some_and(|h| h.domains.contains_key(&self.spec.vm));
        match dest.map(|h| h.reach) {
            None | Some(Reach::Unreachable) => {
                let msg = format!(
                    "unable to connect to server at '{}': Connection refused",
                    self.spec.dest
                );
                return self.fail(&mut w, msg, false);
            }
            Some(Reach::Hangs) => return None,
            Some(Reach::Answers) => {}
        }
        if self.step == 1 && there {
            let msg = format!(
                "operation failed: domain '{}' already exists on the destination",
                self.spec.vm
            );
            return self.fail(&mut w, msg, false);
        }
        match self.script.clone() {
            Script::Succeed { samples } if self.step > samples => {
                self.end(&mut w, true, None);
                w.log.push(format!("done {}", self.spec.vm));
                Some(Ok(()))
            }
            Script::Fail { after, message } if self.step > after => {
                self.fail(&mut w, message, false)
            }
            Script::FailPaused { after, message } if self.step > after => {
                self.fail(&mut w, message, true)
            }
            Script::Vanish { after } if self.step > after => {
                let vm = self.spec.vm.clone();
                self.end(&mut w, false, None);
                if let Some(h) = w.hosts.get_mut(&self.spec.dest) {
                    h.domains.remove(&vm);
                }
                w.log.push(format!("vanished {vm}"));
                Some(Err(format!(
                    "Domain not found: no domain with matching name '{vm}'"
                )))
            }
            _ => None,
        }
    }

    fn stats(&self) -> Option<JobStats> {
        if self.ended {
            return None;
        }
        let total = self.total();
        let step = u64::from(self.step);
        let pass = |samples: u32| {
            let parts = u64::from(samples) + 1;
            let processed = total / parts * step.min(parts);
            JobStats {
                kind: 1,
                data_total: Some(total),
                data_processed: Some(processed),
                data_remaining: Some(total.saturating_sub(processed)),
                mem_iteration: Some(1),
                mem_bps: Some(total / parts),
                downtime_ms: None,
                ..JobStats::default()
            }
        };
        Some(match &self.script {
            Script::Succeed { samples } => pass(*samples),
            Script::Fail { after, .. }
            | Script::FailPaused { after, .. }
            | Script::Vanish { after } => pass(after.saturating_add(2)),
            Script::Stall => JobStats {
                kind: 1,
                data_total: Some(total),
                data_processed: Some(total / 4 * step),
                data_remaining: Some(total / 4),
                mem_iteration: Some(step),
                mem_bps: Some(total / 4),
                downtime_ms: None,
                ..JobStats::default()
            },
            Script::Hang { .. } | Script::Gated => JobStats {
                kind: 1,
                data_total: Some(total),
                data_processed: Some(total / 2),
                data_remaining: Some(total / 2),
                mem_iteration: Some(1),
                mem_bps: Some(0),
                downtime_ms: None,
                ..JobStats::default()
            },
        })
    }

    fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
        let mut w = self.inner.lock();
        w.counters.aborts += 1;
        w.log.push(format!("abort {}", self.spec.vm));
        self.inner.changed.notify_all();
    }

    fn set_max_downtime(&self, ms: u64) {
        let mut w = self.inner.lock();
        w.counters.downtimes.push((self.spec.vm.clone(), ms));
    }
}
