//! One peer-to-peer live migration, end to end.
//!
//! libvirt's migrate call blocks until the migration ends, so it runs on a
//! thread of its own with its own connection; this thread watches it on a
//! second connection, once a second: progress for people, convergence
//! (raise the allowed downtime), give-up rules and abort requests
//! (virDomainAbortJob). With ABORT_ON_ERROR an aborted or failed migration
//! leaves the VM running on the source.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::{Domain, MigrateParameters};
use virt::sys;

use super::policy::{Decision, Limits, Progress, Sample, Tracker};
use crate::libvirt_ffi;

#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub vm: String,
    pub dest: String,
    /// The destination's libvirt URI (peer to peer: the source libvirtd
    /// connects there itself).
    pub dest_uri: String,
    /// Where QEMU's stream goes (the migration network), if not the default.
    pub migrate_uri: Option<String>,
    /// MiB/s; 0: no cap.
    pub bandwidth_mib_s: u64,
    /// A shut-off persistent VM: move its definition (offline migration).
    pub offline: bool,
    pub auto_converge: bool,
    pub mem_mib: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done {
        seconds: f64,
        downtime_ms: Option<u64>,
        data_mib: Option<f64>,
    },
    Failed {
        error: String,
        /// Stopped on purpose (abort command or a give-up rule).
        aborted: bool,
    },
}

fn flags(spec: &Spec) -> u32 {
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
    }
    f
}

/// Calls into the bindings that may panic on unexpected data (typed
/// parameter parsing) must not take the agent down.
fn guarded<T>(f: impl FnOnce() -> Result<T, virt::error::Error>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.message().to_owned()),
        Err(_) => Err("libvirt binding panicked".into()),
    }
}

fn abort_job(dom: &Domain) {
    // SAFETY: dom is a live domain reference held by the caller.
    let rc = unsafe { sys::virDomainAbortJob(dom.as_ptr()) };
    if rc < 0 {
        tracing::warn!(cause = %virt::error::Error::last_error().message(), "virDomainAbortJob failed");
    }
}

