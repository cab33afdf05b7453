//! The few libvirt calls the `virt` crate does not wrap usably, made
//! through `virt::sys` (CRATES.md):
//!
//! - `virConnectGetAllDomainStats`: the crate's wrapper never frees the
//!   records (RSS grows without bound in a polling daemon), so we call it
//!   ourselves and free with `virDomainStatsRecordListFree`.
//! - `virNodeGetCPUStats`, for peers' CPU use.
//! - lifecycle event registration, and the default event loop.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Once;

use virt::connect::Connect;
use virt::sys;

use crate::inventory::model::DomainRecord;
use crate::inventory::procfs::CpuTimes;

#[derive(Debug, thiserror::Error)]
pub enum FfiError {
    #[error("{call} failed: {message}")]
    Call { call: &'static str, message: String },
}

fn last_error(call: &'static str) -> FfiError {
    FfiError::Call {
        call,
        message: virt::error::Error::last_error().message().to_owned(),
    }
}

/// Copies a libvirt-owned C string; `None` for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for this call.
unsafe fn c_string(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: non-NULL and NUL-terminated per this function's contract.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

/// The name and UUID of a domain pointer libvirt lends us.
///
/// # Safety
/// `dom` is a valid domain pointer for the duration of the call.
unsafe fn name_and_uuid(dom: sys::virDomainPtr) -> (String, String) {
    // SAFETY: dom is valid per the contract; the name is owned by the
    // domain object and copied before return.
    let name = unsafe { c_string(sys::virDomainGetName(dom)) }.unwrap_or_default();
    let mut buf = [0 as c_char; 48]; // VIR_UUID_STRING_BUFLEN is 37
                                     // SAFETY: buf is larger than VIR_UUID_STRING_BUFLEN, as the call needs.
    let uuid = if unsafe { sys::virDomainGetUUIDString(dom, buf.as_mut_ptr()) } == 0 {
        // SAFETY: libvirt wrote a NUL-terminated string into buf.
        unsafe { c_string(buf.as_ptr()) }.unwrap_or_default()
    } else {
        String::new()
    };
    (name, uuid)
}

/// The stats group the bulk call asks for: state, nothing else. Every
/// other group of libvirt 9.0 can reach the domain's QEMU monitor or
/// libvirtd's host capabilities: `vcpu` sends query-cpus-fast, `balloon`
/// queries the balloon, `cpu` sends query-stats (halt-polling figures) and
/// reads the capabilities. During a migration's switchover QEMU does not
/// answer its monitor, and a libvirtd that has not built its capabilities
/// builds them on first use by probing every QEMU binary (~4 s) holding
/// the domain's lock. Seen on the lab: a peer's poll landing on the
/// destination while the first guest ever to arrive there waited for its
/// Finish step stretched its pause from 0.2 s to 4.3 s. vCPUs and memory
/// come from the definition, guests' CPU time from /proc
/// ([`crate::inventory::procfs::guest_cpu_ns`]).
const STATS: u32 = sys::VIR_DOMAIN_STATS_STATE;

/// Asks libvirtd for its host capabilities once, when the agent connects,
/// so that libvirtd builds them now (probing its QEMU binaries, seconds)
/// rather than inside a later call: the first migration into this host
/// (its Prepare step waited ~3.5 s for them on the lab), or another
/// tool's stats call holding a guest's lock during a switchover. Returns
/// how long it took.
pub fn warm_capabilities(conn: &Connect) -> Result<std::time::Duration, FfiError> {
    let t = std::time::Instant::now();
    conn.capabilities().map_err(|e| FfiError::Call {
        call: "virConnectGetCapabilities",
        message: e.message().to_owned(),
    })?;
    Ok(t.elapsed())
}

/// One bulk stats call for every domain (active and inactive): state,
/// plus vCPUs and memory from the definition. No call here takes a domain
/// job or talks to QEMU, so a domain in mid-migration is answered at once.
/// The records are freed before return.
pub fn all_domain_stats(conn: &Connect) -> Result<Vec<DomainRecord>, FfiError> {
    // NOWAIT: should a group ever need a job, a domain busy in one (a
    // migration) answers with what it has instead of holding the poll.
    let flags = sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT;
    let mut list: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: conn is a live connection (we hold a reference); list is an
    // out-pointer libvirt fills with a NULL-terminated array it allocates.
    let n = unsafe { sys::virConnectGetAllDomainStats(conn.as_ptr(), STATS, &mut list, flags) };
    if n < 0 {
        return Err(last_error("virConnectGetAllDomainStats"));
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: list holds n valid record pointers (then a NULL).
        let rec = unsafe { &**list.add(i) };
        // SAFETY: rec.dom is valid while the list is alive.
        let (name, uuid) = unsafe { name_and_uuid(rec.dom) };
        let mut r = DomainRecord {
            name,
            uuid,
            state: 0,
            reason: 0,
            cpu_time_ns: None,
            vcpus: None,
            max_mem_kib: None,
        };
        for j in 0..rec.nparams.max(0) as usize {
            // SAFETY: params has nparams entries.
            let p = unsafe { &*rec.params.add(j) };
            // SAFETY: field is a NUL-terminated array within the struct.
            let field = unsafe { CStr::from_ptr(p.field.as_ptr()) }.to_bytes();
            let int = || typed_int(p);
            match field {
                b"state.state" => r.state = int().unwrap_or(0) as i32,
                b"state.reason" => r.reason = int().unwrap_or(0) as i32,
                b"cpu.time" => r.cpu_time_ns = int(),
                _ => {}
            }
        }
        // SAFETY: rec.dom is valid while the list is alive.
        let (vcpus, mem) = unsafe { definition_sizes(rec.dom) };
        r.vcpus = vcpus;
        r.max_mem_kib = mem;
        out.push(r);
    }
    // SAFETY: list came from virConnectGetAllDomainStats and is freed once.
    unsafe { sys::virDomainStatsRecordListFree(list) };
    Ok(out)
}

/// A domain's vCPU count and maximum memory (KiB), read from its
/// definition: the live one for an active domain, else the persistent
/// one. Neither call takes a job or enters the monitor.
///
/// # Safety
/// `dom` is a valid domain pointer for the duration of the call.
unsafe fn definition_sizes(dom: sys::virDomainPtr) -> (Option<u32>, Option<u64>) {
    // SAFETY: dom is valid per the contract.
    let vcpus = unsafe { sys::virDomainGetVcpusFlags(dom, sys::VIR_DOMAIN_AFFECT_CURRENT) };
    // SAFETY: as above.
    let mem = unsafe { sys::virDomainGetMaxMemory(dom) };
    (
        (vcpus > 0).then_some(vcpus as u32),
        (mem > 0).then_some(mem as u64),
    )
}

/// Aggregate CPU counters of a (possibly remote) host, for its CPU use.
pub fn node_cpu_times(conn: &Connect) -> Result<CpuTimes, FfiError> {
    let mut n: c_int = 0;
    // SAFETY: a NULL params with nparams=0 asks libvirt for the count.
    let rc = unsafe {
        sys::virNodeGetCPUStats(
            conn.as_ptr(),
            sys::VIR_NODE_CPU_STATS_ALL_CPUS,
            std::ptr::null_mut(),
            &mut n,
            0,
        )
    };
    if rc < 0 || n <= 0 {
        return Err(last_error("virNodeGetCPUStats"));
    }
    let mut params = vec![
        sys::virNodeCPUStats {
            field: [0; 80],
            value: 0
        };
        n as usize
    ];
    // SAFETY: params has room for n entries, as nparams says.
    let rc = unsafe {
        sys::virNodeGetCPUStats(
            conn.as_ptr(),
            sys::VIR_NODE_CPU_STATS_ALL_CPUS,
            params.as_mut_ptr(),
            &mut n,
            0,
        )
    };
    if rc < 0 {
        return Err(last_error("virNodeGetCPUStats"));
    }
    let mut total = 0u64;
    let mut idle = 0u64;
    for p in params.iter().take(n.max(0) as usize) {
        // SAFETY: field is NUL-terminated within the struct.
        let f = unsafe { CStr::from_ptr(p.field.as_ptr()) }.to_bytes();
        match f {
            b"idle" | b"iowait" => {
                idle += p.value;
                total += p.value;
            }
            b"kernel" | b"user" => total += p.value,
            _ => {}
        }
    }
    Ok(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// The integer value of a typed parameter, whatever its integer type.
fn typed_int(p: &sys::virTypedParameter) -> Option<u64> {
    // SAFETY: the union member read matches the declared type_.
    unsafe {
        match p.type_ as u32 {
            sys::VIR_TYPED_PARAM_INT => Some(p.value.i as i64 as u64),
            sys::VIR_TYPED_PARAM_UINT => Some(p.value.ui as u64),
            sys::VIR_TYPED_PARAM_LLONG => Some(p.value.l as u64),
            sys::VIR_TYPED_PARAM_ULLONG => Some(p.value.ul),
            _ => None,
        }
    }
}

/// A domain's job statistics, the fields the agent uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobStats {
    /// virDomainJobType: 0 none, 1 bounded, 2 unbounded, 3 completed, ...
    pub kind: i32,
    pub data_total: Option<u64>,
    pub data_processed: Option<u64>,
    pub data_remaining: Option<u64>,
    pub mem_iteration: Option<u64>,
    pub mem_bps: Option<u64>,
    pub downtime_ms: Option<u64>,
    /// Memory and disk parts of the data_* figures (libvirt counts a
    /// non-shared-disk copy in disk_*).
    pub mem_total: Option<u64>,
    pub mem_processed: Option<u64>,
    pub mem_remaining: Option<u64>,
    pub disk_total: Option<u64>,
    pub disk_processed: Option<u64>,
    pub disk_remaining: Option<u64>,
    pub disk_bps: Option<u64>,
}

/// virDomainGetJobStats, done here rather than through the bindings: their
/// version builds a Vec from libvirt's pointer, which is NULL when there
/// are no statistics (an offline migration's completed job), and that
/// aborted the whole agent. Freed with virTypedParamsFree.
pub fn job_stats(dom: &virt::domain::Domain, flags: u32) -> Result<JobStats, FfiError> {
    let mut kind: c_int = 0;
    let mut params: sys::virTypedParameterPtr = std::ptr::null_mut();
    let mut n: c_int = 0;
    // SAFETY: dom is a live domain reference; the out-pointers are ours.
    let rc =
        unsafe { sys::virDomainGetJobStats(dom.as_ptr(), &mut kind, &mut params, &mut n, flags) };
    if rc < 0 {
        return Err(last_error("virDomainGetJobStats"));
    }
    let mut js = JobStats {
        kind,
        ..Default::default()
    };
    if !params.is_null() {
        for i in 0..n.max(0) as usize {
            // SAFETY: params holds n entries.
            let p = unsafe { &*params.add(i) };
            // SAFETY: field is NUL-terminated within the struct.
            let field = unsafe { CStr::from_ptr(p.field.as_ptr()) }.to_bytes();
            let v = typed_int(p);
            match field {
                b"data_total" => js.data_total = v,
                b"data_processed" => js.data_processed = v,
                b"data_remaining" => js.data_remaining = v,
                b"memory_iteration" => js.mem_iteration = v,
                b"memory_bps" => js.mem_bps = v,
                b"downtime" => js.downtime_ms = v,
                b"memory_total" => js.mem_total = v,
                b"memory_processed" => js.mem_processed = v,
                b"memory_remaining" => js.mem_remaining = v,
                b"disk_total" => js.disk_total = v,
                b"disk_processed" => js.disk_processed = v,
                b"disk_remaining" => js.disk_remaining = v,
                b"disk_bps" => js.disk_bps = v,
                _ => {}
            }
        }
        // SAFETY: params/n came from virDomainGetJobStats; freed once.
        unsafe { sys::virTypedParamsFree(params, n) };
    }
    Ok(js)
}

static EVENT_LOOP: Once = Once::new();

/// Registers libvirt's default event loop and runs it on its own thread,
/// forever. Must happen before connections that want events or keepalive.
pub fn start_event_loop() {
    EVENT_LOOP.call_once(|| {
        virt::error::clear_error_callback();
        if let Err(e) = virt::event::event_register_default_impl() {
            tracing::error!(cause = %e, "libvirt event loop registration failed");
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| loop {
                if let Err(e) = virt::event::event_run_default_impl() {
                    tracing::warn!(cause = %e, "libvirt event loop iteration failed");
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            });
        if let Err(e) = spawned {
            tracing::error!(cause = %e, "could not start the libvirt event thread");
        }
    });
}

/// A lifecycle event as libvirt reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    pub name: String,
    pub uuid: String,
    pub event: i32,
    pub detail: i32,
}

type Sink = Box<dyn Fn(Lifecycle) + Send + Sync>;

unsafe extern "C" fn lifecycle_cb(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    // SAFETY: libvirt passes the domain for the callback's duration.
    let (name, uuid) = unsafe { name_and_uuid(dom) };
    // SAFETY: opaque is the Box<Sink> leaked in `register_lifecycle`,
    // freed only by `free_sink` after deregistration.
    let sink = unsafe { &*(opaque as *const Sink) };
    // A panic must not unwind into C.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sink(Lifecycle {
            name,
            uuid,
            event,
            detail,
        })
    }));
    0
}

