//! Traffic follows the VM: after a live migration the destination's QEMU
//! announces each of the VM's NICs with RARP frames (ethertype 0x8035,
//! sender = the NIC's MAC; one round as the incoming stream ends, four
//! more over the next 0.8 s with QEMU's defaults), and the switches learn
//! where the MAC lives now. A guest
//! never sends RARP itself, so a RARP from one of the VM's MACs that
//! reaches the *source* host's bridge during the migration is the
//! destination's announcement, flooded back across the segment. Pure:
//! which NICs can be watched, what a frame is, what was heard, and the
//! result people read; the sockets are in [`super::rarp`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::storage::domxml::{child, is_plain, parse_doc, XmlError};

/// RARP's ethertype.
pub const ETH_P_RARP: u16 = 0x8035;

/// What the destination is asked to do when no announcement was heard:
/// five rounds over half a second: at once, then 50, 100, 150 and 200 ms
/// apart (QMP announce-self, QEMU 4.0 and later).
pub const ANNOUNCE_SELF: &str =
    r#"{"execute":"announce-self","arguments":{"initial":50,"max":550,"rounds":5,"step":50}}"#;

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `52:54:00:ab:cd:ef` (either case); None for anything else.
    pub fn parse(s: &str) -> Option<Mac> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next()?;
            if p.len() != 2 {
                return None;
            }
            *b = u8::from_str_radix(p, 16).ok()?;
        }
        parts.next().is_none().then_some(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// One of the VM's NICs, as seen from this (the source) host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nic {
    /// On bridge `bridge` here: a RARP from `mac` arriving on it is the
    /// destination's announcement.
    Bridged { mac: Mac, bridge: String },
    /// Cannot be watched from here; why, for people.
    Unwatchable(String),
}

/// The VM's NICs, from its live domain XML (a `type='network'` interface
/// names its bridge only there). Bounded parsing, as for the disks.
pub fn nics(xml: &str) -> Result<Vec<Nic>, XmlError> {
    let doc = parse_doc(xml)?;
    let root = doc.root_element();
    if !is_plain(&root, "domain") {
        return Err(XmlError::WrongRoot("domain"));
    }
    let Some(devs) = child(root, "devices") else {
        return Ok(Vec::new());
    };
    Ok(devs
        .children()
        .filter(|n| is_plain(n, "interface"))
        .map(nic)
        .collect())
}

fn nic(n: roxmltree::Node<'_, '_>) -> Nic {
    let kind = n.attribute("type").unwrap_or("");
    let mac = child(n, "mac")
        .and_then(|m| m.attribute("address"))
        .and_then(Mac::parse);
    let Some(mac) = mac else {
        return Nic::Unwatchable(format!("a NIC (type '{kind}') has no readable MAC address"));
    };
    let bridge = child(n, "source")
        .and_then(|s| s.attribute("bridge"))
        .filter(|b| !b.is_empty());
    let not_on_bridge =
        |what: &str| Nic::Unwatchable(format!("NIC {mac} is not on a bridge ({what})"));
    match (kind, bridge) {
        ("bridge" | "network", Some(b)) => Nic::Bridged {
            mac,
            bridge: b.to_owned(),
        },
        ("network", None) => not_on_bridge("its network has no bridge here"),
        ("user", _) => not_on_bridge("user-mode networking"),
        ("direct", _) => not_on_bridge("macvtap"),
        ("hostdev", _) => not_on_bridge("a passed-through device"),
        (k, _) => not_on_bridge(&format!("type '{k}'")),
    }
}

/// The bridges to watch and the MACs expected on each; and the NICs that
/// cannot be watched, with why.
pub fn by_bridge(nics: &[Nic]) -> (BTreeMap<String, Vec<Mac>>, Vec<String>) {
    let mut bridges: BTreeMap<String, Vec<Mac>> = BTreeMap::new();
    let mut unwatchable = Vec::new();
    for n in nics {
        match n {
            Nic::Bridged { mac, bridge } => {
                let macs = bridges.entry(bridge.clone()).or_default();
                if !macs.contains(mac) {
                    macs.push(*mac);
                }
            }
            Nic::Unwatchable(why) => unwatchable.push(why.clone()),
        }
    }
    (bridges, unwatchable)
}

