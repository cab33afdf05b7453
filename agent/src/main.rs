use std::process::ExitCode;

use clap::Parser;
use rackside_agent::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    eprintln!(
        "rackside-agent: the daemon is not built yet (config {}); see the open issues",
        cli.config.display()
    );
    ExitCode::FAILURE
}
