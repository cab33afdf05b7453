//! rackside-controller: parse the arguments, run, map the outcome to an
//! exit code (0 success or SAFE, 2 NOT SAFE, 1 error).

use std::process::ExitCode;

use clap::Parser;
use rackside_controller::cli::{Cli, Cmd};
use rackside_controller::link::chain;
use rackside_controller::run::run;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::Completions { shell }) = cli.command {
        use clap::CommandFactory;
        // Into a buffer first: generate() panics when it cannot write.
        let mut script = Vec::new();
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "rackside-controller",
            &mut script,
        );
        return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(1),
        };
    }
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    match run(&cli, &mut stdout, &mut stderr) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            eprintln!("rackside-controller: {}", chain(&e));
            ExitCode::from(1)
        }
    }
}
