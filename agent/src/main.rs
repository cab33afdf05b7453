use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rackside_agent::cli::{Cli, Cmd};
use rackside_agent::config::Config;
use rackside_agent::{auth, console, daemon};

/// Like `println!`, but a closed stdout is an error to return, not a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // `rackside-agent console ... | head`: the reader left, nothing to
        // say and nobody to say it to.
        Err(e) if broken_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain, once: inner messages do not repeat outer ones.
            let mut msg = format!("rackside-agent: error: {e}");
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

/// The PIN for `hash-pin`: from a terminal, asked twice without echo (it
/// must not stay on the screen); otherwise the first line of stdin.
fn read_pin_to_hash() -> Result<String, Box<dyn std::error::Error>> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    let line = || -> std::io::Result<String> {
        let mut s = String::new();
        stdin.lock().read_line(&mut s)?;
        Ok(s.trim_end_matches(['\r', '\n']).to_owned())
    };
    if !stdin.is_terminal() {
        return Ok(line()?);
    }
    let saved = tcgetattr(&stdin)?;
    restore_echo_on_signals(libc::termios::from(saved.clone()));
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
    let ask = |prompt: &str| -> std::io::Result<String> {
        eprint!("{prompt}");
        let pin = line();
        // The Enter was not echoed either.
        eprintln!();
        pin
    };
    let first = ask("PIN: ");
    let second = first.as_ref().ok().map(|_| ask("PIN again: "));
    tcsetattr(&stdin, SetArg::TCSANOW, &saved)?;
    let (first, second) = (first?, second.transpose()?.unwrap_or_default());
    if first != second {
        return Err("the two PINs differ; nothing was hashed".into());
    }
    Ok(first)
}

/// The terminal's settings from before `hash-pin` turned echo off.
static SAVED_TERMIOS: std::sync::OnceLock<libc::termios> = std::sync::OnceLock::new();

extern "C" fn restore_and_exit(sig: libc::c_int) {
    if let Some(t) = SAVED_TERMIOS.get() {
        // SAFETY: tcsetattr and _exit are async-signal-safe; `t` points at
        // a value set before the handler was installed and never moved.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t) };
    }
    // SAFETY: as above.
    unsafe { libc::_exit(128 + sig) };
}

/// Ctrl-C (or a hangup) while the PIN is asked must not leave the
/// person's terminal without echo: put it back, then exit as killed.
fn restore_echo_on_signals(saved: libc::termios) {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let _ = SAVED_TERMIOS.set(saved);
    let action = SigAction::new(
        SigHandler::Handler(restore_and_exit),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: the handler only calls async-signal-safe functions.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

/// Whether a closed stdout is behind `e` (anywhere in its chain).
fn broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("RACKSIDE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journal = std::path::Path::new("/run/systemd/journal/socket").exists()
        && std::env::var_os("JOURNAL_STREAM").is_some();
    if journal {
        if let Ok(layer) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .init();
            return;
        }
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
}

fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match cli.cmd {
        None => {
            let cfg = Config::load(&cli.config)?;
            init_logging();
            daemon::run(cfg)?;
        }
        Some(Cmd::CheckConfig) => {
            let cfg = Config::load(&cli.config)?;
            out!(
                "{}: valid (host {}, {} line(s), {} peer(s), PIN {})",
                cli.config.display(),
                cfg.host_name(),
                cfg.console.len(),
                cfg.peer.len(),
                if cfg.auth.pin_hash.is_some() {
                    "set"
                } else {
                    "not set"
                }
            )?;
        }
        Some(Cmd::Completions { shell }) => {
            use clap::CommandFactory;
            // Into a buffer first: generate() panics when it cannot write.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "rackside-agent", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)?;
        }
        Some(Cmd::HashPin) => {
            let pin = read_pin_to_hash()?;
            out!("{}", auth::hash_pin(&pin)?)?;
        }
        Some(Cmd::Console {
            path,
            baud,
            timeout,
            raw,
            command,
        }) => {
            if command.is_empty() {
                console::client::interactive(&path, baud)?;
                return Ok(ExitCode::SUCCESS);
            }
            let resp = console::client::request(
                &path,
                baud,
                &command.join(" "),
                Duration::from_secs(timeout),
            )?;
            let ok = resp["ok"] == serde_json::json!(true);
            if raw {
                out!("{resp}")?;
            } else if ok {
                out!("{}", serde_json::to_string_pretty(&resp["data"])?)?;
            } else {
                eprintln!(
                    "error: {}: {}",
                    resp["error"]["code"].as_str().unwrap_or("?"),
                    resp["error"]["message"].as_str().unwrap_or("?")
                );
            }
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
