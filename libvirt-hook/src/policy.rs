//! A VM's network policy, validated. Pure: the raw rules, device names
//! and UUID from the XML become typed values.
//!
//! Nothing from the XML reaches a ruleset as text: rules become typed
//! values (numbers, an enum, four octets), device names pass a strict
//! character set check and the UUID is sixteen bytes, so the rendered text
//! ([`crate::ruleset`]) cannot be steered.

use std::fmt;

use crate::xml::RawRule;

/// Linux IFNAMSIZ - 1.
pub const DEVICE_MAX: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule without proto")]
    MissingProto,
    #[error("unknown proto {0:?}")]
    Proto(String),
    #[error("bad port {0:?}")]
    Port(String),
    #[error("port given for icmp")]
    PortWithIcmp,
    #[error("bad IPv4 CIDR {0:?}")]
    Cidr(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad domain UUID {0:?}")]
pub struct UuidError(pub String);

/// A domain's UUID: what names its nftables tables. Unlike the VM's name
/// it is fixed for the life of the domain and unique on a host (libvirt
/// refuses a second domain with the same UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmUuid([u8; 16]);

impl VmUuid {
    /// Thirty-two lowercase hex digits, no dashes.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The canonical `8-4-4-4-12` form, lowercase.
impl fmt::Display for VmUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.hex();
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }
}

/// libvirt writes `<uuid>` as `8-4-4-4-12` hex digits; 32 digits without
/// dashes are accepted too. Either case.
pub fn parse_uuid(s: &str) -> Result<VmUuid, UuidError> {
    let bad = || UuidError(s.chars().take(64).collect());
    let digits: String = if s.len() == 36 {
        let dashes_at = [8, 13, 18, 23];
        if !s
            .bytes()
            .enumerate()
            .all(|(i, b)| (b == b'-') == dashes_at.contains(&i))
        {
            return Err(bad());
        }
        s.chars().filter(|c| *c != '-').collect()
    } else {
        s.to_owned()
    };
    if digits.len() != 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(VmUuid(bytes))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

/// An IPv4 network; the address is stored with host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: [u8; 4],
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.addr;
        write!(f, "{a}.{b}.{c}.{d}/{}", self.prefix)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub proto: Proto,
    /// Inclusive range; `(p, p)` for a single port.
    pub ports: Option<(u16, u16)>,
    pub from: Option<Cidr>,
}

