//! Command-line arguments of `rackside-agent`.

use std::path::PathBuf;

use clap::Parser;

pub const DEFAULT_CONFIG: &str = "/etc/rackside/agent.toml";

#[derive(Debug, Parser)]
#[command(
    name = "rackside-agent",
    version,
    about = "Evacuate this KVM host over its serial management line",
    long_about = "rackside-agent serves the host's serial/USB management lines: it reports \
                  VM state and resource use, and moves VMs to peer hosts by libvirt \
                  peer-to-peer live migration, ending every evacuation with SAFE or NOT \
                  SAFE TO POWER OFF."
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
