//! The lab as a whole: bring-up, access to its hosts, and teardown.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cmd::CmdError;
use crate::desc::{DescError, HostDesc, LabDesc};
use crate::desc::{GuestNetDesc, StorageDesc};
use crate::guest::{self, GuestError, GuestSpec};
use crate::guest::{GuestDisk, NbdServer};
use crate::host::{self, HostError};
use crate::names::{self, NameError};
use crate::storage::{self, StorageError};
use crate::teardown::TeardownErrors;
use crate::{net, tls, virsh};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (network namespaces, mounts, libvirtd)")]
    NotRoot,
    #[error("invalid lab spec")]
    Name(#[from] NameError),
    #[error("invalid lab spec: {0}")]
    Spec(String),
    #[error("could not clear what an earlier lab {lab:?} left behind:\n{errors}")]
    ClearStale { lab: String, errors: TeardownErrors },
    #[error("could not create {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not make the lab's certificate authority")]
    Ca(#[source] tls::TlsError),
    #[error("could not build the lab network")]
    Network(#[source] CmdError),
    #[error("could not set up host")]
    Host(#[from] HostError),
    #[error("guest")]
    Guest(#[from] GuestError),
    #[error("lab storage")]
    Storage(#[from] StorageError),
    #[error("guest {0:?} has no disk")]
    NoDisk(String),
    #[error("lab description")]
    Desc(#[from] DescError),
    #[error("no host {0:?} in this lab")]
    NoSuchHost(String),
    #[error("virsh on host {host}")]
    Virsh {
        host: String,
        #[source]
        source: CmdError,
    },
    #[error("guest {guest} on host {host} did not print a tick (or disk counter) within {secs} s; serial log tail:\n{tail}")]
    GuestNotReady {
        host: String,
        guest: String,
        secs: u64,
        tail: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub name: String,
    /// Memory size the host shows to libvirt (None: the machine's).
    pub mem_mib: Option<u64>,
    /// Migration certificates signed by the lab's CA (false: an empty
    /// certificate directory, a host nobody provisioned).
    pub certs: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    pub name: String,
    pub hosts: Vec<HostSpec>,
    /// Let libvirt put guests in cgroups (off by default: sandboxed
    /// machines often cannot).
    pub cgroups: bool,
    /// rackside-hook binary to install in every host's qemu.d.
    pub hook: Option<PathBuf>,
}

impl LabSpec {
    /// `n` hosts named ha, hb, ... with the machine's memory.
    pub fn new(name: &str, n: usize) -> Self {
        Self {
            name: name.to_owned(),
            hosts: (0..n)
                .map(|i| HostSpec {
                    name: names::default_host_name(i),
                    mem_mib: None,
                    certs: true,
                })
                .collect(),
            cgroups: std::env::var("RACKSIDE_LAB_CGROUPS").is_ok_and(|v| v == "1"),
            hook: None,
        }
    }

    /// Installs `hook` in /etc/libvirt/hooks/qemu.d/ of every host.
    pub fn with_hook(mut self, hook: &std::path::Path) -> Self {
        self.hook = Some(hook.to_owned());
        self
    }

    /// Leaves `host` without migration certificates.
    pub fn without_certs(mut self, host: &str) -> Self {
        if let Some(h) = self.hosts.iter_mut().find(|h| h.name == host) {
            h.certs = false;
        }
        self
    }

    pub fn with_mem(mut self, host: &str, mib: u64) -> Self {
        if let Some(h) = self.hosts.iter_mut().find(|h| h.name == host) {
            h.mem_mib = Some(mib);
        }
        self
    }

    fn validate(&self) -> Result<(), LabError> {
        names::validate(&self.name)?;
        if self.hosts.is_empty() || self.hosts.len() > 200 {
            return Err(LabError::Spec("a lab has 1 to 200 hosts".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for h in &self.hosts {
            names::validate(&h.name)?;
            if !seen.insert(&h.name) {
                return Err(LabError::Spec(format!("host {:?} named twice", h.name)));
            }
            if h.mem_mib.is_some_and(|m| m < 256) {
                return Err(LabError::Spec(format!("host {}: at least 256 MiB", h.name)));
            }
        }
        Ok(())
    }

    fn describe(&self) -> Result<LabDesc, LabError> {
        let dir = names::lab_dir(&self.name);
        let hosts = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let root = names::host_root(&self.name, &h.name);
                let addr = names::host_addr(i);
                HostDesc {
                    name: h.name.clone(),
                    netns: names::host_netns(&self.name, &h.name),
                    uri: format!("qemu+tcp://{addr}/system"),
                    local_uri: format!(
                        "qemu+unix:///system?socket={}",
                        root.join("run/libvirt/libvirt-sock").display()
                    ),
                    migrate_uri: format!("tcp://{addr}"),
                    addr,
                    root,
                    anchor_pid: 0,
                    mem_mib: h.mem_mib,
                    host_uuid: host::random_uuid(),
                    guest_port: names::guest_switch_port(&h.name),
                }
            })
            .collect();
        let storage_dir = dir.join("storage");
        Ok(LabDesc {
            name: self.name.clone(),
            switch_netns: names::switch_netns(&self.name),
            kernel: guest::find_kernel()?,
            initrd: dir.join("initramfs.cpio"),
            hosts,
            guest_net: GuestNetDesc {
                client_netns: names::client_netns(&self.name),
                client_addr: names::CLIENT_ADDR.to_owned(),
                prefix_len: names::GUEST_PREFIX_LEN,
                host_bridge: names::HOST_GUEST_BRIDGE.to_owned(),
                switch_bridge: names::GUEST_SWITCH_BRIDGE.to_owned(),
            },
            storage: StorageDesc {
                netns: names::storage_netns(&self.name),
                addr: names::STORAGE_ADDR.to_owned(),
                nbd_port: names::NBD_PORT,
                qmp_socket: storage_dir.join("qmp.sock"),
                pid_file: storage_dir.join("daemon.pid"),
                log: storage_dir.join("daemon.log"),
                dir: storage_dir,
            },
            dir,
        })
    }
}

/// A running lab. Dropping it tears it down (unless detached).
#[derive(Debug)]
pub struct Lab {
    desc: LabDesc,
    cgroups: bool,
    hook: Option<PathBuf>,
    /// Hosts left without migration certificates.
    without_certs: Vec<String>,
    owned: bool,
}

fn require_root() -> Result<(), LabError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(LabError::NotRoot)
    }
}

impl Lab {
    /// Brings a lab up, first clearing whatever an interrupted run of a lab
    /// of the same name left behind.
    pub fn up(spec: &LabSpec) -> Result<Lab, LabError> {
        require_root()?;
        spec.validate()?;
        clear(&spec.name).map_err(|errors| LabError::ClearStale {
            lab: spec.name.clone(),
            errors,
        })?;
        let desc = spec.describe()?;
        fs::create_dir_all(&desc.dir).map_err(|source| LabError::Dir {
            path: desc.dir.clone(),
            source,
        })?;
        // From here on the guard owns whatever exists, so a failure below
        // still tears down what was made.
        let mut lab = Lab {
            desc,
            cgroups: spec.cgroups,
            hook: spec.hook.clone(),
            without_certs: spec
                .hosts
                .iter()
                .filter(|h| !h.certs)
                .map(|h| h.name.clone())
                .collect(),
            owned: true,
        };
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), LabError> {
        guest::build_initramfs(
            std::path::Path::new("/bin/busybox"),
            &self.desc.kernel,
            &self.desc.initrd,
        )?;
        let sw = self.desc.switch_netns.clone();
        net::create_switch(&sw).map_err(LabError::Network)?;
        net::add_client(&sw, &self.desc.guest_net.client_netns).map_err(LabError::Network)?;
        net::add_storage(&sw, &self.desc.storage.netns).map_err(LabError::Network)?;
        self.desc.save()?;
        storage::start_daemon(&self.desc.storage)?;
        let ca = tls::make_ca(&self.desc.dir.join("ca"), &self.desc.name).map_err(LabError::Ca)?;
        for i in 0..self.desc.hosts.len() {
            let h = self.desc.hosts[i].clone();
            net::add_netns(&h.netns).map_err(LabError::Network)?;
            net::plug_host(&sw, &h.name, &h.netns, &h.addr).map_err(LabError::Network)?;
            net::plug_host_guests(&sw, &h.name, &h.netns).map_err(LabError::Network)?;
            let certs = !self.without_certs.contains(&h.name);
            host::prepare(&h, self.cgroups, self.hook.as_deref(), certs.then_some(&ca))?;
            self.desc.hosts[i].anchor_pid = host::start_anchor(&h)?;
            self.desc.save()?;
        }
        for h in &self.desc.hosts {
            host::start_libvirtd(h)?;
            host::define_default_pool(h)?;
        }
        self.desc.save()?;
        Ok(())
    }

    /// Where the lab's shared disks are served.
    pub fn nbd_server(&self) -> NbdServer {
        NbdServer {
            addr: self.desc.storage.addr.clone(),
            port: self.desc.storage.nbd_port,
        }
    }

    /// The disk counter in the first block of `spec`'s disk as it lies
    /// on the storage (a shared disk's export image, or a local disk's
    /// image on `host`). Read it after the guest stopped: a running
    /// guest may be writing it.
    pub fn disk_counter(&self, host: &str, spec: &GuestSpec) -> Result<Option<u64>, LabError> {
        let block = match spec.disk {
            Some(GuestDisk::Shared { .. }) => storage::first_block(
                &storage::export_image(&self.desc.storage, &spec.export_name()),
                false,
            )?,
            Some(GuestDisk::Local { .. }) => {
                let path = spec.local_disk_in_host().unwrap_or_default();
                storage::first_block(&self.host(host)?.outside_path(&path), true)?
            }
            None => return Err(LabError::NoDisk(spec.name.clone())),
        };
        Ok(storage::disk_counter(&block))
    }

    /// Takes over a lab brought up by another process (e.g. `make lab-up`).
    /// The returned guard does not tear it down when dropped.
    pub fn attach(name: &str) -> Result<Lab, LabError> {
        names::validate(name)?;
        let desc = LabDesc::load(&names::lab_dir(name))?;
        Ok(Lab {
            desc,
            cgroups: false,
            hook: None,
            without_certs: Vec::new(),
            owned: false,
        })
    }

    /// Leaves the lab running when this guard is dropped.
    pub fn detach(mut self) -> LabDesc {
        self.owned = false;
        self.desc.clone()
    }

    pub fn desc(&self) -> &LabDesc {
        &self.desc
    }

    pub fn host(&self, name: &str) -> Result<&HostDesc, LabError> {
        self.desc
            .host(name)
            .ok_or_else(|| LabError::NoSuchHost(name.to_owned()))
    }

    /// A command to run inside a host.
    pub fn exec(&self, host: &str, program: &str) -> Result<Command, LabError> {
        Ok(host::exec(self.host(host)?, program))
    }

    /// virsh against a host's libvirtd, from outside the lab.
    pub fn virsh(&self, host: &str, args: &[&str]) -> Result<String, LabError> {
        let h = self.host(host)?;
        virsh::run(&h.local_uri, args).map_err(|source| LabError::Virsh {
            host: host.to_owned(),
            source,
        })
    }

    /// Defines a guest on a host (persistent, not started).
    pub fn define_guest(&self, host: &str, spec: &GuestSpec) -> Result<(), LabError> {
        spec.validate()?;
        let h = self.host(host)?;
        let xml_path = self
            .desc
            .dir
            .join(format!("{}.xml", guest::file_stem(&spec.name)));
        let nbd = self.nbd_server();
        fs::write(
            &xml_path,
            spec.domain_xml(&self.desc.kernel, &self.desc.initrd, Some(&nbd)),
        )
        .map_err(|source| LabError::Dir {
            path: xml_path.clone(),
            source,
        })?;
        // A fresh serial log, so ticks read later are this guest's only.
        let _ = fs::remove_file(h.outside_path(&spec.serial_log_in_host()));
        match spec.disk {
            Some(GuestDisk::Local { mib }) => {
                let path = spec.local_disk_in_host().unwrap_or_default();
                storage::create_qcow2(&h.outside_path(&path), mib)?;
                // The pool lists what is in its directory only when refreshed.
                let _ = self.virsh(host, &["pool-refresh", "default"]);
            }
            Some(GuestDisk::Shared { mib }) => {
                storage::add_export(&self.desc.storage, &spec.export_name(), mib)?;
            }
            None => {}
        }
        self.virsh(host, &["define", &xml_path.to_string_lossy()])?;
        Ok(())
    }

    /// Defines and starts a guest, then waits for its workload to tick.
    pub fn start_guest(&self, host: &str, spec: &GuestSpec) -> Result<u64, LabError> {
        self.define_guest(host, spec)?;
        self.virsh(host, &["start", &spec.name])?;
        self.wait_tick(host, &spec.name, 0, Duration::from_secs(120))
    }

    /// The guest's serial log as its host wrote it.
    pub fn serial_log(&self, host: &str, guest: &str) -> Result<String, LabError> {
        let h = self.host(host)?;
        let p = h.outside_path(&guest::serial_log_path(guest));
        Ok(fs::read(&p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default())
    }

    /// Waits until the guest's serial log on `host` shows a tick above
    /// `after`; returns it.
    pub fn wait_tick(
        &self,
        host: &str,
        guest: &str,
        after: u64,
        limit: Duration,
    ) -> Result<u64, LabError> {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.serial_log(host, guest)?;
            if let Some(t) = guest::last_tick(&log).filter(|t| *t > after) {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                let lines: Vec<&str> = log.lines().collect();
                return Err(LabError::GuestNotReady {
                    host: host.to_owned(),
                    guest: guest.to_owned(),
                    secs: limit.as_secs(),
                    tail: lines[lines.len().saturating_sub(10)..].join("\n"),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until the guest's serial log on `host` shows a disk counter
    /// above `after` (its disk workload wrote and read it back); returns it.
    pub fn wait_disk(
        &self,
        host: &str,
        guest: &str,
        after: u64,
        limit: Duration,
    ) -> Result<u64, LabError> {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.serial_log(host, guest)?;
            if let Some(n) = guest::last_disk(&log).filter(|n| *n > after) {
                return Ok(n);
            }
            if Instant::now() >= deadline {
                let lines: Vec<&str> = log.lines().collect();
                return Err(LabError::GuestNotReady {
                    host: host.to_owned(),
                    guest: guest.to_owned(),
                    secs: limit.as_secs(),
                    tail: lines[lines.len().saturating_sub(10)..].join("\n"),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn stop_libvirtd(&self, host: &str) -> Result<(), LabError> {
        Ok(host::stop_libvirtd(self.host(host)?)?)
    }

    pub fn start_libvirtd(&self, host: &str) -> Result<(), LabError> {
        Ok(host::start_libvirtd(self.host(host)?)?)
    }

    /// Cuts or restores a host's network link.
    pub fn set_link(&self, host: &str, up: bool) -> Result<(), LabError> {
        self.host(host)?;
        net::set_link(&self.desc.switch_netns, host, up).map_err(LabError::Network)
    }

    /// Tears the lab down: every step runs, every failure is reported.
    pub fn teardown(mut self) -> Result<(), TeardownErrors> {
        self.owned = false;
        teardown(&self.desc)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.owned {
            self.owned = false;
            if let Err(e) = teardown(&self.desc) {
                eprintln!("rackside-lab: {e}");
            }
        }
    }
}

/// Graceful teardown of a described lab, then the forced sweep.
pub fn teardown(desc: &LabDesc) -> Result<(), TeardownErrors> {
    let mut errs = TeardownErrors::default();
    for h in &desc.hosts {
        if host::libvirtd_pid(h).is_some_and(host::is_alive) {
            if let Some(names) = errs.step(
                format!("list guests on {}", h.name),
                virsh::active(&h.local_uri),
            ) {
                for n in names {
                    errs.step(
                        format!("destroy guest {n} on {}", h.name),
                        virsh::run(&h.local_uri, &["destroy", &n]),
                    );
                }
            }
        }
        errs.step(
            format!("stop libvirtd on {}", h.name),
            host::stop_libvirtd(h),
        );
    }
    let mut rest = match clear_after_use(&desc.name) {
        Ok(()) => TeardownErrors::default(),
        Err(e) => e,
    };
    errs.0.append(&mut rest.0);
    errs.into_result()
}

#[derive(Debug, thiserror::Error)]
#[error("{count} process(es) in namespace {ns} survived SIGKILL: {pids:?}")]
pub struct Survivors {
    ns: String,
    count: usize,
    pids: Vec<i32>,
}

/// Removes every trace of lab `name`: kills every process in its
/// namespaces, deletes the namespaces and the lab directory. Touches
/// nothing that is not named as this lab's.
pub fn clear(name: &str) -> Result<(), TeardownErrors> {
    clear_prefix(&names::lab_netns_prefix(name), &names::lab_dir(name), false)
}

/// As [`clear`], but keeps the lab directory (logs) when
/// `RACKSIDE_LAB_KEEP=1`: for looking at a failed run afterwards.
fn clear_after_use(name: &str) -> Result<(), TeardownErrors> {
    let keep = std::env::var("RACKSIDE_LAB_KEEP").is_ok_and(|v| v == "1");
    clear_prefix(&names::lab_netns_prefix(name), &names::lab_dir(name), keep)
}

/// Removes every lab on the machine.
pub fn clear_all() -> Result<(), TeardownErrors> {
    let mut errs = TeardownErrors::default();
    let mut labs: Vec<String> = net::list_netns(names::NETNS_PREFIX)
        .iter()
        .filter_map(|ns| ns.strip_prefix(names::NETNS_PREFIX))
        .filter_map(|rest| rest.split_once('-').map(|(lab, _)| lab.to_owned()))
        .collect();
    if let Ok(entries) = fs::read_dir(names::base_dir()) {
        labs.extend(
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| names::validate(n).is_ok()),
        );
    }
    labs.sort();
    labs.dedup();
    for lab in labs {
        if let Err(mut e) = clear(&lab) {
            errs.0.append(&mut e.0);
        }
    }
    errs.into_result()
}

fn clear_prefix(prefix: &str, dir: &std::path::Path, keep_dir: bool) -> Result<(), TeardownErrors> {
    let mut errs = TeardownErrors::default();
    let namespaces = net::list_netns(prefix);
    // Processes first (anchors, libvirtds, QEMUs), in every namespace,
    // then the namespaces themselves.
    for ns in &namespaces {
        if let Some(pids) = errs.step(format!("list processes in {ns}"), net::netns_pids(ns)) {
            let survivors: Vec<i32> = pids
                .into_iter()
                .filter(|&p| !host::terminate(p, Duration::from_secs(3)))
                .collect();
            if !survivors.is_empty() {
                errs.step::<(), _>(
                    format!("kill processes in {ns}"),
                    Err(Survivors {
                        ns: ns.clone(),
                        count: survivors.len(),
                        pids: survivors,
                    }),
                );
            }
        }
    }
    for ns in &namespaces {
        errs.step(format!("delete namespace {ns}"), net::del_netns(ns));
    }
    if dir.exists() && !keep_dir {
        errs.step(format!("remove {}", dir.display()), fs::remove_dir_all(dir));
    }
    errs.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_validated() {
        assert!(LabSpec::new("t", 3).validate().is_ok());
        assert!(LabSpec::new("T", 3).validate().is_err());
        assert!(LabSpec::new("t", 0).validate().is_err());
        assert!(LabSpec::new("t", 2).with_mem("ha", 100).validate().is_err());
        let mut s = LabSpec::new("t", 2);
        s.hosts[1].name = "ha".into();
        assert!(s.validate().is_err());
    }
}
