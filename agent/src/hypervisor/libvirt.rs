//! The real hypervisor: libvirt through the `virt` crate.
//!
//! Each call opens its own connection and closes it (through
//! [`libvirt_ffi::close`], which keeps the bindings' panic-on-close out).
//! Every call to a peer runs under a deadline ([`deadline`]); a peer whose
//! libvirt hangs leaves a detached thread holding only its own connection.
//!
//! A migration: libvirt's migrate call blocks until the migration ends, so
//! it runs on a thread of its own with its own connection, and the loop
//! ([`drive`]) watches it on a second one. With ABORT_ON_ERROR an aborted
//! or failed live migration leaves the VM on the source (running, or
//! paused: see [`super::ensure_running_after_failure`]).

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::{Domain, MigrateParameters};
use virt::sys;

use super::deadline::{self, InFlight};
use super::volumes;
use super::{
    DomState, DomainInfo, HvError, Hypervisor, Limits, PeerAddr, Progress, LOCAL_LIBVIRT_LOST,
};
use crate::libvirt_ffi::{self, JobStats};
use crate::migration::run::{
    drive, may_discard, MigrationJob, MigrationOps, Outcome, Pace, Prepared, Spec,
};
use crate::migration::{announce, nwfilter, rarp, tls};
use crate::storage;

/// libvirt on this host, and its peers through their URIs.
#[derive(Debug, Clone)]
pub struct Libvirt {
    local_uri: String,
    /// Timing of migrations, and the deadline of every peer call.
    pub pace: Pace,
    /// Peer calls still running, shared by clones: keep one `Libvirt` for
    /// the agent's life so the bound holds.
    peers: InFlight,
}

/// Calls to one peer that may be running at once; more, while earlier
/// ones hang, are refused at once rather than left to pile up.
pub const PEER_CALLS_MAX: usize = 4;

impl Libvirt {
    pub fn new(local_uri: &str) -> Libvirt {
        Libvirt {
            local_uri: local_uri.to_owned(),
            pace: Pace::default(),
            peers: InFlight::new(PEER_CALLS_MAX),
        }
    }

    pub fn with_pace(mut self, pace: Pace) -> Libvirt {
        self.pace = pace;
        self
    }

    pub fn local_uri(&self) -> &str {
        &self.local_uri
    }
}

/// Calls into the bindings that may panic on unexpected data (typed
/// parameter parsing, Drop on a failed free) must not take the agent down.
fn guarded<T>(f: impl FnOnce() -> Result<T, HvError>) -> Result<T, HvError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(HvError::Call("libvirt binding panicked".into())),
    }
}

fn call_err(e: &virt::error::Error) -> HvError {
    HvError::Call(e.message().to_owned())
}

/// Opens `uri`, runs `f`, closes the connection whatever happened.
fn with_conn<T>(uri: &str, f: impl FnOnce(&Connect) -> Result<T, HvError>) -> Result<T, HvError> {
    let conn =
        Connect::open(Some(uri)).map_err(|e| HvError::Unreachable(e.message().to_owned()))?;
    let r = guarded(|| f(&conn));
    libvirt_ffi::close(conn);
    r
}

fn lookup(conn: &Connect, vm: &str) -> Result<Domain, HvError> {
    conn.lookup_domain_by_name(vm).map_err(|e| {
        if libvirt_ffi::is_no_domain(&e) {
            HvError::NoSuchDomain(vm.to_owned())
        } else {
            call_err(&e)
        }
    })
}

/// [`with_conn`] to a peer, if it does not already hold too many calls.
/// Runs on the deadline's helper thread: the ticket lives as long as the
/// call, however long that is.
fn with_peer<T>(
    peers: &InFlight,
    name: &str,
    uri: &str,
    f: impl FnOnce(&Connect) -> Result<T, HvError>,
) -> Result<T, HvError> {
    let _ticket = peers.enter(uri).map_err(|n| too_many(n, name))?;
    with_conn(uri, f)
}

fn too_many(n: usize, peer: &str) -> HvError {
    HvError::Unreachable(format!(
        "{n} earlier calls to libvirt on {peer} are still unanswered"
    ))
}

