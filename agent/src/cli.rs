//! Command-line arguments of `rackside-agent`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The file rackside-hook reads `[state] run_dir` from, too.
pub const DEFAULT_CONFIG: &str = rackside_contract::DEFAULT_CONFIG;

#[derive(Debug, Parser)]
#[command(
    name = "rackside-agent",
    version,
    about = "Evacuate this KVM host over its serial management line",
    long_about = "rackside-agent serves the host's serial/USB management lines: it reports \
                  VM state and resource use, and moves VMs to peer hosts by libvirt \
                  peer-to-peer live migration, ending every evacuation with SAFE or NOT \
                  SAFE TO POWER OFF.\n\nWithout a subcommand it runs the daemon in the foreground."
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Validate the configuration and exit (0: valid).
    CheckConfig,
    /// Print the argon2 hash of a PIN for [auth] pin_hash. On a terminal it
    /// asks twice without echo; otherwise it reads the first line of stdin.
    HashPin,
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions { shell: clap_complete::Shell },
    /// Talk to an agent over a line: one command, or interactive without one.
    Console {
        /// The line: serial device or pty.
        path: PathBuf,
        #[arg(long, default_value_t = 115_200)]
        baud: u32,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Print the whole JSON response line instead of its data.
        #[arg(long)]
        raw: bool,
        /// The command, as typed at the prompt (e.g. `status`, `locate web1`).
        #[arg(trailing_var_arg = true)]
        command: Vec<String>,
    },
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
    fn parses_the_documented_forms() {
        let c = Cli::try_parse_from(["rackside-agent", "--config", "/x.toml"]).unwrap();
        assert!(c.cmd.is_none());
        let c =
            Cli::try_parse_from(["rackside-agent", "check-config", "--config", "/x.toml"]).unwrap();
        assert!(matches!(c.cmd, Some(Cmd::CheckConfig)));
        let c = Cli::try_parse_from([
            "rackside-agent",
            "console",
            "/dev/ttyUSB0",
            "locate",
            "web1",
        ])
        .unwrap();
        match c.cmd {
            Some(Cmd::Console { command, .. }) => assert_eq!(command, ["locate", "web1"]),
            other => panic!("{other:?}"),
        }
    }
}
