//! Which hosts there are and where their lines are: a small TOML file
//! (`/etc/rackside/controller.toml` unless `--config` says otherwise)
//!
//! ```toml
//! [[host]]
//! name = "ha"
//! line = "/dev/serial/by-id/usb-FTDI_FT232R_A1-if00-port0"
//! baud = 115200          # optional, serial lines only
//!
//! [[host]]
//! name = "hb"
//! line = "telnet://10.0.0.5:7002"
//! ```
//!
//! or `--line NAME=SPEC` on the command line, repeated, instead of a file.
//! Every error names the key (and the file's line) it is about.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::line::{LineSpec, SpecError};

pub const DEFAULT_PATH: &str = "/etc/rackside/controller.toml";

/// One host and its management line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    pub name: String,
    pub line: LineSpec,
}

/// The hosts, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub hosts: Vec<HostConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: no [[host]]: list each host with its name and line")]
    NoHosts { path: PathBuf },
    #[error("{path}: [[host]] number {index}, key 'name': {message}")]
    Name {
        path: PathBuf,
        index: usize,
        message: String,
    },
    #[error("{path}: host '{host}', key '{key}'")]
    Line {
        path: PathBuf,
        host: String,
        key: &'static str,
        #[source]
        source: SpecError,
    },
    #[error("{path}: host '{host}' is listed more than once")]
    Duplicate { path: PathBuf, host: String },
    #[error(
        "--line '{arg}': expected NAME=SPEC, e.g. ha=/dev/ttyUSB0 or hb=telnet://10.0.0.5:7002"
    )]
    LineArg { arg: String },
    #[error("--line '{arg}': {message}")]
    LineArgName { arg: String, message: String },
    #[error("--line '{arg}'")]
    LineArgSpec {
        arg: String,
        #[source]
        source: SpecError,
    },
    #[error("--line: host '{host}' is given more than once")]
    LineArgDuplicate { host: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    host: Vec<RawHost>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: String,
    line: String,
    baud: Option<u32>,
}

impl Config {
    /// Reads the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Reads `text`, the contents of the file at `path` (for messages).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let path = path.to_owned();
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.clone(),
            message: syntax_message(text, &e),
        })?;
        if file.host.is_empty() {
            return Err(ConfigError::NoHosts { path });
        }
        let mut hosts: Vec<HostConfig> = Vec::new();
        for (i, raw) in file.host.into_iter().enumerate() {
            rackside_protocol::validate_name("host", &raw.name).map_err(|message| {
                ConfigError::Name {
                    path: path.clone(),
                    index: i + 1,
                    message,
                }
            })?;
            let key = if raw.baud.is_some() && !raw.line.trim().starts_with('/') {
                "baud"
            } else {
                "line"
            };
            let line = LineSpec::parse(&raw.line, raw.baud).map_err(|source| {
                // A bad speed is the baud key's fault.
                let key = if matches!(source, SpecError::Baud(_)) {
                    "baud"
                } else {
                    key
                };
                ConfigError::Line {
                    path: path.clone(),
                    host: raw.name.clone(),
                    key,
                    source,
                }
            })?;
            if hosts.iter().any(|h| h.name == raw.name) {
                return Err(ConfigError::Duplicate {
                    path,
                    host: raw.name,
                });
            }
            hosts.push(HostConfig {
                name: raw.name,
                line,
            });
        }
        Ok(Config { hosts })
    }

    /// The hosts of `--line NAME=SPEC` arguments; `baud` for every serial
    /// line among them.
    pub fn from_args(args: &[String], baud: Option<u32>) -> Result<Config, ConfigError> {
        let mut hosts: Vec<HostConfig> = Vec::new();
        for arg in args {
            let (name, spec) = arg
                .split_once('=')
                .ok_or_else(|| ConfigError::LineArg { arg: arg.clone() })?;
            rackside_protocol::validate_name("host", name).map_err(|message| {
                ConfigError::LineArgName {
                    arg: arg.clone(),
                    message,
                }
            })?;
            let serial = spec.trim().starts_with('/');
            let line = LineSpec::parse(spec, baud.filter(|_| serial)).map_err(|source| {
                ConfigError::LineArgSpec {
                    arg: arg.clone(),
                    source,
                }
            })?;
            if hosts.iter().any(|h| h.name == name) {
                return Err(ConfigError::LineArgDuplicate {
                    host: name.to_owned(),
                });
            }
            hosts.push(HostConfig {
                name: name.to_owned(),
                line,
            });
        }
        Ok(Config { hosts })
    }

    pub fn host(&self, name: &str) -> Option<&HostConfig> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// toml's message on one line, with the line of the file it is about