/// The sender hardware address of a RARP frame (Ethernet header first);
/// None for any other frame, or one too short to be RARP.
pub fn rarp_sender(frame: &[u8]) -> Option<Mac> {
    // Ethernet header (14) + the ARP-format body (28).
    if frame.len() < 42 || frame[12..14] != ETH_P_RARP.to_be_bytes() {
        return None;
    }
    let body = &frame[14..];
    // Hardware type Ethernet, 6-byte hardware addresses: the sender's
    // address follows the 8-byte fixed part.
    if body[0..2] != [0, 1] || body[4] != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&body[8..14]);
    Some(Mac(mac))
}

/// One watched NIC by the end of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub mac: Mac,
    pub bridge: String,
    /// When its first RARP was heard, on the migration loop's clock.
    pub at: Option<Duration>,
}

/// What a watch heard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Heard {
    pub watched: Vec<Watched>,
    /// Why the other NICs could not be watched, one phrase each.
    pub unwatched: Vec<String>,
}

impl Heard {
    /// Nothing to watch, for one reason (e.g. the domain XML unreadable).
    pub fn blind(why: String) -> Heard {
        Heard {
            watched: Vec::new(),
            unwatched: vec![why],
        }
    }

    /// A watched NIC not heard yet: worth waiting for.
    pub fn waiting(&self) -> bool {
        self.watched.iter().any(|w| w.at.is_none())
    }

    /// Records a RARP from `mac` at `at`; true if it was news.
    pub fn hear(&mut self, mac: Mac, at: Duration) -> bool {
        let mut news = false;
        for w in self.watched.iter_mut().filter(|w| w.mac == mac) {
            if w.at.is_none() {
                w.at = Some(at);
                news = true;
            }
        }
        news
    }
}

/// What was heard, judged once the migration has ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Judged {
    /// The VM has no NIC.
    NoNic,
    /// Every NIC was announced; `at`: when the last of them was first
    /// heard (loop clock).
    Seen { at: Duration, from_end_ms: i64 },
    /// An announcement cannot be confirmed, for this reason.
    Unconfirmed(String),
}

/// `ended`: when libvirt's migrate call returned (loop clock); `waited`:
/// how long after that the watch was given.
pub fn judge(heard: &Heard, ended: Duration, waited: Duration) -> Judged {
    if heard.watched.is_empty() && heard.unwatched.is_empty() {
        return Judged::NoNic;
    }
    let mut why: Vec<String> = heard
        .watched
        .iter()
        .filter(|w| w.at.is_none())
        .map(|w| {
            format!(
                "no RARP from {} seen on {} within {} ms of the end",
                w.mac,
                w.bridge,
                waited.as_millis()
            )
        })
        .collect();
    why.extend(heard.unwatched.iter().cloned());
    if !why.is_empty() {
        return Judged::Unconfirmed(why.join("; "));
    }
    let at = heard
        .watched
        .iter()
        .filter_map(|w| w.at)
        .max()
        .unwrap_or(ended);
    Judged::Seen {
        at,
        from_end_ms: signed_ms(at, ended),
    }
}

/// `at - from` in milliseconds, negative when `at` came first.
fn signed_ms(at: Duration, from: Duration) -> i64 {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if at >= from {
        ms(at - from)
    } else {
        -ms(from - at)
    }
}

/// How a moved VM's traffic was made to follow it (docs/protocol.md
/// "Announcement").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Announce {
    /// The VM has no NIC: nothing to announce.
    NoNic,
    /// A RARP from every NIC reached this host's bridge: the destination
    /// announced the VM. `from_end_ms`: from libvirt's end of the
    /// migration to the last NIC's first RARP; negative when the RARP
    /// came first (QEMU announces as soon as the stream ends, before
    /// libvirt has finished with the guest).
    Seen { from_end_ms: i64 },
    /// Not confirmed (`reason`), so the destination's QEMU was asked to
    /// announce, and accepted.
    Requested { reason: String },
    /// Not confirmed, and asking the destination failed too: `reason`
    /// says both.
    NotConfirmed { reason: String },
}

