//! Placement: which peer takes which VM (pure; see the issue).
//!
//! No I/O, no clocks, no threads: the caller hands in what it knows about
//! the VMs to move and the peers, and gets back a [`Plan`]: one [`Move`]
//! per VM that can go somewhere, and one [`Unplaceable`] with a reason a
//! person can act on for every VM that cannot (never an endless retry).
//!
//! Steps, all deterministic (`BTreeMap`/`Vec` only, explicit tie breaks,
//! candidates considered in name order whatever order they came in):
//!
//! 1. Screen the peers: unreachable, in maintenance or evacuating, at or over
//!    the load threshold, or reporting no CPUs or no memory: not a
//!    destination. A name listed twice is not one either (two conflicting
//!    reports of one host: trusting either could overfill it). With a named
//!    target only that peer is screened.
//! 2. Order the VMs largest first (memory, then vCPUs, descending; then name).
//! 3. Place them one at a time by the strategy, counting what is committed,
//!    in flight and planned earlier in this plan, plus the memory reserve.
//! 4. If the strategy leaves a VM behind, try plain first-fit-decreasing
//!    (hosts in name order) and keep it if it places every VM (see
//!    [`plan`]).
//!
//! A VM that cannot move at all ([`VmDemand::unmovable`]) is unplaceable
//! with its reason before any of this. A VM with local disks to copy also
//! needs, on its destination, a storage pool at each of its images'
//! directories with the disks' capacity available (after what this plan
//! and migrations in flight put there).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::config::Strategy;
pub use crate::storage::{DiskNeed, PoolRoom};

/// One VM to move: what it needs on its destination.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VmDemand {
    pub name: String,
    pub vcpus: u32,
    pub mem_mib: u64,
    /// Room its copied local disks need, per directory: the destination
    /// needs a storage pool there with that much available.
    pub disks: Vec<DiskNeed>,
    /// Why it cannot move at all (a passthrough device, a disk neither
    /// shared nor copyable): it is unplaceable with this reason, never
    /// tried.
    pub unmovable: Option<String>,
}

/// One peer as the inventory last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub reachable: bool,
    /// in maintenance or evacuating: never a destination
    pub unavailable: bool,
    pub cpus: u32,
    /// CPU use 0..=100 (None: unknown, treated as 0 for the threshold)
    pub cpu_pct: Option<f64>,
    pub mem_total_mib: u64,
    /// memory committed to VMs running there (sum of their configured memory)
    pub mem_committed_mib: u64,
    pub vcpus_committed: u32,
    /// memory and vCPUs promised to migrations already in flight to this host
    pub mem_inflight_mib: u64,
    pub vcpus_inflight: u32,
    /// its storage pools, with what disks in flight there will take
    /// already deducted
    pub pools: Vec<PoolRoom>,
}

/// The `[placement]` settings that decide where VMs go.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub strategy: Strategy,
    /// 0..=1: a host whose cpu_pct/100 >= this is not a candidate
    pub load_threshold: f64,
    pub mem_reserve_mib: u64,
    pub vcpu_overcommit: f64,
}

/// Where the operator asked the VMs to go.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Any peer the policy allows.
    Auto,
    /// Only this peer.
    Host(String),
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Move {
    pub vm: String,
    pub dest: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Unplaceable {
    pub vm: String,
    /// Why, in one line, with the figures: complete on its own.
    pub reason: String,
    /// It cannot move at all ([`VmDemand::unmovable`]): no peer could take
    /// it, whatever room they had. Absent (false) in older journals.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unmovable: bool,
}

/// Why one peer took none of the VMs left unplaced (not those that cannot
/// move at all), in the few words a person reads once for all of them:
/// `full (needs 2048 MiB, has 0 MiB free after the 1 GiB reserve)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PeerReason {
    pub host: String,
    pub reason: String,
}

/// Moves and unplaceable VMs, each in largest-first order. Every VM passed
/// to [`plan`] is in exactly one of the two lists. When a VM that could
/// move was left unplaced, `peer_reasons` says why each peer took none of
/// those, in peer name order (empty when no peer is known).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Plan {
    pub moves: Vec<Move>,
    pub unplaceable: Vec<Unplaceable>,
    pub peer_reasons: Vec<PeerReason>,
}

/// How many vCPUs a host with `cpus` CPUs may carry: floor(overcommit x
/// cpus). The product is taken as the decimal the operator wrote, so 0.29 x
/// 100 is 29, not the 28 that binary floating point would floor to. A
/// negative or NaN overcommit allows nothing; an infinite one saturates.
pub fn vcpu_limit(cpus: u32, overcommit: f64) -> u64 {
    let product = overcommit * f64::from(cpus);
    if product.is_nan() || product <= 0.0 {
        return 0;
    }
    let nearest = product.round();
    let whole = if (product - nearest).abs() <= 1e-9 * nearest.max(1.0) {
        nearest
    } else {
        product.floor()
    };
    // `as` saturates at u64::MAX for huge and infinite values.
    whole as u64
}

/// Why one host cannot take one VM given what is already committed and
/// planned there, or Ok(()).
///
/// Only capacity is checked here (memory with the reserve, vCPUs with the
/// overcommit, and a host reporting no CPUs or memory); reachability,
/// maintenance and load are [`plan`]'s screening.
pub fn fits(
    vm: &VmDemand,
    host: &Candidate,
    planned_mem_mib: u64,
    planned_vcpus: u32,
    policy: &Policy,
) -> Result<(), String> {
    if let Some(why) = no_capacity(host) {
        return Err(why);
    }
    let room = Room::new(
        host,
        u128::from(planned_mem_mib),
        u128::from(planned_vcpus),
        policy,
    );
    let (mem_ok, vcpus_ok) = (room.mem_fits(vm), room.vcpus_fit(vm));
    if mem_ok && vcpus_ok {
        return Ok(());
    }
    let needs = match (mem_ok, vcpus_ok) {
        (false, true) => format!("needs {} MiB", vm.mem_mib),
        (true, false) => format!("needs {} vCPUs", vm.vcpus),
        _ => format!("needs {} MiB and {} vCPUs", vm.mem_mib, vm.vcpus),
    };
    Err(format!("{needs}; {}", room.shortfall(vm)))
}

