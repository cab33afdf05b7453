//! Lab guests: the Debian cloud kernel with a tiny busybox initramfs whose
//! workload fills memory with random data, keeps dirtying it and prints a
//! numbered tick to the serial console every second. The tick counter
//! lives in guest memory, so a destination that shows ticks continuing from
//! where the source stopped proves the guest moved alive.

use std::fs;
use std::path::{Path, PathBuf};

use crate::cpio::Archive;

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("no Debian cloud kernel found in /boot (install linux-image-cloud-amd64)")]
    NoKernel,
    #[error("busybox-static not found at {0} (install busybox-static)")]
    NoBusybox(PathBuf),
    #[error("could not read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid guest: {0}")]
    Invalid(String),
}

/// What a guest is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSpec {
    pub name: String,
    pub vcpus: u32,
    pub mem_mib: u64,
    /// MiB of random data the workload keeps in a tmpfs.
    pub fill_mib: u64,
    /// MiB rewritten every second (memory dirtied during migration).
    pub dirty_mib: u64,
    /// `qemu` (TCG, works everywhere) or `kvm`.
    pub domain_type: String,
    /// A network interface (a tap device on the host, `type='ethernet'`).
    pub nic: bool,
    /// An nwfilter the interface references.
    pub filterref: Option<String>,
    /// Raw XML for the domain's `<metadata>` (e.g. a rackside policy).
    pub metadata: Option<String>,
    /// A raw disk file local to the host (made by the lab when the guest
    /// is defined): libvirt refuses to live-migrate such a guest without
    /// a storage copy ("Migration without shared storage is unsafe").
    pub local_disk_mib: Option<u64>,
}

impl GuestSpec {
    /// A guest holding `fill_mib` of random data, with room for the kernel.
    pub fn new(name: &str, fill_mib: u64) -> Self {
        Self {
            name: name.to_owned(),
            vcpus: 1,
            mem_mib: fill_mib + 96,
            fill_mib,
            dirty_mib: 1,
            domain_type: "qemu".to_owned(),
            nic: false,
            filterref: None,
            metadata: None,
            local_disk_mib: None,
        }
    }

    pub fn validate(&self) -> Result<(), GuestError> {
        // Any name libvirt takes (a guest's name is whoever defined it's
        // data: tests of hostile names need CR and C1 codes), as long as
        // XML 1.0 can carry it and it is no path.
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 200
            && self.name.chars().all(|c| {
                !matches!(c, '/' | '\n' | '\u{fffe}' | '\u{ffff}')
                    && (c >= ' ' || c == '\t' || c == '\r')
            });
        if !name_ok {
            return Err(GuestError::Invalid(format!("bad name {:?}", self.name)));
        }
        if self.mem_mib < self.fill_mib + 64 {
            return Err(GuestError::Invalid(format!(
                "{}: {} MiB of memory cannot hold {} MiB of data plus the kernel",
                self.name, self.mem_mib, self.fill_mib
            )));
        }
        if self.dirty_mib > self.fill_mib.max(1) {
            return Err(GuestError::Invalid(format!(
                "{}: dirty_mib exceeds fill_mib",
                self.name
            )));
        }
        if !matches!(self.domain_type.as_str(), "qemu" | "kvm") || self.vcpus == 0 {
            return Err(GuestError::Invalid(format!(
                "{}: domain type must be qemu or kvm and vcpus > 0",
                self.name
            )));
        }
        Ok(())
    }

    /// Path of the serial log inside a host; each host's copy lives under
    /// that host's private /var/log/libvirt.
    pub fn serial_log_in_host(&self) -> String {
        serial_log_path(&self.name)
    }

    /// Path of the local disk file inside a host, when the guest has one.
    pub fn local_disk_in_host(&self) -> Option<String> {
        self.local_disk_mib
            .map(|_| format!("/var/lib/libvirt/images/{}.img", file_stem(&self.name)))
    }

