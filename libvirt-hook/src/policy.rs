//! A VM's network policy as an nftables ruleset. Pure: validation of the
//! raw rules and device names from the XML, the table name, rendering.
//!
//! Nothing from the XML reaches the ruleset as text: rules become typed
//! values (numbers, an enum, four octets) and device names pass a strict
//! character set check, so the rendered text cannot be steered.

use std::fmt::{self, Write};

use crate::xml::RawRule;

/// Longest sanitised VM name kept in a table name.
pub const KEY_NAME_MAX: usize = 40;
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

/// 32-bit FNV-1a.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// `<sanitised>_<fnv1a hex>`: the name lowercased, every character
/// outside `[a-z0-9_]` replaced by `_`, cut to 40 characters, then `_` and
/// the FNV-1a hash of the full name (so names that sanitise alike stay
/// apart).
pub fn table_key(vm: &str) -> String {
    let mut key: String = vm
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(KEY_NAME_MAX)
        .collect();
    let _ = write!(key, "_{:08x}", fnv1a32(vm.as_bytes()));
    key
}

pub fn table_name(vm: &str) -> String {
    format!("rackside_{}", table_key(vm))
}

/// Lines that make a table exist and then remove it: in one `nft -f`
/// transaction this succeeds whether or not the table was there.
fn reset_lines(out: &mut String, table: &str) {
    let _ = writeln!(out, "table inet {table} {{}}");
    let _ = writeln!(out, "delete table inet {table}");
}

/// A ruleset that only removes the table (idempotent).
pub fn render_removal(vm: &str) -> String {
    let mut out = String::new();
    reset_lines(&mut out, &table_name(vm));
    out
}

fn render_rule(out: &mut String, r: &Rule) {
    let mut m = String::new();
    if let Some(c) = r.from {
        if c.prefix == 0 {
            m.push_str("meta nfproto ipv4 ");
        } else if c.prefix == 32 {
            let [a, b, cc, d] = c.addr;
            let _ = write!(m, "ip saddr {a}.{b}.{cc}.{d} ");
        } else {
            let _ = write!(m, "ip saddr {c} ");
        }
    }
    let l4 = match r.proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Icmp => {
            if r.from.is_some() {
                m.push_str("meta l4proto icmp ");
            } else {
                m.push_str("meta l4proto { icmp, ipv6-icmp } ");
            }
            ""
        }
    };
    if !l4.is_empty() {
        match r.ports {
            Some((a, b)) if a == b => {
                let _ = write!(m, "{l4} dport {a} ");
            }
            Some((a, b)) => {
                let _ = write!(m, "{l4} dport {a}-{b} ");
            }
            None => {
                let _ = write!(m, "meta l4proto {l4} ");
            }
        }
    }
    let _ = writeln!(out, "\t\t{m}accept");
}

