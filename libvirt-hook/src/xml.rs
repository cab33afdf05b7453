//! Facts about a domain, read from libvirt's domain XML. Pure.
//!
//! The XML comes from libvirt, but its `<metadata>` and names are written
//! by whoever defines the VM: nothing read here is trusted. Parsing is
//! bounded (no DTD, a node limit, roxmltree's own entity-loop guard and a
//! non-recursive parser), and every value is returned raw: the modules
//! that use one validate it for their own purpose.

/// The namespace of rackside's policy element in `<metadata>`.
pub const POLICY_NS: &str = "https://rackside.dev/xmlns/policy/1";

/// More nodes (elements, text, comments) than any real domain has: a
/// domain with a hundred disks and interfaces has a few thousand. Stops a
/// huge document early.
pub const NODES_LIMIT: u32 = 50_000;

/// More attributes than any real domain has. roxmltree does not count
/// them against [`NODES_LIMIT`]; their memory is bounded by the input cap
/// ([`crate::input::MAX_XML_BYTES`]) and this refuses the rest.
pub const ATTRIBUTES_LIMIT: usize = 100_000;

/// At most this many tap devices, rules and filter references are kept.
pub const MAX_ITEMS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("domain XML is not UTF-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    #[error("cannot parse the domain XML")]
    Parse(#[source] roxmltree::Error),
    #[error("root element is not <domain>")]
    NotDomain,
    #[error("domain XML has more than {ATTRIBUTES_LIMIT} attributes")]
    TooManyAttributes,
}

/// One `<rs:allow>` as written: attributes not yet validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawRule {
    pub proto: Option<String>,
    pub port: Option<String>,
    pub from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Domain {
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// `<memory>`, rounded up to whole MiB. `None`: absent or unreadable.
    pub memory_mib: Option<u64>,
    /// `<devices><interface><target dev=...>`, raw, in document order.
    pub taps: Vec<String>,
    /// `Some` when a policy element exists (even an empty one).
    pub policy: Option<Vec<RawRule>>,
    /// `<devices><interface><filterref filter=...>`, raw.
    pub filterrefs: Vec<String>,
    /// `Some(from)`: a crashed VM an agent on host `from` is starting here
    /// ([`rackside_contract::RECOVERY_NS`]); admitted like a migration.
    pub recovery: Option<String>,
}

/// An element of libvirt's own (namespace-less) vocabulary.
fn is_plain(n: &roxmltree::Node<'_, '_>, name: &str) -> bool {
    n.is_element() && n.tag_name().namespace().is_none() && n.tag_name().name() == name
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| is_plain(c, name))
}

fn children<'a, 'i: 'a>(
    n: roxmltree::Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    n.children().filter(move |c| is_plain(c, name))
}

fn text_of(n: roxmltree::Node<'_, '_>) -> Option<String> {
    n.text()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

pub fn parse(bytes: &[u8]) -> Result<Domain, XmlError> {
    let text = std::str::from_utf8(bytes).map_err(XmlError::NotUtf8)?;
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: NODES_LIMIT,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(XmlError::Parse)?;
    let attributes = doc
        .descendants()
        .map(|n| n.attributes().len())
        .fold(0usize, usize::saturating_add);
    if attributes > ATTRIBUTES_LIMIT {
        return Err(XmlError::TooManyAttributes);
    }
    let root = doc.root_element();
    if !is_plain(&root, "domain") {
        return Err(XmlError::NotDomain);
    }
    let mut d = Domain {
        name: child(root, "name").and_then(text_of),
        uuid: child(root, "uuid").and_then(text_of),
        memory_mib: child(root, "memory")
            .and_then(|m| memory_mib(m.text().unwrap_or(""), m.attribute("unit"))),
        ..Domain::default()
    };
    if let Some(devices) = child(root, "devices") {
        for iface in children(devices, "interface") {
            if let Some(dev) = child(iface, "target").and_then(|t| t.attribute("dev")) {
                if d.taps.len() < MAX_ITEMS {
                    d.taps.push(dev.to_owned());
                }
            }
            if let Some(f) = child(iface, "filterref").and_then(|t| t.attribute("filter")) {
                if d.filterrefs.len() < MAX_ITEMS {
                    d.filterrefs.push(f.to_owned());
                }
            }
        }
    }
    // libvirt keeps one element per namespace in <metadata>; the first
    // one counts.
    let policy = child(root, "metadata").and_then(|m| {
        m.children()
            .find(|c| c.is_element() && c.has_tag_name((POLICY_NS, "policy")))
    });
    d.recovery = child(root, "metadata")
        .and_then(|m| {
            m.children().find(|c| {
                c.is_element() && c.has_tag_name((rackside_contract::RECOVERY_NS, "recovery"))
            })
        })
        .map(|r| r.attribute("from").unwrap_or("").to_owned());
    if let Some(policy) = policy {
        let rules = policy
            .children()
            .filter(|c| c.is_element() && c.has_tag_name((POLICY_NS, "allow")))
            .take(MAX_ITEMS)
            .map(|a| RawRule {
                proto: a.attribute("proto").map(str::to_owned),
                port: a.attribute("port").map(str::to_owned),
                from: a.attribute("from").map(str::to_owned),
            })
            .collect();
        d.policy = Some(rules);
    }
    Ok(d)
}

/// libvirt's scaled integer: a decimal count and a unit, case-insensitive:
/// `b`/`byte`/`bytes`; `k`/`KiB` (the default), `M`/`MiB`, ... powers of
/// 1024; `KB`, `MB`, ... powers of 1000. Rounded up to whole MiB; `None`
/// when unreadable or absurd (more than u64::MAX MiB).
pub fn memory_mib(value: &str, unit: Option<&str>) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u128 = value.parse().ok()?;
    let bytes = n.checked_mul(unit_bytes(unit.unwrap_or("KiB").trim())?)?;
    let mib = bytes.div_ceil(1 << 20);
    u64::try_from(mib).ok()
}