impl Announce {
    /// What was judged, with the answer to the request made when it was
    /// not confirmed (None: no request, as for [`Judged::Seen`]).
    pub fn of(judged: &Judged, request: Option<Result<(), String>>) -> Announce {
        match judged {
            Judged::NoNic => Announce::NoNic,
            Judged::Seen { from_end_ms, .. } => Announce::Seen {
                from_end_ms: *from_end_ms,
            },
            Judged::Unconfirmed(why) => match request {
                Some(Ok(())) => Announce::Requested {
                    reason: why.clone(),
                },
                Some(Err(e)) => Announce::NotConfirmed {
                    reason: format!("{why}; asking the destination to announce failed: {e}"),
                },
                None => Announce::NotConfirmed {
                    reason: format!("{why}; the destination was not asked to announce"),
                },
            },
        }
    }

    /// Whether the agent knows the destination announced the VM.
    pub fn confirmed(&self) -> bool {
        matches!(self, Announce::Seen { .. })
    }

    /// A few words for the `migration.done` line; None when there is
    /// nothing to say (no NIC).
    pub fn short(&self) -> Option<&'static str> {
        match self {
            Announce::NoNic => None,
            Announce::Seen { .. } => Some("announced"),
            Announce::Requested { .. } => Some("announce requested"),
            Announce::NotConfirmed { .. } => Some("announce NOT confirmed"),
        }
    }

    /// The whole result, for people.
    pub fn text(&self) -> String {
        match self {
            Announce::NoNic => "no NIC, nothing to announce".into(),
            Announce::Seen { from_end_ms } if *from_end_ms < 0 => format!(
                "announced: RARP seen here {} ms before the migration ended",
                -from_end_ms
            ),
            Announce::Seen { from_end_ms } => {
                format!("announced: RARP seen here {from_end_ms} ms after the migration ended")
            }
            Announce::Requested { reason } => {
                format!("announcement requested from the destination ({reason})")
            }
            Announce::NotConfirmed { reason } => format!("announcement NOT confirmed: {reason}"),
        }
    }
}

