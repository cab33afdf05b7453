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
    // Broken by hand: clap prints it as it is, and the terminal at the
    // rack is 80 columns wide.
    long_about = "rackside-agent serves the host's serial/USB management lines: it\n\
                  reports VM state and resource use, and moves VMs to peer hosts by\n\
                  libvirt peer-to-peer live migration, ending every evacuation with\n\
                  SAFE or NOT SAFE TO POWER OFF.\n\n\
                  Without a subcommand it runs the daemon in the foreground.\n\
                  man rackside-agent has the configuration, the console commands\n\
                  and the exit status."
)]
pub struct Cli {
    /// Config file
    #[arg(long, short, global = true, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Validate the configuration and exit (0: valid)
    CheckConfig,
    /// Print the argon2 hash of a PIN for [auth] pin_hash
    ///
    /// On a terminal it asks for the PIN twice without echo; otherwise it
    /// reads the first line of standard input. A PIN is 4 to 64 characters,
    /// no spaces or control characters.
    #[command(verbatim_doc_comment)]
    HashPin,
    /// Print a shell completion script (bash, zsh, fish, ...)
    Completions { shell: clap_complete::Shell },
    /// Send one command over a line, or relay this terminal to it
    Console {
        /// The line: serial device or pty
        path: PathBuf,
        /// The line's speed
        #[arg(long, default_value_t = 115_200)]
        baud: u32,
        /// Seconds to wait for the answer
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        timeout: u64,
        /// Print the whole JSON response, not only its data
        #[arg(long)]
        raw: bool,
        /// The command as typed at the prompt, e.g. locate web1
        #[arg(trailing_var_arg = true)]
        command: Vec<String>,
    },
}

#[cfg(test)]
#[path = "cli_man_tests.rs"]
mod man_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// `--help` and `-h` of every subcommand fit the 80-column terminal
    /// at the rack (clap prints them unwrapped).
    #[test]
    fn help_fits_80_columns() {
        fn check(cmd: &mut clap::Command, path: &str) {
            for help in [cmd.render_help(), cmd.render_long_help()] {
                for line in help.to_string().lines() {
                    assert!(line.chars().count() <= 80, "{path}: {line:?}");
                }
            }
            for sub in cmd.get_subcommands_mut() {
                let path = format!("{path} {}", sub.get_name());
                check(sub, &path);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        check(&mut cmd, "rackside-agent");
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