/// Runs one migration to its end. `abort` is checked every second;
/// `progress` is called with every sample.
pub fn run(
    local_uri: &str,
    spec: &Spec,
    limits: Limits,
    abort: &AtomicBool,
    progress: &mut dyn FnMut(&Progress),
) -> Outcome {
    let started = Instant::now();
    let failed = |error: String| Outcome::Failed {
        error,
        aborted: false,
    };
    let conn = match Connect::open(Some(local_uri)) {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot reach local libvirt: {}", e.message())),
    };
    let dom = match conn.lookup_domain_by_name(&spec.vm) {
        Ok(d) => d,
        Err(e) => {
            libvirt_ffi::close(conn);
            return failed(format!("no VM {} here: {}", spec.vm, e.message()));
        }
    };

    // The destination must know every nwfilter the VM's interfaces use,
    // or libvirt refuses the migration.
    if let Ok(xml) = dom.xml_desc(0) {
        if !super::nwfilter::filter_refs(&xml).is_empty() {
            let copied = Connect::open(Some(&spec.dest_uri))
                .map_err(|e| e.message().to_owned())
                .and_then(|dest| {
                    let r = super::nwfilter::ensure(&conn, &dest, &xml);
                    libvirt_ffi::close(dest);
                    r
                });
            match copied {
                Ok(names) if !names.is_empty() => {
                    tracing::info!(vm = %spec.vm, dest = %spec.dest, filters = ?names, "nwfilters defined on the destination")
                }
                Ok(_) => {}
                Err(e) => {
                    drop(dom);
                    libvirt_ffi::close(conn);
                    return failed(e);
                }
            }
        }
    }

    let (tx, rx) = mpsc::channel();
    let params = MigrateParameters {
        uri: spec.migrate_uri.clone(),
        bandwidth: (spec.bandwidth_mib_s > 0).then_some(spec.bandwidth_mib_s),
        ..Default::default()
    };
    let mig_uri = local_uri.to_owned();
    let (vm, dest_uri, fl) = (spec.vm.clone(), spec.dest_uri.clone(), flags(spec));
    let worker = std::thread::Builder::new()
        .name(format!("mig-{}", spec.vm).chars().take(15).collect())
        .spawn(move || {
            // Its own connection: the call blocks for the whole migration.
            let r = match Connect::open(Some(&mig_uri)) {
                Ok(c) => {
                    let r = c
                        .lookup_domain_by_name(&vm)
                        .and_then(|d| d.migrate_to_uri3(Some(&dest_uri), params, fl))
                        .map_err(|e| e.message().to_owned());
                    libvirt_ffi::close(c);
                    r
                }
                Err(e) => Err(e.message().to_owned()),
            };
            let _ = tx.send(r);
        });
    if let Err(e) = worker {
        libvirt_ffi::close(conn);
        return failed(format!("cannot start the migration thread: {e}"));
    }

    let mut tracker = Tracker::new(spec.mem_mib, limits);
    let mut abort_reason: Option<String> = None;
    let mut downtime_set = false;
    let result = loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(r) => break r,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err("migration thread vanished".into())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if abort_reason.is_none() && abort.load(Ordering::Relaxed) {
            abort_reason = Some("aborted by request".into());
            abort_job(&dom);
        }
        if spec.offline || abort_reason.is_some() {
            continue;
        }
        let Ok(js) = libvirt_ffi::job_stats(&dom, 0) else {
            continue;
        };
        let sample = Sample {
            elapsed: started.elapsed(),
            data_total: js.data_total.unwrap_or(0),
            data_processed: js.data_processed.unwrap_or(0),
            data_remaining: js.data_remaining.unwrap_or(0),
            iteration: js.mem_iteration,
            bandwidth_bps: js.mem_bps,
        };
        if !downtime_set && sample.data_total > 0 {
            downtime_set = true;
            if let Some(ms) = tracker.initial_downtime_ms() {
                let _ = guarded(|| dom.migrate_set_max_downtime(ms, 0));
            }
        }
        match tracker.observe(&sample) {
            Decision::Continue => {}
            Decision::RaiseDowntime(ms) => {
                tracing::info!(vm = %spec.vm, downtime_ms = ms, "migration not converging: raising allowed downtime");
                let _ = guarded(|| dom.migrate_set_max_downtime(ms, 0));
            }
            Decision::Abort(reason) => {
                tracing::warn!(vm = %spec.vm, reason = %reason, "giving up on migration");
                abort_reason = Some(reason);
                abort_job(&dom);
            }
        }
        progress(&tracker.progress());
    };
    drop(dom);
    libvirt_ffi::close(conn);

    match result {
        Ok(()) => {
            tracker.finish();
            progress(&tracker.progress());
            // An offline migration moves a definition: no job, no figures.
            let (downtime_ms, data_mib) = if spec.offline {
                (None, None)
            } else {
                completed_stats(&spec.dest_uri, &spec.vm)
            };
            Outcome::Done {
                seconds: started.elapsed().as_secs_f64(),
                downtime_ms,
                data_mib,
            }
        }
        Err(msg) => match abort_reason {
            Some(reason) => Outcome::Failed {
                error: reason,
                aborted: true,
            },
            None => failed(msg),
        },
    }
}

/// Downtime and data moved, from the destination's record of the
/// completed incoming job (the source's domain is gone by then).
fn completed_stats(dest_uri: &str, vm: &str) -> (Option<u64>, Option<f64>) {
    let Ok(c) = Connect::open(Some(dest_uri)) else {
        return (None, None);
    };
    let r = c
        .lookup_domain_by_name(vm)
        .ok()
        // KEEP_COMPLETED: reading must not discard the record an
        // administrator (or `virsh domjobinfo --completed`) may want too.
        .and_then(|d| {
            libvirt_ffi::job_stats(
                &d,
                sys::VIR_DOMAIN_JOB_STATS_COMPLETED | sys::VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED,
            )
            .ok()
        })
        .map(|js| {
            (
                js.downtime_ms,
                js.data_processed.map(|b| b as f64 / 1_048_576.0),
            )
        })
        .unwrap_or((None, None));
    libvirt_ffi::close(c);
    r
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
            mem_mib: 256,
        }
    }

    #[test]
    fn flags_are_the_field_tested_set() {
        let live = flags(&spec(false));
        for f in [
            sys::VIR_MIGRATE_LIVE,
            sys::VIR_MIGRATE_PEER2PEER,
            sys::VIR_MIGRATE_PERSIST_DEST,
            sys::VIR_MIGRATE_UNDEFINE_SOURCE,
            sys::VIR_MIGRATE_ABORT_ON_ERROR,
        ] {
            assert_ne!(live & f, 0);
        }
        let off = flags(&spec(true));
        assert_ne!(off & sys::VIR_MIGRATE_OFFLINE, 0);
        assert_eq!(off & sys::VIR_MIGRATE_LIVE, 0);
    }
}
