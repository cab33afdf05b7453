//! One lab host: its private directories and config, the anchor process
//! that holds its namespaces, and its libvirtd.
//!
//! The anchor (`sleep infinity` after the mounts are made) owns the host's
//! mount and UTS namespaces, so libvirtd can be stopped and started again
//! (as tests of the agent need) without losing the host's view of the world.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd::{self, CmdError};
use crate::desc::HostDesc;
use crate::meminfo;
use crate::names::PRIVATE_DIRS;
use crate::tls::{self, Ca, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("could not prepare {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start the anchor of host {host}")]
    Anchor {
        host: String,
        #[source]
        source: CmdError,
    },
    #[error("could not make the migration certificates of host {host}")]
    Certs {
        host: String,
        #[source]
        source: TlsError,
    },
    #[error("the anchor of host {host} did not come up; see {log}")]
    AnchorTimeout { host: String, log: PathBuf },
    #[error("could not start libvirtd on host {host}")]
    StartLibvirtd {
        host: String,
        #[source]
        source: CmdError,
    },
    #[error("libvirtd on host {host} did not answer within {secs} s; last log lines:\n{log_tail}")]
    LibvirtdTimeout {
        host: String,
        secs: u64,
        log_tail: String,
    },
    #[error("libvirtd on host {host} did not stop")]
    StopLibvirtd { host: String },
    #[error("could not set up the default storage pool on host {host}")]
    Pool {
        host: String,
        #[source]
        source: CmdError,
    },
}

fn prepare_err(path: &Path) -> impl FnOnce(std::io::Error) -> HostError + '_ {
    move |source| HostError::Prepare {
        path: path.to_owned(),
        source,
    }
}

/// A fresh random UUID for the host: libvirt refuses to migrate between
/// hosts that share one.
pub fn random_uuid() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "00000000-0000-4000-8000-000000000001".to_owned())
}

pub fn libvirtd_conf(host_uuid: &str) -> String {
    format!(
        "# rackside lab host: never use these settings outside the lab\n\
         listen_tls = 0\n\
         listen_tcp = 1\n\
         auth_tcp = \"none\"\n\
         auth_unix_rw = \"none\"\n\
         host_uuid = \"{host_uuid}\"\n\
         log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n\
         keepalive_interval = 5\n\
         keepalive_count = 5\n"
    )
}

pub fn qemu_conf(cgroups: bool, tls_dir: &Path) -> String {
    let mut s = String::from(
        "# rackside lab host\n\
         user = \"root\"\n\
         group = \"root\"\n\
         dynamic_ownership = 0\n\
         remember_owner = 0\n\
         security_driver = \"none\"\n\
         stdio_handler = \"file\"\n",
    );
    s.push_str(&tls::qemu_conf_lines(tls_dir));
    if !cgroups {
        // Machines whose cgroup tree libvirt cannot write (read-only v1
        // mounts, nested sandboxes) still run guests without cgroups.
        s.push_str("cgroup_controllers = [ ]\n");
    }
    s
}

/// Creates the host's directory tree and configuration. With `ca`, the
/// host gets migration certificates signed by it; without, an empty
/// certificate directory (libvirtd refuses to start if it is missing),
/// like a real host nobody provisioned.
pub fn prepare(
    h: &HostDesc,
    cgroups: bool,
    hook: Option<&Path>,
    ca: Option<&Ca>,
) -> Result<(), HostError> {
    for d in PRIVATE_DIRS {
        let p = h.root.join(d);
        fs::create_dir_all(&p).map_err(prepare_err(&p))?;
    }
    let etc = h.root.join("etc/libvirt");
    // Start from the packaged configuration, then make it a lab host's.
    cmd::run(Command::new("cp").arg("-a").arg("/etc/libvirt/.").arg(&etc)).map_err(|e| {
        HostError::Prepare {
            path: etc.clone(),
            source: std::io::Error::other(e.to_string()),
        }
    })?;
    for stale in ["qemu/networks/autostart", "qemu/autostart", "hooks"] {
        let p = etc.join(stale);
        if p.exists() {
            fs::remove_dir_all(&p).map_err(prepare_err(&p))?;
        }
    }
    let qemu_d = etc.join("hooks/qemu.d");
    fs::create_dir_all(&qemu_d).map_err(prepare_err(&qemu_d))?;
    if let Some(hook) = hook {
        // libvirt finds hooks when it starts: installed before libvirtd.
        let dest = qemu_d.join("rackside-hook");
        fs::copy(hook, &dest).map_err(prepare_err(&dest))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
            .map_err(prepare_err(&dest))?;
    }
    let conf = etc.join("libvirtd.conf");
    fs::write(&conf, libvirtd_conf(&h.host_uuid)).map_err(prepare_err(&conf))?;
    let qconf = etc.join("qemu.conf");
    fs::write(&qconf, qemu_conf(cgroups, &h.tls_dir())).map_err(prepare_err(&qconf))?;
    let pki = h.tls_dir();
    fs::create_dir_all(&pki).map_err(prepare_err(&pki))?;
    if let Some(ca) = ca {
        tls::make_host_certs(ca, &pki, &h.name, &h.addr).map_err(|source| HostError::Certs {
            host: h.name.clone(),
            source,
        })?;
    }
    fs::create_dir_all(h.root.join("var/log/libvirt/qemu"))
        .map_err(prepare_err(&h.root.join("var/log/libvirt/qemu")))?;

    if let Some(mib) = h.mem_mib {
        let real =
            fs::read_to_string("/proc/meminfo").map_err(prepare_err(Path::new("/proc/meminfo")))?;
        let proc = meminfo::proc_meminfo(&real, mib);
        let p = h.root.join("meminfo");
        fs::write(&p, &proc).map_err(prepare_err(&p))?;
        let n = h.root.join("node0-meminfo");
        fs::write(&n, meminfo::node_meminfo(&proc)).map_err(prepare_err(&n))?;
    }
    Ok(())
}

