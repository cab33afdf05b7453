//! A VM's network policy as nftables tables. Pure: validated values in,
//! `nft -f` text out, deterministic.
//!
//! Each VM gets two tables named from its UUID, `rackside_<32 hex>`, one
//! per family, loaded in one transaction:
//!
//! - `bridge`: frames a bridge sends out of one of the VM's taps (from
//!   another port, or from the bridge's own device: a NAT or routed libvirt
//!   network) pass the `postrouting` hook with the tap as `oifname`. This
//!   family has no conntrack on our kernels, so replies to connections the
//!   VM opened are let in statelessly: TCP segments that are not a bare
//!   SYN, UDP datagrams whose addresses and ports mirror one the VM sent
//!   in the last [`UDP_REPLY_SECS`] (a dynamic set the VM's own outgoing
//!   datagrams keep fresh, at `prerouting` with the tap as `iifname`), and
//!   ICMP echo replies and errors.
//! - `inet`: packets the host routes to a tap that is no bridge port
//!   (`forward`), or sends there itself (`output`), with conntrack:
//!   `ct state established,related`. A bridged packet never matches here
//!   (br_netfilter hands the IP hooks the bridge, not the port, as the
//!   device), so no packet is judged by both tables.
//!
//! In both, ARP, RARP (the announcement QEMU sends after a migration) and
//! IPv6 neighbour discovery are never dropped, nor DHCP replies; then the
//! VM's own rules; then everything else to the VM is dropped. Traffic from
//! the VM is never filtered.

use std::fmt::Write;

use crate::policy::{Proto, Rule, VmUuid};

/// Every table of ours starts so.
pub const TABLE_PREFIX: &str = "rackside_";
/// How long a UDP exchange the VM started stays open for replies after
/// its last outgoing datagram (conntrack's own UDP stream timeout).
pub const UDP_REPLY_SECS: u32 = 120;
/// Most UDP exchanges remembered per VM; beyond it new ones get no
/// replies until old ones expire. Bounds the memory a VM can make the
/// host spend on it.
pub const UDP_FLOWS_MAX: u32 = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Bridge,
    Inet,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Bridge, Family::Inet];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Bridge => "bridge",
            Family::Inet => "inet",
        }
    }
}

/// `rackside_<uuid as 32 hex digits>`: one name per domain, so one VM's
/// removal can never name another VM's table, whatever their names.
pub fn table_name(uuid: &VmUuid) -> String {
    format!("{TABLE_PREFIX}{}", uuid.hex())
}

/// Make each table exist, then remove it: in one `nft -f` transaction this
/// succeeds whether or not the tables were there.
fn reset_lines(out: &mut String, table: &str) {
    for f in Family::ALL {
        let f = f.as_str();
        let _ = writeln!(out, "table {f} {table} {{}}");
        let _ = writeln!(out, "delete table {f} {table}");
    }
}

/// A ruleset that only removes the VM's tables (idempotent).
pub fn render_removal(uuid: &VmUuid) -> String {
    let mut out = String::new();
    reset_lines(&mut out, &table_name(uuid));
    out
}

