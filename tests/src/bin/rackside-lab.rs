//! `rackside-lab`: bring the lab up and down, look inside it, run its smoke
//! scenario. Thin: everything lives in the library the tests use too.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rackside_lab::probe::{Probe, ProbeTarget};
use rackside_lab::{lab, smoke, GuestDisk, GuestSpec, Lab, LabSpec};

#[derive(Debug, Parser)]
#[command(
    name = "rackside-lab",
    version,
    about = "A multi-host libvirt lab on one machine (root only)"
)]
struct Cli {
    /// Lab name: several labs may run side by side.
    #[arg(long, global = true, default_value = "lab")]
    name: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Bring a lab up and leave it running (clears an earlier one first).
    Up {
        #[arg(long, default_value_t = 3)]
        hosts: usize,
        /// Memory a host shows, e.g. `--mem hb=2048` (repeatable).
        #[arg(long, value_parser = parse_mem)]
        mem: Vec<(String, u64)>,
    },
    /// Tear a lab down (`--all`: every lab on this machine).
    Down {
        #[arg(long)]
        all: bool,
    },
    /// Print the running lab's description (JSON).
    Status,
    /// Run a command inside a host: `rackside-lab exec ha -- virsh list`.
    Exec {
        host: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// virsh against a host's libvirtd from outside the lab.
    Virsh {
        host: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Define and start a workload guest on a host.
    Guest {
        host: String,
        guest: String,
        /// MiB of random data the guest holds.
        #[arg(long, default_value_t = 64)]
        fill: u64,
        #[arg(long)]
        mem: Option<u64>,
        /// Address on the guests' network (a NIC on the host's brvm),
        /// e.g. 10.78.0.11.
        #[arg(long)]
        addr: Option<std::net::Ipv4Addr>,
        /// A virtio disk: `shared` (NBD from the lab's storage) or `local`
        /// (qcow2 in the host's images directory).
        #[arg(long)]
        disk: Option<DiskKind>,
        #[arg(long, default_value_t = 16)]
        disk_mib: u64,
    },
    /// From the lab's client namespace: ping each guest every 20 ms and
    /// hold a TCP echo connection to it, then fetch its page; print what
    /// was seen as JSON. `rackside-lab probe web1=10.78.0.11 --seconds 30`
    Probe {
        #[arg(value_parser = parse_target, required = true)]
        targets: Vec<(String, std::net::Ipv4Addr)>,
        /// Stop after this long (default: when stdin gives a line or ends).
        #[arg(long)]
        seconds: Option<u64>,
        /// Probe from this network namespace instead of a lab's client
        /// namespace (no lab needed: the rack test's client).
        #[arg(long)]
        netns: Option<String>,
    },
    /// Write the workload guest's initramfs to OUT (from /bin/busybox and
    /// the modules of the newest Debian cloud kernel in /boot) and print
    /// that kernel's path: the guest for tests outside a lab.
    Initramfs { out: std::path::PathBuf },
    /// Cut (`down`) or restore (`up`) a host's network link.
    Link { host: String, state: LinkState },
    /// The main job on the lab, as the engineer at the rack sees it.
    Demo {
        /// The rackside-agent binary.
        #[arg(long, default_value = "target/debug/rackside-agent")]
        agent: std::path::PathBuf,
    },
    /// The agent's cost at rest and the size and speed of its answers.
    BenchConsole {
        /// The rackside-agent binary.
        #[arg(long, default_value = "target/release/rackside-agent")]
        agent: std::path::PathBuf,
        /// Seconds of idle polling to measure.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
    /// Emptying a host of 4 guests, shared then local disks: a sequential
    /// virsh loop, two parallel virsh loops and rackside, with the wall time
    /// and what the guests' clients saw.
    BenchEvacuate {
        #[arg(long, default_value = "target/release/rackside-agent")]
        agent: std::path::PathBuf,
        /// MiB of random data per guest.
        #[arg(long, default_value_t = 32)]
        fill: u64,
        /// MiB of each guest's disk.
        #[arg(long, default_value_t = 16)]
        disk_mib: u64,
    },
    /// Two hosts, one guest, a live migration checked end to end.
    Smoke {
        #[arg(long, default_value_t = 64)]
        fill: u64,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DiskKind {
    Shared,
    Local,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LinkState {
    Up,
    Down,
}

fn parse_mem(s: &str) -> Result<(String, u64), String> {
    let (h, m) = s.split_once('=').ok_or("expected HOST=MIB")?;
    let m = m
        .parse()
        .map_err(|_| format!("{m:?} is not a number of MiB"))?;
    Ok((h.to_owned(), m))
}

fn parse_target(s: &str) -> Result<(String, std::net::Ipv4Addr), String> {
    let (g, a) = s.split_once('=').ok_or("expected GUEST=ADDRESS")?;
    let a = a
        .parse()
        .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
    Ok((g.to_owned(), a))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprint!("rackside-lab: error: {e}");
            let mut src = e.source();
            while let Some(s) = src {
                eprint!(": {s}");
                src = s.source();
            }
            eprintln!();
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match cli.cmd {
        Cmd::Up { hosts, mem } => {
            let mut spec = LabSpec::new(&cli.name, hosts);
            for (h, m) in mem {
                if !spec.hosts.iter().any(|x| x.name == h) {
                    return Err(format!("--mem names unknown host {h:?}").into());
                }
                spec = spec.with_mem(&h, m);
            }
            let desc = Lab::up(&spec)?.detach();
            for h in &desc.hosts {
                println!(
                    "{:<4} {:<12} {:<30} {}",
                    h.name,
                    h.addr,
                    h.uri,
                    h.root.display()
                );
            }
            println!(
                "lab {:?} is up; `rackside-lab exec HOST -- CMD` runs inside a host",
                desc.name
            );
        }
        Cmd::Down { all } => {
            if all {
                lab::clear_all()?;
            } else {
                match Lab::attach(&cli.name) {
                    Ok(l) => {
                        let desc = l.detach();
                        lab::teardown(&desc)?;
                    }
                    Err(_) => lab::clear(&cli.name)?,
                }
            }
        }
        Cmd::Status => {
            let l = Lab::attach(&cli.name)?;
            println!("{}", serde_json::to_string_pretty(l.desc())?);
        }
        Cmd::Exec { host, cmd } => {
            let l = Lab::attach(&cli.name)?;
            let status = l.exec(&host, &cmd[0])?.args(&cmd[1..]).status()?;
            return Ok(ExitCode::from(status.code().unwrap_or(1) as u8));
        }
        Cmd::Virsh { host, args } => {
            let l = Lab::attach(&cli.name)?;
            let uri = l.host(&host)?.local_uri.clone();
            let status = std::process::Command::new("virsh")
                .args(["-c", &uri])
                .args(&args)
                .status()?;
            return Ok(ExitCode::from(status.code().unwrap_or(1) as u8));
        }
        Cmd::Guest {
            host,
            guest,
            fill,
            mem,
            addr,
            disk,
            disk_mib,
        } => {
            let l = Lab::attach(&cli.name)?;
            let mut spec = GuestSpec::new(&guest, fill);
            if let Some(m) = mem {
                spec.mem_mib = m;
            }
            spec.net_addr = addr;
            spec.disk = disk.map(|d| match d {
                DiskKind::Shared => GuestDisk::Shared { mib: disk_mib },
                DiskKind::Local => GuestDisk::Local { mib: disk_mib },
            });
            let tick = l.start_guest(&host, &spec)?;
            println!("{guest} running on {host} (tick {tick})");
        }
        Cmd::Probe {
            targets,
            seconds,
            netns,
        } => {
            let netns = match netns {
                Some(n) => n,
                None => Lab::attach(&cli.name)?
                    .desc()
                    .guest_net
                    .client_netns
                    .clone(),
            };
            let targets: Vec<ProbeTarget> = targets
                .into_iter()
                .map(|(guest, addr)| ProbeTarget { guest, addr })
                .collect();
            let probe = Probe::start(&netns, &targets)?;
            match seconds {
                Some(s) => std::thread::sleep(std::time::Duration::from_secs(s)),
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                }
            }
            println!("{}", serde_json::to_string_pretty(&probe.finish())?);
        }
        Cmd::Initramfs { out } => {
            let kernel = rackside_lab::guest::find_kernel()?;
            rackside_lab::guest::build_initramfs(
                std::path::Path::new("/bin/busybox"),
                &kernel,
                &out,
            )?;
            println!("{}", kernel.display());
        }
        Cmd::Link { host, state } => {
            let l = Lab::attach(&cli.name)?;
            l.set_link(&host, matches!(state, LinkState::Up))?;
        }
        Cmd::Demo { agent } => {
            rackside_lab::demo::run(&agent, &mut std::io::stdout())?;
        }
        Cmd::BenchConsole { agent, seconds } => {
            rackside_lab::bench::console(
                &agent,
                std::time::Duration::from_secs(seconds),
                &mut std::io::stdout(),
            )?;
        }
        Cmd::BenchEvacuate {
            agent,
            fill,
            disk_mib,
        } => {
            rackside_lab::bench::evacuate(&agent, fill, disk_mib, &mut std::io::stdout())?;
        }
        Cmd::Smoke { fill } => {
            let l = Lab::up(&LabSpec::new(&cli.name, 2))?;
            let obs = smoke::run(&l, "ha", "hb", "smoke1", fill, &mut std::io::stdout())?;
            l.teardown()?;
            let ok = obs.state_on_dst.as_deref() == Some("running")
                && !obs.defined_on_src
                && obs.qemu_on_src == 0
                && obs.tick_later.is_some();
            println!("smoke: {}", if ok { "PASS" } else { "FAIL" });
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn mem_flag_parses() {
        assert_eq!(parse_mem("hb=2048"), Ok(("hb".into(), 2048)));
        assert!(parse_mem("hb").is_err());
        assert!(parse_mem("hb=lots").is_err());
        assert_eq!(
            parse_target("web1=10.78.0.11"),
            Ok(("web1".into(), std::net::Ipv4Addr::new(10, 78, 0, 11)))
        );
        assert!(parse_target("web1").is_err());
        assert!(parse_target("web1=10.78.0").is_err());
    }
}
