//! The whole rack as the controller knows it, and how answers and events
//! change it.

use std::collections::BTreeMap;

use crate::input::Millis;
use crate::model::evacuation::Evacuation;
use crate::model::event::Event;
use crate::model::host::{Health, HostState, HostsEntry, LineState, Status};
use crate::model::plan::Plan;
use crate::model::progress::Job;
use crate::model::verdict::Verdict;
use crate::model::vm::{Vm, VmList, VmState};

/// How many recent notable events a host keeps to show (crashes, missed
/// events, an agent stopping): enough for context, few enough to fit.
const NOTES_KEPT: usize = 5;

#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub line: LineState,
    pub state: HostState,
    pub health: Health,
    pub health_reasons: Vec<String>,
    pub cpu_pct: Option<f64>,
    pub mem_free_mib: Option<u64>,
    pub mem_total_mib: Option<u64>,
    pub vms_running: Option<u64>,
    pub location: Option<String>,
    pub vms: Vec<Vm>,
    /// The VM list is the agent's last known one, not a fresh one.
    pub vms_stale: bool,
    /// The last `plan` answer (a dry run).
    pub plan: Option<Plan>,
    /// The current (or last) run on this host.
    pub evacuation: Option<Evacuation>,
    pub notes: Vec<String>,
    /// Its own `status` has been read: from then on a peer's view of it
    /// (figures from the peer's libvirt poll, no health) no longer overrides.
    own_status: bool,
}

