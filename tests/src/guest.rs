//! Lab guests: the Debian cloud kernel with a tiny busybox initramfs whose
//! workload fills memory with random data, keeps dirtying it and prints a
//! numbered tick to the serial console every second. The tick counter
//! lives in guest memory, so a destination that shows ticks continuing from
//! where the source stopped proves the guest moved alive.
//!
//! A guest may also have a NIC on its host's `brvm` bridge (an address on
//! the guests' network; it serves a page on port 80 and echoes on port 7)
//! and a virtio disk whose first block holds a counter it keeps reading,
//! checking and rewriting with O_DIRECT.

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
    /// An address on the guests' network (see `names::guest_addr`): the
    /// guest gets a virtio NIC on its host's `brvm` bridge with MAC
    /// [`mac_for`] its name, and serves HTTP on 80 and TCP echo on 7.
    pub net_addr: Option<std::net::Ipv4Addr>,
    /// A virtio disk (`vda`) with the disk counter workload.
    pub disk: Option<GuestDisk>,
    /// A pvpanic device, and a kernel that panics on an NMI.
    pub panic_device: bool,
}

/// A guest's disk, made by the lab when the guest is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestDisk {
    /// An NBD export of the lab's storage server: shared storage to
    /// libvirt, so a plain live migration takes it along.
    Shared { mib: u64 },
    /// A qcow2 image in the host's own /var/lib/libvirt/images: libvirt
    /// refuses to live-migrate it without a storage copy ("Migration
    /// without shared storage is unsafe").
    Local { mib: u64 },
}

impl GuestDisk {
    pub fn mib(self) -> u64 {
        match self {
            GuestDisk::Shared { mib } | GuestDisk::Local { mib } => mib,
        }
    }
}