unsafe extern "C" fn free_sink(opaque: *mut c_void) {
    // SAFETY: opaque is the Box<Sink> leaked in `register_lifecycle`;
    // libvirt calls this once.
    drop(unsafe { Box::from_raw(opaque as *mut Sink) });
}

/// A lifecycle callback registration; deregistered on drop.
#[derive(Debug)]
pub struct LifecycleWatch {
    conn: Connect,
    id: c_int,
}

pub fn register_lifecycle(
    conn: &Connect,
    sink: impl Fn(Lifecycle) + Send + Sync + 'static,
) -> Result<LifecycleWatch, FfiError> {
    let boxed: Box<Sink> = Box::new(Box::new(sink));
    let opaque = Box::into_raw(boxed) as *mut c_void;
    // SAFETY: the generic callback type is how libvirt's API takes every
    // event callback; libvirt calls it with the lifecycle signature for
    // VIR_DOMAIN_EVENT_ID_LIFECYCLE.
    let cb: sys::virConnectDomainEventGenericCallback = unsafe {
        Some(std::mem::transmute::<
            unsafe extern "C" fn(
                sys::virConnectPtr,
                sys::virDomainPtr,
                c_int,
                c_int,
                *mut c_void,
            ) -> c_int,
            unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
        >(lifecycle_cb))
    };
    // SAFETY: conn is live; opaque stays valid until free_sink runs.
    let id = unsafe {
        sys::virConnectDomainEventRegisterAny(
            conn.as_ptr(),
            std::ptr::null_mut(),
            sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int,
            cb,
            opaque,
            Some(free_sink),
        )
    };
    if id < 0 {
        // SAFETY: registration failed, so libvirt did not take opaque.
        drop(unsafe { Box::from_raw(opaque as *mut Sink) });
        return Err(last_error("virConnectDomainEventRegisterAny"));
    }
    Ok(LifecycleWatch {
        conn: conn.clone(),
        id,
    })
}

