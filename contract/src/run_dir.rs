//! Where `RUN_DIR` is: `[state] run_dir` of the agent's configuration
//! file. The agent's config module deserialises the very [`StateSection`]
//! defined here, and the hook reads that one section of the same file with
//! the same parser ([`from_config`]), so the two cannot disagree about the
//! key, its default or what makes it valid.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The agent's configuration file, unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/rackside/agent.toml";
pub const DEFAULT_RUN_DIR: &str = "/run/rackside";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/rackside";
/// A configuration file is a few KiB; the hook reads no more than this
/// (it runs inside libvirt's locks).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key} must be an absolute path")]
    NotAbsolute { path: PathBuf, key: &'static str },
}

/// `[state]` of the agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// The agent's journal.
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
    /// Where the agent publishes its state for rackside-hook and receives
    /// the hook's reports.
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
}

impl Default for StateSection {
    fn default() -> Self {
        Self {
            dir: default_state_dir(),
            run_dir: default_run_dir(),
        }
    }
}

fn default_run_dir() -> PathBuf {
    DEFAULT_RUN_DIR.into()
}

fn default_state_dir() -> PathBuf {
    DEFAULT_STATE_DIR.into()
}

impl StateSection {
    /// The first key whose value is not an absolute path.
    pub fn relative_key(&self) -> Option<&'static str> {
        if !self.dir.is_absolute() {
            Some("state.dir")
        } else if !self.run_dir.is_absolute() {
            Some("state.run_dir")
        } else {
            None
        }
    }
}

/// The file as the hook sees it: `[state]` and nothing else (the agent
/// checks the other sections; the hook needs none of them).
#[derive(Debug, Deserialize)]
struct StateOnly {
    #[serde(default)]
    state: StateSection,
}

/// `[state] run_dir` of a configuration text; `path` only names it in
/// errors.
pub fn parse(text: &str, path: &Path) -> Result<PathBuf, RunDirError> {
    let file: StateOnly = toml::from_str(text).map_err(|e| RunDirError::Parse {
        path: path.to_owned(),
        message: e.message().trim().replace('\n', " "),
    })?;
    match file.state.relative_key() {
        Some(key) => Err(RunDirError::NotAbsolute {
            path: path.to_owned(),
            key,
        }),
        None => Ok(file.state.run_dir),
    }
}

/// `RUN_DIR` as the agent started with `--config config` has it. No file:
/// the default, as for an agent with an empty one. A file that cannot be
/// read or parsed is an error: nobody can tell where the agent is.
pub fn from_config(config: &Path) -> Result<PathBuf, RunDirError> {
    let read_err = |source| RunDirError::Read {
        path: config.to_owned(),
        source,
    };
    let file = match std::fs::File::open(config) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(default_run_dir()),
        Err(e) => return Err(read_err(e)),
    };
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(RunDirError::TooLarge {
            path: config.to_owned(),
        });
    }
    parse(&text, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir(text: &str) -> Result<PathBuf, RunDirError> {
        parse(text, Path::new("/etc/rackside/agent.toml"))
    }

    #[test]
    fn default_without_the_key() {
        assert_eq!(run_dir("").unwrap(), Path::new(DEFAULT_RUN_DIR));
        assert_eq!(
            run_dir("[state]\ndir = \"/srv/j\"\n").unwrap(),
            Path::new(DEFAULT_RUN_DIR)
        );
    }

    #[test]
    fn every_toml_spelling_of_the_key() {
        for text in [
            "[state]\nrun_dir = \"/srv/run\"\n",
            "[state]\nrun_dir = '/srv/run' # comment\n",
            "state.run_dir = \"/srv/run\"\n",
            "state = { run_dir = \"/srv/run\" }\n",
            "[host]\nname = \"x\"\n[state]\n  run_dir=\"/srv/\\u0072un\"\n[[peer]]\nname=\"p\"\nuri=\"u\"\n",
        ] {
            assert_eq!(run_dir(text).unwrap(), Path::new("/srv/run"), "{text}");
        }
    }

    #[test]
    fn what_the_agent_rejects_is_an_error() {
        for text in [
            "[state]\nrun_dir = \"rel\"\n",
            "[state]\ndir = \"rel\"\n",
            "[state]\nrun_dir = 3\n",
            "[state]\nrundir = \"/srv/run\"\n",
            "[state\n",
            "state = 1\n",
        ] {
            assert!(run_dir(text).is_err(), "{text}");
        }
        let e = run_dir("[state]\nrun_dir = \"rel\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/rackside/agent.toml: state.run_dir must be an absolute path"
        );
    }

    #[test]
    fn a_missing_file_means_the_default_an_unreadable_one_an_error() {
        let d = std::env::temp_dir().join(format!("rackside-contract-rd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        assert_eq!(
            from_config(&d.join("absent.toml")).unwrap(),
            Path::new(DEFAULT_RUN_DIR)
        );
        let f = d.join("agent.toml");
        std::fs::write(&f, "[state]\nrun_dir = \"/srv/run\"\n").unwrap();
        assert_eq!(from_config(&f).unwrap(), Path::new("/srv/run"));
        std::fs::write(&f, b"\xff\xfe").unwrap();
        assert!(matches!(from_config(&f), Err(RunDirError::Read { .. })));
        // A directory where the file should be.
        assert!(matches!(from_config(&d), Err(RunDirError::Read { .. })));
        std::fs::write(&f, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        assert!(matches!(from_config(&f), Err(RunDirError::TooLarge { .. })));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