/// Plans moving `vms` (from this host) onto `candidates` under `policy`.
/// `exclude` maps VM name -> hosts that VM must not go to (e.g. a
/// destination that already refused it once).
///
/// `Balance` puts each VM where memory utilisation after placing it is
/// lowest (then vCPU utilisation, then name); `Pack` orders the hosts once by
/// starting memory utilisation (then name) and puts each VM on the first
/// that fits.
///
/// Both are greedy heuristics, and each can strand a VM that a plainer
/// order would have placed (Balance: hosts of 10 and 10, VMs 6 4 4 3 3;
/// Pack: a host with 10 free and a fuller one with 8 free, VMs 5 4 4 3 2).
/// A VM left behind is worse than an uneven spread, so when the strategy
/// strands any VM and first-fit-decreasing over the same hosts (in name
/// order, same exclusions) places every one, the first-fit-decreasing
/// assignment is the plan. Otherwise the strategy's plan stands, and each
/// stranded VM's reason describes the hosts as they were when its turn came.
pub fn plan(
    vms: &[VmDemand],
    candidates: &[Candidate],
    policy: &Policy,
    target: &Target,
    exclude: &BTreeMap<String, Vec<String>>,
) -> Plan {
    let mut all: Vec<&VmDemand> = vms.iter().collect();
    all.sort_by(|a, b| largest_first(a, b));
    // Unmovable VMs never reach the strategies: they would only make the
    // first-fit fallback look like it strands a VM.
    let order: Vec<&VmDemand> = all
        .iter()
        .copied()
        .filter(|v| v.unmovable.is_none())
        .collect();

    let mut by_name: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for c in candidates {
        by_name.entry(c.name.as_str()).or_default().push(c);
    }
    if let Target::Host(name) = target {
        if !by_name.contains_key(name.as_str()) {
            let reason = format!("no such peer '{name}'");
            return Plan {
                moves: Vec::new(),
                unplaceable: all
                    .iter()
                    .map(|vm| Unplaceable {
                        vm: vm.name.clone(),
                        reason: vm.unmovable.clone().unwrap_or_else(|| reason.clone()),
                        unmovable: vm.unmovable.is_some(),
                    })
                    .collect(),
                peer_reasons: if order.is_empty() {
                    Vec::new()
                } else {
                    vec![PeerReason {
                        host: name.clone(),
                        reason: "no such peer".into(),
                    }]
                },
            };
        }
    }

    // Destinations in name order, and why each other host is not one (in
    // a sentence, and in a word or two for `peer_reasons`).
    let mut dests = Vec::new();
    let mut screened_out = Vec::new();
    let mut screened_short = Vec::new();
    for (name, listed) in &by_name {
        if matches!(target, Target::Host(t) if t != name) {
            continue;
        }
        match listed.as_slice() {
            [only] => match screen(only, policy) {
                Some((why, short)) => {
                    screened_out.push(why);
                    screened_short.push(PeerReason {
                        host: (*name).to_owned(),
                        reason: short,
                    });
                }
                None => dests.push(Dest {
                    host: only,
                    planned_mem: 0,
                    planned_vcpus: 0,
                    planned_disk: BTreeMap::new(),
                }),
            },
            _ => {
                screened_out.push(format!("{name} is listed more than once"));
                screened_short.push(PeerReason {
                    host: (*name).to_owned(),
                    reason: "listed more than once".into(),
                });
            }
        }
    }

    let ctx = Ctx {
        policy,
        exclude,
        screened_out: &screened_out,
    };
    let choice = match policy.strategy {
        Strategy::Balance => Choice::Balance,
        Strategy::Pack => {
            let mut by_use: Vec<usize> = (0..dests.len()).collect();
            by_use.sort_by(|&a, &b| starting_use(dests[a].host, dests[b].host).then(a.cmp(&b)));
            Choice::FirstFit(by_use)
        }
    };
    let mut outcome = place(&order, &dests, &choice, &ctx);
    if outcome.iter().any(Result::is_err) {
        let ffd = place(
            &order,
            &dests,
            &Choice::FirstFit((0..dests.len()).collect()),
            &ctx,
        );
        if ffd.iter().all(Result::is_ok) {
            outcome = ffd;
        }
    }

    let mut out = Plan::default();
    // The destinations as this plan leaves them, and what it strands.
    let mut after = dests.clone();
    let mut stranded = Vec::new();
    for (vm, r) in order.iter().zip(&outcome) {
        match r {
            Ok(i) => after[*i].take(vm),
            Err(_) => stranded.push(*vm),
        }
    }
    if !stranded.is_empty() {
        let mut reasons: Vec<PeerReason> = after
            .iter()
            .map(|d| PeerReason {
                host: d.host.name.clone(),
                reason: peer_reason(d, &stranded, &ctx),
            })
            .chain(screened_short)
            .collect();
        reasons.sort_by(|a, b| a.host.cmp(&b.host));
        out.peer_reasons = reasons;
    }
    let mut placed: BTreeMap<&str, Result<usize, String>> = order
        .iter()
        .map(|vm| vm.name.as_str())
        .zip(outcome)
        .collect();
    for vm in all {
        let result = match &vm.unmovable {
            Some(why) => Err(why.clone()),
            None => match placed.remove(vm.name.as_str()) {
                Some(r) => r,
                None => continue,
            },
        };
        match result {
            Ok(i) => out.moves.push(Move {
                vm: vm.name.clone(),
                dest: dests[i].host.name.clone(),
            }),
            Err(reason) => out.unplaceable.push(Unplaceable {
                vm: vm.name.clone(),
                reason,
                unmovable: vm.unmovable.is_some(),
            }),
        }
    }
    out
}

/// Largest first: memory descending, then vCPUs descending, then name.
fn largest_first(a: &VmDemand, b: &VmDemand) -> Ordering {
    b.mem_mib
        .cmp(&a.mem_mib)
        .then(b.vcpus.cmp(&a.vcpus))
        .then(a.name.cmp(&b.name))
}

/// Why `host` is not a destination at all, if it is not: in a sentence
/// ("hb is unreachable") and in a word or two ("unreachable").
fn screen(host: &Candidate, policy: &Policy) -> Option<(String, String)> {
    let name = &host.name;
    let both = |short: String| Some((format!("{name} is {short}"), short));
    if !host.reachable {
        return both("unreachable".into());
    }
    if host.unavailable {
        return both("in maintenance or evacuating".into());
    }
    // The threshold comes before capacity: a busy host is a poor destination
    // however much room it has.
    let pct = host.cpu_pct.unwrap_or(0.0);
    if pct.is_nan() {
        return Some((
            format!("{name} reports an unreadable CPU load"),
            "unreadable CPU load".into(),
        ));
    }
    // A threshold of 1 (100 %) turns the filter off: the only way to say
    // "CPU use does not matter here" (hosts sharing CPUs, as in a lab).
    let under = policy.load_threshold >= 1.0 || pct / 100.0 < policy.load_threshold;
    if !under {
        return both(format!(
            "at {}% CPU (threshold {}%)",
            percent(pct),
            percent(policy.load_threshold * 100.0)
        ));
    }
    no_capacity(host).map(|why| {
        let short = why
            .strip_prefix(name.as_str())
            .unwrap_or(&why)
            .trim_start()
            .to_owned();
        (why, short)
    })
}

/// "1 GiB" for whole GiB, else "1536 MiB".
fn mib_words(mib: u64) -> String {
    if mib >= 1024 && mib.is_multiple_of(1024) {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

/// Why the destination `d`, as the plan leaves it, takes none of
/// `stranded` (VMs that could move), in a few words: the limit none of
/// them fits, with the smallest need and what the host has.
fn peer_reason(d: &Dest<'_>, stranded: &[&VmDemand], ctx: &Ctx<'_>) -> String {
    let room = d.room(ctx.policy);
    let tried: Vec<&VmDemand> = stranded
        .iter()
        .copied()
        .filter(|vm| !ctx.excluded(vm, d.host))
        .collect();
    if tried.is_empty() {
        return "tried already".into();
    }
    let least_mem = tried.iter().map(|v| v.mem_mib).min().unwrap_or(0);
    let least_vcpus = tried.iter().map(|v| v.vcpus).min().unwrap_or(0);
    let some = |s: &str| {
        if tried.len() > 1 {
            format!("{s} ")
        } else {
            String::new()
        }
    };
    let reserve = if room.reserve == 0 {
        String::new()
    } else {
        format!(" after the {} reserve", mib_words(room.reserve))
    };
    let mem_has = format!("{} MiB free{reserve}", room.mem_free());
    let vcpu_has = format!("{} of {} vCPUs", room.vcpus_left(), room.vcpu_limit);
    let no_mem = tried.iter().all(|v| !room.mem_fits(v));
    let no_vcpus = tried.iter().all(|v| !room.vcpus_fit(v));
    let least = some("at least");
    match (no_mem, no_vcpus) {
        (true, true) => format!(
            "full (needs {least}{least_mem} MiB and {least_vcpus} vCPUs, has {mem_has} and {vcpu_has})"
        ),
        (true, false) => format!("full (needs {least}{least_mem} MiB, has {mem_has})"),
        (false, true) => format!("no vCPUs (needs {least}{least_vcpus}, has {vcpu_has} left)"),
        (false, false) => match tried
            .iter()
            .filter(|v| room.fits(v))
            .find_map(|v| d.disk_shortfall(v))
        {
            Some(disk) => {
                let prefix = format!("{} has ", d.host.name);
                let disk = disk.strip_prefix(prefix.as_str()).unwrap_or(&disk);
                format!("disks: {disk}")
            }
            None => format!("too full for these VMs (has {mem_has} and {vcpu_has} left)"),
        },
    }
}

/// A host reporting no CPUs or no memory fits nothing.
fn no_capacity(host: &Candidate) -> Option<String> {
    if host.cpus == 0 {
        Some(format!("{} reports 0 CPUs", host.name))
    } else if host.mem_total_mib == 0 {
        Some(format!("{} reports 0 MiB of memory", host.name))
    } else {
        None
    }
}

/// A percentage with at most one decimal: "92", "79.5".
fn percent(value: f64) -> String {
    let tenths = (value * 10.0).round() / 10.0;
    if tenths.fract() == 0.0 {
        format!("{tenths:.0}")
    } else {
        format!("{tenths:.1}")
    }
}

/// Compares n1/d1 with n2/d2 exactly (d1, d2 nonzero and at most u64::MAX;
/// numerators any u128). Whole parts first, so no product overflows.
fn cmp_ratio(n1: u128, d1: u128, n2: u128, d2: u128) -> Ordering {
    let (q1, r1) = (n1 / d1, n1 % d1);
    let (q2, r2) = (n2 / d2, n2 % d2);
    q1.cmp(&q2).then_with(|| (r1 * d2).cmp(&(r2 * d1)))
}

/// Memory utilisation before this plan: (committed + in flight) / total.
fn starting_use(a: &Candidate, b: &Candidate) -> Ordering {
    let used = |h: &Candidate| u128::from(h.mem_committed_mib) + u128::from(h.mem_inflight_mib);
    cmp_ratio(
        used(a),
        u128::from(a.mem_total_mib),
        used(b),
        u128::from(b.mem_total_mib),
    )
}

/// What one host has left, in wide integers so no sum can overflow.
#[derive(Debug)]
struct Room<'a> {
    host: &'a Candidate,
    /// committed + in flight + planned (no reserve)
    mem_used: u128,
    reserve: u64,
    vcpus_used: u128,
    vcpu_limit: u64,
    overcommit: f64,
}

impl<'a> Room<'a> {
    fn new(host: &'a Candidate, planned_mem: u128, planned_vcpus: u128, policy: &Policy) -> Self {
        Room {
            host,
            mem_used: u128::from(host.mem_committed_mib)
                + u128::from(host.mem_inflight_mib)
                + planned_mem,
            reserve: policy.mem_reserve_mib,
            vcpus_used: u128::from(host.vcpus_committed)
                + u128::from(host.vcpus_inflight)
                + planned_vcpus,
            vcpu_limit: vcpu_limit(host.cpus, policy.vcpu_overcommit),
            overcommit: policy.vcpu_overcommit,
        }
    }

    /// Memory the host holds once `vm` is there, reserve included.
    fn mem_after(&self, vm: &VmDemand) -> u128 {
        self.mem_used + u128::from(self.reserve) + u128::from(vm.mem_mib)
    }

    fn mem_fits(&self, vm: &VmDemand) -> bool {
        self.host.mem_total_mib > 0 && self.mem_after(vm) <= u128::from(self.host.mem_total_mib)
    }

    fn vcpus_fit(&self, vm: &VmDemand) -> bool {
        self.host.cpus > 0 && self.vcpus_used + u128::from(vm.vcpus) <= u128::from(self.vcpu_limit)
    }

    fn fits(&self, vm: &VmDemand) -> bool {
        self.mem_fits(vm) && self.vcpus_fit(vm)
    }

    /// Memory free after the reserve (0 when already past it).
    fn mem_free(&self) -> u128 {
        u128::from(self.host.mem_total_mib).saturating_sub(self.mem_used + u128::from(self.reserve))
    }

    fn vcpus_left(&self) -> u128 {
        u128::from(self.vcpu_limit).saturating_sub(self.vcpus_used)
    }

    /// "1024 MiB free after the 1024 MiB reserve"
    fn mem_detail(&self) -> String {
        let held = self.mem_used + u128::from(self.reserve);
        let total = u128::from(self.host.mem_total_mib);
        let reserve = if self.reserve == 0 {
            String::new()
        } else {
            format!(" after the {} MiB reserve", self.reserve)
        };
        if held > total {
            format!(
                "0 MiB free{reserve}, {} MiB over its {total} MiB already",
                held - total
            )
        } else {
            format!("{} MiB free{reserve}", total - held)
        }
    }

    /// "2 of 16 vCPUs left (4.0 x 4 CPUs)"
    fn vcpu_detail(&self) -> String {
        let limit = u128::from(self.vcpu_limit);
        let basis = format!("({:?} x {} CPUs)", self.overcommit, self.host.cpus);
        if self.vcpus_used > limit {
            format!(
                "0 of {limit} vCPUs left, {} over already {basis}",
                self.vcpus_used - limit
            )
        } else {
            format!("{} of {limit} vCPUs left {basis}", limit - self.vcpus_used)
        }
    }

    /// "hb has <what is short>" naming only the limits `vm` does not fit.
    fn shortfall(&self, vm: &VmDemand) -> String {
        let mut parts = Vec::new();
        if !self.mem_fits(vm) {
            parts.push(self.mem_detail());
        }
        if !self.vcpus_fit(vm) {
            parts.push(self.vcpu_detail());
        }
        format!("{} has {}", self.host.name, parts.join(" and "))
    }
}

/// A destination and what this plan has put there so far.
#[derive(Debug, Clone)]
struct Dest<'a> {
    host: &'a Candidate,
    planned_mem: u128,
    planned_vcpus: u128,
    /// Disk bytes planned per pool target path.
    planned_disk: BTreeMap<String, u128>,
}