impl Drop for LifecycleWatch {
    fn drop(&mut self) {
        // SAFETY: id came from a successful registration on this conn. A
        // failure (connection already dead) is harmless: libvirt frees the
        // callback data with the connection.
        unsafe { sys::virConnectDomainEventDeregisterAny(self.conn.as_ptr(), self.id) };
    }
}

/// Closes a connection without risking the bindings' panic-on-close.
pub fn close(conn: Connect) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(conn)));
}

/// Frees a domain reference without risking the bindings' panic-on-free.
pub fn free_domain(dom: virt::domain::Domain) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(dom)));
}

/// virDomainGetState's state (virDomainState), without the bindings' enum
/// conversion.
pub fn domain_state(dom: &virt::domain::Domain) -> Result<i32, FfiError> {
    let mut state: c_int = -1;
    let mut reason: c_int = -1;
    // SAFETY: dom is a live domain reference; the out-pointers are ours.
    let rc = unsafe { sys::virDomainGetState(dom.as_ptr(), &mut state, &mut reason, 0) };
    if rc < 0 {
        return Err(last_error("virDomainGetState"));
    }
    Ok(state)
}

/// virDomainAbortJob (not wrapped by the bindings).
pub fn abort_job(dom: &virt::domain::Domain) -> Result<(), FfiError> {
    // SAFETY: dom is a live domain reference held by the caller.
    let rc = unsafe { sys::virDomainAbortJob(dom.as_ptr()) };
    if rc < 0 {
        return Err(last_error("virDomainAbortJob"));
    }
    Ok(())
}

/// Whether a libvirt error says the domain does not exist.
pub fn is_no_domain(e: &virt::error::Error) -> bool {
    e.code() == virt::enumutil::Enum::Known(virt::error::ErrorNumber::NoDomain)
}

/// Drops a binding object (pool, volume) without risking its
/// panic-on-free.
pub fn release<T>(obj: T) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(obj)));
}
