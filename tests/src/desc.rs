//! The description of a running lab, written to `<lab dir>/lab.json` for
//! tests and tools (`rackside-lab status` prints it).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostDesc {
    pub name: String,
    /// Network namespace the host lives in.
    pub netns: String,
    /// Address on the lab network.
    pub addr: String,
    /// libvirt URI as other lab hosts (and agents inside the lab) reach it.
    pub uri: String,
    /// libvirt URI usable from the machine's root namespace (unix socket).
    pub local_uri: String,
    /// Where QEMU's migration stream goes to this host.
    pub migrate_uri: String,
    /// Host directory holding its private libvirt directories and logs.
    pub root: PathBuf,
    /// Process holding the host's namespaces; `lab exec` enters it.
    pub anchor_pid: i32,
    /// Memory size libvirt inside this host sees, if not the machine's.
    pub mem_mib: Option<u64>,
    pub host_uuid: String,
    /// This host's port on the guests' network bridge in the switch
    /// namespace (its guests' frames come in there).
    #[serde(default)]
    pub guest_port: String,
}

impl HostDesc {
    pub fn libvirtd_pid_file(&self) -> PathBuf {
        self.root.join("libvirtd.pid")
    }

    pub fn libvirtd_log(&self) -> PathBuf {
        self.root.join("libvirtd.stderr.log")
    }

    /// Where this host's QEMU finds its migration certificates
    /// (`migrate_tls_x509_cert_dir`; /etc/pki/qemu on a real host).
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("pki/qemu")
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("run/libvirt/libvirt-sock")
    }

    /// A path inside the host (e.g. `/var/log/libvirt/x`) as seen from the
    /// root namespace, when it lies in one of the host's private dirs.
    pub fn outside_path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LabDesc {
    pub name: String,
    pub dir: PathBuf,
    pub switch_netns: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub hosts: Vec<HostDesc>,
    #[serde(default)]
    pub guest_net: GuestNetDesc,
    #[serde(default)]
    pub storage: StorageDesc,
}

/// The guests' network: each host's `brvm` joins the switch's guest bridge,
/// where a client namespace stands for the guests' users.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuestNetDesc {
    /// Namespace of the client (run probes here).
    pub client_netns: String,
    pub client_addr: String,
    pub prefix_len: u8,
    /// The bridge guests' NICs join inside each host.
    pub host_bridge: String,
    /// The guests' network bridge in [`LabDesc::switch_netns`].
    pub switch_bridge: String,
}

/// The lab's shared storage: qemu-storage-daemon serving NBD exports on the
/// migration network from its own namespace.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StorageDesc {
    pub netns: String,
    pub addr: String,
    pub nbd_port: u16,
    /// Where the exported images live (outside every host).
    pub dir: PathBuf,
    /// The daemon's QMP socket (exports are added there).
    pub qmp_socket: PathBuf,
    pub pid_file: PathBuf,
    pub log: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DescError {
    #[error("no running lab described at {0} (run `make lab-up` first)")]
    Missing(PathBuf),
    #[error("could not read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lab description {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LabDesc {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("lab.json")
    }

    pub fn host(&self, name: &str) -> Option<&HostDesc> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn load(dir: &Path) -> Result<Self, DescError> {
        let path = Self::file(dir);
        let text = std::fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                DescError::Missing(path.clone())
            } else {
                DescError::Read {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        serde_json::from_str(&text).map_err(|source| DescError::Parse { path, source })
    }

    pub fn save(&self) -> Result<(), DescError> {
        let path = Self::file(&self.dir);
        let text = serde_json::to_string_pretty(self).expect("lab description serialises");
        std::fs::write(&path, text).map_err(|source| DescError::Write { path, source })
    }
}