/// Decimal without sign, leading `+` or leading zeros.
fn strict_decimal(s: &str, max_len: usize) -> Option<u32> {
    let ok = !s.is_empty()
        && s.len() <= max_len
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

/// `a.b.c.d/n` or a bare `a.b.c.d` (= /32). Host bits are cleared:
/// `10.1.2.3/8` is `10.0.0.0/8`.
pub fn parse_cidr(s: &str) -> Result<Cidr, RuleError> {
    let bad = || RuleError::Cidr(s.to_owned());
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (
            a,
            strict_decimal(p, 2).filter(|p| *p <= 32).ok_or_else(bad)?,
        ),
        None => (s, 32),
    };
    let mut octets = [0u8; 4];
    let mut parts = addr.split('.');
    for o in &mut octets {
        let part = parts.next().ok_or_else(bad)?;
        *o = strict_decimal(part, 3)
            .and_then(|v| u8::try_from(v).ok())
            .ok_or_else(bad)?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    let net = u32::from_be_bytes(octets) & mask;
    Ok(Cidr {
        addr: net.to_be_bytes(),
        prefix: prefix as u8,
    })
}

/// `N` or `A-B`, 1..=65535, A <= B.
pub fn parse_ports(s: &str) -> Result<(u16, u16), RuleError> {
    let bad = || RuleError::Port(s.to_owned());
    let one = |p: &str| {
        strict_decimal(p, 5)
            .and_then(|v| u16::try_from(v).ok())
            .filter(|v| *v >= 1)
            .ok_or_else(bad)
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => {
            let p = one(s)?;
            (p, p)
        }
    };
    if a > b {
        return Err(bad());
    }
    Ok((a, b))
}

pub fn parse_rule(raw: &RawRule) -> Result<Rule, RuleError> {
    let proto = match raw.proto.as_deref().ok_or(RuleError::MissingProto)? {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        other => return Err(RuleError::Proto(other.to_owned())),
    };
    let ports = raw.port.as_deref().map(parse_ports).transpose()?;
    if proto == Proto::Icmp && ports.is_some() {
        return Err(RuleError::PortWithIcmp);
    }
    let from = raw.from.as_deref().map(parse_cidr).transpose()?;
    Ok(Rule { proto, ports, from })
}

/// A usable interface name: 1..=15 of `[A-Za-z0-9_.-]`, not `.`/`..`.
pub fn valid_device(dev: &str) -> bool {
    (1..=DEVICE_MAX).contains(&dev.len())
        && dev
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && dev != "."
        && dev != ".."
}

/// The valid devices, deduplicated, in order; the rest are dropped.
pub fn valid_devices(devs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in devs {
        if valid_device(d) && !out.contains(d) {
            out.push(d.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(proto: &str, port: Option<&str>, from: Option<&str>) -> RawRule {
        RawRule {
            proto: Some(proto.into()),
            port: port.map(Into::into),
            from: from.map(Into::into),
        }
    }

    #[test]
    fn uuid_forms() {
        let u = parse_uuid("6F1C4E2A-5b1d-4c3e-9f00-1234567890ab").unwrap();
        assert_eq!(u.hex(), "6f1c4e2a5b1d4c3e9f001234567890ab");
        assert_eq!(u.to_string(), "6f1c4e2a-5b1d-4c3e-9f00-1234567890ab");
        assert_eq!(parse_uuid("6f1c4e2a5b1d4c3e9f001234567890ab"), Ok(u));
        for bad in [
            "",
            "web1",
            "6f1c4e2a-5b1d-4c3e-9f00-1234567890a",
            "6f1c4e2a-5b1d-4c3e-9f00-1234567890abc",
            "6f1c4e2a5b1d-4c3e-9f00-1234567890ab-",
            "6f1c4e2a-5b1d-4c3e-9f00-1234567890ag",
            "6f1c4e2a-5b1d-4c3e-9f001-234567890ab",
            "+f1c4e2a5b1d4c3e9f001234567890ab",
            " 6f1c4e2a5b1d4c3e9f001234567890ab",
            "6f1c4e2a-5b1d-4c3e-9f00-1234567890ab\n",
            "6f1c4e2a\u{0}5b1d4c3e9f001234567890a",
            "６f1c4e2a5b1d4c3e9f001234567890a",
        ] {
            assert!(parse_uuid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hostile_devices_are_skipped() {
        let devs: Vec<String> = [
            "vnet0",
            "vnet0",
            "vnet\"1",
            "a b",
            "x;y",
            "}",
            "tap\n2",
            "",
            ".",
            "..",
            "sixteen-chars-xx",
            "fifteen-chars-x",
            "a.b_c-D",
            "vnét",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            valid_devices(&devs),
            vec!["vnet0", "fifteen-chars-x", "a.b_c-D"]
        );
    }

    #[test]
    fn cidr_validation() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(parse_cidr("255.255.255.255/32").unwrap().prefix, 32);
        assert_eq!(
            parse_cidr("192.168.1.129/25").unwrap().to_string(),
            "192.168.1.128/25"
        );
        for bad in [
            "",
            "10",
            "10.0.0",
            "10.0.0.0.0",
            "10.0.0.256/8",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/08",
            "010.0.0.0/8",
            "10.0.0.0/8/8",
            "10..0.0/8",
            " 10.0.0.0/8",
            "10.0.0.0/8 ",
            "+1.0.0.0",
            "1.0.0.0/+8",
            "::1/128",
            "a.b.c.d/8",
            "10.0.0.0/8\n",
            "1.1.1.1/4294967328",
            "１.1.1.1",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn port_validation() {
        assert_eq!(parse_ports("22").unwrap(), (22, 22));
        assert_eq!(parse_ports("1-65535").unwrap(), (1, 65535));
        assert_eq!(parse_ports("80-80").unwrap(), (80, 80));
        for bad in [
            "", "0", "65536", "022", "-1", "1-", "-", "2-1", "1-2-3", "80 ", "8o", "1,2",
        ] {
            assert!(parse_ports(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rule_validation() {
        assert_eq!(
            parse_rule(&RawRule::default()),
            Err(RuleError::MissingProto)
        );
        assert!(matches!(
            parse_rule(&raw("TCP", None, None)),
            Err(RuleError::Proto(_))
        ));
        assert!(matches!(
            parse_rule(&raw("sctp", None, None)),
            Err(RuleError::Proto(_))
        ));
        assert_eq!(
            parse_rule(&raw("icmp", Some("1"), None)),
            Err(RuleError::PortWithIcmp)
        );
        assert!(matches!(
            parse_rule(&raw("tcp", Some("x"), None)),
            Err(RuleError::Port(_))
        ));
        assert!(matches!(
            parse_rule(&raw("tcp", None, Some("x"))),
            Err(RuleError::Cidr(_))
        ));
        assert_eq!(
            parse_rule(&raw("udp", None, None)).unwrap(),
            Rule {
                proto: Proto::Udp,
                ports: None,
                from: None
            }
        );
    }

    proptest::proptest! {
        #[test]
        fn uuids_parse_only_when_canonical(s in "[0-9a-fA-F-]{30,38}|\\PC{0,40}") {
            if let Ok(u) = parse_uuid(&s) {
                proptest::prop_assert_eq!(u.hex().len(), 32);
                proptest::prop_assert_eq!(s.replace('-', "").to_ascii_lowercase(), u.hex());
                proptest::prop_assert_eq!(parse_uuid(&u.to_string()), Ok(u));
            }
        }

        #[test]
        fn cidr_roundtrip(a: u8, b: u8, c: u8, d: u8, p in 0u8..=32) {
            let s = format!("{a}.{b}.{c}.{d}/{p}");
            let cidr = parse_cidr(&s).unwrap();
            proptest::prop_assert_eq!(cidr.prefix, p);
            proptest::prop_assert_eq!(parse_cidr(&cidr.to_string()).unwrap(), cidr);
        }
    }
}
