//! From parsed arguments to an outcome: load the hosts, read the PIN,
//! run the command.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rackside_protocol::{Dest, Identify};

use crate::backoff::Backoff;
use crate::cli::{Cli, Cmd};
use crate::client::{ClientError, ClientOptions, Pin};
use crate::cmd::{self, evacuate::EvacuateError, Outcome};
use crate::config::{Config, ConfigError, DEFAULT_PATH};
use crate::link::Link;
use crate::out::{Format, Notes, Out};

/// The environment variable a PIN may come in.
pub const PIN_ENV: &str = "RACKSIDE_PIN";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("config")]
    Config(#[from] ConfigError),
    #[error("the screen")]
    Tui(#[from] crate::tui::TuiError),
    #[error("no hosts: give --line NAME=SPEC, or list them in {DEFAULT_PATH} (or --config)")]
    NoConfig(#[source] ConfigError),
    #[error("no host '{host}' in the config (hosts: {known})")]
    UnknownHost { host: String, known: String },
    #[error("cannot read the PIN from {path}")]
    PinFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PIN")]
    EmptyPin { path: PathBuf },
    #[error("{host}")]
    Client {
        host: String,
        #[source]
        source: ClientError,
    },
    #[error("{host}")]
    Evacuate {
        host: String,
        #[source]
        source: EvacuateError,
    },
}

fn load_config(cli: &Cli) -> Result<Config, RunError> {
    if !cli.lines.is_empty() {
        return Ok(Config::from_args(&cli.lines, cli.baud)?);
    }
    match &cli.config {
        Some(path) => Ok(Config::load(path)?),
        None => Config::load(Path::new(DEFAULT_PATH)).map_err(|e| match e {
            ConfigError::Read { .. } => RunError::NoConfig(e),
            e => RunError::Config(e),
        }),
    }
}

fn read_pin(cli: &Cli) -> Result<Option<Pin>, RunError> {
    if let Some(path) = &cli.pin_file {
        let text = std::fs::read_to_string(path).map_err(|source| RunError::PinFile {
            path: path.clone(),
            source,
        })?;
        return Pin::new(&text)
            .map(Some)
            .ok_or_else(|| RunError::EmptyPin { path: path.clone() });
    }
    Ok(std::env::var(PIN_ENV).ok().and_then(|p| Pin::new(&p)))
}

fn link_for(config: &Config, host: &str, options: ClientOptions) -> Result<Link, RunError> {
    let found = config.host(host).ok_or_else(|| RunError::UnknownHost {
        host: host.to_owned(),
        known: config
            .hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    Ok(Link::new(found, options, Backoff::DEFAULT))
}

/// Runs the command; results go to `stdout`, notes about lines to `stderr`.
pub fn run(cli: &Cli, stdout: &mut dyn Write, stderr: &mut dyn Write) -> Result<Outcome, RunError> {
    let config = load_config(cli)?;
    let options = ClientOptions {
        timeout: Duration::from_secs(cli.timeout),
        pin: read_pin(cli)?,
    };
    let format = if cli.json { Format::Json } else { Format::Text };
    let mut out = Out::new(format, stdout);
    let mut notes = Notes::new(stderr);
    let mut notify = |host: &str, note| notes.line(host, note);
    let Some(command) = &cli.command else {
        crate::tui::run(&config, &options)?;
        return Ok(Outcome::Success);
    };
    match command {
        Cmd::Status => Ok(cmd::status::run(&config, &options, &mut out)),
        Cmd::Locate { vm } => Ok(cmd::locate::run(&config, &options, vm, &mut out)),
        Cmd::Identify { host, off, seconds } => {
            let mut link = link_for(&config, host, options)?;
            let what = match (off, seconds) {
                (true, _) => Identify::Off,
                (false, Some(s)) => Identify::Seconds(*s),
                (false, None) => Identify::On,
            };
            cmd::identify::run(&mut link, what, &mut out, &mut notify).map_err(|source| {
                RunError::Client {
                    host: host.clone(),
                    source,
                }
            })
        }
        // Handled by main, before any config is read.
        Cmd::Completions { .. } => Ok(Outcome::Success),
        Cmd::Evacuate {
            host,
            poweroff,
            dest,
            wait,
        } => {
            let mut link = link_for(&config, host, options)?;
            let options = cmd::evacuate::Options {
                dest: dest.clone().map_or(Dest::Auto, Dest::Host),
                poweroff: *poweroff,
                wait: Duration::from_secs(*wait),
            };
            cmd::evacuate::run(&mut link, &options, &mut out, &mut notify).map_err(|source| {
                RunError::Evacuate {
                    host: host.clone(),
                    source,
                }
            })
        }
    }
}