/// The ruleset for one VM: traffic forwarded out of its tap devices is
/// accepted when established/related or allowed by a rule, and dropped
/// otherwise; other traffic is untouched. `devices` must be non-empty and
/// already validated ([`valid_devices`]). Deterministic.
pub fn render(vm: &str, devices: &[String], rules: &[Rule]) -> String {
    let table = table_name(vm);
    let mut out = String::new();
    reset_lines(&mut out, &table);
    let devs = devices
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(out, "table inet {table} {{");
    out.push_str("\tchain forward {\n");
    out.push_str("\t\ttype filter hook forward priority 0; policy accept;\n");
    let _ = writeln!(out, "\t\toifname {{ {devs} }} jump guest");
    out.push_str("\t}\n");
    out.push_str("\tchain guest {\n");
    out.push_str("\t\tct state established,related accept\n");
    for r in rules {
        render_rule(&mut out, r);
    }
    out.push_str("\t\tdrop\n");
    out.push_str("\t}\n}\n");
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
    fn golden_ruleset() {
        let rules: Vec<Rule> = [
            raw("tcp", Some("22"), Some("10.0.0.0/8")),
            raw("udp", Some("53"), None),
            raw("icmp", None, None),
            raw("tcp", Some("8000-8080"), Some("192.168.1.7")),
            raw("udp", None, Some("0.0.0.0/0")),
            raw("icmp", None, Some("172.16.5.5/12")),
        ]
        .iter()
        .map(|r| parse_rule(r).unwrap())
        .collect();
        let got = render("web1", &["vnet0".into(), "vnet7".into()], &rules);
        let key = table_key("web1");
        let want = format!(
            "table inet rackside_{key} {{}}
delete table inet rackside_{key}
table inet rackside_{key} {{
\tchain forward {{
\t\ttype filter hook forward priority 0; policy accept;
\t\toifname {{ \"vnet0\", \"vnet7\" }} jump guest
\t}}
\tchain guest {{
\t\tct state established,related accept
\t\tip saddr 10.0.0.0/8 tcp dport 22 accept
\t\tudp dport 53 accept
\t\tmeta l4proto {{ icmp, ipv6-icmp }} accept
\t\tip saddr 192.168.1.7 tcp dport 8000-8080 accept
\t\tmeta nfproto ipv4 meta l4proto udp accept
\t\tip saddr 172.16.0.0/12 meta l4proto icmp accept
\t\tdrop
\t}}
}}
"
        );
        assert_eq!(got, want);
        assert_eq!(key, "web1_93c3efe0");
        assert_eq!(
            got,
            render("web1", &["vnet0".into(), "vnet7".into()], &rules)
        );
    }

    #[test]
    fn idempotent_header_comes_first() {
        let r = render("a", &["vnet0".into()], &[]);
        let t = table_name("a");
        let mut lines = r.lines();
        assert_eq!(lines.next().unwrap(), format!("table inet {t} {{}}"));
        assert_eq!(lines.next().unwrap(), format!("delete table inet {t}"));
        assert_eq!(lines.next().unwrap(), format!("table inet {t} {{"));
        assert_eq!(
            render_removal("a"),
            format!("table inet {t} {{}}\ndelete table inet {t}\n")
        );
    }

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(fnv1a32(b""), 0x811c9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9cf968);
    }

    #[test]
    fn hostile_names_are_sanitised() {
        for name in [
            "web\"; flush ruleset; \"",
            "a}\ntable ip x { }",
            "x;y",
            "Ünïcødé-VM",
            "",
            &"z".repeat(300),
        ] {
            let key = table_key(name);
            let (body, hash) = key.rsplit_once('_').unwrap();
            assert!(body.len() <= KEY_NAME_MAX, "{key}");
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{key}"
            );
            assert_eq!(hash.len(), 8);
            let r = render(name, &["vnet0".into()], &[]);
            assert_eq!(r.lines().count(), 12, "no injected lines: {r}");
        }
        assert_eq!(table_key("Web-01")[..7], *"web_01_");
        assert_ne!(
            table_key("web-1"),
            table_key("web_1"),
            "the hash keeps them apart"
        );
        assert_eq!(table_key(&"z".repeat(300)).len(), KEY_NAME_MAX + 9);
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
        fn keys_are_always_clean(name in "\\PC{0,80}") {
            let key = table_key(&name);
            proptest::prop_assert!(key.len() <= KEY_NAME_MAX + 9);
            proptest::prop_assert!(key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        }

        #[test]
        fn rules_either_fail_or_render_one_line(
            proto in "\\PC{0,6}", port in proptest::option::of("\\PC{0,12}"), from in proptest::option::of("\\PC{0,20}")
        ) {
            let raw = RawRule { proto: Some(proto), port, from };
            if let Ok(rule) = parse_rule(&raw) {
                let r = render("vm", &["vnet0".into()], &[rule]);
                proptest::prop_assert_eq!(r.lines().count(), 13);
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