impl Host {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            line: LineState::NoLine,
            state: HostState::Unknown,
            health: Health::Unknown,
            health_reasons: Vec::new(),
            cpu_pct: None,
            mem_free_mib: None,
            mem_total_mib: None,
            vms_running: None,
            location: None,
            vms: Vec::new(),
            vms_stale: false,
            plan: None,
            evacuation: None,
            notes: Vec::new(),
            own_status: false,
        }
    }

    fn note(&mut self, text: String) {
        self.notes.push(text);
        if self.notes.len() > NOTES_KEPT {
            self.notes.remove(0);
        }
    }

    fn evacuation_mut(&mut self) -> &mut Evacuation {
        // A finished run's events are over; a new event starts a new run.
        if self.evacuation.as_ref().is_some_and(Evacuation::is_over) {
            self.evacuation = None;
        }
        self.evacuation.get_or_insert_with(Evacuation::default)
    }

    /// Running VMs: the agent's count when it gave one, else our list's.
    pub fn running_vms(&self) -> Option<u64> {
        self.vms_running.or_else(|| {
            (!self.vms.is_empty())
                .then(|| self.vms.iter().filter(|v| v.state.is_active()).count() as u64)
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rack {
    hosts: BTreeMap<String, Host>,
}

/// A VM found by name somewhere in the rack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VmMatch<'a> {
    pub host: &'a Host,
    pub vm: &'a Vm,
}

impl Rack {
    pub fn new() -> Self {
        Self::default()
    }

    /// Hosts in name order: the order a rack's hosts are usually named in,
    /// and stable whichever line answered first.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.values()
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.get(name)
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Why a move to `dest` may be refused, from what the controller hears
    /// on `dest`'s own line: the source's agent chose it without seeing its
    /// health (a peer's health reaches it only as the peer's hook refusing
    /// the VM, after which it tries another peer). None when nothing is
    /// known against it.
    pub fn caution(&self, dest: &str) -> Option<String> {
        let d = self.hosts.get(dest)?;
        match (&d.state, d.health) {
            (HostState::Maintenance | HostState::Evacuating | HostState::PoweringOff, _) => {
                Some(d.state.label())
            }
            (_, Health::Degraded | Health::Faulty) => Some(d.health.label().to_owned()),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    fn entry(&mut self, name: &str) -> &mut Host {
        self.hosts
            .entry(name.to_owned())
            .or_insert_with(|| Host::new(name))
    }

    pub fn line_connecting(&mut self, host: &str, at: Millis) {
        let h = self.entry(host);
        // A reconnect attempt after a drop keeps saying it was dropped, and
        // since when: the person wants to know how long it has been out.
        if !matches!(
            h.line,
            LineState::Dropped { .. } | LineState::Connecting { .. }
        ) {
            h.line = LineState::Connecting { since: at };
        }
    }

    pub fn line_up(&mut self, host: &str, at: Millis) {
        self.entry(host).line = LineState::Up { since: at };
    }

    pub fn line_dropped(&mut self, host: &str, reason: &str, at: Millis) {
        let h = self.entry(host);
        if let LineState::Dropped { reason: r, .. } = &mut h.line {
            // Still down: keep the first moment, take the latest reason.
            *r = reason.to_owned();
        } else {
            h.line = LineState::Dropped {
                since: at,
                reason: reason.to_owned(),
            };
        }
    }

    pub fn apply_status(&mut self, host: &str, s: &Status) {
        let h = self.entry(host);
        h.own_status = true;
        h.state = s.state.clone();
        h.health = s.health;
        h.health_reasons.clone_from(&s.health_reasons);
        h.cpu_pct = s.cpu_pct;
        h.mem_free_mib = s.mem_free_mib;
        h.mem_total_mib = s.mem_total_mib;
        h.vms_running = s.vms_running;
        if s.location.is_some() {
            h.location.clone_from(&s.location);
        }
        if let Some(note) = &s.journal_note {
            let note = format!("journal: {note}");
            if !h.notes.contains(&note) {
                h.note(note);
            }
        }
    }

    /// A `hosts` answer from `from`: its own entry counts as its status;
    /// a peer's entry fills in hosts whose own status we have not read (a
    /// host with no line of ours, or whose line has not answered yet).
    pub fn apply_hosts(&mut self, from: &str, entries: &[HostsEntry]) {
        for e in entries {
            let own = e.is_self || e.name == from;
            let h = self.entry(&e.name);
            if !own && h.own_status {
                if h.location.is_none() {
                    h.location.clone_from(&e.location);
                }
                continue;
            }
            h.state = e.state.clone();
            if own || e.health != Health::Unknown {
                h.health = e.health;
                h.health_reasons.clone_from(&e.health_reasons);
            }
            h.cpu_pct = e.cpu_pct;
            h.mem_free_mib = e.mem_free_mib;
            h.mem_total_mib = e.mem_total_mib;
            h.vms_running = e.vms_running;
            if e.location.is_some() {
                h.location.clone_from(&e.location);
            }
            h.own_status |= own;
        }
    }

    pub fn apply_vms(&mut self, host: &str, list: VmList) {
        let h = self.entry(host);
        h.vms = list.vms;
        h.vms_stale = list.stale;
    }

    pub fn apply_plan(&mut self, host: &str, plan: Plan) {
        self.entry(host).plan = Some(plan);
    }

    /// `evacuate`'s answer: a new run begins, with the plan it follows.
    pub fn apply_evacuation_started(&mut self, host: &str, plan: Plan) {
        let h = self.entry(host);
        h.state = HostState::Evacuating;
        h.plan = Some(plan.clone());
        h.evacuation = Some(Evacuation::started(plan));
    }

    pub fn apply_jobs(&mut self, host: &str, jobs: Vec<Job>, running: bool) {
        let h = self.entry(host);
        if jobs.is_empty() && !running {
            return;
        }
        match &mut h.evacuation {
            // The jobs of the run we are showing (or of a newer one).
            Some(e) if !e.is_over() || running => {
                if e.is_over() {
                    *e = Evacuation::default();
                }
                e.set_jobs(jobs);
            }
            // A finished run keeps its verdict and its jobs as they ended.
            Some(_) => {}
            // The jobs of a run that ended before we looked are not an
            // evacuation under way (`status` says how it ended).
            None if !running => {}
            None => {
                let mut e = Evacuation::default();
                e.set_jobs(jobs);
                h.evacuation = Some(e);
            }
        }
    }

    /// An event from `host`'s line. Returns the verdict when it was one, so
    /// the app can put it in front of the person at once.
    pub fn apply_event(&mut self, host: &str, event: &Event) -> Option<Verdict> {
        let h = self.entry(host);
        match event {
            Event::MigrationProgress(p) => h.evacuation_mut().on_progress(p),
            Event::MigrationDone {
                job,
                vm,
                dest,
                downtime_ms,
                seconds,
            } => h
                .evacuation_mut()
                .on_done(*job, vm, dest.as_deref(), *downtime_ms, *seconds),
            Event::MigrationFailed {
                job,
                vm,
                dest,
                error,
                note,
                retrying_on,
            } => h.evacuation_mut().on_failed(
                *job,
                vm,
                dest.as_deref(),
                error,
                note.as_deref(),
                retrying_on.as_deref(),
            ),
            Event::EvacuationDone(v) => {
                // NOT SAFE leaves the host in maintenance (the agent says
                // so); SAFE follows host.empty.
                h.state = if v.safe {
                    HostState::Empty
                } else {
                    HostState::Maintenance
                };
                let e = h.evacuation.get_or_insert_with(Evacuation::default);
                if e.id.is_none() {
                    e.id = v.evacuation;
                }
                e.verdict = Some(v.clone());
                return Some(v.clone());
            }
            Event::HostHealth { health, reasons } => {
                h.health = *health;
                h.health_reasons.clone_from(reasons);
            }
            Event::VmState { vm, what, state } => apply_vm_state(h, vm, what.as_deref(), state),
            Event::VmCrash { vm, action, reason } => h.note(format!(
                "{vm} crashed: {} {}",
                action.as_deref().unwrap_or("?"),
                reason.as_deref().unwrap_or("")
            )),
            Event::HostEmpty => h.state = HostState::Empty,
            Event::HostPoweroff => h.state = HostState::PoweringOff,
            Event::AgentStopping => h.note("the agent is stopping".to_owned()),
            Event::EventsMissed(n) => h.note(format!("{n} events missed; refreshing")),
            Event::Ignored(_) => {}
        }
        None
    }

    /// VMs whose name contains `query` (any case), exact matches first.
    pub fn find_vms(&self, query: &str) -> Vec<VmMatch<'_>> {
        let q = query.to_lowercase();
        let mut found: Vec<VmMatch<'_>> = self
            .hosts
            .values()
            .flat_map(|host| host.vms.iter().map(move |vm| VmMatch { host, vm }))
            .filter(|m| m.vm.name.to_lowercase().contains(&q))
            .collect();
        found.sort_by_key(|m| (m.vm.name != query, m.vm.name.len(), m.vm.name.clone()));
        found
    }
}

fn apply_vm_state(h: &mut Host, vm: &str, what: Option<&str>, state: &Option<VmState>) {
    if what == Some("undefined") {
        h.vms.retain(|v| v.name != vm);
        return;
    }
    let Some(state) = state else { return };
    match h.vms.iter_mut().find(|v| v.name == vm) {
        Some(v) => v.state = state.clone(),
        None => {
            h.vms.push(Vm {
                name: vm.to_owned(),
                state: state.clone(),
                vcpus: None,
                mem_mib: None,
                cpu_pct: None,
            });
            h.vms.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }
}