fn anchor_script(h: &HostDesc) -> String {
    let r = h.root.display();
    let mut s = format!("set -e\nhostname {}\n", h.name);
    for d in PRIVATE_DIRS {
        s.push_str(&format!("mkdir -p /{d}\nmount --bind {r}/{d} /{d}\n"));
    }
    // rackside-hook finds the agent's run directory in
    // /etc/rackside/agent.toml. A lab host has none (its agents use the
    // default run directory, private above), whatever this machine has;
    // where the machine has no /etc/rackside there is nothing to hide and
    // the lab does not create one.
    s.push_str(&format!(
        "if [ -d /etc/rackside ]; then mkdir -p {r}/etc/rackside; mount --bind {r}/etc/rackside /etc/rackside; fi\n"
    ));
    if h.mem_mib.is_some() {
        s.push_str(&format!("mount --bind {r}/meminfo /proc/meminfo\n"));
        s.push_str(&format!(
            "if [ -e /sys/devices/system/node/node0/meminfo ]; then mount --bind {r}/node0-meminfo /sys/devices/system/node/node0/meminfo; fi\n"
        ));
    }
    s.push_str(&format!("echo $$ > {r}/anchor.pid\nexec sleep infinity\n"));
    s
}

/// Starts the anchor: the process whose namespaces are the host.
/// Returns its pid.
pub fn start_anchor(h: &HostDesc) -> Result<i32, HostError> {
    let log = h.root.join("anchor.log");
    let out = fs::File::create(&log).map_err(prepare_err(&log))?;
    let pid_file = h.root.join("anchor.pid");
    let _ = fs::remove_file(&pid_file);
    // setsid -f: the anchor is reparented away from us, so its end never
    // leaves a zombie in a test process.
    cmd::run(
        cmd::no_inherited_fds(&mut Command::new("setsid"))
            .args(["-f", "ip", "netns", "exec", &h.netns, "unshare", "-m", "-u"])
            .args(["--propagation", "private", "sh", "-c"])
            .arg(anchor_script(h))
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(prepare_err(&log))?)
            .stderr(out),
    )
    .map_err(|source| HostError::Anchor {
        host: h.name.clone(),
        source,
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(pid) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            if is_alive(pid) {
                return Ok(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(HostError::AnchorTimeout {
        host: h.name.clone(),
        log,
    })
}

/// A command run inside the host: its network, mount and UTS namespaces.
pub fn exec(h: &HostDesc, program: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.args([
        "-t",
        &h.anchor_pid.to_string(),
        "-n",
        "-m",
        "-u",
        "--",
        program,
    ]);
    c
}

/// Runs its arguments as a child and reaps every process orphaned below
/// it, until none is left. libvirtd daemonizes each QEMU, so a QEMU is
/// reparented to the nearest subreaper, else to PID 1. libvirt ends a
/// migration (and `destroy`) by waiting until the QEMU's pid is gone, so
/// the reaper's speed is part of every move: systemd reaps at once, but
/// this machine's PID 1 reaps orphans about every 2 s, which added up to
/// 2 s to each migration and made the lab's timings noise. perl is in
/// every Debian system (perl-base is essential) and can call prctl.
fn reaper_script() -> String {
    let (sys_prctl, subreaper) = (nix::libc::SYS_prctl, nix::libc::PR_SET_CHILD_SUBREAPER);
    format!(
        r#"
syscall({sys_prctl}, {subreaper}, 1, 0, 0, 0) == 0 or die "rackside-lab reaper: prctl: $!\n";
my $pid = fork // die "rackside-lab reaper: fork: $!\n";
if ($pid == 0) {{ exec {{ $ARGV[0] }} @ARGV or die "rackside-lab reaper: $ARGV[0]: $!\n"; }}
1 while waitpid(-1, 0) > 0;
"#
    )
}

/// Starts the host's libvirtd and waits until it answers.
pub fn start_libvirtd(h: &HostDesc) -> Result<(), HostError> {
    let log = h.libvirtd_log();
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(prepare_err(&log))?;
    let pid_file = h.libvirtd_pid_file();
    let _ = fs::remove_file(&pid_file);
    cmd::run(
        cmd::no_inherited_fds(&mut Command::new("setsid"))
            .args(["-f", "perl", "-e", &reaper_script(), "--"])
            .args(["nsenter", "-t", &h.anchor_pid.to_string(), "-n", "-m", "-u"])
            .args(["--", "libvirtd", "--listen", "--pid-file"])
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(prepare_err(&log))?)
            .stderr(out),
    )
    .map_err(|source| HostError::StartLibvirtd {
        host: h.name.clone(),
        source,
    })?;
    wait_libvirtd(h, Duration::from_secs(30))
}

fn wait_libvirtd(h: &HostDesc, limit: Duration) -> Result<(), HostError> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let ok = Command::new("virsh")
            .args(["-q", "-c", &h.local_uri, "uri"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(HostError::LibvirtdTimeout {
        host: h.name.clone(),
        secs: limit.as_secs(),
        log_tail: log_tail(&h.libvirtd_log(), 15),
    })
}

/// The dir pool `default` at /var/lib/libvirt/images (the host's private
/// images directory), started and autostarted: where volumes for incoming
/// local disks are made through libvirt's storage API.
pub fn define_default_pool(h: &HostDesc) -> Result<(), HostError> {
    let virsh = |args: &[&str]| crate::virsh::run(&h.local_uri, args);
    let err = |source| HostError::Pool {
        host: h.name.clone(),
        source,
    };
    if virsh(&["pool-info", "default"]).is_err() {
        virsh(&[
            "pool-define-as",
            "default",
            "dir",
            "--target",
            "/var/lib/libvirt/images",
        ])
        .map_err(err)?;
    }
    let info = virsh(&["pool-info", "default"]).map_err(err)?;
    if crate::virsh::field(&info, "State").as_deref() != Some("running") {
        virsh(&["pool-build", "default"]).map_err(err)?;
        virsh(&["pool-start", "default"]).map_err(err)?;
    }
    virsh(&["pool-autostart", "default"]).map_err(err)?;
    Ok(())
}

pub fn libvirtd_pid(h: &HostDesc) -> Option<i32> {
    fs::read_to_string(h.libvirtd_pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Stops the host's libvirtd (SIGTERM, then SIGKILL). Guests keep running:
/// that is what a libvirtd restart on a production host looks like.
pub fn stop_libvirtd(h: &HostDesc) -> Result<(), HostError> {
    let Some(pid) = libvirtd_pid(h) else {
        return Ok(());
    };
    if terminate(pid, Duration::from_secs(15)) {
        let _ = fs::remove_file(h.libvirtd_pid_file());
        Ok(())
    } else {
        Err(HostError::StopLibvirtd {
            host: h.name.clone(),
        })
    }
}

/// SIGTERM, wait, then SIGKILL. True when the process is gone.
pub fn terminate(pid: i32, grace: Duration) -> bool {
    if !is_alive(pid) {
        return true;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !is_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// True when `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may
    // itself contain spaces or parentheses.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_carry_what_migration_needs() {
        let c = libvirtd_conf("u-1");
        assert!(c.contains("host_uuid = \"u-1\""));
        assert!(c.contains("listen_tcp = 1"));
        let pki = Path::new("/lab/hosts/ha/pki/qemu");
        assert!(qemu_conf(false, pki).contains("cgroup_controllers = [ ]"));
        assert!(!qemu_conf(true, pki).contains("cgroup_controllers"));
        assert!(qemu_conf(true, pki).contains("stdio_handler = \"file\""));
        assert!(
            qemu_conf(true, pki).contains("migrate_tls_x509_cert_dir = \"/lab/hosts/ha/pki/qemu\"")
        );
    }

    #[test]
    fn uuids_differ() {
        assert_ne!(random_uuid(), random_uuid());
    }

    #[test]
    fn this_process_is_alive_and_a_free_pid_is_not() {
        assert!(is_alive(std::process::id() as i32));
        assert!(!is_alive(i32::MAX));
    }
}
