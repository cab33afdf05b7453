//! rackside-hook: installed in /etc/libvirt/hooks/qemu.d/. libvirt runs it
//! synchronously inside its own locks, as `HOOK VM OP SUBOP EXTRA` with
//! the domain XML on stdin, so it never blocks, never calls libvirt and
//! never fails a guest by accident: only a deliberate refusal of an
//! incoming migration exits non-zero.
//!
//! Modules, one job each: [`args`] (argv), [`input`] (stdin),
//! [`xml`] (domain facts), [`state`] (the agent's state file),
//! [`admission`] (the pure decision and promise list), [`promises`] (the
//! locked promise file), [`policy`] (rule, device and UUID validation),
//! [`ruleset`] (nft rendering), [`nft`]
//! (running nft), [`notify`] (the datagram to the agent), [`hook`] (which
//! stage does what).

use std::error::Error;
use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rackside_contract::run_dir::RunDirError;
use rackside_contract::DEFAULT_CONFIG;

pub mod admission;
pub mod args;
pub mod hook;
pub mod input;
pub mod nft;
pub mod notify;
pub mod policy;
pub mod promises;
pub mod ruleset;
pub mod state;
pub mod xml;

pub const USAGE: &str = "rackside-hook VM OPERATION SUBOP EXTRA  (run by libvirt from /etc/libvirt/hooks/qemu.d/, domain XML on stdin)

The agent's run directory is [state] run_dir of /etc/rackside/agent.toml, as for rackside-agent.
Environment, for tests:
RACKSIDE_HOOK_CONFIG (the agent's configuration file, default /etc/rackside/agent.toml),
RACKSIDE_NFT (default nft), RACKSIDE_HOOK_FORCE_QEMU=1 (act as a qemu hook whatever argv[0] is).";

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

/// What the process environment says: overrides for tests, not meant to
/// be set for libvirtd.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub force_qemu: bool,
    /// The agent's configuration file instead of [`DEFAULT_CONFIG`].
    pub config: Option<PathBuf>,
    pub nft: Option<PathBuf>,
}

impl Env {
    pub fn from_process() -> Env {
        let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        Env {
            force_qemu: std::env::var_os("RACKSIDE_HOOK_FORCE_QEMU").is_some_and(|v| v == "1"),
            config: non_empty("RACKSIDE_HOOK_CONFIG").map(PathBuf::from),
            nft: non_empty("RACKSIDE_NFT").map(PathBuf::from),
        }
    }
}

/// The agent's run directory, found as the agent finds it: `[state]
/// run_dir` of its configuration file.
pub fn locate_run_dir(env: &Env) -> Result<PathBuf, RunDirError> {
    let config = env
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    rackside_contract::run_dir::from_config(&config)
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

    let run_dir = locate_run_dir(env);
    let host = host_name();
    let ctx = hook::Context {
        run_dir: run_dir.as_deref().ok(),
        host: &host,
        now_unix: now_unix(),
    };
    let mut fw = hook::NftBinary {
        program: env.nft.clone().unwrap_or_else(|| PathBuf::from("nft")),
    };
    let mut out = hook::handle(&ctx, &mut fw, &call, xml);
    if let Err(e) = &run_dir {
        out.log.insert(
            0,
            format!(
                "rackside-hook: {}; the agent cannot be found: admitting, not reporting",
                chain(e)
            ),
        );
    }
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
            d.join(rackside_contract::STATE_FILE),
            format!(
                r#"{{"state":"maintenance","maintenance":true,"mem_total_mib":1,"mem_committed_mib":0,"mem_reserve_mib":0,"updated_unix":{}}}"#,
                now_unix()
            ),
        )
        .unwrap();
        let config = d.join("agent.toml");
        std::fs::write(&config, format!("[state]\nrun_dir = \"{}\"\n", d.display())).unwrap();
        let env = Env {
            force_qemu: true,
            config: Some(config),
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

    /// `RACKSIDE_...` names in `text`.
    fn env_names(text: &str) -> std::collections::BTreeSet<String> {
        text.match_indices("RACKSIDE_")
            .map(|(i, _)| {
                text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                    .collect()
            })
            .collect()
    }

    /// packaging/man/rackside-hook.8 names the options and variables the
    /// code reads (`args::parse`, `Env::from_process`), and no others.
    #[test]
    fn the_man_page_names_what_the_code_reads_and_nothing_else() {
        const PAGE: &str = include_str!("../../packaging/man/rackside-hook.8");
        let code = include_str!("lib.rs");
        let code = &code[..code.find("#[cfg(test)]").unwrap()];
        let from_process: std::collections::BTreeSet<String> = code
            .split("var_os(\"")
            .chain(code.split("non_empty(\""))
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|name| name.starts_with("RACKSIDE_"))
            .map(str::to_owned)
            .collect();
        assert_eq!(from_process.len(), 3, "{from_process:?}");
        assert_eq!(env_names(PAGE), from_process);
        assert_eq!(env_names(USAGE), from_process);
        let args = include_str!("args.rs");
        for opt in ["--help", "-h", "--version", "-V"] {
            assert!(args.contains(&format!("\"{opt}\"")), "{opt}");
            assert!(PAGE.contains(&opt.replace('-', "\\-")), "{opt}");
        }
        // Every long option the page names is one of those two.
        for (i, _) in PAGE.match_indices("\\-\\-") {
            let name: String = PAGE[i + 4..]
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            assert!(name == "help" || name == "version", "--{name}");
        }
    }

    #[test]
    fn chain_joins_sources() {
        let e = input::InputError::Read(std::io::Error::other("boom"));
        assert_eq!(chain(&e), "cannot read the domain XML: boom");
    }

    #[test]
    fn an_unreadable_config_admits_and_says_so_off_migrate() {
        let d = std::env::temp_dir().join(format!("rackside-hook-badcfg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let config = d.join("agent.toml");
        std::fs::write(&config, "[state]\nrun_dir = \"relative\"\n").unwrap();
        let env = Env {
            force_qemu: true,
            config: Some(config),
            nft: Some(d.join("no-nft")),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(
            &argv(&["h", "a", "migrate", "begin", "-"]),
            &env,
            &b"<domain><name>a</name></domain>"[..],
            false,
            &mut out,
            &mut err,
        );
        assert_eq!(code, 0);
        assert!(out.is_empty() && err.is_empty(), "migrate stays silent");
        let code = run(
            &argv(&["h", "a", "stopped", "end", "-"]),
            &env,
            &b"<domain><name>a</name></domain>"[..],
            false,
            &mut out,
            &mut err,
        );
        assert_eq!(code, 0);
        assert!(out.is_empty());
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.starts_with("rackside-hook: ")
                && err.contains("state.run_dir must be an absolute path")
                && err.contains("admitting"),
            "{err}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_run_dir_comes_from_the_agents_config() {
        let d = std::env::temp_dir().join(format!("rackside-hook-cfg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let env = |config: PathBuf| Env {
            config: Some(config),
            ..Env::default()
        };
        assert_eq!(
            locate_run_dir(&env(d.join("absent.toml"))).unwrap(),
            std::path::Path::new(rackside_contract::DEFAULT_RUN_DIR)
        );
        let config = d.join("agent.toml");
        std::fs::write(&config, "[state]\nrun_dir = \"/srv/rs\"\n").unwrap();
        assert_eq!(
            locate_run_dir(&env(config)).unwrap(),
            std::path::Path::new("/srv/rs")
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
