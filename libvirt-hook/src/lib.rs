//! rackside-hook: installed in /etc/libvirt/hooks/qemu.d/. libvirt runs it
//! synchronously inside its own locks, as `HOOK VM OP SUBOP EXTRA` with
//! the domain XML on stdin, so it never blocks, never calls libvirt and
//! never fails a guest by accident: only a deliberate refusal of an
//! incoming migration exits non-zero.
//!
//! Modules, one job each: [`args`] (argv), [`input`] (stdin),
//! [`xml`] (domain facts), [`state`] (the agent's state file),
//! [`admission`] (the pure decision and promise list), [`promises`] (the
//! locked promise file), [`policy`] (rules and nft rendering), [`nft`]
//! (running nft), [`notify`] (the datagram to the agent), [`hook`] (which
//! stage does what).

use std::error::Error;
use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub mod admission;
pub mod args;
pub mod hook;
pub mod input;
pub mod nft;
pub mod notify;
pub mod policy;
pub mod promises;
pub mod state;
pub mod xml;

pub const USAGE: &str = "rackside-hook VM OPERATION SUBOP EXTRA  (run by libvirt from /etc/libvirt/hooks/qemu.d/, domain XML on stdin)

Environment: RACKSIDE_RUN_DIR (default /run/rackside), RACKSIDE_NFT (default nft),
RACKSIDE_HOOK_FORCE_QEMU=1 (act as a qemu hook whatever argv[0] is; for tests).";

pub const DEFAULT_RUN_DIR: &str = "/run/rackside";

/// An error and its sources on one line.
pub fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// What the process environment says.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub force_qemu: bool,
    pub run_dir: Option<PathBuf>,
    pub nft: Option<PathBuf>,
}

impl Env {
    pub fn from_process() -> Env {
        let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        Env {
            force_qemu: std::env::var_os("RACKSIDE_HOOK_FORCE_QEMU").is_some_and(|v| v == "1"),
            run_dir: non_empty("RACKSIDE_RUN_DIR").map(PathBuf::from),
            nft: non_empty("RACKSIDE_NFT").map(PathBuf::from),
        }
    }
}

/// Set while handling `migrate`: there stderr becomes part of the error
/// the source host sees, so even a panic stays silent.
static QUIET: AtomicBool = AtomicBool::new(false);

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".to_owned())
}

/// The whole program: returns the exit code. `argv` includes argv[0].
pub fn run(
    argv: &[OsString],
    env: &Env,
    stdin: impl Read,
    stdin_is_terminal: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let argv0 = argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rest: Vec<String> = argv
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let call = match args::parse(&argv0, &rest, env.force_qemu) {
        args::Invocation::Help => {
            let _ = writeln!(stdout, "{USAGE}");
            return 0;
        }
        args::Invocation::Version => {
            let _ = writeln!(stdout, "rackside-hook {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        args::Invocation::Ignore => {
            // Whoever runs us may still be writing: never leave them on a
            // full pipe. A person at a terminal gets no wait.
            if !stdin_is_terminal {
                let _ = input::read_capped(stdin, 0);
            }
            return 0;
        }
        args::Invocation::Hook(call) => call,
    };
    let migrate = call.op == "migrate";
    QUIET.store(migrate, Ordering::Relaxed);
    let xml = input::read_capped(stdin, input::MAX_XML_BYTES);

    let run_dir = env
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
    let host = host_name();
    let ctx = hook::Context {
        run_dir: &run_dir,
        host: &host,
        now_unix: now_unix(),
    };
    let mut fw = hook::NftBinary {
        program: env.nft.clone().unwrap_or_else(|| PathBuf::from("nft")),
    };
    let out = hook::handle(&ctx, &mut fw, &call, xml);
    if !migrate {
        for line in &out.log {
            let _ = writeln!(stderr, "{line}");
        }
    }
    match out.refusal {
        Some(r) => {
            let _ = writeln!(stderr, "{r}");
            1
        }
        None => 0,
    }
}

/// [`run`] on the real process, with any panic turned into exit 0.
pub fn run_process() -> i32 {
    std::panic::set_hook(Box::new(|info| {
        if !QUIET.load(Ordering::Relaxed) {
            let _ = writeln!(std::io::stderr(), "rackside-hook: internal error: {info}");
        }
    }));
    std::panic::catch_unwind(|| {
        let argv: Vec<OsString> = std::env::args_os().collect();
        let stdin = std::io::stdin();
        let is_tty = stdin.is_terminal();
        run(
            &argv,
            &Env::from_process(),
            stdin.lock(),
            is_tty,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )
    })
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn help_and_version_go_to_stdout() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(
            run(
                &argv(&["h", "--help"]),
                &Env::default(),
                &b""[..],
                false,
                &mut out,
                &mut err
            ),
            0
        );
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("rackside-hook VM"));
        let mut out = Vec::new();
        assert_eq!(
            run(
                &argv(&["h", "--version"]),
                &Env::default(),
                &b""[..],
                false,
                &mut out,
                &mut err
            ),
            0
        );
        assert!(err.is_empty());
    }

    #[test]
    fn refusal_prints_one_line_and_nothing_on_stdout() {
        let d = std::env::temp_dir().join(format!("rackside-hook-lib-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(state::FILE),
            format!(
                r#"{{"state":"maintenance","maintenance":true,"mem_total_mib":1,"mem_committed_mib":0,"mem_reserve_mib":0,"updated_unix":{}}}"#,
                now_unix()
            ),
        )
        .unwrap();
        let env = Env {
            force_qemu: true,
            run_dir: Some(d.clone()),
            nft: None,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(
            &argv(&["h", "a", "migrate", "begin", "-"]),
            &env,
            &b"junk"[..],
            false,
            &mut out,
            &mut err,
        );
        assert_eq!(code, 1);
        assert!(out.is_empty());
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.ends_with("is in maintenance; not accepting VM\n") && err.lines().count() == 1,
            "{err}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn chain_joins_sources() {
        let e = input::InputError::Read(std::io::Error::other("boom"));
        assert_eq!(chain(&e), "cannot read the domain XML: boom");
    }
}