/// Where the lab's shared disks are served (from the lab description).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdServer {
    pub addr: String,
    pub port: u16,
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
            net_addr: None,
            disk: None,
            panic_device: false,
        }
    }

    /// With a pvpanic device: `virsh inject-nmi` panics its kernel, and
    /// libvirt reports the guest crashed (panicked).
    pub fn with_panic_device(mut self) -> Self {
        self.panic_device = true;
        self
    }

    /// With an address on the guests' network (a NIC on `brvm`).
    pub fn with_net(mut self, addr: std::net::Ipv4Addr) -> Self {
        self.net_addr = Some(addr);
        self
    }

    pub fn with_disk(mut self, disk: GuestDisk) -> Self {
        self.disk = Some(disk);
        self
    }

    /// The NIC's MAC address (deterministic from the name).
    pub fn mac(&self) -> String {
        mac_for(&self.name)
    }

    /// The NBD export name of a shared disk.
    pub fn export_name(&self) -> String {
        file_stem(&self.name)
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
        if self.disk.is_some_and(|d| d.mib() == 0 || d.mib() > 4096) {
            return Err(GuestError::Invalid(format!(
                "{}: a disk has 1 to 4096 MiB",
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

    /// Path of the local disk image inside a host, when the guest has one.
    pub fn local_disk_in_host(&self) -> Option<String> {
        match self.disk {
            Some(GuestDisk::Local { .. }) => Some(local_disk_path(&self.name)),
            _ => None,
        }
    }

    /// The libvirt domain definition. `nbd` is where shared disks are
    /// served (needed only when the guest has one).
    pub fn domain_xml(&self, kernel: &Path, initrd: &Path, nbd: Option<&NbdServer>) -> String {
        let filter = self
            .filterref
            .as_ref()
            .map_or(String::new(), |f| format!("<filterref filter='{f}'/>"));
        let nic = if self.net_addr.is_some() {
            format!(
                "<interface type='bridge'><source bridge='{br}'/><mac address='{mac}'/><model type='virtio'/>{filter}</interface>",
                br = crate::names::HOST_GUEST_BRIDGE,
                mac = self.mac()
            )
        } else if self.nic || self.filterref.is_some() {
            format!("<interface type='ethernet'><model type='virtio'/>{filter}</interface>")
        } else {
            String::new()
        };
        let target = "<target dev='vda' bus='virtio'/>";
        let disk = match (self.disk, nbd) {
            (Some(GuestDisk::Local { .. }), _) => format!(
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/><source file='{}'/>{target}</disk>",
                local_disk_path(&self.name)
            ),
            (Some(GuestDisk::Shared { .. }), Some(s)) => format!(
                "<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none'/><source protocol='nbd' name='{export}'><host name='{addr}' port='{port}'/></source>{target}</disk>",
                export = self.export_name(),
                addr = s.addr,
                port = s.port
            ),
            _ => String::new(),
        };
        let mut extra = String::new();
        if let Some(a) = self.net_addr {
            extra.push_str(&format!(
                " rackside.ip={a}/{} rackside.name={}",
                crate::names::GUEST_PREFIX_LEN,
                file_stem(&self.name)
            ));
        }
        if self.disk.is_some() {
            extra.push_str(" rackside.disk=1");
        }
        let panic = if self.panic_device {
            extra.push_str(" rackside.nmi_panic=1");
            // PCI: the lab's guests boot without ACPI, which the ISA
            // device is found through.
            "<panic model='pvpanic'/>"
        } else {
            ""
        };
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
    <cmdline>console=ttyS0 quiet printk.time=0 printk.devkmsg=on panic=-1 rackside.fill_mib={fill} rackside.dirty_mib={dirty}{extra}</cmdline>
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
    {panic}
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

/// Where a guest's local disk image is inside its host.
pub fn local_disk_path(name: &str) -> String {
    format!("/var/lib/libvirt/images/{}.qcow2", file_stem(name))
}

/// A locally administered unicast MAC from the guest's name (QEMU's
/// 52:54:00 prefix), so tests know it without asking libvirt.
pub fn mac_for(name: &str) -> String {
    let h = fnv1a(name);
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        (h >> 16) as u8,
        (h >> 8) as u8,
        h as u8
    )
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
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
    format!("odd-{:016x}", fnv1a(name))
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
# What the workload prints goes through the kernel's log, which the
# console driver writes to ttyS0 by polling the UART. A tty write instead
# waits for the UART's transmit interrupt, which a migrated TCG guest was
# seen to lose: every later write blocked, and the workload with it. (The
# virtio console is worse: its writes spin with interrupts off until QEMU
# takes the buffer, which froze guests for seconds after a move.)
say() { echo "<3>$*" > /dev/kmsg 2>/dev/null || echo "$*"; }
arg() { sed -n "s/.*rackside\.$1=\([0-9]*\).*/\1/p" /proc/cmdline; }
sarg() { sed -n "s/.*rackside\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
# Drivers the cloud kernel has as modules, in dependency order (absent
# ones are built in or were not found when the initramfs was made).
for m in MODULES; do
  [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko
done
# A guest with a panic device panics on an NMI (`virsh inject-nmi`), and
# the pvpanic driver tells QEMU: how a test makes a guest kernel panic.
[ "$(arg nmi_panic)" = 1 ] && echo 1 > /proc/sys/kernel/unknown_nmi_panic
ip=$(sarg ip)
if [ -n "$ip" ]; then
  ip link set lo up
  ip addr add "$ip" dev eth0
  ip link set eth0 up
  mkdir -p /www
  echo "rackside-guest $(sarg name)" > /www/index.html
  httpd -p 80 -h /www </dev/null >/dev/null 2>&1
  nc -ll -p 7 -e /bin/cat </dev/null >/dev/null 2>&1 &
  say "rackside-guest: serving on $ip"
fi
# The disk counter: read the first block, check it is what was last
# written, write the next number, all with O_DIRECT (no guest cache).
disk_loop() {
  last=""
  while :; do
    got=$(dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | tr -d '\000' | head -n 1)
    if [ -n "$last" ] && [ "$got" != "rackside-disk $last" ]; then
      say "rackside-disk-LOST expected $last found $got"
    fi
    n=${got#rackside-disk }
    case "$n" in ''|*[!0-9]*) n=0 ;; esac
    n=$((n + 1))
    if echo "rackside-disk $n" | dd of=/dev/vda bs=512 count=1 conv=sync,fsync,notrunc oflag=direct 2>/dev/null; then
      say "rackside-disk $n"
      last=$n
    else
      say "rackside-disk-ERROR write of $n failed"
    fi
    sleep 1
  done
}
if [ "$(arg disk)" = 1 ]; then
  i=0
  while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  if [ -b /dev/vda ]; then disk_loop & else say "rackside-disk-ERROR no /dev/vda"; fi
fi
fill=$(arg fill_mib); fill=${fill:-16}; [ "$fill" -ge 1 ] || fill=1
dirty=$(arg dirty_mib); dirty=${dirty:-1}
mount -t tmpfs -o size=$((fill + 4))m tmpfs /mnt
say "rackside-guest: filling $fill MiB"
dd if=/dev/urandom of=/mnt/fill bs=1M count=$fill 2>/dev/null
say "rackside-guest: ready"
i=0
while :; do
  i=$((i + 1))
  if [ "$dirty" -gt 0 ]; then
    dd if=/dev/urandom of=/mnt/fill bs=1M count=$dirty seek=$(( (i * dirty) % fill )) conv=notrunc 2>/dev/null
  fi
  say "rackside-tick $i"
  sleep 1
done
"#;

/// Modules the guest loads, in dependency order, with their place under
/// /lib/modules/<kernel version>/kernel/ of the Debian cloud kernel: virtio
/// for the NIC and disk, pvpanic for a guest with a panic device.
pub const GUEST_MODULES: [&str; 11] = [
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci",
    "net/core/failover",
    "drivers/net/net_failover",
    "drivers/net/virtio_net",
    "drivers/block/virtio_blk",
    "drivers/misc/pvpanic/pvpanic",
    "drivers/misc/pvpanic/pvpanic-pci",
];

/// The module directory of the kernel at `kernel` (`/boot/vmlinuz-V` ->
/// `/lib/modules/V`).
pub fn modules_dir(kernel: &Path) -> Option<PathBuf> {
    let name = kernel.file_name()?.to_str()?;
    let version = name.strip_prefix("vmlinuz-")?;
    Some(Path::new("/lib/modules").join(version))
}

fn module_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

fn init_script() -> String {
    let names: Vec<&str> = GUEST_MODULES.iter().map(|m| module_name(m)).collect();
    INIT.replace("MODULES", &names.join(" "))
}

/// Builds the initramfs from the machine's busybox-static and the virtio
/// modules of the kernel at `kernel` (uncompressed .ko; a module not found
/// is taken to be built in, and the guest skips it).
pub fn build_initramfs(busybox: &Path, kernel: &Path, out: &Path) -> Result<(), GuestError> {
    if !busybox.exists() {
        return Err(GuestError::NoBusybox(busybox.to_owned()));
    }
    let bb = fs::read(busybox).map_err(|source| GuestError::Read {
        path: busybox.to_owned(),
        source,
    })?;
    let mut a = Archive::new();
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "mnt",
        "tmp",
        "lib",
        "lib/modules",
    ] {
        a.dir(d, 0o755);
    }
    a.char_dev("dev/console", 0o600, 5, 1);
    a.file("bin/busybox", 0o755, &bb);
    a.symlink("bin/sh", "busybox");
    a.file("init", 0o755, init_script().as_bytes());
    if let Some(dir) = modules_dir(kernel) {
        for rel in GUEST_MODULES {
            let p = dir.join("kernel").join(format!("{rel}.ko"));
            if let Ok(ko) = fs::read(&p) {
                a.file(&format!("lib/modules/{}.ko", module_name(rel)), 0o644, &ko);
            }
        }
    }
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

/// Lines of a guest's serial log where its kernel reported an error (an
/// oops, a BUG, a panic, corrupted lists, a soft lockup). The guests boot
/// `quiet`, so their kernel prints only errors and worse, and the workload
/// never prints these words.
pub fn kernel_errors(serial_log: &str) -> Vec<&str> {
    const SIGNS: [&str; 7] = [
        "BUG:",
        "kernel BUG at",
        "Oops",
        "Kernel panic",
        "general protection fault",
        "list_add corruption",
        "list_del corruption",
    ];
    serial_log
        .lines()
        .map(str::trim)
        .filter(|l| SIGNS.iter().any(|s| l.contains(s)))
        .collect()
}

/// The last disk counter the guest printed (`rackside-disk N`): the
/// latest number it wrote and read back.
pub fn last_disk(serial_log: &str) -> Option<u64> {
    serial_log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rackside-disk "))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
}

/// Every `rackside-disk-LOST` and `rackside-disk-ERROR` line: the disk
/// gave back something else than was written, or refused a write.
pub fn disk_faults(serial_log: &str) -> Vec<String> {
    serial_log
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("rackside-disk-LOST") || l.starts_with("rackside-disk-ERROR"))
        .map(str::to_owned)
        .collect()
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
    fn a_guest_kernel_error_is_found_and_the_workload_is_not() {
        let healthy = "rackside-guest: ready\r\nrackside-tick 1\nrackside-disk 3\n";
        assert!(kernel_errors(healthy).is_empty());
        let oops = "rackside-tick 21\nlist_del corruption, fffff543c0167748->next is LIST_POISON1 \
                    (dead000000000100)\nkernel BUG at lib/list_debug.c:53!\ninvalid opcode: 0000 [#1] \
                    PREEMPT SMP NOPTI\nwatchdog: BUG: soft lockup - CPU#0 stuck for 26s!\n\
                    Kernel panic - not syncing: Fatal exception in interrupt\n";
        assert_eq!(
            kernel_errors(oops),
            [
                "list_del corruption, fffff543c0167748->next is LIST_POISON1 (dead000000000100)",
                "kernel BUG at lib/list_debug.c:53!",
                "watchdog: BUG: soft lockup - CPU#0 stuck for 26s!",
                "Kernel panic - not syncing: Fatal exception in interrupt",
            ]
        );
    }

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
        let x = GuestSpec::new("vm1", 64).domain_xml(Path::new("/k"), Path::new("/i"), None);
        assert!(x.contains("rackside.fill_mib=64"));
        assert!(x.contains("<memory unit='MiB'>160</memory>"));
        assert!(x.contains("/var/log/libvirt/qemu/vm1.serial.log"));
        assert!(!x.contains("<disk"));
        assert!(!x.contains("<interface"));
        assert!(!x.contains("rackside.ip"));
    }

    #[test]
    fn a_networked_guest_with_a_shared_disk() {
        let g = GuestSpec::new("web1", 16)
            .with_net(std::net::Ipv4Addr::new(10, 78, 0, 11))
            .with_disk(GuestDisk::Shared { mib: 8 });
        let nbd = NbdServer {
            addr: "10.77.0.250".into(),
            port: 10809,
        };
        let x = g.domain_xml(Path::new("/k"), Path::new("/i"), Some(&nbd));
        assert!(x.contains("<source bridge='brvm'/>"), "{x}");
        assert!(x.contains(&format!("<mac address='{}'/>", g.mac())), "{x}");
        assert!(x.contains("rackside.ip=10.78.0.11/24 rackside.name=web1 rackside.disk=1"));
        assert!(x.contains("<disk type='network'"), "{x}");
        assert!(x.contains(
            "<source protocol='nbd' name='web1'><host name='10.77.0.250' port='10809'/>"
        ));
        assert!(x.contains("<target dev='vda' bus='virtio'/>"));
        assert_eq!(g.local_disk_in_host(), None);
    }

    #[test]
    fn macs_are_stable_distinct_and_unicast() {
        assert_eq!(mac_for("web1"), mac_for("web1"));
        assert_ne!(mac_for("web1"), mac_for("web2"));
        let m = mac_for("x\r\u{9b}");
        assert!(m.starts_with("52:54:00:") && m.len() == 17, "{m}");
    }

    #[test]
    fn disk_lines_are_read_from_the_serial_log() {
        let log = "rackside-tick 3\nrackside-disk 4\r\nrackside-disk 5\nrackside-tick 4\nrackside-disk-LOST expected 5 found \n";
        assert_eq!(last_disk(log), Some(5));
        assert_eq!(
            disk_faults(log),
            vec!["rackside-disk-LOST expected 5 found"]
        );
        assert_eq!(last_disk("rackside-tick 1"), None);
        assert!(disk_faults("rackside-disk 1\n").is_empty());
    }

    #[test]
    fn the_init_loads_modules_in_order() {
        let init = init_script();
        assert!(init.contains("for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net virtio_blk pvpanic pvpanic-pci; do"), "{init}");
        assert_eq!(
            modules_dir(Path::new("/boot/vmlinuz-6.1.0-57-cloud-amd64")),
            Some(PathBuf::from("/lib/modules/6.1.0-57-cloud-amd64"))
        );
    }

    #[test]
    fn odd_names_are_escaped_and_get_plain_files() {
        let mut g = GuestSpec::new("x\r<a>'\u{9b}", 16);
        g.disk = Some(GuestDisk::Local { mib: 8 });
        let x = g.domain_xml(Path::new("/k"), Path::new("/i"), None);
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
        assert!(disk.ends_with(".qcow2") && disk.is_ascii(), "{disk}");
        assert!(x.contains(&format!("<source file='{disk}'/>")), "{x}");
        assert!(x.contains("type='qcow2'"), "{x}");
    }
}