/// Runs `f` on one domain, freeing it after.
fn with_domain<T>(
    uri: &str,
    vm: &str,
    f: impl FnOnce(&Domain) -> Result<T, HvError>,
) -> Result<T, HvError> {
    with_conn(uri, |c| {
        let dom = lookup(c, vm)?;
        let r = f(&dom);
        libvirt_ffi::free_domain(dom);
        r
    })
}

fn state(dom: &Domain) -> Result<DomState, HvError> {
    libvirt_ffi::domain_state(dom)
        .map(DomState::from_libvirt)
        .map_err(|e| HvError::Call(e.to_string()))
}

/// A domain's state on `conn`; None when it has no such domain.
fn state_of(conn: &Connect, vm: &str) -> Result<Option<DomState>, HvError> {
    match lookup(conn, vm) {
        Ok(d) => {
            let s = state(&d);
            libvirt_ffi::free_domain(d);
            s.map(Some)
        }
        Err(HvError::NoSuchDomain(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Hypervisor for Libvirt {
    fn local_domains(&self) -> Result<Vec<DomainInfo>, HvError> {
        with_conn(&self.local_uri, |c| {
            let doms = c.list_all_domains(0).map_err(|e| call_err(&e))?;
            let mut out = Vec::with_capacity(doms.len());
            for d in doms {
                // A domain undefined between the list and these calls is
                // simply gone.
                if let (Ok(name), Ok(state)) = (d.name(), state(&d)) {
                    out.push(DomainInfo { name, state });
                }
                libvirt_ffi::free_domain(d);
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn peer_domain(&self, peer: &PeerAddr, vm: &str) -> Result<Option<DomState>, HvError> {
        // Counted from here, not from inside the thread: a caller that
        // asks again at once sees this call.
        let ticket = self
            .peers
            .enter(&peer.uri)
            .map_err(|n| too_many(n, &peer.name))?;
        let (uri, vm) = (peer.uri.clone(), vm.to_owned());
        deadline::bounded(
            &format!("libvirt on {}", peer.name),
            self.pace.peer_deadline,
            move || {
                let _ticket = ticket;
                with_conn(&uri, |c| state_of(c, &vm))
            },
        )
    }

    fn local_job_active(&self, vm: &str) -> Result<bool, HvError> {
        with_domain(&self.local_uri, vm, |d| {
            libvirt_ffi::job_stats(d, 0)
                .map(|js| js.kind != sys::VIR_DOMAIN_JOB_NONE as i32)
                .map_err(|e| HvError::Call(e.to_string()))
        })
    }

    fn resume_local(&self, vm: &str) -> Result<(), HvError> {
        with_domain(&self.local_uri, vm, |d| {
            d.resume().map_err(|e| call_err(&e))
        })
    }

    fn migrate(
        &self,
        spec: &Spec,
        limits: &Limits,
        abort: &AtomicBool,
        progress: &mut dyn FnMut(&Progress),
    ) -> Outcome {
        let ops = LibvirtOps {
            local_uri: self.local_uri.clone(),
            peers: self.peers.clone(),
        };
        drive(&ops, &self.pace, spec, limits, abort, progress)
    }
}

/// The migrate call's flags; `copy`: the target devs of local disks to
/// copy (NON_SHARED_DISK, a full copy; the list goes in migrate_disks).
pub(crate) fn flags(spec: &Spec, copy: &[String]) -> u32 {
    let mut f = sys::VIR_MIGRATE_PEER2PEER
        | sys::VIR_MIGRATE_PERSIST_DEST
        | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
    if spec.offline {
        f |= sys::VIR_MIGRATE_OFFLINE;
    } else {
        f |= sys::VIR_MIGRATE_LIVE | sys::VIR_MIGRATE_ABORT_ON_ERROR;
        if spec.auto_converge {
            f |= sys::VIR_MIGRATE_AUTO_CONVERGE;
        }
        if !copy.is_empty() {
            f |= sys::VIR_MIGRATE_NON_SHARED_DISK;
        }
        // Only a live migration has a QEMU stream to encrypt; an offline
        // one moves the definition over libvirt's own connection.
        if spec.tls {
            f |= sys::VIR_MIGRATE_TLS;
        }
    }
    f
}

/// The migrate call's typed parameters: only the local disks are listed in
/// migrate_disks, so libvirt never copies a shared one.
pub(crate) fn params(spec: &Spec, copy: &[String]) -> MigrateParameters {
    MigrateParameters {
        uri: spec.migrate_uri.clone(),
        bandwidth: (spec.bandwidth_mib_s > 0).then_some(spec.bandwidth_mib_s),
        migrate_disks: if spec.offline {
            Vec::new()
        } else {
            copy.to_vec()
        },
        ..Default::default()
    }
}

/// The VM's storage, read from its live definition and its image files.
fn storage_of(dom: &Domain) -> Result<storage::Storage, String> {
    let xml = dom.xml_desc(0).map_err(|e| e.message().to_owned())?;
    let devs = storage::domxml::devices(&xml).map_err(|e| e.to_string())?;
    let mut s = storage::assess(&devs, &mut storage::probe::file_facts);
    // libvirt's own figure, when it gives one, sizes the new volume.
    for d in &mut s.local {
        if let Ok(b) = dom.block_info(&d.dev, 0) {
            d.capacity = b.capacity;
        }
    }
    Ok(s)
}

/// This host's QEMU driver configuration: where its certificates are.
const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";

/// The migration loop's view of libvirt.
#[derive(Debug, Clone)]
struct LibvirtOps {
    local_uri: String,
    peers: InFlight,
}

/// The loop's clock: a process-wide monotonic origin.
fn monotonic() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

fn message(e: HvError) -> String {
    e.to_string()
}

impl MigrationOps for LibvirtOps {
    type Job = LibvirtJob;
    type Watch = rarp::Watch;

    fn now(&self) -> Duration {
        monotonic()
    }

    fn ensure_nwfilters(&self, spec: &Spec) -> Result<Vec<String>, String> {
        with_conn(&self.local_uri, |src| {
            let dom = lookup(src, &spec.vm)?;
            let xml = dom.xml_desc(0);
            libvirt_ffi::free_domain(dom);
            // Without the definition there is nothing to copy; the
            // migration itself will say what is wrong.
            let Ok(xml) = xml else {
                return Ok(Vec::new());
            };
            if nwfilter::filter_refs(&xml).is_empty() {
                return Ok(Vec::new());
            }
            with_peer(&self.peers, &spec.dest, &spec.dest_uri, |dest| {
                nwfilter::ensure(src, dest, &xml).map_err(HvError::Call)
            })
            .map_err(|e| match e {
                HvError::Unreachable(m) => {
                    HvError::Call(format!("cannot reach libvirt on {}: {m}", spec.dest))
                }
                e => e,
            })
        })
        .map_err(|e| match e {
            HvError::NoSuchDomain(vm) => format!("no VM {vm} here"),
            HvError::Unreachable(m) => format!("cannot reach local libvirt: {m}"),
            e => message(e),
        })
    }

    fn prepare_storage(&self, spec: &Spec) -> Result<Prepared, String> {
        if spec.offline {
            return Ok(Prepared::default());
        }
        let st = with_domain(&self.local_uri, &spec.vm, |d| {
            storage_of(d).map_err(HvError::Call)
        })
        .map_err(|e| match e {
            HvError::NoSuchDomain(vm) => format!("no VM {vm} here"),
            HvError::Unreachable(m) => format!("cannot reach local libvirt: {m}"),
            e => format!("reading the disks of {}: {e}", spec.vm),
        })?;
        if let Some(why) = storage::why_unmovable(&st, spec.copy_local_disks, spec.offline) {
            return Err(why);
        }
        if st.local.is_empty() {
            return Ok(Prepared::default());
        }
        with_peer(&self.peers, &spec.dest, &spec.dest_uri, |dest| {
            let mut out = Prepared::default();
            for d in &st.local {
                if let Err(e) = volumes::create(dest, &d.path, d.capacity, &d.format) {
                    // Nothing half-made is left behind.
                    for p in &out.created {
                        if let Err(e) = volumes::delete(dest, p) {
                            tracing::warn!(cause = %e, "a volume just created could not be deleted");
                        }
                    }
                    return Err(HvError::Call(format!("on {}: {e}", spec.dest)));
                }
                out.copy.push(d.dev.clone());
                out.created.push(d.path.clone());
                out.bytes = out.bytes.saturating_add(d.bytes_needed());
            }
            Ok(out)
        })
        .map_err(|e| match e {
            HvError::Unreachable(m) => format!("cannot reach libvirt on {}: {m}", spec.dest),
            e => message(e),
        })
    }

    fn discard_storage(&self, spec: &Spec, created: &[String]) -> Result<(), String> {
        let here = with_conn(&self.local_uri, |c| match lookup(c, &spec.vm) {
            Ok(d) => {
                let r = state(&d).map(|s| {
                    let job = libvirt_ffi::job_stats(&d, 0)
                        .map(|js| js.kind != sys::VIR_DOMAIN_JOB_NONE as i32)
                        .unwrap_or(false);
                    Some((s, job))
                });
                libvirt_ffi::free_domain(d);
                r
            }
            Err(HvError::NoSuchDomain(_)) => Ok(None),
            Err(e) => Err(e),
        })
        .map_err(message);
        with_peer(&self.peers, &spec.dest, &spec.dest_uri, |dest| {
            let there = state_of(dest, &spec.vm).map_err(message);
            may_discard(here, there, &spec.dest).map_err(HvError::Call)?;
            let failures: Vec<String> = created
                .iter()
                .filter_map(|p| volumes::delete(dest, p).err().map(|e| e.to_string()))
                .collect();
            if failures.is_empty() {
                Ok(())
            } else {
                Err(HvError::Call(failures.join("; ")))
            }
        })
        .map_err(message)
    }

    fn start(&self, spec: &Spec, copy: &[String]) -> Result<LibvirtJob, String> {
        // This host's own certificates are checked here, so a missing file
        // libvirt names later is the destination's (migration::tls).
        if spec.tls && !spec.offline {
            if let Some(problem) = tls::local_problem(Path::new(QEMU_CONF)) {
                return Err(problem);
            }
        }
        let conn = Connect::open(Some(&self.local_uri))
            .map_err(|e| format!("cannot reach local libvirt: {}", e.message()))?;
        let dom = match conn.lookup_domain_by_name(&spec.vm) {
            Ok(d) => d,
            Err(e) => {
                libvirt_ffi::close(conn);
                return Err(format!("no VM {} here: {}", spec.vm, e.message()));
            }
        };
        let (tx, rx) = mpsc::channel();
        let params = params(spec, copy);
        let mig_uri = self.local_uri.clone();
        let (vm, dest_uri, fl) = (spec.vm.clone(), spec.dest_uri.clone(), flags(spec, copy));
        let worker = std::thread::Builder::new()
            .name(format!("mig-{}", spec.vm).chars().take(15).collect())
            .spawn(move || {
                // Its own connection: the call blocks for the whole migration.
                let r = with_conn(&mig_uri, |c| {
                    let d = c.lookup_domain_by_name(&vm).map_err(|e| call_err(&e))?;
                    let r = d
                        .migrate_to_uri3(Some(&dest_uri), params, fl)
                        .map(drop)
                        .map_err(|e| {
                            // Only a dead connection of our own tells the
                            // local daemon went away: libvirt's words for
                            // it are the same as for a lost peer.
                            if c.is_alive().unwrap_or(false) {
                                call_err(&e)
                            } else {
                                HvError::Call(format!("{LOCAL_LIBVIRT_LOST}: {}", e.message()))
                            }
                        });
                    libvirt_ffi::free_domain(d);
                    r
                })
                .map_err(message);
                let _ = tx.send(r);
            });
        let job = LibvirtJob {
            conn: Some(conn),
            dom: Some(dom),
            rx,
        };
        match worker {
            Ok(_) => Ok(job),
            Err(e) => Err(format!("cannot start the migration thread: {e}")),
        }
    }

    fn completed_stats(&self, spec: &Spec) -> (Option<u64>, Option<f64>) {
        let figures = with_peer(&self.peers, &spec.dest, &spec.dest_uri, |c| {
            let d = lookup(c, &spec.vm)?;
            // KEEP_COMPLETED: reading must not discard the record an
            // administrator (or `virsh domjobinfo --completed`) may want too.
            let js = libvirt_ffi::job_stats(
                &d,
                sys::VIR_DOMAIN_JOB_STATS_COMPLETED | sys::VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED,
            )
            .map_err(|e| HvError::Call(e.to_string()));
            libvirt_ffi::free_domain(d);
            js
        });
        match figures {
            Ok(js) => (
                js.downtime_ms,
                js.data_processed.map(|b| b as f64 / 1_048_576.0),
            ),
            Err(_) => (None, None),
        }
    }

    fn watch_announce(&self, spec: &Spec) -> rarp::Watch {
        // The live definition: a network interface names its bridge only
        // there. libvirt answers it without asking QEMU.
        let xml = with_conn(&self.local_uri, |c| {
            let d = lookup(c, &spec.vm)?;
            let x = d.xml_desc(0).map_err(|e| call_err(&e));
            libvirt_ffi::free_domain(d);
            x
        })
        .map_err(message)
        .and_then(|x| announce::nics(&x).map_err(|e| crate::hookio::chain(&e)));
        match xml {
            Ok(nics) => rarp::Watch::start(&spec.vm, &nics, monotonic),
            Err(e) => rarp::Watch::blind(format!("cannot read the VM's NICs: {e}")),
        }
    }

    fn request_announce(&self, spec: &Spec) -> Result<(), String> {
        // libvirt marks the domain "tainted: custom-monitor" for this: the
        // price of a command it has no API for.
        with_peer(&self.peers, &spec.dest, &spec.dest_uri, |c| {
            let d = lookup(c, &spec.vm)?;
            let r = d
                .qemu_monitor_command(announce::ANNOUNCE_SELF, 0)
                .map_err(|e| call_err(&e));
            libvirt_ffi::free_domain(d);
            r
        })
        .map_err(|e| match e {
            HvError::Unreachable(m) => format!("cannot reach libvirt on {}: {m}", spec.dest),
            e => message(e),
        })
        .and_then(|reply| announce::qmp_reply(&reply))
    }

    fn dest_has_vm(&self, spec: &Spec) -> Option<bool> {
        with_peer(&self.peers, &spec.dest, &spec.dest_uri, |c| {
            Ok(match lookup(c, &spec.vm) {
                Ok(d) => {
                    libvirt_ffi::free_domain(d);
                    true
                }
                Err(_) => false,
            })
        })
        .ok()
    }
}

/// A migration under way: the worker's answer, and a second connection
/// to watch and steer the job.
#[derive(Debug)]
struct LibvirtJob {
    conn: Option<Connect>,
    dom: Option<Domain>,
    rx: mpsc::Receiver<Result<(), String>>,
}

impl MigrationJob for LibvirtJob {
    fn wait(&mut self, timeout: Duration) -> Option<Result<(), String>> {
        match self.rx.recv_timeout(timeout) {
            Ok(r) => Some(r),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Some(Err("migration thread vanished".into()))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => None,
        }
    }

    fn stats(&self) -> Option<JobStats> {
        libvirt_ffi::job_stats(self.dom.as_ref()?, 0).ok()
    }

    fn source_paused(&self) -> Option<bool> {
        let st = libvirt_ffi::domain_state(self.dom.as_ref()?).ok()?;
        Some(DomState::from_libvirt(st) == DomState::Paused)
    }

    fn abort(&self) {
        if let Some(d) = &self.dom {
            if let Err(e) = libvirt_ffi::abort_job(d) {
                tracing::warn!(cause = %e, "virDomainAbortJob failed");
            }
        }
    }

    fn set_max_downtime(&self, ms: u64) {
        if let Some(d) = &self.dom {
            if let Err(e) = guarded(|| d.migrate_set_max_downtime(ms, 0).map_err(|e| call_err(&e)))
            {
                tracing::warn!(cause = %e, downtime_ms = ms, "setting the allowed downtime failed");
            }
        }
    }
}

impl Drop for LibvirtJob {
    fn drop(&mut self) {
        if let Some(d) = self.dom.take() {
            libvirt_ffi::free_domain(d);
        }
        if let Some(c) = self.conn.take() {
            libvirt_ffi::close(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(offline: bool) -> Spec {
        Spec {
            vm: "a".into(),
            dest: "hb".into(),
            dest_uri: "qemu+tcp://hb/system".into(),
            migrate_uri: None,
            bandwidth_mib_s: 0,
            offline,
            auto_converge: false,
            tls: false,
            mem_mib: 256,
            copy_local_disks: true,
        }
    }

    #[test]
    fn flags_are_the_field_tested_set() {
        let live = flags(&spec(false), &[]);
        for f in [
            sys::VIR_MIGRATE_LIVE,
            sys::VIR_MIGRATE_PEER2PEER,
            sys::VIR_MIGRATE_PERSIST_DEST,
            sys::VIR_MIGRATE_UNDEFINE_SOURCE,
            sys::VIR_MIGRATE_ABORT_ON_ERROR,
        ] {
            assert_ne!(live & f, 0);
        }
        assert_eq!(live & sys::VIR_MIGRATE_NON_SHARED_DISK, 0);
        assert_eq!(live & sys::VIR_MIGRATE_TLS, 0, "tls off in this spec");
        let off = flags(&spec(true), &[]);
        assert_ne!(off & sys::VIR_MIGRATE_OFFLINE, 0);
        assert_eq!(off & sys::VIR_MIGRATE_LIVE, 0);
    }

    #[test]
    fn local_disks_are_copied_and_only_they_are_listed() {
        let copy = vec!["vda".to_string(), "vdc".to_string()];
        let f = flags(&spec(false), &copy);
        assert_ne!(f & sys::VIR_MIGRATE_NON_SHARED_DISK, 0);
        assert_ne!(f & sys::VIR_MIGRATE_LIVE, 0);
        // A full copy, never an incremental one onto a backing image the
        // destination may not have.
        assert_eq!(f & sys::VIR_MIGRATE_NON_SHARED_INC, 0);
        let p = params(&spec(false), &copy);
        assert_eq!(p.migrate_disks, copy);
        assert_eq!(
            params(&spec(false), &[]).migrate_disks,
            Vec::<String>::new()
        );
        // An offline migration copies nothing.
        assert_eq!(
            flags(&spec(true), &copy) & sys::VIR_MIGRATE_NON_SHARED_DISK,
            0
        );
        assert!(params(&spec(true), &copy).migrate_disks.is_empty());
    }

    #[test]
    fn tls_asks_libvirt_to_encrypt_the_stream() {
        let mut s = spec(false);
        s.tls = true;
        assert_ne!(flags(&s, &[]) & sys::VIR_MIGRATE_TLS, 0);
        s.offline = true;
        assert_eq!(
            flags(&s, &[]) & sys::VIR_MIGRATE_TLS,
            0,
            "no stream offline"
        );
    }

    // The test driver is real libvirt without a network: the local calls
    // work against it, no daemon needed.
    #[test]
    fn local_calls_on_the_test_driver() {
        let hv = Libvirt::new("test:///default");
        let doms = hv.local_domains().unwrap_or_default();
        assert!(
            doms.iter()
                .any(|d| d.name == "test" && d.state == DomState::Running),
            "{doms:?}"
        );
        // (The test driver has no job calls: the answer for "test" is
        // libvirt's "not supported", checked in the lab.)
        assert_eq!(
            hv.local_job_active("nosuch"),
            Err(HvError::NoSuchDomain("nosuch".into()))
        );
    }

    #[test]
    fn a_peer_lookup_answers_none_for_an_absent_domain() {
        let hv = Libvirt::new("test:///default");
        let peer = PeerAddr {
            name: "t".into(),
            uri: "test:///default".into(),
        };
        assert_eq!(hv.peer_domain(&peer, "nosuch"), Ok(None));
        assert_eq!(hv.peer_domain(&peer, "test"), Ok(Some(DomState::Running)));
    }
}

#[cfg(test)]
mod hung_peer_tests {
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::*;

    /// A "peer" whose libvirtd accepts the connection and never answers:
    /// the kernel completes the handshake on the listening socket, nobody
    /// reads. Dropping it resets the connections, which frees the detached
    /// threads.
    fn silent_peer() -> (TcpListener, PeerAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
        let peer = PeerAddr {
            name: "silent".into(),
            uri: format!("qemu+tcp://127.0.0.1:{port}/system"),
        };
        (l, peer)
    }

    /// A test-driver host whose VM `f` references an nwfilter.
    struct Node(PathBuf);

    impl Node {
        fn new(tag: &str) -> Node {
            let dir =
                std::env::temp_dir().join(format!("rackside-hv-{tag}-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            let xml = "<node>\n<domain type='test'><name>f</name>\
                <uuid>6695eb01-f6a4-8304-79aa-97f2502e0001</uuid>\
                <memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type>hvm</type></os>\
                <devices><interface type='ethernet'><filterref filter='clean-traffic'/></interface></devices>\
                </domain>\n</node>\n";
            let _ = std::fs::write(dir.join("node.xml"), xml);
            Node(dir)
        }

        fn uri(&self) -> String {
            format!("test://{}", self.0.join("node.xml").display())
        }
    }

    impl Drop for Node {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn spec(dest: &PeerAddr) -> Spec {
        Spec {
            vm: "f".into(),
            dest: dest.name.clone(),
            dest_uri: dest.uri.clone(),
            migrate_uri: None,
            bandwidth_mib_s: 0,
            offline: false,
            auto_converge: false,
            tls: false,
            mem_mib: 256,
            copy_local_disks: true,
        }
    }

    fn pace(deadline: Duration) -> Pace {
        Pace {
            poll: Duration::from_millis(5),
            peer_deadline: deadline,
            abort_grace: Duration::from_secs(1),
            announce_wait: Duration::from_millis(50),
        }
    }

    #[test]
    fn a_silent_peer_lookup_times_out() {
        let (_l, peer) = silent_peer();
        let hv = Libvirt::new("test:///default").with_pace(pace(Duration::from_millis(200)));
        assert_eq!(
            hv.peer_domain(&peer, "x"),
            Err(HvError::TimedOut {
                what: "libvirt on silent".into(),
                after: Duration::from_millis(200)
            })
        );
    }

    #[test]
    fn a_silent_peer_holds_a_bounded_number_of_threads() {
        let (_l, peer) = silent_peer();
        let hv = Libvirt::new("test:///default").with_pace(pace(Duration::from_millis(50)));
        for _ in 0..PEER_CALLS_MAX {
            assert!(matches!(
                hv.peer_domain(&peer, "x"),
                Err(HvError::TimedOut { .. })
            ));
        }
        assert_eq!(
            hv.peer_domain(&peer, "x"),
            Err(HvError::Unreachable(format!(
                "{PEER_CALLS_MAX} earlier calls to libvirt on silent are still unanswered"
            )))
        );
        assert_eq!(hv.peers.running(&peer.uri), PEER_CALLS_MAX);
    }

    #[test]
    fn a_silent_destination_fails_the_migration_at_the_nwfilter_deadline() {
        let node = Node::new("nwf");
        let (_l, peer) = silent_peer();
        let hv = Libvirt::new(&node.uri()).with_pace(pace(Duration::from_millis(200)));
        let out = hv.migrate(
            &spec(&peer),
            &Limits::default(),
            &AtomicBool::new(false),
            &mut |_| {},
        );
        assert_eq!(
            out,
            Outcome::Failed {
                error: "libvirt on silent (defining nwfilters) did not answer within 200 ms".into(),
                aborted: false
            }
        );
    }

    #[test]
    fn abort_is_honoured_while_the_destination_is_silent() {
        let node = Node::new("abort");
        let (_l, peer) = silent_peer();
        let hv = Libvirt::new(&node.uri()).with_pace(pace(Duration::from_secs(3600)));
        let abort = Arc::new(AtomicBool::new(false));
        let a = abort.clone();
        // Whenever it comes, only the abort can end the wait.
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            a.store(true, Ordering::Relaxed);
        });
        let out = hv.migrate(&spec(&peer), &Limits::default(), &abort, &mut |_| {});
        let _ = t.join();
        assert_eq!(
            out,
            Outcome::Failed {
                error: "aborted by request".into(),
                aborted: true
            }
        );
    }
}