fn unit_bytes(unit: &str) -> Option<u128> {
    let u = unit.to_ascii_lowercase();
    if u.is_empty() {
        return Some(1024);
    }
    if matches!(u.as_str(), "b" | "byte" | "bytes") {
        return Some(1);
    }
    let mut chars = u.chars();
    let exp = match chars.next()? {
        'k' => 1,
        'm' => 2,
        'g' => 3,
        't' => 4,
        'p' => 5,
        'e' => 6,
        _ => return None,
    };
    let base: u128 = match chars.as_str() {
        "" | "ib" => 1024,
        "b" => 1000,
        _ => return None,
    };
    Some(base.pow(exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"<domain type='kvm' id='3'>
  <name>web1</name>
  <uuid>6f1c4e2a-5b1d-4c3e-9f00-1234567890ab</uuid>
  <memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>524288</currentMemory>
  <metadata>
    <other:thing xmlns:other="https://example.org/other"><other:allow proto="tcp"/></other:thing>
    <rs:policy xmlns:rs="https://rackside.dev/xmlns/policy/1">
      <rs:allow proto="tcp" port="22" from="10.0.0.0/8"/>
      <rs:allow proto="udp" port="53"/>
      <rs:allow proto="icmp"/>
      <allow proto="tcp" port="1"/>
    </rs:policy>
  </metadata>
  <devices>
    <interface type='network'>
      <target dev='vnet0'/>
      <filterref filter='clean-traffic'/>
    </interface>
    <interface type='bridge'><target dev='vnet7'/></interface>
    <interface type='user'/>
  </devices>
</domain>"#;

    #[test]
    fn extracts_domain_facts() {
        let d = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(d.name.as_deref(), Some("web1"));
        assert_eq!(
            d.uuid.as_deref(),
            Some("6f1c4e2a-5b1d-4c3e-9f00-1234567890ab")
        );
        assert_eq!(d.memory_mib, Some(1024));
        assert_eq!(d.taps, vec!["vnet0", "vnet7"]);
        assert_eq!(d.filterrefs, vec!["clean-traffic"]);
        let rules = d.policy.unwrap();
        assert_eq!(rules.len(), 3, "the un-namespaced <allow> is not ours");
        assert_eq!(
            rules[0],
            RawRule {
                proto: Some("tcp".into()),
                port: Some("22".into()),
                from: Some("10.0.0.0/8".into())
            }
        );
        assert_eq!(rules[2].port, None);
    }

    #[test]
    fn a_recovery_marker_is_read_from_its_namespace_only() {
        let x = r#"<domain><name>a</name><metadata>
            <r:recovery xmlns:r="https://rackside.dev/xmlns/recovery/1" from="ha"/>
            </metadata></domain>"#;
        assert_eq!(parse(x.as_bytes()).unwrap().recovery.as_deref(), Some("ha"));
        let other = r#"<domain><name>a</name><metadata>
            <r:recovery xmlns:r="https://rackside.dev/xmlns/recovery/2" from="ha"/>
            </metadata></domain>"#;
        assert_eq!(parse(other.as_bytes()).unwrap().recovery, None);
        let plain = r#"<domain><name>a</name><metadata><recovery from="ha"/></metadata></domain>"#;
        assert_eq!(parse(plain.as_bytes()).unwrap().recovery, None);
    }

    #[test]
    fn policy_in_another_namespace_is_ignored() {
        let x = r#"<domain><name>a</name><metadata>
            <rs:policy xmlns:rs="https://rackside.dev/xmlns/policy/2"><rs:allow proto="tcp"/></rs:policy>
            <policy><allow proto="tcp"/></policy>
            </metadata></domain>"#;
        assert_eq!(parse(x.as_bytes()).unwrap().policy, None);
    }

    #[test]
    fn default_namespace_policy_counts() {
        let x = r#"<domain><metadata><policy xmlns="https://rackside.dev/xmlns/policy/1"><allow proto="icmp"/></policy></metadata></domain>"#;
        assert_eq!(parse(x.as_bytes()).unwrap().policy.unwrap().len(), 1);
    }

    #[test]
    fn empty_policy_is_some_empty() {
        let x = r#"<domain><metadata><p:policy xmlns:p="https://rackside.dev/xmlns/policy/1"/></metadata></domain>"#;
        assert_eq!(parse(x.as_bytes()).unwrap().policy, Some(vec![]));
    }

    #[test]
    fn policy_outside_metadata_is_ignored() {
        let x = r#"<domain><devices><p:policy xmlns:p="https://rackside.dev/xmlns/policy/1"><p:allow proto="tcp"/></p:policy></devices></domain>"#;
        assert_eq!(parse(x.as_bytes()).unwrap().policy, None);
    }

    #[test]
    fn libvirt_elements_in_a_namespace_are_not_libvirts() {
        let x = r#"<domain xmlns="https://evil.example/"><name>a</name></domain>"#;
        assert!(matches!(parse(x.as_bytes()), Err(XmlError::NotDomain)));
        let x = r#"<domain><e:memory xmlns:e="x" unit="GiB">1</e:memory><memory>2048</memory></domain>"#;
        assert_eq!(parse(x.as_bytes()).unwrap().memory_mib, Some(2));
    }

    #[test]
    fn malformed_and_foreign_xml_are_errors() {
        for x in [
            "",
            "<domain>",
            "<domain></domian>",
            "not xml",
            "<network/>",
            "\u{0}",
        ] {
            assert!(parse(x.as_bytes()).is_err(), "{x:?}");
        }
        assert!(matches!(parse(&[0xff, 0xfe]), Err(XmlError::NotUtf8(_))));
    }

    #[test]
    fn dtd_and_entity_bombs_are_refused() {
        let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<domain><name>&lol4;</name></domain>"#;
        assert!(parse(bomb.as_bytes()).is_err());
        let external = r#"<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><domain><name>&x;</name></domain>"#;
        assert!(parse(external.as_bytes()).is_err());
        let undeclared = r#"<domain><name>&x;</name></domain>"#;
        assert!(parse(undeclared.as_bytes()).is_err());
    }

    #[test]
    fn deep_nesting_fails_fast_or_parses_without_recursion() {
        let depth = 40_000;
        let mut x = String::from("<domain>");
        x.push_str(&"<a>".repeat(depth));
        x.push_str(&"</a>".repeat(depth));
        x.push_str("</domain>");
        let t = std::time::Instant::now();
        let d = parse(x.as_bytes()).unwrap();
        assert_eq!(d, Domain::default());
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // Deeper than the node limit: an error, not a stack overflow.
        let depth = 300_000;
        let mut x = String::from("<domain>");
        x.push_str(&"<a>".repeat(depth));
        assert!(matches!(parse(x.as_bytes()), Err(XmlError::Parse(_))));
    }

    #[test]
    fn huge_documents_hit_the_node_limit() {
        // About 10 MB of nested and sibling elements.
        let mut x = String::from("<domain><devices>");
        while x.len() < 10 << 20 {
            x.push_str("<interface><target dev='vnet0'/></interface>");
        }
        x.push_str("</devices></domain>");
        assert!(matches!(parse(x.as_bytes()), Err(XmlError::Parse(_))));
    }

    #[test]
    fn attributes_are_bounded() {
        let per = 1000;
        let mut many = String::new();
        for _ in 0..ATTRIBUTES_LIMIT / per {
            many.push_str("<x");
            for a in 0..per {
                many.push_str(&format!(" a{a}=''"));
            }
            many.push_str("/>");
        }
        let at_limit = format!("<domain><devices>{many}</devices></domain>");
        assert!(parse(at_limit.as_bytes()).is_ok());
        let over = format!("<domain><devices>{many}<y b=''/></devices></domain>");
        assert!(over.len() < crate::input::MAX_XML_BYTES as usize);
        assert!(matches!(
            parse(over.as_bytes()),
            Err(XmlError::TooManyAttributes)
        ));
    }

    #[test]
    fn nodes_are_bounded_within_the_input_cap() {
        let mut x = String::from("<domain>");
        for _ in 0..NODES_LIMIT {
            x.push_str("<a/>");
        }
        x.push_str("</domain>");
        assert!(x.len() < crate::input::MAX_XML_BYTES as usize);
        assert!(matches!(parse(x.as_bytes()), Err(XmlError::Parse(_))));
    }

    #[test]
    fn lists_are_capped() {
        let mut x = String::from("<domain><devices>");
        for i in 0..1000 {
            x.push_str(&format!("<interface><target dev='vnet{i}'/></interface>"));
        }
        x.push_str("</devices></domain>");
        assert_eq!(parse(x.as_bytes()).unwrap().taps.len(), MAX_ITEMS);
    }

    #[test]
    fn memory_units() {
        assert_eq!(memory_mib("1048576", None), Some(1024));
        assert_eq!(memory_mib("1048576", Some("KiB")), Some(1024));
        assert_eq!(memory_mib("1048576", Some("k")), Some(1024));
        assert_eq!(memory_mib("1048576", Some("K")), Some(1024));
        assert_eq!(memory_mib("512", Some("MiB")), Some(512));
        assert_eq!(memory_mib("512", Some("M")), Some(512));
        assert_eq!(memory_mib("2", Some("GiB")), Some(2048));
        assert_eq!(memory_mib("2", Some("g")), Some(2048));
        assert_eq!(memory_mib("1", Some("TiB")), Some(1 << 20));
        assert_eq!(memory_mib("1", Some("PiB")), Some(1 << 30));
        assert_eq!(memory_mib("1073741824", Some("b")), Some(1024));
        assert_eq!(memory_mib("1073741824", Some("bytes")), Some(1024));
        assert_eq!(
            memory_mib("1073741825", Some("bytes")),
            Some(1025),
            "rounds up"
        );
        assert_eq!(memory_mib("1", Some("bytes")), Some(1));
        assert_eq!(memory_mib("0", Some("KiB")), Some(0));
        assert_eq!(memory_mib("1000000", Some("KB")), Some(954)); // 1e9 B
        assert_eq!(memory_mib("1000", Some("MB")), Some(954));
        assert_eq!(memory_mib("1", Some("GB")), Some(954));
        assert_eq!(memory_mib("1", Some("TB")), Some(953_675));
        assert_eq!(memory_mib(" 2048 ", Some(" MiB ")), Some(2048));
    }

    #[test]
    fn bad_memory_is_none() {
        for (v, u) in [
            ("", None),
            ("-1", None),
            ("1.5", Some("GiB")),
            ("0x10", None),
            ("12", Some("furlongs")),
            ("12", Some("KiBB")),
            ("12", Some("i")),
            ("99999999999999999999", Some("EiB")),
            ("999999999999999999999999", None),
        ] {
            assert_eq!(memory_mib(v, u), None, "{v:?} {u:?}");
        }
        assert_eq!(memory_mib("16", Some("EiB")), Some(16 << 40));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_strings(s in ".{0,400}") {
            let _ = parse(s.as_bytes());
        }

        #[test]
        fn parse_never_panics_on_arbitrary_bytes(b in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse(&b);
        }

        #[test]
        fn parse_never_panics_on_xmlish_input(
            s in r#"(<domain>|</domain>|<metadata>|</metadata>|<rs:policy xmlns:rs="https://rackside.dev/xmlns/policy/1">|</rs:policy>|<rs:allow proto="[a-z]{0,4}" port="[0-9-]{0,6}" from="[0-9./]{0,19}"/>|<memory unit="[a-zA-Z]{0,4}">[0-9]{0,22}</memory>|<devices>|</devices>|<interface>|</interface>|<target dev="[^"<&]{0,20}"/>|<name>[^<&]{0,10}</name>|&[a-z]{0,3};|<!DOCTYPE d>| ){0,40}"#
        ) {
            let _ = parse(s.as_bytes());
        }

        #[test]
        fn memory_mib_never_panics(v in "[0-9]{0,40}", u in "[a-zA-Z]{0,6}") {
            let _ = memory_mib(&v, Some(&u));
        }
    }
}
