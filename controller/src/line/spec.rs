//! Where a line is, as written in the config or on the command line:
//! a device path (`/dev/serial/by-id/...`, a pty), `tcp://HOST:PORT` (a
//! console server's raw port) or `telnet://HOST:PORT`.

use std::fmt;
use std::path::PathBuf;

/// Serial speed unless the config says otherwise, as the agent's.
pub const DEFAULT_BAUD: u32 = 115_200;

/// The speeds a line may be set to (the agent's own range).
pub const BAUDS: [u32; 11] = [
    1200, 2400, 4800, 9600, 19200, 38400, 57600, 115_200, 230_400, 460_800, 921_600,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineSpec {
    Serial { path: PathBuf, baud: u32 },
    Tcp { addr: String },
    Telnet { addr: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("empty")]
    Empty,
    #[error(
        "'{0}' is not a line: give a device path (/dev/...), tcp://HOST:PORT or telnet://HOST:PORT"
    )]
    Unrecognised(String),
    #[error("unknown scheme '{0}://': use tcp:// or telnet://")]
    Scheme(String),
    #[error("'{0}' needs HOST:PORT with a port from 1 to 65535")]
    Address(String),
    #[error("baud {0} is not one of 1200, 2400, ..., 115200, ..., 921600")]
    Baud(u32),
    #[error("baud applies to a serial line only, not to {0}")]
    BaudNotSerial(String),
}

impl LineSpec {
    /// Reads `spec`; `baud` is the configured speed, if any.
    pub fn parse(spec: &str, baud: Option<u32>) -> Result<LineSpec, SpecError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(SpecError::Empty);
        }
        if let Some((scheme, rest)) = spec.split_once("://") {
            let addr = address(spec, rest)?;
            let line = match scheme.to_ascii_lowercase().as_str() {
                "tcp" => LineSpec::Tcp { addr },
                "telnet" => LineSpec::Telnet { addr },
                _ => return Err(SpecError::Scheme(scheme.to_owned())),
            };
            if baud.is_some() {
                return Err(SpecError::BaudNotSerial(spec.to_owned()));
            }
            return Ok(line);
        }
        if !spec.starts_with('/') {
            return Err(SpecError::Unrecognised(spec.to_owned()));
        }
        let baud = baud.unwrap_or(DEFAULT_BAUD);
        if !BAUDS.contains(&baud) {
            return Err(SpecError::Baud(baud));
        }
        Ok(LineSpec::Serial {
            path: PathBuf::from(spec),
            baud,
        })
    }
}

/// `HOST:PORT` (a name, an IPv4 address or `[IPv6]`), checked.
fn address(spec: &str, rest: &str) -> Result<String, SpecError> {
    let bad = || SpecError::Address(spec.to_owned());
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if port == 0 || host.is_empty() || (host.contains(':') && !bracketed) || host.contains('/') {
        return Err(bad());
    }
    Ok(rest.to_owned())
}

impl fmt::Display for LineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineSpec::Serial { path, baud } if *baud == DEFAULT_BAUD => {
                write!(f, "{}", path.display())
            }
            LineSpec::Serial { path, baud } => write!(f, "{} at {baud} baud", path.display()),
            LineSpec::Tcp { addr } => write!(f, "tcp://{addr}"),
            LineSpec::Telnet { addr } => write!(f, "telnet://{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_kind() {
        assert_eq!(
            LineSpec::parse("/dev/serial/by-id/usb-FTDI-if00", None),
            Ok(LineSpec::Serial {
                path: "/dev/serial/by-id/usb-FTDI-if00".into(),
                baud: 115_200
            })
        );
        assert_eq!(
            LineSpec::parse("/dev/ttyS0", Some(9600)),
            Ok(LineSpec::Serial {
                path: "/dev/ttyS0".into(),
                baud: 9600
            })
        );
        assert_eq!(
            LineSpec::parse("tcp://10.0.0.5:7001", None),
            Ok(LineSpec::Tcp {
                addr: "10.0.0.5:7001".into()
            })
        );
        assert_eq!(
            LineSpec::parse("TELNET://cs1.example:7002/", None),
            Ok(LineSpec::Telnet {
                addr: "cs1.example:7002".into()
            })
        );
        assert_eq!(
            LineSpec::parse("tcp://[::1]:7001", None),
            Ok(LineSpec::Tcp {
                addr: "[::1]:7001".into()
            })
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |s: &str, baud| LineSpec::parse(s, baud).unwrap_err().to_string();
        assert_eq!(err("", None), "empty");
        assert!(err("ttyUSB0", None).contains("device path"));
        assert!(err("ssh://h:22", None).contains("unknown scheme 'ssh://'"));
        for bad in [
            "tcp://host",
            "tcp://host:0",
            "tcp://host:99999",
            "tcp://:7001",
            "tcp://::1:7001",
            "telnet://h:x",
        ] {
            assert!(err(bad, None).contains("HOST:PORT"), "{bad}");
        }
        assert!(err("/dev/ttyS0", Some(12345)).contains("baud 12345"));
        assert!(err("tcp://h:1", Some(9600)).contains("serial line only"));
    }

    #[test]
    fn shown_as_written() {
        for s in ["/dev/ttyS0", "tcp://h:1", "telnet://h:2"] {
            assert_eq!(LineSpec::parse(s, None).unwrap().to_string(), s);
        }
        assert_eq!(
            LineSpec::parse("/dev/ttyS0", Some(9600))
                .unwrap()
                .to_string(),
            "/dev/ttyS0 at 9600 baud"
        );
    }
}