impl Dest<'_> {
    fn room<'s>(&'s self, policy: &Policy) -> Room<'s> {
        Room::new(self.host, self.planned_mem, self.planned_vcpus, policy)
    }

    /// Why `vm`'s disks do not fit here, or None.
    fn disk_shortfall(&self, vm: &VmDemand) -> Option<String> {
        disk_shortfall(vm, self.host, &self.planned_disk)
    }

    fn take(&mut self, vm: &VmDemand) {
        self.planned_mem += u128::from(vm.mem_mib);
        self.planned_vcpus += u128::from(vm.vcpus);
        for n in &vm.disks {
            *self.planned_disk.entry(n.dir.clone()).or_default() += u128::from(n.bytes);
        }
    }
}

/// "2048 MiB": bytes for people, rounded up.
fn mib_of(bytes: u128) -> String {
    format!("{} MiB", bytes.div_ceil(1 << 20))
}

/// Why `host` has no room for `vm`'s copied disks (given what is planned
/// there per pool already), or None. Two directories in one pool are
/// counted together.
pub fn disk_shortfall(
    vm: &VmDemand,
    host: &Candidate,
    planned: &BTreeMap<String, u128>,
) -> Option<String> {
    let mut need: BTreeMap<&str, u128> = BTreeMap::new();
    for n in &vm.disks {
        let Some(pool) = host
            .pools
            .iter()
            .find(|p| std::path::Path::new(&p.target) == std::path::Path::new(&n.dir))
        else {
            return Some(format!("{} has no storage pool at {}", host.name, n.dir));
        };
        *need.entry(pool.target.as_str()).or_default() += u128::from(n.bytes);
    }
    for (target, bytes) in need {
        let available = host
            .pools
            .iter()
            .find(|p| p.target == target)
            .map_or(0, |p| u128::from(p.available));
        let used = planned
            .iter()
            .filter(|(dir, _)| std::path::Path::new(dir.as_str()) == std::path::Path::new(target))
            .map(|(_, b)| *b)
            .sum::<u128>();
        let free = available.saturating_sub(used);
        if bytes > free {
            return Some(format!(
                "{} has {} free in {target} for {} of disks",
                host.name,
                mib_of(free),
                mib_of(bytes)
            ));
        }
    }
    None
}

/// How to pick among the hosts a VM fits.
#[derive(Debug)]
enum Choice {
    /// Lowest memory utilisation after placing, then vCPU, then name.
    Balance,
    /// The first that fits, in this order (indices into the destinations).
    FirstFit(Vec<usize>),
}

/// What every placement pass shares.
#[derive(Debug)]
struct Ctx<'a> {
    policy: &'a Policy,
    exclude: &'a BTreeMap<String, Vec<String>>,
    /// why each non-destination host was screened out, in name order
    screened_out: &'a [String],
}

impl Ctx<'_> {
    fn excluded(&self, vm: &VmDemand, host: &Candidate) -> bool {
        self.exclude
            .get(&vm.name)
            .is_some_and(|hosts| hosts.contains(&host.name))
    }
}