    /// The libvirt domain definition.
    pub fn domain_xml(&self, kernel: &Path, initrd: &Path) -> String {
        let nic = if self.nic || self.filterref.is_some() {
            let f = self
                .filterref
                .as_ref()
                .map_or(String::new(), |f| format!("<filterref filter='{f}'/>"));
            format!("<interface type='ethernet'><model type='virtio'/>{f}</interface>")
        } else {
            String::new()
        };
        let disk = self.local_disk_in_host().map_or(String::new(), |p| {
            format!(
                "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{p}'/><target dev='hda' bus='ide'/></disk>"
            )
        });
        let metadata = self
            .metadata
            .as_ref()
            .map_or(String::new(), |m| format!("<metadata>{m}</metadata>"));
        format!(
            "<domain type='{ty}'>
  <name>{name}</name>
  {metadata}
  <memory unit='MiB'>{mem}</memory>
  <currentMemory unit='MiB'>{mem}</currentMemory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 rackside.fill_mib={fill} rackside.dirty_mib={dirty}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'>
      <source path='{log}' append='on'/>
      <target port='0'/>
    </serial>
    {nic}
    {disk}
    <memballoon model='none'/>
  </devices>
</domain>
",
            ty = self.domain_type,
            name = xml_text(&self.name),
            mem = self.mem_mib,
            vcpus = self.vcpus,
            kernel = kernel.display(),
            initrd = initrd.display(),
            fill = self.fill_mib,
            dirty = self.dirty_mib,
            log = self.serial_log_in_host(),
        )
    }
}

/// A guest's name as a file name: itself when plain, else a hash (names
/// may hold CR, C1 codes, spaces).
pub fn file_stem(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 48
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain {
        return name.to_owned();
    }
    // FNV-1a: stable across runs, enough to keep a test's few names apart.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("odd-{h:016x}")
}

/// Where a guest's serial console is logged inside its host.
pub fn serial_log_path(name: &str) -> String {
    format!("/var/log/libvirt/qemu/{}.serial.log", file_stem(name))
}