/// libvirt's answer to a QMP command passed through: `{"return": ...}`
/// is success; `{"error": {"desc": ...}}` is QEMU refusing.
pub fn qmp_reply(reply: &str) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(reply).map_err(|_| format!("unreadable QMP reply: {reply:.200}"))?;
    if let Some(e) = v.get("error") {
        let desc = e
            .get("desc")
            .and_then(|d| d.as_str())
            .unwrap_or("no description");
        return Err(format!("QEMU refused announce-self: {desc}"));
    }
    if v.get("return").is_some() {
        Ok(())
    } else {
        Err(format!("unexpected QMP reply: {reply:.200}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M1: &str = "52:54:00:12:34:56";

    fn mac(s: &str) -> Mac {
        Mac::parse(s).unwrap_or(Mac([0; 6]))
    }

    fn domain(devices: &str) -> String {
        format!("<domain type='qemu'><name>a</name><devices>{devices}</devices></domain>")
    }

    #[test]
    fn macs_parse_and_print_lower_case() {
        assert_eq!(
            Mac::parse("52:54:00:AB:cd:0F").map(|m| m.to_string()),
            Some("52:54:00:ab:cd:0f".into())
        );
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "52:54:00:ab:cd:gg",
            "525:4:00:ab:cd:ef",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn bridged_and_network_nics_are_watched_on_their_bridge() {
        let xml = domain(&format!(
            "<interface type='bridge'><mac address='{M1}'/><source bridge='brvm'/><target dev='vnet0'/></interface>\
             <interface type='network'><mac address='52:54:00:00:00:02'/>\
               <source network='default' portid='x' bridge='virbr0'/></interface>"
        ));
        assert_eq!(
            nics(&xml).ok(),
            Some(vec![
                Nic::Bridged {
                    mac: mac(M1),
                    bridge: "brvm".into()
                },
                Nic::Bridged {
                    mac: mac("52:54:00:00:00:02"),
                    bridge: "virbr0".into()
                },
            ])
        );
    }

    #[test]
    fn nics_off_a_bridge_say_why_they_cannot_be_watched() {
        let xml = domain(
            "<interface type='user'><mac address='52:54:00:00:00:01'/></interface>\
             <interface type='direct'><mac address='52:54:00:00:00:02'/><source dev='eth0' mode='bridge'/></interface>\
             <interface type='hostdev'><mac address='52:54:00:00:00:03'/></interface>\
             <interface type='ethernet'><mac address='52:54:00:00:00:04'/><target dev='tap0'/></interface>\
             <interface type='network'><mac address='52:54:00:00:00:05'/><source network='pool'/></interface>\
             <interface type='bridge'><source bridge='brvm'/></interface>",
        );
        let why: Vec<String> = nics(&xml)
            .unwrap_or_default()
            .into_iter()
            .map(|n| match n {
                Nic::Unwatchable(w) => w,
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            why,
            [
                "NIC 52:54:00:00:00:01 is not on a bridge (user-mode networking)",
                "NIC 52:54:00:00:00:02 is not on a bridge (macvtap)",
                "NIC 52:54:00:00:00:03 is not on a bridge (a passed-through device)",
                "NIC 52:54:00:00:00:04 is not on a bridge (type 'ethernet')",
                "NIC 52:54:00:00:00:05 is not on a bridge (its network has no bridge here)",
                "a NIC (type 'bridge') has no readable MAC address",
            ]
        );
    }

    #[test]
    fn a_domain_without_nics_has_none_and_bad_xml_is_an_error() {
        assert_eq!(nics(&domain("<disk type='file'/>")).ok(), Some(vec![]));
        assert_eq!(nics("<domain><name>a</name></domain>").ok(), Some(vec![]));
        assert!(nics("<domain>").is_err());
        assert!(matches!(
            nics("<pool/>"),
            Err(XmlError::WrongRoot("domain"))
        ));
    }

    #[test]
    fn nics_are_grouped_by_bridge_once_each() {
        let b = |m: &str, br: &str| Nic::Bridged {
            mac: mac(m),
            bridge: br.into(),
        };
        let (bridges, why) = by_bridge(&[
            b(M1, "brvm"),
            b("52:54:00:00:00:02", "brvm"),
            b(M1, "brvm"),
            b("52:54:00:00:00:03", "br1"),
            Nic::Unwatchable("NIC x is not on a bridge (macvtap)".into()),
        ]);
        assert_eq!(bridges.len(), 2);
        assert_eq!(bridges["brvm"], vec![mac(M1), mac("52:54:00:00:00:02")]);
        assert_eq!(why, ["NIC x is not on a bridge (macvtap)"]);
    }

    /// QEMU's announce_self_create: broadcast, RARP, "request reverse".
    fn qemu_rarp(m: Mac) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&m.0);
        f.extend_from_slice(&ETH_P_RARP.to_be_bytes());
        f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 3]);
        f.extend_from_slice(&m.0);
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(&m.0);
        f.extend_from_slice(&[0; 4]);
        f.resize(60, 0);
        f
    }

    #[test]
    fn a_rarp_frame_names_its_sender() {
        let m = mac(M1);
        assert_eq!(rarp_sender(&qemu_rarp(m)), Some(m));
        // The sender in the body counts, not the Ethernet source.
        let mut f = qemu_rarp(m);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        assert_eq!(rarp_sender(&f), Some(m));
    }

    #[test]
    fn other_frames_are_not_rarp() {
        let m = mac(M1);
        let mut arp = qemu_rarp(m);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(rarp_sender(&arp), None);
        assert_eq!(rarp_sender(&qemu_rarp(m)[..41]), None);
        assert_eq!(rarp_sender(&[]), None);
        let mut token_ring = qemu_rarp(m);
        token_ring[15] = 6;
        assert_eq!(rarp_sender(&token_ring), None);
        let mut long_hw = qemu_rarp(m);
        long_hw[18] = 8;
        assert_eq!(rarp_sender(&long_hw), None);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn watched(m: &str, at: Option<u64>) -> Watched {
        Watched {
            mac: mac(m),
            bridge: "brvm".into(),
            at: at.map(ms),
        }
    }

    #[test]
    fn hearing_keeps_the_first_rarp_of_each_nic() {
        let mut h = Heard {
            watched: vec![watched(M1, None), watched("52:54:00:00:00:02", None)],
            unwatched: vec![],
        };
        assert!(h.waiting());
        assert!(h.hear(mac(M1), ms(100)));
        assert!(!h.hear(mac(M1), ms(200)), "a later round is no news");
        assert!(!h.hear(mac("52:54:00:99:99:99"), ms(200)), "not ours");
        assert!(h.waiting());
        assert!(h.hear(mac("52:54:00:00:00:02"), ms(250)));
        assert!(!h.waiting());
        assert_eq!(h.watched[0].at, Some(ms(100)));
    }

    #[test]
    fn every_nic_heard_is_seen_with_the_time_from_the_end() {
        let h = Heard {
            watched: vec![
                watched(M1, Some(4_040)),
                watched("52:54:00:00:00:02", Some(4_090)),
            ],
            unwatched: vec![],
        };
        assert_eq!(
            judge(&h, ms(4_100), ms(1_000)),
            Judged::Seen {
                at: ms(4_090),
                from_end_ms: -10
            }
        );
        assert_eq!(
            judge(&h, ms(4_000), ms(1_000)),
            Judged::Seen {
                at: ms(4_090),
                from_end_ms: 90
            }
        );
    }

    #[test]
    fn a_nic_not_heard_or_not_watchable_leaves_it_unconfirmed() {
        let h = Heard {
            watched: vec![watched(M1, Some(10)), watched("52:54:00:00:00:02", None)],
            unwatched: vec!["NIC 52:54:00:00:00:03 is not on a bridge (macvtap)".into()],
        };
        assert_eq!(
            judge(&h, ms(0), ms(1_000)),
            Judged::Unconfirmed(
                "no RARP from 52:54:00:00:00:02 seen on brvm within 1000 ms of the end; \
                 NIC 52:54:00:00:00:03 is not on a bridge (macvtap)"
                    .into()
            )
        );
        assert_eq!(judge(&Heard::default(), ms(0), ms(0)), Judged::NoNic);
        assert_eq!(
            judge(
                &Heard::blind("cannot read the VM's definition: x".into()),
                ms(0),
                ms(0)
            ),
            Judged::Unconfirmed("cannot read the VM's definition: x".into())
        );
    }

    #[test]
    fn the_result_says_what_was_done_about_it() {
        let un = Judged::Unconfirmed("no RARP".into());
        assert_eq!(
            Announce::of(&un, Some(Ok(()))),
            Announce::Requested {
                reason: "no RARP".into()
            }
        );
        assert_eq!(
            Announce::of(&un, Some(Err("Connection refused".into()))),
            Announce::NotConfirmed {
                reason: "no RARP; asking the destination to announce failed: Connection refused"
                    .into()
            }
        );
        assert!(matches!(
            Announce::of(&un, None),
            Announce::NotConfirmed { .. }
        ));
        let seen = Judged::Seen {
            at: ms(1),
            from_end_ms: -38,
        };
        let a = Announce::of(&seen, None);
        assert!(a.confirmed());
        assert_eq!(a.short(), Some("announced"));
        assert_eq!(
            a.text(),
            "announced: RARP seen here 38 ms before the migration ended"
        );
        assert_eq!(Announce::of(&Judged::NoNic, None).short(), None);
    }

    #[test]
    fn json_names_the_result() {
        let v = |a: &Announce| serde_json::to_value(a).unwrap_or_default();
        assert_eq!(
            v(&Announce::Seen { from_end_ms: 12 }),
            serde_json::json!({"result": "seen", "from_end_ms": 12})
        );
        assert_eq!(
            v(&Announce::Requested { reason: "r".into() }),
            serde_json::json!({"result": "requested", "reason": "r"})
        );
        assert_eq!(
            v(&Announce::NotConfirmed { reason: "r".into() }),
            serde_json::json!({"result": "not_confirmed", "reason": "r"})
        );
        assert_eq!(v(&Announce::NoNic), serde_json::json!({"result": "no_nic"}));
        let back: Result<Announce, _> =
            serde_json::from_value(serde_json::json!({"result": "seen", "from_end_ms": -3}));
        assert_eq!(back.ok(), Some(Announce::Seen { from_end_ms: -3 }));
    }

    #[test]
    fn qmp_replies_are_read() {
        assert_eq!(qmp_reply(r#"{"return":{},"id":"libvirt-7"}"#), Ok(()));
        assert_eq!(
            qmp_reply(
                r#"{"id":"libvirt-7","error":{"class":"CommandNotFound","desc":"The command announce-self has not been found"}}"#
            ),
            Err("QEMU refused announce-self: The command announce-self has not been found".into())
        );
        assert!(qmp_reply("not json").is_err());
        assert!(qmp_reply("{}").is_err());
        assert!(ANNOUNCE_SELF.contains("announce-self"));
        assert!(serde_json::from_str::<serde_json::Value>(ANNOUNCE_SELF).is_ok());
    }
}