/// Places `order` one VM at a time onto a fresh copy of `dests`: per VM the
/// destination index, or why none fits.
fn place(
    order: &[&VmDemand],
    dests: &[Dest<'_>],
    choice: &Choice,
    ctx: &Ctx<'_>,
) -> Vec<Result<usize, String>> {
    let mut dests = dests.to_vec();
    let mut outcome = Vec::with_capacity(order.len());
    for &vm in order {
        let takes = |i: usize, dests: &[Dest<'_>]| {
            !ctx.excluded(vm, dests[i].host)
                && dests[i].room(ctx.policy).fits(vm)
                && dests[i].disk_shortfall(vm).is_none()
        };
        let chosen = match choice {
            Choice::FirstFit(hosts) => hosts.iter().copied().find(|&i| takes(i, &dests)),
            Choice::Balance => (0..dests.len())
                .filter(|&i| takes(i, &dests))
                .min_by(|&a, &b| balance_order(vm, &dests[a], &dests[b], ctx.policy)),
        };
        match chosen {
            Some(i) => {
                dests[i].take(vm);
                outcome.push(Ok(i));
            }
            None => outcome.push(Err(explain(vm, &dests, ctx))),
        }
    }
    outcome
}

/// Balance's preference between two hosts that both fit `vm`.
fn balance_order(vm: &VmDemand, a: &Dest<'_>, b: &Dest<'_>, policy: &Policy) -> Ordering {
    let (ra, rb) = (a.room(policy), b.room(policy));
    let mem = |r: &Room<'_>| r.mem_used + u128::from(vm.mem_mib);
    let cpu = |r: &Room<'_>| r.vcpus_used + u128::from(vm.vcpus);
    cmp_ratio(
        mem(&ra),
        u128::from(a.host.mem_total_mib),
        mem(&rb),
        u128::from(b.host.mem_total_mib),
    )
    .then_with(|| {
        cmp_ratio(
            cpu(&ra),
            u128::from(a.host.cpus),
            cpu(&rb),
            u128::from(b.host.cpus),
        )
    })
    .then_with(|| a.host.name.cmp(&b.host.name))
}

/// Why `vm` fits none of `dests` as they stand: which limit, on which host,
/// by how much, and why the other hosts were not considered. One line.
fn explain(vm: &VmDemand, dests: &[Dest<'_>], ctx: &Ctx<'_>) -> String {
    let mut not_considered: Vec<String> = Vec::new();
    let mut rooms = Vec::new();
    // Hosts with the memory and vCPUs but not the storage.
    let mut no_storage = Vec::new();
    for d in dests {
        if ctx.excluded(vm, d.host) {
            not_considered.push(format!("{} is excluded for this VM", d.host.name));
        } else {
            let room = d.room(ctx.policy);
            if room.fits(vm) {
                no_storage.extend(d.disk_shortfall(vm));
            }
            rooms.push(room);
        }
    }
    not_considered.extend(ctx.screened_out.iter().cloned());
    if rooms.is_empty() {
        if not_considered.is_empty() {
            return "no candidate: no peers are known".to_owned();
        }
        return format!("no candidate: {}", not_considered.join(", "));
    }

    let disk_bytes: u128 = vm.disks.iter().map(|n| u128::from(n.bytes)).sum();
    let mut reason = if !no_storage.is_empty() {
        // Some host had the memory and vCPUs: storage is what is short.
        format!(
            "its local disks need {} on the destination; {}",
            mib_of(disk_bytes),
            no_storage.join("; ")
        )
    } else if rooms.iter().all(|r| !r.mem_fits(vm)) {
        let needs = format!("needs {} MiB", vm.mem_mib);
        match rooms.as_slice() {
            [only] => format!("{needs}; {} has {}", only.host.name, only.mem_detail()),
            _ => {
                let best = most(&rooms, Room::mem_free);
                format!(
                    "{needs}; the most any host has free is {} MiB ({}: {})",
                    best.mem_free(),
                    best.host.name,
                    best.mem_detail()
                )
            }
        }
    } else if rooms.iter().all(|r| !r.vcpus_fit(vm)) {
        let needs = format!("needs {} vCPUs", vm.vcpus);
        match rooms.as_slice() {
            [only] => format!("{needs}; {} has {}", only.host.name, only.vcpu_detail()),
            _ => {
                let best = most(&rooms, Room::vcpus_left);
                format!(
                    "{needs}; the most any host has left is {} ({}: {})",
                    best.vcpus_left(),
                    best.host.name,
                    best.vcpu_detail()
                )
            }
        }
    } else {
        let each: Vec<String> = rooms.iter().map(|r| r.shortfall(vm)).collect();
        format!(
            "needs {} MiB and {} vCPUs; {}",
            vm.mem_mib,
            vm.vcpus,
            each.join("; ")
        )
    };
    if !not_considered.is_empty() {
        reason.push_str("; not considered: ");
        reason.push_str(&not_considered.join(", "));
    }
    reason
}

/// The room with the most of `key`, the first in name order on a tie.
fn most<'r, 'a>(rooms: &'r [Room<'a>], key: fn(&Room<'a>) -> u128) -> &'r Room<'a> {
    let mut best = &rooms[0];
    for r in &rooms[1..] {
        if key(r) > key(best) {
            best = r;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{
        any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, ProptestConfig,
        TestCaseError,
    };
    use proptest::strategy::Strategy as _;

    fn host(name: &str, cpus: u32, mem_total_mib: u64) -> Candidate {
        Candidate {
            name: name.to_owned(),
            reachable: true,
            unavailable: false,
            cpus,
            cpu_pct: Some(10.0),
            mem_total_mib,
            mem_committed_mib: 0,
            vcpus_committed: 0,
            mem_inflight_mib: 0,
            vcpus_inflight: 0,
            pools: Vec::new(),
        }
    }

    fn vm(name: &str, vcpus: u32, mem_mib: u64) -> VmDemand {
        VmDemand {
            name: name.to_owned(),
            vcpus,
            mem_mib,
            ..Default::default()
        }
    }

    fn policy(strategy: Strategy) -> Policy {
        Policy {
            strategy,
            load_threshold: 0.8,
            mem_reserve_mib: 0,
            vcpu_overcommit: 1.0,
        }
    }

    fn none() -> BTreeMap<String, Vec<String>> {
        BTreeMap::new()
    }

    fn auto(vms: &[VmDemand], hosts: &[Candidate], p: &Policy) -> Plan {
        plan(vms, hosts, p, &Target::Auto, &none())
    }

    fn dests(p: &Plan) -> Vec<(&str, &str)> {
        p.moves
            .iter()
            .map(|m| (m.vm.as_str(), m.dest.as_str()))
            .collect()
    }

    fn reason<'p>(p: &'p Plan, vm: &str) -> &'p str {
        &p.unplaceable
            .iter()
            .find(|u| u.vm == vm)
            .unwrap_or_else(|| panic!("{vm} not unplaceable in {p:?}"))
            .reason
    }

    const GIB: u64 = 1 << 30;
    const IMAGES: &str = "/var/lib/libvirt/images";

    fn with_pool(mut h: Candidate, target: &str, available: u64) -> Candidate {
        h.pools.push(PoolRoom {
            target: target.into(),
            available,
        });
        h
    }

    fn disky(name: &str, mem_mib: u64, bytes: u64) -> VmDemand {
        VmDemand {
            disks: vec![DiskNeed {
                dir: IMAGES.into(),
                bytes,
            }],
            ..vm(name, 1, mem_mib)
        }
    }

    #[test]
    fn local_disks_go_where_a_pool_has_room_for_them() {
        let hb = with_pool(host("hb", 8, 65536), IMAGES, 5 * GIB);
        let hc = with_pool(host("hc", 8, 65536), "/var/lib/libvirt/images/", 30 * GIB);
        // Balance alone would pick hb (same memory use, name first).
        let p = auto(
            &[disky("a", 1024, 20 * GIB)],
            &[hb, hc],
            &policy(Strategy::Balance),
        );
        assert_eq!(dests(&p), vec![("a", "hc")]);
    }

    #[test]
    fn disks_placed_earlier_in_the_plan_count() {
        let hb = with_pool(host("hb", 8, 65536), IMAGES, 30 * GIB);
        let hc = with_pool(host("hc", 8, 65536), IMAGES, 25 * GIB);
        let vms = [disky("a", 2048, 20 * GIB), disky("b", 1024, 20 * GIB)];
        let p = auto(&vms, &[hb, hc], &policy(Strategy::Pack));
        assert_eq!(dests(&p), vec![("a", "hb"), ("b", "hc")]);
    }

    #[test]
    fn local_disks_that_fit_nowhere_are_unplaceable_with_the_storage_reason() {
        let hb = with_pool(host("hb", 8, 65536), IMAGES, 5 * GIB);
        let hc = with_pool(host("hc", 8, 65536), "/srv/images", 100 * GIB);
        let p = auto(
            &[disky("a", 1024, 8 * GIB)],
            &[hb, hc],
            &policy(Strategy::Balance),
        );
        assert!(p.moves.is_empty());
        assert_eq!(
            reason(&p, "a"),
            "its local disks need 8192 MiB on the destination; hb has 5120 MiB free in \
             /var/lib/libvirt/images for 8192 MiB of disks; hc has no storage pool at \
             /var/lib/libvirt/images"
        );
        // Memory short as well on one host: that host is not blamed on storage.
        let small = with_pool(host("hd", 8, 512), IMAGES, 100 * GIB);
        let hb = with_pool(host("hb", 8, 65536), IMAGES, 5 * GIB);
        let p = auto(
            &[disky("a", 1024, 8 * GIB)],
            &[hb, small],
            &policy(Strategy::Balance),
        );
        assert!(
            reason(&p, "a").starts_with("its local disks need 8192 MiB"),
            "{p:?}"
        );
        assert!(!reason(&p, "a").contains("hd"), "{p:?}");
    }

    #[test]
    fn an_unmovable_vm_is_unplaceable_and_never_strands_the_others() {
        let stuck = VmDemand {
            unmovable: Some(
                "cannot move: a host device is passed through to it (<hostdev>)".into(),
            ),
            ..vm("gpu", 1, 60000)
        };
        // The Pack plan strands a VM here and first-fit-decreasing places
        // all (see plan's docs): an unmovable VM must not hide that.
        let mut full = host("hb", 8, 10);
        full.mem_committed_mib = 2;
        let free = host("hc", 8, 10);
        let vms = [
            stuck,
            vm("a", 1, 5),
            vm("b", 1, 4),
            vm("c", 1, 4),
            vm("d", 1, 3),
            vm("e", 1, 2),
        ];
        let p = auto(&vms, &[full, free], &policy(Strategy::Pack));
        assert_eq!(p.moves.len(), 5, "{p:?}");
        assert_eq!(
            p.unplaceable,
            vec![Unplaceable {
                vm: "gpu".into(),
                reason: "cannot move: a host device is passed through to it (<hostdev>)".into(),
                unmovable: true,
            }]
        );
        // Named destinations too, even an unknown one.
        let p = plan(
            &vms[..1],
            &[],
            &policy(Strategy::Pack),
            &Target::Host("hx".into()),
            &none(),
        );
        assert!(p.unplaceable[0].reason.contains("<hostdev>"), "{p:?}");
    }

    #[test]
    fn a_threshold_of_one_turns_the_load_filter_off() {
        let mut h = host("hb", 4, 8192);
        h.cpu_pct = Some(100.0);
        let mut p = policy(Strategy::Balance);
        p.load_threshold = 1.0;
        let vm = VmDemand {
            name: "a".into(),
            vcpus: 1,
            mem_mib: 256,
            ..Default::default()
        };
        let got = plan(
            std::slice::from_ref(&vm),
            std::slice::from_ref(&h),
            &p,
            &Target::Auto,
            &BTreeMap::new(),
        );
        assert_eq!(got.moves.len(), 1, "{got:?}");
        p.load_threshold = 0.99;
        let got = plan(&[vm], &[h], &p, &Target::Auto, &BTreeMap::new());
        assert_eq!(got.unplaceable.len(), 1, "{got:?}");
    }

    #[test]
    fn threshold_filter_excludes_busy_hosts() {
        let mut busy = host("ha", 8, 65536);
        busy.cpu_pct = Some(92.0);
        let mut at = host("hb", 8, 65536);
        at.cpu_pct = Some(80.0);
        let mut under = host("hc", 8, 1024);
        under.cpu_pct = Some(79.9);
        let p = auto(
            &[vm("v", 1, 512)],
            &[busy, at, under],
            &policy(Strategy::Balance),
        );
        assert_eq!(dests(&p), [("v", "hc")]);
    }

    #[test]
    fn unknown_load_counts_as_idle() {
        let mut h = host("ha", 8, 4096);
        h.cpu_pct = None;
        let p = auto(&[vm("v", 1, 512)], &[h], &policy(Strategy::Pack));
        assert_eq!(dests(&p), [("v", "ha")]);
    }

    #[test]
    fn maintenance_and_unreachable_hosts_are_never_destinations() {
        let mut down = host("ha", 64, 1 << 20);
        down.reachable = false;
        let mut maint = host("hb", 64, 1 << 20);
        maint.unavailable = true;
        let ok = host("hc", 2, 2048);
        let p = auto(
            &[vm("v", 1, 1024)],
            &[down, maint, ok],
            &policy(Strategy::Balance),
        );
        assert_eq!(dests(&p), [("v", "hc")]);
    }

    #[test]
    fn no_candidate_says_why_for_each_host() {
        let mut maint = host("hb", 8, 8192);
        maint.unavailable = true;
        let mut down = host("hc", 8, 8192);
        down.reachable = false;
        let mut busy = host("hd", 8, 8192);
        busy.cpu_pct = Some(92.0);
        let p = auto(
            &[vm("v", 1, 1024)],
            &[busy, down, maint],
            &policy(Strategy::Balance),
        );
        assert_eq!(
            reason(&p, "v"),
            "no candidate: hb is in maintenance or evacuating, hc is unreachable, \
             hd is at 92% CPU (threshold 80%)"
        );
        let p = auto(&[vm("v", 1, 1024)], &[], &policy(Strategy::Balance));
        assert_eq!(reason(&p, "v"), "no candidate: no peers are known");
    }

    #[test]
    fn memory_fits_exactly_at_the_limit_and_not_one_more() {
        let mut h = host("ha", 8, 8192);
        h.mem_committed_mib = 1024;
        let mut pol = policy(Strategy::Balance);
        pol.mem_reserve_mib = 1024;
        assert_eq!(fits(&vm("v", 1, 6144), &h, 0, 0, &pol), Ok(()));
        assert_eq!(
            fits(&vm("v", 1, 6145), &h, 0, 0, &pol),
            Err("needs 6145 MiB; ha has 6144 MiB free after the 1024 MiB reserve".to_owned())
        );
        let p = auto(&[vm("v", 1, 6145)], std::slice::from_ref(&h), &pol);
        assert_eq!(
            reason(&p, "v"),
            "needs 6145 MiB; ha has 6144 MiB free after the 1024 MiB reserve"
        );
        assert_eq!(dests(&auto(&[vm("v", 1, 6144)], &[h], &pol)), [("v", "ha")]);
    }

    #[test]
    fn vcpu_overcommit_boundary() {
        let mut h = host("hb", 4, 1 << 20);
        h.vcpus_committed = 6;
        h.vcpus_inflight = 2;
        let mut pol = policy(Strategy::Balance);
        pol.vcpu_overcommit = 4.0;
        assert_eq!(fits(&vm("v", 8, 1), &h, 0, 0, &pol), Ok(()));
        assert_eq!(
            fits(&vm("v", 9, 1), &h, 0, 0, &pol),
            Err("needs 9 vCPUs; hb has 8 of 16 vCPUs left (4.0 x 4 CPUs)".to_owned())
        );
        // floor(1.5 x 3) = 4
        pol.vcpu_overcommit = 1.5;
        let h = host("hb", 3, 1 << 20);
        assert_eq!(fits(&vm("v", 4, 1), &h, 0, 0, &pol), Ok(()));
        assert!(fits(&vm("v", 5, 1), &h, 0, 0, &pol).is_err());
    }

    #[test]
    fn vcpu_limit_is_the_floor_of_the_decimal_product() {
        assert_eq!(vcpu_limit(100, 0.29), 29);
        assert_eq!(vcpu_limit(10, 0.7), 7);
        assert_eq!(vcpu_limit(3, 1.5), 4);
        assert_eq!(vcpu_limit(4, 4.0), 16);
        assert_eq!(vcpu_limit(0, 4.0), 0);
        assert_eq!(vcpu_limit(4, -1.0), 0);
        assert_eq!(vcpu_limit(4, f64::NAN), 0);
        assert_eq!(vcpu_limit(4, f64::INFINITY), u64::MAX);
    }

    #[test]
    fn reserve_is_counted() {
        let h = host("ha", 8, 4096);
        let mut pol = policy(Strategy::Pack);
        assert_eq!(fits(&vm("v", 1, 4096), &h, 0, 0, &pol), Ok(()));
        pol.mem_reserve_mib = 1;
        assert_eq!(
            fits(&vm("v", 1, 4096), &h, 0, 0, &pol),
            Err("needs 4096 MiB; ha has 4095 MiB free after the 1 MiB reserve".to_owned())
        );
    }

    #[test]
    fn in_flight_migrations_are_counted() {
        let mut h = host("ha", 4, 4096);
        h.mem_inflight_mib = 1024;
        let pol = policy(Strategy::Balance);
        assert_eq!(fits(&vm("v", 1, 3072), &h, 0, 0, &pol), Ok(()));
        assert!(fits(&vm("v", 1, 3073), &h, 0, 0, &pol).is_err());
        h.vcpus_inflight = 3;
        assert_eq!(fits(&vm("v", 1, 1), &h, 0, 0, &pol), Ok(()));
        assert_eq!(
            fits(&vm("v", 2, 1), &h, 0, 0, &pol),
            Err("needs 2 vCPUs; ha has 1 of 4 vCPUs left (1.0 x 4 CPUs)".to_owned())
        );
    }

    #[test]
    fn earlier_moves_of_the_same_plan_are_counted() {
        let h = host("ha", 8, 8192);
        let pol = policy(Strategy::Balance);
        assert!(fits(&vm("v", 1, 4096), &h, 4096, 7, &pol).is_ok());
        assert!(fits(&vm("v", 1, 4097), &h, 4096, 7, &pol).is_err());
        assert!(fits(&vm("v", 2, 1), &h, 0, 7, &pol).is_err());
        let vms = [vm("a", 1, 4096), vm("b", 1, 4096), vm("c", 1, 4096)];
        let p = auto(&vms, &[h], &pol);
        assert_eq!(dests(&p), [("a", "ha"), ("b", "ha")]);
        assert_eq!(reason(&p, "c"), "needs 4096 MiB; ha has 0 MiB free");
    }

    #[test]
    fn named_target_that_fits_takes_everything() {
        let roomy = host("ha", 64, 1 << 20);
        let named = host("hb", 8, 16384);
        let vms = [vm("a", 2, 4096), vm("b", 2, 4096)];
        let p = plan(
            &vms,
            &[roomy, named],
            &policy(Strategy::Balance),
            &Target::Host("hb".to_owned()),
            &none(),
        );
        assert_eq!(dests(&p), [("a", "hb"), ("b", "hb")]);
        assert!(p.unplaceable.is_empty());
    }

    #[test]
    fn named_target_that_does_not_fit_leaves_the_rest_with_reasons() {
        let roomy = host("ha", 64, 1 << 20);
        let named = host("hb", 4, 6144);
        let vms = [vm("a", 1, 4096), vm("b", 1, 4096), vm("c", 2, 1024)];
        let p = plan(
            &vms,
            &[roomy, named],
            &policy(Strategy::Balance),
            &Target::Host("hb".to_owned()),
            &none(),
        );
        assert_eq!(dests(&p), [("a", "hb"), ("c", "hb")]);
        assert_eq!(reason(&p, "b"), "needs 4096 MiB; hb has 2048 MiB free");

        let mut maint = host("hb", 64, 1 << 20);
        maint.unavailable = true;
        let p = plan(
            &vms,
            &[maint],
            &policy(Strategy::Balance),
            &Target::Host("hb".to_owned()),
            &none(),
        );
        assert!(p.moves.is_empty());
        assert_eq!(p.unplaceable.len(), 3);
        assert!(p
            .unplaceable
            .iter()
            .all(|u| u.reason == "no candidate: hb is in maintenance or evacuating"));
    }

    #[test]
    fn unknown_named_target_leaves_every_vm() {
        let p = plan(
            &[vm("a", 1, 1), vm("b", 1, 1)],
            &[host("ha", 8, 8192)],
            &policy(Strategy::Pack),
            &Target::Host("hx".to_owned()),
            &none(),
        );
        assert!(p.moves.is_empty());
        assert_eq!(p.unplaceable.len(), 2);
        assert!(p
            .unplaceable
            .iter()
            .all(|u| u.reason == "no such peer 'hx'"));
    }

    #[test]
    fn exclude_is_honoured() {
        let hosts = [host("ha", 8, 65536), host("hb", 8, 8192)];
        let mut exclude = none();
        exclude.insert("a".to_owned(), vec!["ha".to_owned()]);
        let p = plan(
            &[vm("a", 1, 1024), vm("b", 1, 1024)],
            &hosts,
            &policy(Strategy::Pack),
            &Target::Auto,
            &exclude,
        );
        assert_eq!(dests(&p), [("a", "hb"), ("b", "ha")]);

        exclude.insert("a".to_owned(), vec!["ha".to_owned(), "hb".to_owned()]);
        let p = plan(
            &[vm("a", 1, 1024)],
            &hosts,
            &policy(Strategy::Balance),
            &Target::Auto,
            &exclude,
        );
        assert_eq!(
            reason(&p, "a"),
            "no candidate: ha is excluded for this VM, hb is excluded for this VM"
        );
    }

    #[test]
    fn largest_first_with_deterministic_ties() {
        let h = host("ha", 64, 8192);
        let vms = [
            vm("small", 1, 2048),
            vm("mid", 1, 4096),
            vm("big", 1, 6144),
            vm("b-tie", 2, 1024),
            vm("a-tie", 2, 1024),
            vm("c-tie", 4, 1024),
        ];
        let p = auto(&vms, &[h], &policy(Strategy::Pack));
        // big goes first, so mid (which would fit alone) cannot.
        assert_eq!(
            p.moves.iter().map(|m| m.vm.as_str()).collect::<Vec<_>>(),
            ["big", "small"]
        );
        assert_eq!(
            p.unplaceable
                .iter()
                .map(|u| u.vm.as_str())
                .collect::<Vec<_>>(),
            ["mid", "c-tie", "a-tie", "b-tie"]
        );
    }

    #[test]
    fn balance_spreads_two_equal_vms_over_two_equal_hosts() {
        let hosts = [host("hb", 8, 16384), host("ha", 8, 16384)];
        let vms = [vm("v1", 2, 4096), vm("v2", 2, 4096)];
        let p = auto(&vms, &hosts, &policy(Strategy::Balance));
        assert_eq!(dests(&p), [("v1", "ha"), ("v2", "hb")]);
    }

    #[test]
    fn balance_picks_lowest_utilisation_after_placing() {
        let mut big = host("ha", 8, 16384);
        big.mem_committed_mib = 8192; // 10240/16384 = 62.5% after
        let mut small = host("hb", 8, 8192);
        small.mem_committed_mib = 2048; // 4096/8192 = 50% after
        let p = auto(
            &[vm("v", 1, 2048)],
            &[big, small],
            &policy(Strategy::Balance),
        );
        assert_eq!(dests(&p), [("v", "hb")]);

        // equal memory: fewer vCPUs in use wins
        let mut a = host("ha", 8, 8192);
        a.vcpus_committed = 4;
        let b = host("hb", 8, 8192);
        let p = auto(&[vm("v", 1, 2048)], &[a, b], &policy(Strategy::Balance));
        assert_eq!(dests(&p), [("v", "hb")]);
    }

    #[test]
    fn pack_fills_the_least_used_host_first() {
        let mut a = host("ha", 8, 16384);
        a.mem_committed_mib = 1024;
        let b = host("hb", 8, 16384);
        let vms = [
            vm("v1", 1, 4096),
            vm("v2", 1, 4096),
            vm("v3", 1, 4096),
            vm("v4", 1, 4096),
        ];
        let p = auto(&vms, &[a, b], &policy(Strategy::Pack));
        assert_eq!(
            dests(&p),
            [("v1", "hb"), ("v2", "hb"), ("v3", "hb"), ("v4", "hb")]
        );
        let vms = [vm("v1", 1, 8192), vm("v2", 1, 8192), vm("v3", 1, 8192)];
        let mut a = host("ha", 8, 16384);
        a.mem_committed_mib = 1024;
        let p = auto(&vms, &[a, host("hb", 8, 16384)], &policy(Strategy::Pack));
        assert_eq!(dests(&p), [("v1", "hb"), ("v2", "hb"), ("v3", "ha")]);
    }

    #[test]
    fn reasons_name_the_limit_and_the_numbers() {
        let mut pol = policy(Strategy::Balance);
        pol.mem_reserve_mib = 1024;
        pol.vcpu_overcommit = 4.0;
        let mut hb = host("hb", 4, 4096);
        hb.mem_committed_mib = 2048;
        let hc = host("hc", 4, 2048);
        let p = auto(&[vm("v", 1, 4096)], &[hb.clone(), hc.clone()], &pol);
        assert_eq!(
            reason(&p, "v"),
            "needs 4096 MiB; the most any host has free is 1024 MiB \
             (hb: 1024 MiB free after the 1024 MiB reserve)"
        );

        let mut hd = host("hd", 4, 1 << 20);
        hd.vcpus_committed = 14;
        let mut maint = host("he", 64, 1 << 20);
        maint.unavailable = true;
        let p = auto(&[vm("v", 8, 1024)], &[hd, maint], &pol);
        assert_eq!(
            reason(&p, "v"),
            "needs 8 vCPUs; hd has 2 of 16 vCPUs left (4.0 x 4 CPUs); \
             not considered: he is in maintenance or evacuating"
        );

        let mut hf = host("hf", 1, 1 << 20);
        hf.vcpus_committed = 4;
        let p = auto(&[vm("v", 8, 2048)], &[hc, hf], &pol);
        assert_eq!(
            reason(&p, "v"),
            "needs 2048 MiB and 8 vCPUs; hc has 1024 MiB free after the 1024 MiB reserve; \
             hf has 0 of 4 vCPUs left (4.0 x 1 CPUs)"
        );
    }

    #[test]
    fn hosts_already_past_a_limit_say_by_how_much() {
        let mut h = host("ha", 2, 4096);
        h.mem_committed_mib = 5000;
        h.vcpus_committed = 3;
        let pol = policy(Strategy::Balance);
        assert_eq!(
            fits(&vm("v", 0, 0), &h, 0, 0, &pol),
            Err(
                "needs 0 MiB and 0 vCPUs; ha has 0 MiB free, 904 MiB over its 4096 MiB \
                 already and 0 of 2 vCPUs left, 1 over already (1.0 x 2 CPUs)"
                    .to_owned()
            )
        );
    }

    #[test]
    fn hosts_with_no_cpus_or_memory_fit_nothing() {
        let pol = policy(Strategy::Balance);
        let zero_cpu = host("ha", 0, 1 << 20);
        let zero_mem = host("hb", 8, 0);
        assert_eq!(
            fits(&vm("v", 0, 0), &zero_cpu, 0, 0, &pol),
            Err("ha reports 0 CPUs".to_owned())
        );
        assert_eq!(
            fits(&vm("v", 0, 0), &zero_mem, 0, 0, &pol),
            Err("hb reports 0 MiB of memory".to_owned())
        );
        let p = auto(&[vm("v", 0, 0)], &[zero_cpu, zero_mem], &pol);
        assert_eq!(
            reason(&p, "v"),
            "no candidate: ha reports 0 CPUs, hb reports 0 MiB of memory"
        );
    }

    #[test]
    fn huge_values_neither_overflow_nor_fit_wrongly() {
        let mut h = host("ha", u32::MAX, u64::MAX);
        h.mem_committed_mib = u64::MAX;
        h.mem_inflight_mib = u64::MAX;
        h.vcpus_committed = u32::MAX;
        h.vcpus_inflight = u32::MAX;
        let mut pol = policy(Strategy::Balance);
        pol.mem_reserve_mib = u64::MAX;
        pol.vcpu_overcommit = 1e30;
        assert!(fits(&vm("v", u32::MAX, u64::MAX), &h, u64::MAX, u32::MAX, &pol).is_err());
        assert!(fits(&vm("v", 0, 0), &h, 0, 0, &pol).is_err());
        let free = host("hb", u32::MAX, u64::MAX);
        pol.mem_reserve_mib = 0;
        assert_eq!(
            fits(&vm("v", u32::MAX, u64::MAX), &free, 0, 0, &pol),
            Ok(())
        );
        let p = auto(
            &[vm("a", u32::MAX, u64::MAX), vm("b", 1, 1)],
            &[h, free],
            &pol,
        );
        assert_eq!(dests(&p), [("a", "hb")]);
        assert_eq!(p.unplaceable.len(), 1);
    }

    #[test]
    fn a_host_listed_twice_is_not_trusted() {
        let hosts = [host("ha", 8, 8192), host("ha", 8, 1024)];
        let p = auto(&[vm("v", 1, 2048)], &hosts, &policy(Strategy::Balance));
        assert_eq!(reason(&p, "v"), "no candidate: ha is listed more than once");
    }

    #[test]
    fn falls_back_to_first_fit_when_balance_strands_a_vm() {
        // Balance alone: 6->ha, 4->hb, 4->hb, 3->ha, and the last 3 fits nowhere.
        let hosts = [host("ha", 64, 10), host("hb", 64, 10)];
        let vms = [
            vm("a", 1, 6),
            vm("b", 1, 4),
            vm("c", 1, 4),
            vm("d", 1, 3),
            vm("e", 1, 3),
        ];
        let p = auto(&vms, &hosts, &policy(Strategy::Balance));
        assert!(p.unplaceable.is_empty(), "{p:?}");
        assert_eq!(
            dests(&p),
            [
                ("a", "ha"),
                ("b", "ha"),
                ("c", "hb"),
                ("d", "hb"),
                ("e", "hb")
            ]
        );
    }

    #[test]
    fn falls_back_to_first_fit_when_pack_strands_a_vm() {
        // Pack alone: hb (emptiest) takes 5 and 4, ha takes 4 and 3, 2 is left.
        let mut ha = host("ha", 64, 20);
        ha.mem_committed_mib = 12;
        let hosts = [ha, host("hb", 64, 10)];
        let vms = [
            vm("a", 1, 5),
            vm("b", 1, 4),
            vm("c", 1, 4),
            vm("d", 1, 3),
            vm("e", 1, 2),
        ];
        let p = auto(&vms, &hosts, &policy(Strategy::Pack));
        assert!(p.unplaceable.is_empty(), "{p:?}");
    }

    #[test]
    fn each_peer_says_once_why_it_took_none_of_the_vms_left() {
        let mut pol = policy(Strategy::Balance);
        pol.mem_reserve_mib = 1024;
        let mut full = host("hb", 8, 4096);
        full.mem_committed_mib = 3072;
        let mut down = host("hc", 8, 65536);
        down.reachable = false;
        let few_cpus = host("hd", 2, 65536);
        let mut gpu = vm("gpu", 1, 512);
        gpu.unmovable = Some("cannot move: a host device is passed through to it".into());
        let vms = [
            vm("a", 4, 2048),
            vm("b", 4, 4096),
            vm("c", 1, 1024),
            vm("d", 1, 1024),
            gpu,
        ];
        let p = auto(&vms, &[full, down, few_cpus], &pol);
        assert_eq!(dests(&p), [("c", "hd"), ("d", "hd")]);
        let reasons: Vec<(&str, &str)> = p
            .peer_reasons
            .iter()
            .map(|r| (r.host.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    "hb",
                    "full (needs at least 2048 MiB, has 0 MiB free after the 1 GiB reserve)"
                ),
                ("hc", "unreachable"),
                ("hd", "no vCPUs (needs at least 4, has 0 of 2 vCPUs left)"),
            ]
        );
        // The per-VM reasons are as complete as ever; the unmovable VM is
        // marked, and no peer reason is about it.
        assert!(reason(&p, "a").contains("not considered: hc is unreachable"));
        let gpu = p.unplaceable.iter().find(|u| u.vm == "gpu").unwrap();
        assert!(gpu.unmovable);
        assert!(!p.unplaceable.iter().any(|u| u.vm != "gpu" && u.unmovable));
        // Nothing stranded, no peer reasons; only unmovable VMs, none either.
        let p = auto(&vms[2..], &[host("hb", 8, 65536)], &pol);
        assert!(p.peer_reasons.is_empty(), "{p:?}");
        // A named peer that does not exist is one reason.
        let p = plan(&vms, &[], &pol, &Target::Host("hx".into()), &none());
        assert_eq!(
            p.peer_reasons,
            [PeerReason {
                host: "hx".into(),
                reason: "no such peer".into()
            }]
        );
        // One VM: its own need, not "at least"; both limits when both.
        let p = auto(&vms[1..2], &[host("hb", 2, 4096)], &pol);
        assert_eq!(
            p.peer_reasons[0].reason,
            "full (needs 4096 MiB and 4 vCPUs, has 3072 MiB free after the 1 GiB \
             reserve and 2 of 2 vCPUs)"
        );
    }

    #[test]
    fn plan_serializes() {
        let p = auto(
            &[vm("v", 1, 1)],
            &[host("ha", 1, 2)],
            &policy(Strategy::Pack),
        );
        assert_eq!(
            serde_json::to_string(&p).ok().as_deref(),
            Some(r#"{"moves":[{"vm":"v","dest":"ha"}],"unplaceable":[],"peer_reasons":[]}"#)
        );
    }

    // ---- properties ----

    fn size_u64() -> impl proptest::strategy::Strategy<Value = u64> {
        prop_oneof![
            6 => 0u64..70_000,
            1 => Just(0u64),
            1 => Just(u64::MAX),
            1 => any::<u64>(),
        ]
    }

    fn small_u64() -> impl proptest::strategy::Strategy<Value = u64> {
        prop_oneof![
            6 => 0u64..8_000,
            1 => Just(0u64),
            1 => Just(u64::MAX),
            1 => any::<u64>(),
        ]
    }

    fn count_u32() -> impl proptest::strategy::Strategy<Value = u32> {
        prop_oneof![
            6 => 0u32..64,
            1 => Just(0u32),
            1 => Just(u32::MAX),
            1 => any::<u32>(),
        ]
    }

    fn arb_host(i: usize) -> impl proptest::strategy::Strategy<Value = Candidate> {
        (
            prop::bool::weighted(0.9),
            prop::bool::weighted(0.1),
            count_u32(),
            prop::option::weighted(0.9, 0.0f64..=100.0),
            size_u64(),
            (small_u64(), count_u32(), small_u64(), count_u32()),
        )
            .prop_map(
                move |(reachable, unavailable, cpus, cpu_pct, mem_total_mib, used)| Candidate {
                    name: format!("h{i}"),
                    reachable,
                    unavailable,
                    cpus,
                    cpu_pct,
                    mem_total_mib,
                    mem_committed_mib: used.0,
                    vcpus_committed: used.1,
                    mem_inflight_mib: used.2,
                    vcpus_inflight: used.3,
                    pools: Vec::new(),
                },
            )
    }

    fn arb_hosts() -> impl proptest::strategy::Strategy<Value = Vec<Candidate>> {
        (0usize..6).prop_flat_map(|n| (0..n).map(arb_host).collect::<Vec<_>>())
    }

    fn arb_vms() -> impl proptest::strategy::Strategy<Value = Vec<VmDemand>> {
        prop::collection::vec((count_u32(), small_u64()), 0..20).prop_map(|sizes| {
            sizes
                .into_iter()
                .enumerate()
                .map(|(i, (vcpus, mem_mib))| VmDemand {
                    name: format!("vm{i}"),
                    vcpus,
                    mem_mib,
                    ..Default::default()
                })
                .collect()
        })
    }

    fn arb_policy() -> impl proptest::strategy::Strategy<Value = Policy> {
        (
            prop_oneof![Just(Strategy::Balance), Just(Strategy::Pack)],
            prop_oneof![4 => 0.0f64..=1.2, 1 => Just(0.8)],
            prop_oneof![3 => 0u64..2048, 1 => Just(0u64), 1 => Just(u64::MAX)],
            prop_oneof![Just(0.0f64), 0.5f64..8.0, Just(1.0f64), Just(1e30f64)],
        )
            .prop_map(
                |(strategy, load_threshold, mem_reserve_mib, vcpu_overcommit)| Policy {
                    strategy,
                    load_threshold,
                    mem_reserve_mib,
                    vcpu_overcommit,
                },
            )
    }

    fn arb_target() -> impl proptest::strategy::Strategy<Value = Target> {
        prop_oneof![
            4 => Just(Target::Auto),
            1 => (0usize..7).prop_map(|i| Target::Host(format!("h{i}"))),
        ]
    }

    fn arb_exclude() -> impl proptest::strategy::Strategy<Value = BTreeMap<String, Vec<String>>> {
        prop::collection::vec((0usize..20, 0usize..7), 0..12).prop_map(|pairs| {
            let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (v, h) in pairs {
                map.entry(format!("vm{v}"))
                    .or_default()
                    .push(format!("h{h}"));
            }
            map
        })
    }

    /// The hosts a VM may go to, worked out independently of the module.
    fn eligible(h: &Candidate, p: &Policy, target: &Target) -> bool {
        let load = h.cpu_pct.unwrap_or(0.0) / 100.0;
        h.reachable
            && !h.unavailable
            && (p.load_threshold >= 1.0 || load < p.load_threshold)
            && match target {
                Target::Auto => true,
                Target::Host(t) => *t == h.name,
            }
    }

    fn within_limits(h: &Candidate, p: &Policy, mem: u128, vcpus: u128) -> bool {
        h.cpus > 0
            && h.mem_total_mib > 0
            && u128::from(h.mem_committed_mib)
                + u128::from(h.mem_inflight_mib)
                + u128::from(p.mem_reserve_mib)
                + mem
                <= u128::from(h.mem_total_mib)
            && u128::from(h.vcpus_committed) + u128::from(h.vcpus_inflight) + vcpus
                <= u128::from(vcpu_limit(h.cpus, p.vcpu_overcommit))
    }

    fn excluded(exclude: &BTreeMap<String, Vec<String>>, vm: &str, host: &str) -> bool {
        exclude
            .get(vm)
            .is_some_and(|l| l.iter().any(|h| h.as_str() == host))
    }

    /// Reference first-fit-decreasing: true if it places every VM.
    fn ffd_places_all(
        vms: &[VmDemand],
        hosts: &[Candidate],
        p: &Policy,
        target: &Target,
        exclude: &BTreeMap<String, Vec<String>>,
    ) -> bool {
        let mut order: Vec<&VmDemand> = vms.iter().collect();
        order.sort_by(|a, b| {
            b.mem_mib
                .cmp(&a.mem_mib)
                .then(b.vcpus.cmp(&a.vcpus))
                .then(a.name.cmp(&b.name))
        });
        let mut hs: Vec<(&Candidate, u128, u128)> = hosts
            .iter()
            .filter(|h| eligible(h, p, target))
            .map(|h| (h, 0, 0))
            .collect();
        hs.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        order.iter().all(|vm| {
            let slot = hs.iter_mut().find(|(h, m, c)| {
                !excluded(exclude, &vm.name, &h.name)
                    && within_limits(h, p, *m + u128::from(vm.mem_mib), *c + u128::from(vm.vcpus))
            });
            match slot {
                Some((_, m, c)) => {
                    *m += u128::from(vm.mem_mib);
                    *c += u128::from(vm.vcpus);
                    true
                }
                None => false,
            }
        })
    }

    /// Checks properties (1) to (5) of one plan.
    fn check_plan(
        vms: &[VmDemand],
        hosts: &[Candidate],
        p: &Policy,
        target: &Target,
        exclude: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), TestCaseError> {
        let out = plan(vms, hosts, p, target, exclude);

        // (1) no host over a limit
        let mut load: BTreeMap<&str, (u128, u128)> = BTreeMap::new();
        for m in &out.moves {
            let v = vms
                .iter()
                .find(|v| v.name == m.vm)
                .expect("moved VM exists");
            let e = load.entry(m.dest.as_str()).or_default();
            e.0 += u128::from(v.mem_mib);
            e.1 += u128::from(v.vcpus);
        }
        for (name, (mem, vcpus)) in &load {
            let h = hosts.iter().find(|h| h.name == *name).expect("dest exists");
            prop_assert!(
                within_limits(h, p, *mem, *vcpus),
                "{name} overfilled: {out:?}"
            );
        }

        // (2) whatever FFD can place, the plan places, with either strategy
        if ffd_places_all(vms, hosts, p, target, exclude) {
            prop_assert!(out.unplaceable.is_empty(), "FFD places all but: {out:?}");
            let other = Policy {
                strategy: match p.strategy {
                    Strategy::Balance => Strategy::Pack,
                    Strategy::Pack => Strategy::Balance,
                },
                ..p.clone()
            };
            let out2 = plan(vms, hosts, &other, target, exclude);
            prop_assert!(out2.unplaceable.is_empty(), "FFD places all but: {out2:?}");
        }

        // (3) same input, same plan; input order does not matter either
        prop_assert_eq!(&plan(vms, hosts, p, target, exclude), &out);
        let rev_hosts: Vec<Candidate> = hosts.iter().rev().cloned().collect();
        let rev_vms: Vec<VmDemand> = vms.iter().rev().cloned().collect();
        prop_assert_eq!(&plan(&rev_vms, &rev_hosts, p, target, exclude), &out);

        // (4) every VM exactly once
        let mut seen: Vec<&str> = out
            .moves
            .iter()
            .map(|m| m.vm.as_str())
            .chain(out.unplaceable.iter().map(|u| u.vm.as_str()))
            .collect();
        seen.sort_unstable();
        let mut want: Vec<&str> = vms.iter().map(|v| v.name.as_str()).collect();
        want.sort_unstable();
        prop_assert_eq!(seen, want);

        // (5) never to an excluded, unreachable, unavailable, busy or unnamed host
        for m in &out.moves {
            let h = hosts
                .iter()
                .find(|h| h.name == m.dest)
                .expect("dest exists");
            prop_assert!(eligible(h, p, target), "bad dest {h:?} in {out:?}");
            prop_assert!(
                !excluded(exclude, &m.vm, &m.dest),
                "excluded dest in {out:?}"
            );
        }

        // reasons are one line and never empty
        for u in &out.unplaceable {
            prop_assert!(!u.reason.is_empty() && !u.reason.contains('\n'));
        }
        Ok(())
    }

    /// Moderate sizes that often just fit, so property (2) and the
    /// first-fit fallback are exercised, not only the overflow corners.
    fn tight_host(i: usize) -> impl proptest::strategy::Strategy<Value = Candidate> {
        (
            prop::bool::weighted(0.95),
            prop::bool::weighted(0.05),
            1u32..16,
            0.0f64..70.0,
            16u64..128,
            (0u64..32, 0u32..8, 0u64..8, 0u32..4),
        )
            .prop_map(
                move |(reachable, unavailable, cpus, pct, mem_total_mib, used)| Candidate {
                    name: format!("h{i}"),
                    reachable,
                    unavailable,
                    cpus,
                    cpu_pct: Some(pct),
                    mem_total_mib,
                    mem_committed_mib: used.0,
                    vcpus_committed: used.1,
                    mem_inflight_mib: used.2,
                    vcpus_inflight: used.3,
                    pools: Vec::new(),
                },
            )
    }

    fn tight_case(
    ) -> impl proptest::strategy::Strategy<Value = (Vec<VmDemand>, Vec<Candidate>, Policy)> {
        let hosts = (1usize..5).prop_flat_map(|n| (0..n).map(tight_host).collect::<Vec<_>>());
        let vms = prop::collection::vec((0u32..6, 1u64..40), 0..20).prop_map(|sizes| {
            sizes
                .into_iter()
                .enumerate()
                .map(|(i, (vcpus, mem_mib))| VmDemand {
                    name: format!("vm{i}"),
                    vcpus,
                    mem_mib,
                    ..Default::default()
                })
                .collect::<Vec<_>>()
        });
        let policy = (
            prop_oneof![Just(Strategy::Balance), Just(Strategy::Pack)],
            0u64..8,
            prop_oneof![Just(1.0f64), Just(1.5), Just(2.0), Just(4.0)],
        )
            .prop_map(|(strategy, mem_reserve_mib, vcpu_overcommit)| Policy {
                strategy,
                load_threshold: 0.8,
                mem_reserve_mib,
                vcpu_overcommit,
            });
        (vms, hosts, policy)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn prop_plans_are_sound(
            vms in arb_vms(),
            hosts in arb_hosts(),
            p in arb_policy(),
            target in arb_target(),
            exclude in arb_exclude(),
        ) {
            check_plan(&vms, &hosts, &p, &target, &exclude)?;
        }

        #[test]
        fn prop_tight_plans_are_sound(
            (vms, hosts, p) in tight_case(),
            target in arb_target(),
            exclude in arb_exclude(),
        ) {
            check_plan(&vms, &hosts, &p, &target, &exclude)?;
        }
    }
}
