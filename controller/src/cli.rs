//! The command line (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success; for evacuate: SAFE TO POWER OFF
  2  evacuate: NOT SAFE TO POWER OFF (VMs are still on the host)
  1  an error: a bad config, a line that is down, a refused command, no
     verdict in time; for status: a host could not be asked; for locate:
     the VM was found nowhere

Lines: a device path (/dev/serial/by-id/..., a pty), tcp://HOST:PORT (a
console server's raw port) or telnet://HOST:PORT. A command that needs a
login on an agent with a PIN logs in with the PIN from --pin-file, else
from the environment variable RACKSIDE_PIN.";

#[derive(Debug, Parser)]
#[command(
    name = "rackside-controller",
    version,
    about = "Drive rackside agents over their management lines: the rack on screen, or status, evacuate, locate, identify",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// The hosts and their lines (TOML, [[host]] name/line/baud); not read
    /// when --line is given
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// A host and its line instead of a config file, e.g.
    /// ha=/dev/ttyUSB0 or hb=telnet://10.0.0.5:7002 (repeatable)
    #[arg(long = "line", global = true, value_name = "NAME=SPEC")]
    pub lines: Vec<String>,

    /// Speed of the serial lines given by --line (default 115200)
    #[arg(long, global = true, value_name = "BAUD")]
    pub baud: Option<u32>,

    /// One JSON value a line on stdout instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// Seconds to wait for each answer, and for an agent to wake
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,

    /// A file holding the PIN for agents that ask for a login
    #[arg(long, global = true, value_name = "PATH")]
    pub pin_file: Option<PathBuf>,

    /// Without a command: the rack on screen (keyboard only; `?` or the
    /// bottom line lists the keys)
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Every host: its line up or down, state, health, VMs, CPU, memory
    Status,
    /// Move every VM off HOST and wait for the verdict (exit 0 SAFE, 2 NOT SAFE)
    Evacuate {
        /// The host to empty, as named in the config
        host: String,
        /// Switch the host off after a SAFE verdict (the agent's config must allow it)
        #[arg(long)]
        poweroff: bool,
        /// Move the VMs to this peer only (default: the agent chooses)
        #[arg(long, value_name = "PEER")]
        dest: Option<String>,
        /// Seconds to wait for the verdict, line drops included
        #[arg(long, value_name = "SECS", default_value_t = 3600,
              value_parser = clap::value_parser!(u64).range(1..))]
        wait: u64,
    },
    /// Which host a VM is on (every host is asked)
    Locate {
        /// The VM's name
        vm: String,
    },
    /// Blink HOST's locator (on by default)
    Identify {
        /// The host, as named in the config
        host: String,
        /// Switch it off
        #[arg(long, conflicts_with = "seconds")]
        off: bool,
        /// On for this many seconds (1 to 86400)
        #[arg(long, value_name = "SECS",
              value_parser = clap::value_parser!(u32).range(1..=86_400))]
        seconds: Option<u32>,
    },
    /// Print a shell completion script (bash, zsh, fish, ...)
    Completions { shell: clap_complete::Shell },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_parser_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = Cli::try_parse_from([
            "rackside-controller",
            "evacuate",
            "ha",
            "--poweroff",
            "--line",
            "ha=/dev/ttyUSB0",
            "--json",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.lines, ["ha=/dev/ttyUSB0"]);
        assert!(matches!(
            cli.command,
            Some(Cmd::Evacuate { poweroff: true, .. })
        ));
    }

    #[test]
    fn help_documents_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("2  evacuate: NOT SAFE"), "{help}");
    }
}