fn render_rule(out: &mut String, r: &Rule, family: Family) {
    let mut m = String::new();
    if let Some(c) = r.from {
        if c.prefix == 0 {
            // Any IPv4 source: only the family needs saying. (In the
            // bridge family `meta nfproto` is always `bridge`.)
            m.push_str(match family {
                Family::Bridge => "ether type ip ",
                Family::Inet => "meta nfproto ipv4 ",
            });
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

/// What reaches a VM whatever its policy says: address resolution (and
/// the RARP announcement after a migration) and address assignment.
const ALWAYS: &str = "\t\tudp sport 67 udp dport 68 accept
\t\tudp sport 547 udp dport 546 accept
\t\ticmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept
";

fn render_bridge(out: &mut String, table: &str, uuid: &VmUuid, devs: &str, rules: &[Rule]) {
    let _ = writeln!(out, "table bridge {table} {{");
    let _ = writeln!(out, "\tcomment \"rackside vm {uuid}\"");
    for (set, addr) in [("udp4", "ipv4_addr"), ("udp6", "ipv6_addr")] {
        let _ = writeln!(
            out,
            "\tset {set} {{ type {addr} . inet_service . {addr} . inet_service; flags dynamic, timeout; timeout {UDP_REPLY_SECS}s; size {UDP_FLOWS_MAX}; }}"
        );
    }
    out.push_str("\tchain from_vm {\n");
    out.push_str("\t\ttype filter hook prerouting priority 0; policy accept;\n");
    let _ = writeln!(
        out,
        "\t\tiifname {{ {devs} }} meta l4proto udp jump udp_sent"
    );
    out.push_str("\t}\n");
    // Keyed as the reply will be seen: remote address and port, then the
    // VM's.
    out.push_str("\tchain udp_sent {\n");
    out.push_str("\t\tupdate @udp4 { ip daddr . udp dport . ip saddr . udp sport }\n");
    out.push_str("\t\tupdate @udp6 { ip6 daddr . udp dport . ip6 saddr . udp sport }\n");
    out.push_str("\t}\n");
    out.push_str("\tchain to_vm {\n");
    out.push_str("\t\ttype filter hook postrouting priority 0; policy accept;\n");
    let _ = writeln!(out, "\t\toifname {{ {devs} }} jump guest");
    out.push_str("\t}\n");
    out.push_str("\tchain guest {\n");
    out.push_str("\t\tether type { arp, 0x8035 } accept\n");
    // Replies. A bare SYN opens a connection; anything else belongs to
    // one already open (or is refused by the VM's own TCP stack).
    out.push_str("\t\ttcp flags & (syn | ack) != syn accept\n");
    out.push_str("\t\tip saddr . udp sport . ip daddr . udp dport @udp4 accept\n");
    out.push_str("\t\tip6 saddr . udp sport . ip6 daddr . udp dport @udp6 accept\n");
    out.push_str(
        "\t\ticmp type { echo-reply, destination-unreachable, time-exceeded, parameter-problem } accept\n",
    );
    out.push_str(
        "\t\ticmpv6 type { echo-reply, destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept\n",
    );
    out.push_str(ALWAYS);
    for r in rules {
        render_rule(out, r, Family::Bridge);
    }
    out.push_str("\t\tdrop\n");
    out.push_str("\t}\n}\n");
}

fn render_inet(out: &mut String, table: &str, uuid: &VmUuid, devs: &str, rules: &[Rule]) {
    let _ = writeln!(out, "table inet {table} {{");
    let _ = writeln!(out, "\tcomment \"rackside vm {uuid}\"");
    for (chain, hook) in [("routed_to_vm", "forward"), ("host_to_vm", "output")] {
        let _ = writeln!(out, "\tchain {chain} {{");
        let _ = writeln!(
            out,
            "\t\ttype filter hook {hook} priority 0; policy accept;"
        );
        let _ = writeln!(out, "\t\toifname {{ {devs} }} jump guest");
        out.push_str("\t}\n");
    }
    out.push_str("\tchain guest {\n");
    out.push_str("\t\tct state established,related accept\n");
    out.push_str(ALWAYS);
    for r in rules {
        render_rule(out, r, Family::Inet);
    }
    out.push_str("\t\tdrop\n");
    out.push_str("\t}\n}\n");
}

/// The whole ruleset for one VM: its old tables (if any) go and the new
/// ones come in one atomic load. `devices` must be non-empty and already
/// validated ([`crate::policy::valid_devices`]).
pub fn render(uuid: &VmUuid, devices: &[String], rules: &[Rule]) -> String {
    let table = table_name(uuid);
    let mut out = String::new();
    reset_lines(&mut out, &table);
    let devs = devices
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    render_bridge(&mut out, &table, uuid, &devs, rules);
    render_inet(&mut out, &table, uuid, &devs, rules);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{parse_rule, parse_uuid};
    use crate::xml::RawRule;

    const UUID: &str = "6f1c4e2a-5b1d-4c3e-9f00-1234567890ab";

    fn uuid() -> VmUuid {
        parse_uuid(UUID).unwrap()
    }

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
        let got = render(&uuid(), &["vnet0".into(), "vnet7".into()], &rules);
        let t = "rackside_6f1c4e2a5b1d4c3e9f001234567890ab";
        let want = format!(
            "table bridge {t} {{}}
delete table bridge {t}
table inet {t} {{}}
delete table inet {t}
table bridge {t} {{
\tcomment \"rackside vm {UUID}\"
\tset udp4 {{ type ipv4_addr . inet_service . ipv4_addr . inet_service; flags dynamic, timeout; timeout 120s; size 65536; }}
\tset udp6 {{ type ipv6_addr . inet_service . ipv6_addr . inet_service; flags dynamic, timeout; timeout 120s; size 65536; }}
\tchain from_vm {{
\t\ttype filter hook prerouting priority 0; policy accept;
\t\tiifname {{ \"vnet0\", \"vnet7\" }} meta l4proto udp jump udp_sent
\t}}
\tchain udp_sent {{
\t\tupdate @udp4 {{ ip daddr . udp dport . ip saddr . udp sport }}
\t\tupdate @udp6 {{ ip6 daddr . udp dport . ip6 saddr . udp sport }}
\t}}
\tchain to_vm {{
\t\ttype filter hook postrouting priority 0; policy accept;
\t\toifname {{ \"vnet0\", \"vnet7\" }} jump guest
\t}}
\tchain guest {{
\t\tether type {{ arp, 0x8035 }} accept
\t\ttcp flags & (syn | ack) != syn accept
\t\tip saddr . udp sport . ip daddr . udp dport @udp4 accept
\t\tip6 saddr . udp sport . ip6 daddr . udp dport @udp6 accept
\t\ticmp type {{ echo-reply, destination-unreachable, time-exceeded, parameter-problem }} accept
\t\ticmpv6 type {{ echo-reply, destination-unreachable, packet-too-big, time-exceeded, parameter-problem }} accept
\t\tudp sport 67 udp dport 68 accept
\t\tudp sport 547 udp dport 546 accept
\t\ticmpv6 type {{ nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert }} accept
\t\tip saddr 10.0.0.0/8 tcp dport 22 accept
\t\tudp dport 53 accept
\t\tmeta l4proto {{ icmp, ipv6-icmp }} accept
\t\tip saddr 192.168.1.7 tcp dport 8000-8080 accept
\t\tether type ip meta l4proto udp accept
\t\tip saddr 172.16.0.0/12 meta l4proto icmp accept
\t\tdrop
\t}}
}}
table inet {t} {{
\tcomment \"rackside vm {UUID}\"
\tchain routed_to_vm {{
\t\ttype filter hook forward priority 0; policy accept;
\t\toifname {{ \"vnet0\", \"vnet7\" }} jump guest
\t}}
\tchain host_to_vm {{
\t\ttype filter hook output priority 0; policy accept;
\t\toifname {{ \"vnet0\", \"vnet7\" }} jump guest
\t}}
\tchain guest {{
\t\tct state established,related accept
\t\tudp sport 67 udp dport 68 accept
\t\tudp sport 547 udp dport 546 accept
\t\ticmpv6 type {{ nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert }} accept
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
        assert_eq!(
            got,
            render(&uuid(), &["vnet0".into(), "vnet7".into()], &rules)
        );
    }

    #[test]
    fn removal_names_only_this_vms_tables() {
        let t = table_name(&uuid());
        assert_eq!(
            render_removal(&uuid()),
            format!(
                "table bridge {t} {{}}\ndelete table bridge {t}\ntable inet {t} {{}}\ndelete table inet {t}\n"
            )
        );
        // Two VMs whose names share any prefix still have different UUIDs,
        // and the whole UUID is in the name.
        let other = parse_uuid("6f1c4e2a-5b1d-4c3e-9f00-1234567890ac").unwrap();
        assert_ne!(table_name(&other), t);
        assert!(!render_removal(&other).contains(&t));
        assert!(!render(&other, &["vnet1".into()], &[]).contains(&t));
    }

    #[test]
    fn the_load_first_removes_the_old_tables() {
        let r = render(&uuid(), &["vnet0".into()], &[]);
        assert!(r.starts_with(&render_removal(&uuid())));
        assert_eq!(r.matches("\n\t\tdrop\n").count(), 2, "{r}");
    }

    proptest::proptest! {
        #[test]
        fn rules_either_fail_or_render_one_line_per_family(
            proto in "\\PC{0,6}", port in proptest::option::of("\\PC{0,12}"), from in proptest::option::of("\\PC{0,20}")
        ) {
            let raw = RawRule { proto: Some(proto), port, from };
            let base = render(&uuid(), &["vnet0".into()], &[]).lines().count();
            if let Ok(rule) = parse_rule(&raw) {
                let r = render(&uuid(), &["vnet0".into()], &[rule]);
                proptest::prop_assert_eq!(r.lines().count(), base + 2);
            }
        }
    }
}