/// Text for an XML element: markup and every control character as a
/// character reference (a raw CR would be read back as LF).
fn xml_text(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() => out.push_str(&format!("&#x{:x};", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The guest's /init: everything the workload does.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
arg() { sed -n "s/.*rackside\.$1=\([0-9]*\).*/\1/p" /proc/cmdline; }
fill=$(arg fill_mib); fill=${fill:-16}; [ "$fill" -ge 1 ] || fill=1
dirty=$(arg dirty_mib); dirty=${dirty:-1}
mount -t tmpfs -o size=$((fill + 4))m tmpfs /mnt
echo "rackside-guest: filling $fill MiB"
dd if=/dev/urandom of=/mnt/fill bs=1M count=$fill 2>/dev/null
echo "rackside-guest: ready"
i=0
while :; do
  i=$((i + 1))
  if [ "$dirty" -gt 0 ]; then
    dd if=/dev/urandom of=/mnt/fill bs=1M count=$dirty seek=$(( (i * dirty) % fill )) conv=notrunc 2>/dev/null
  fi
  echo "rackside-tick $i"
  sleep 1
done
"#;

/// Builds the initramfs from the machine's busybox-static.
pub fn build_initramfs(busybox: &Path, out: &Path) -> Result<(), GuestError> {
    if !busybox.exists() {
        return Err(GuestError::NoBusybox(busybox.to_owned()));
    }
    let bb = fs::read(busybox).map_err(|source| GuestError::Read {
        path: busybox.to_owned(),
        source,
    })?;
    let mut a = Archive::new();
    for d in ["bin", "dev", "proc", "sys", "mnt", "tmp"] {
        a.dir(d, 0o755);
    }
    a.char_dev("dev/console", 0o600, 5, 1);
    a.file("bin/busybox", 0o755, &bb);
    a.symlink("bin/sh", "busybox");
    a.file("init", 0o755, INIT.as_bytes());
    fs::write(out, a.finish()).map_err(|source| GuestError::Write {
        path: out.to_owned(),
        source,
    })
}

/// The newest Debian cloud kernel in /boot.
pub fn find_kernel() -> Result<PathBuf, GuestError> {
    let mut found: Vec<PathBuf> = fs::read_dir("/boot")
        .map_err(|source| GuestError::Read {
            path: "/boot".into(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64"))
        })
        .collect();
    found.sort();
    found.pop().ok_or(GuestError::NoKernel)
}

/// The highest tick number in a serial log, if any.
pub fn last_tick(serial_log: &str) -> Option<u64> {
    serial_log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rackside-tick "))
        .filter_map(|n| n.trim().parse().ok())
        .max()
}

/// The tick printed last (a log appended to by successive runs of a guest
/// on the same host holds older, higher ticks before it).
pub fn latest_tick(serial_log: &str) -> Option<u64> {
    serial_log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rackside-tick "))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
}

/// The lowest tick number in a serial log, if any.
pub fn first_tick(serial_log: &str) -> Option<u64> {
    serial_log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rackside-tick "))
        .filter_map(|n| n.trim().parse().ok())
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_read_from_noisy_logs() {
        let log = "boot noise\nrackside-guest: ready\nrackside-tick 1\r\nrackside-tick 2\ngarbage rackside-tick 99\nrackside-tick x\n";
        assert_eq!(last_tick(log), Some(2));
        assert_eq!(latest_tick("rackside-tick 40\nrackside-tick 1\n"), Some(1));
        assert_eq!(first_tick(log), Some(1));
        assert_eq!(last_tick("nothing"), None);
    }

    #[test]
    fn spec_is_validated() {
        assert!(GuestSpec::new("vm-1", 64).validate().is_ok());
        assert!(GuestSpec::new("a/b", 64).validate().is_err());
        assert!(GuestSpec::new("a\nb", 64).validate().is_err());
        assert!(GuestSpec::new("a\x1bb", 64).validate().is_err());
        assert!(GuestSpec::new("", 64).validate().is_err());
        // Hostile but real: libvirt takes these.
        assert!(GuestSpec::new("x\r*** SAFE ***", 64).validate().is_ok());
        assert!(GuestSpec::new("y\u{9b}2J\u{85}", 64).validate().is_ok());
        let mut s = GuestSpec::new("vm", 64);
        s.mem_mib = 100;
        assert!(s.validate().is_err());
    }

    #[test]
    fn xml_names_the_workload() {
        let x = GuestSpec::new("vm1", 64).domain_xml(Path::new("/k"), Path::new("/i"));
        assert!(x.contains("rackside.fill_mib=64"));
        assert!(x.contains("<memory unit='MiB'>160</memory>"));
        assert!(x.contains("/var/log/libvirt/qemu/vm1.serial.log"));
        assert!(!x.contains("<disk"));
    }

    #[test]
    fn odd_names_are_escaped_and_get_plain_files() {
        let mut g = GuestSpec::new("x\r<a>'\u{9b}", 16);
        g.local_disk_mib = Some(8);
        let x = g.domain_xml(Path::new("/k"), Path::new("/i"));
        assert!(
            x.contains("<name>x&#xd;&lt;a&gt;&apos;&#x9b;</name>"),
            "{x}"
        );
        let log = g.serial_log_in_host();
        assert!(log.starts_with("/var/log/libvirt/qemu/odd-"), "{log}");
        assert!(log.is_ascii());
        assert_eq!(file_stem("vm-1"), "vm-1");
        assert_ne!(file_stem("a b"), file_stem("a c"));
        let disk = g.local_disk_in_host().unwrap();
        assert!(x.contains(&format!("<source file='{disk}'/>")), "{x}");
    }
}