/// (which shows the key): `line 4 (baud = "fast"): invalid type: ...`.
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let number = text[..start].matches('\n').count() + 1;
    let shown = text.lines().nth(number - 1).unwrap_or("").trim();
    if shown.is_empty() {
        format!("line {number}: {message}")
    } else {
        format!("line {number} ({shown}): {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("c.toml"), text)
    }

    fn error(text: &str) -> String {
        let err = parse(text).unwrap_err();
        let mut s = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(e) = source {
            s.push_str(&format!(": {e}"));
            source = e.source();
        }
        s
    }

    #[test]
    fn reads_hosts_of_every_kind() {
        let config = parse(
            r#"
            [[host]]
            name = "ha"
            line = "/dev/serial/by-id/usb-FTDI-if00"

            [[host]]
            name = "hb"
            line = "/dev/ttyS1"
            baud = 9600

            [[host]]
            name = "hc"
            line = "tcp://10.0.0.5:7001"

            [[host]]
            name = "hd"
            line = "telnet://10.0.0.5:7002"
            "#,
        )
        .unwrap();
        let lines: Vec<String> = config
            .hosts
            .iter()
            .map(|h| format!("{}={}", h.name, h.line))
            .collect();
        assert_eq!(
            lines,
            [
                "ha=/dev/serial/by-id/usb-FTDI-if00",
                "hb=/dev/ttyS1 at 9600 baud",
                "hc=tcp://10.0.0.5:7001",
                "hd=telnet://10.0.0.5:7002"
            ]
        );
        assert_eq!(config.host("hc").unwrap().name, "hc");
        assert!(config.host("hx").is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[[host]]\nname = \"ha\"\n", "missing field `line`"),
            (
                "[[host]]\nname = \"ha\"\nline = \"/dev/ttyS0\"\nbud = 9600\n",
                "line 4 (bud = 9600): unknown field `bud`",
            ),
            (
                "[[host]]\nname = \"ha\"\nline = \"/dev/ttyS0\"\nbaud = \"fast\"\n",
                "line 4 (baud = \"fast\"): invalid type",
            ),
            (
                "[[host]]\nname = \"ha\"\nline = \"ssh://h:1\"\n",
                "host 'ha', key 'line': unknown scheme 'ssh://'",
            ),
            (
                "[[host]]\nname = \"ha\"\nline = \"/dev/ttyS0\"\nbaud = 1234\n",
                "host 'ha', key 'baud': baud 1234",
            ),
            (
                "[[host]]\nname = \"ha\"\nline = \"tcp://h:1\"\nbaud = 9600\n",
                "host 'ha', key 'baud': baud applies to a serial line only",
            ),
            (
                "[[host]]\nname = \"h a\"\nline = \"/dev/ttyS0\"\n",
                "[[host]] number 1, key 'name'",
            ),
            (
                "[[host]]\nname = \"ha\"\nline = \"/dev/ttyS0\"\n[[host]]\nname = \"ha\"\nline = \"/dev/ttyS1\"\n",
                "host 'ha' is listed more than once",
            ),
            ("", "no [[host]]"),
            ("[hosts]\n", "unknown field `hosts`"),
            ("[[host]\n", "c.toml: line 1"),
        ];
        for (text, want) in cases {
            let got = error(text);
            assert!(got.contains(want), "{text:?}: {got}");
            assert!(got.starts_with("c.toml: "), "{got}");
            assert!(!got.contains('\n'), "one line: {got:?}");
        }
    }

    #[test]
    fn a_missing_file_names_it() {
        let err = Config::load(Path::new("/nonexistent/controller.toml")).unwrap_err();
        assert_eq!(err.to_string(), "cannot read /nonexistent/controller.toml");
    }

    #[test]
    fn line_arguments() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let config = Config::from_args(
            &args(&["ha=/dev/ttyUSB0", "hb=telnet://10.0.0.5:7002"]),
            Some(9600),
        )
        .unwrap();
        assert_eq!(
            config.hosts[0].line,
            LineSpec::Serial {
                path: "/dev/ttyUSB0".into(),
                baud: 9600
            }
        );
        assert_eq!(config.hosts[1].line.to_string(), "telnet://10.0.0.5:7002");

        let err = |a: &[&str]| Config::from_args(&args(a), None).unwrap_err().to_string();
        assert!(err(&["ha"]).contains("expected NAME=SPEC"));
        assert!(err(&["=/dev/ttyS0"]).contains("--line '=/dev/ttyS0'"));
        assert!(err(&["ha=ttyS0"]).starts_with("--line 'ha=ttyS0'"));
        assert!(err(&["ha=/dev/a", "ha=/dev/b"]).contains("more than once"));
    }
}
