//! Storage: which of a VM's disks a migration must copy, which it may
//! leave, and what makes a VM unable to move at all.
//!
//! [`domxml`] reads the domain XML (pure); [`probe`] looks at the disk
//! files on this host (sizes, whether a file sits on a shared filesystem);
//! [`assess`] and [`why_unmovable`] decide, purely, from both.
//!
//! A disk is *shared* when the destination already sees the same data:
//! a network disk, a file on a shared filesystem (NFS, CIFS, GFS2, OCFS2,
//! CephFS, ... as libvirt counts them), or a read-only disk (libvirt
//! leaves those alone; the file must exist on the destination). A disk is
//! *local* when it is a raw or qcow2 file on a local filesystem: a live
//! migration copies it (libvirt's non-shared-disk migration) into a
//! volume the agent creates first on the destination. Everything else
//! (host devices passed through, block device disks, pool volume disks,
//! other image formats) cannot move.

pub mod domxml;
pub mod probe;

use std::path::Path;

pub use domxml::{Devices, Disk, Format, Source};

/// A disk a migration copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDisk {
    /// Target dev (`vda`): what libvirt's migrate_disks lists.
    pub dev: String,
    pub path: String,
    pub format: Format,
    /// Bytes the guest sees (virtual size).
    pub capacity: u64,
    /// Bytes the image occupies on this host.
    pub allocation: u64,
}

impl LocalDisk {
    /// The directory holding the image: the destination needs a storage
    /// pool with this target path.
    pub fn dir(&self) -> String {
        Path::new(&self.path)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The image's file name: the destination volume's name.
    pub fn file_name(&self) -> String {
        Path::new(&self.path)
            .file_name()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// What placement reserves on the destination: the capacity, not the
    /// allocation. A copy can write every block the guest sees (a raw
    /// destination is not kept sparse by every QEMU), and the guest keeps
    /// writing while it is copied: only the capacity is a bound.
    pub fn bytes_needed(&self) -> u64 {
        self.capacity.max(self.allocation)
    }
}

/// A VM's storage as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Storage {
    /// Disks a live migration must copy.
    pub local: Vec<LocalDisk>,
    /// Why this VM can never move, whatever the config; empty: it can.
    pub blockers: Vec<String>,
}

/// Room for copied disks in one storage pool of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRoom {
    /// The pool's target path: a disk whose image sits in the same
    /// directory on the source is copied into this pool.
    pub target: String,
    /// Free bytes, as libvirt counted them.
    pub available: u64,
}

/// Bytes a VM's copied disks need in one directory of its destination.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiskNeed {
    pub dir: String,
    pub bytes: u64,
}

impl Storage {
    /// What the local disks need on a destination, per directory.
    pub fn needs(&self) -> Vec<DiskNeed> {
        let mut out: Vec<DiskNeed> = Vec::new();
        for d in &self.local {
            let dir = d.dir();
            match out.iter_mut().find(|n| n.dir == dir) {
                Some(n) => n.bytes = n.bytes.saturating_add(d.bytes_needed()),
                None => out.push(DiskNeed {
                    dir,
                    bytes: d.bytes_needed(),
                }),
            }
        }
        out
    }
}

/// What [`probe`] learns about one disk file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFacts {
    /// On a filesystem libvirt counts as shared.
    pub shared_fs: bool,
    pub capacity: u64,
    pub allocation: u64,
}

/// Sorts a domain's disks into copied, left alone and blocking. `facts`
/// is asked only about writable file disks.
pub fn assess(
    devs: &Devices,
    facts: &mut dyn FnMut(&str, &Format) -> Result<FileFacts, String>,
) -> Storage {
    let mut s = Storage::default();
    if devs.hostdevs > 0 {
        s.blockers
            .push("a host device is passed through to it (<hostdev>)".into());
    }
    if devs.too_many_disks {
        s.blockers
            .push(format!("it has more than {} disks", domxml::MAX_DISKS));
    }
    for d in &devs.disks {
        let dev = &d.dev;
        match &d.source {
            Source::Network | Source::Empty => {}
            // libvirt leaves a read-only disk alone: its file must exist on
            // the destination, as for a shared one.
            _ if d.readonly => {}
            Source::File { path, format } => match facts(path, format) {
                Ok(f) if f.shared_fs => {}
                Ok(f) => match format {
                    Format::Raw | Format::Qcow2 if !dev.is_empty() => s.local.push(LocalDisk {
                        dev: dev.clone(),
                        path: path.clone(),
                        format: format.clone(),
                        capacity: f.capacity,
                        allocation: f.allocation,
                    }),
                    Format::Raw | Format::Qcow2 => s
                        .blockers
                        .push(format!("local disk {path} has no target dev")),
                    Format::Other(f) => s.blockers.push(format!(
                        "disk {dev} is a local {f} image: only raw and qcow2 are copied"
                    )),
                },
                Err(e) => s
                    .blockers
                    .push(format!("disk {dev}: cannot read {path}: {e}")),
            },
            Source::Block { path } => s.blockers.push(format!(
                "disk {dev} is a host block device ({path}): neither shared nor copyable"
            )),
            Source::Other { kind } => s.blockers.push(format!(
                "disk {dev} is of type '{kind}': neither shared nor copyable"
            )),
        }
    }
    s
}

