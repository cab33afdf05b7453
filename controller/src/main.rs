//! rackside-controller: parse the arguments, run, map the outcome to an
//! exit code (0 success or SAFE, 2 NOT SAFE, 1 error).

use std::process::ExitCode;

use clap::Parser;
use rackside_controller::cli::Cli;
use rackside_controller::link::chain;
use rackside_controller::run::run;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    match run(&cli, &mut stdout, &mut stderr) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            eprintln!("rackside-controller: {}", chain(&e));
            ExitCode::from(1)
        }
    }
}