/// Why a VM cannot be migrated: its blockers, local disks with copying
/// turned off, or local disks on a shut-off VM (an offline migration moves
/// the definition only). None: it can be tried.
pub fn why_unmovable(s: &Storage, copy_local_disks: bool, offline: bool) -> Option<String> {
    if !s.blockers.is_empty() {
        return Some(format!("cannot move: {}", s.blockers.join("; ")));
    }
    let devs = || {
        s.local
            .iter()
            .map(|d| d.dev.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if s.local.is_empty() {
        None
    } else if !copy_local_disks {
        Some(format!(
            "cannot move: local disk {} and [migration] copy_local_disks is off",
            devs()
        ))
    } else if offline {
        Some(format!(
            "cannot move: shut off with local disk {} (an offline migration copies no storage)",
            devs()
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(dev: &str, readonly: bool, source: Source) -> Disk {
        Disk {
            dev: dev.into(),
            readonly,
            source,
        }
    }

    fn file(path: &str, format: Format) -> Source {
        Source::File {
            path: path.into(),
            format,
        }
    }

    fn local_facts(path: &str, _: &Format) -> Result<FileFacts, String> {
        match path {
            p if p.starts_with("/nfs/") => Ok(FileFacts {
                shared_fs: true,
                capacity: 1,
                allocation: 1,
            }),
            p if p.starts_with("/gone/") => Err("No such file or directory".into()),
            _ => Ok(FileFacts {
                shared_fs: false,
                capacity: 10 << 30,
                allocation: 1 << 30,
            }),
        }
    }

    #[test]
    fn local_files_are_copied_and_shared_ones_left() {
        let devs = Devices {
            disks: vec![
                disk(
                    "vda",
                    false,
                    file("/var/lib/libvirt/images/a.qcow2", Format::Qcow2),
                ),
                disk("vdb", false, Source::Network),
                disk("vdc", false, file("/nfs/b.img", Format::Raw)),
                disk("hdc", true, file("/iso/x.iso", Format::Raw)),
                disk("hdd", true, Source::Empty),
            ],
            ..Devices::default()
        };
        let mut asked = Vec::new();
        let s = assess(&devs, &mut |p, f| {
            asked.push(p.to_owned());
            local_facts(p, f)
        });
        assert!(s.blockers.is_empty(), "{:?}", s.blockers);
        assert_eq!(
            s.local,
            vec![LocalDisk {
                dev: "vda".into(),
                path: "/var/lib/libvirt/images/a.qcow2".into(),
                format: Format::Qcow2,
                capacity: 10 << 30,
                allocation: 1 << 30,
            }]
        );
        assert_eq!(s.local[0].dir(), "/var/lib/libvirt/images");
        assert_eq!(s.local[0].file_name(), "a.qcow2");
        assert_eq!(s.local[0].bytes_needed(), 10 << 30);
        // Read-only and network disks are not even looked at.
        assert_eq!(asked, vec!["/var/lib/libvirt/images/a.qcow2", "/nfs/b.img"]);
        assert_eq!(why_unmovable(&s, true, false), None);
        assert_eq!(
            why_unmovable(&s, false, false).as_deref(),
            Some("cannot move: local disk vda and [migration] copy_local_disks is off")
        );
        assert!(why_unmovable(&s, true, true)
            .is_some_and(|r| r.contains("offline migration copies no storage")));
    }

    #[test]
    fn what_cannot_move_says_why() {
        let devs = Devices {
            disks: vec![
                disk(
                    "vda",
                    false,
                    Source::Block {
                        path: "/dev/sdb".into(),
                    },
                ),
                disk(
                    "vdb",
                    false,
                    Source::Other {
                        kind: "volume".into(),
                    },
                ),
                disk(
                    "vdc",
                    false,
                    file("/img/c.vmdk", Format::Other("vmdk".into())),
                ),
                disk("vdd", false, file("/gone/d.img", Format::Raw)),
            ],
            hostdevs: 1,
            too_many_disks: false,
        };
        let s = assess(&devs, &mut local_facts);
        assert!(s.local.is_empty());
        assert_eq!(
            s.blockers,
            vec![
                "a host device is passed through to it (<hostdev>)",
                "disk vda is a host block device (/dev/sdb): neither shared nor copyable",
                "disk vdb is of type 'volume': neither shared nor copyable",
                "disk vdc is a local vmdk image: only raw and qcow2 are copied",
                "disk vdd: cannot read /gone/d.img: No such file or directory",
            ]
        );
        // Blockers win whatever the config says.
        let why = why_unmovable(&s, true, false).unwrap_or_default();
        assert!(
            why.starts_with("cannot move: a host device is passed through"),
            "{why}"
        );
    }

    #[test]
    fn a_vm_without_disks_moves() {
        let s = assess(&Devices::default(), &mut local_facts);
        assert_eq!(s, Storage::default());
        assert_eq!(why_unmovable(&s, false, true), None);
    }
}
