//! What the crash handler reads from and writes into a crashed VM's
//! domain XML. Pure.
//!
//! A VM's own crash policy is `<c:crash policy="restart|leave"/>` in its
//! `<metadata>`, in the namespace [`CRASH_NS`]; the config's default
//! holds for a VM without one. A crashed VM started on a peer carries the
//! recovery marker ([`rackside_contract::RECOVERY_NS`]) so the peer's hook
//! admits it only if that host is fit.

use super::Policy;

/// The namespace of a VM's crash policy in `<metadata>`.
pub const CRASH_NS: &str = "https://rackside.dev/xmlns/crash/1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrashXmlError {
    #[error("cannot parse the domain XML: {0}")]
    Parse(String),
    #[error("crash policy '{0}' in its metadata is neither restart nor leave")]
    BadPolicy(String),
}

/// The VM's own crash policy, if its metadata names one.
pub fn policy_of(xml: &str) -> Result<Option<Policy>, CrashXmlError> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: crate::storage::domxml::NODES_LIMIT,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(xml, opts)
        .map_err(|e| CrashXmlError::Parse(e.to_string()))?;
    let el = doc
        .root_element()
        .children()
        .find(|c| {
            c.is_element() && c.tag_name().namespace().is_none() && c.has_tag_name("metadata")
        })
        .and_then(|m| {
            m.children()
                .find(|c| c.is_element() && c.has_tag_name((CRASH_NS, "crash")))
        });
    let Some(el) = el else {
        return Ok(None);
    };
    match el.attribute("policy").map(str::trim) {
        Some("restart") => Ok(Some(Policy::Restart)),
        Some("leave") => Ok(Some(Policy::Leave)),
        other => Err(CrashXmlError::BadPolicy(
            other.unwrap_or("").chars().take(40).collect(),
        )),
    }
}

fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
}

/// `xml` (libvirt's own output) with the recovery marker naming `from`
/// added to its `<metadata>`, which is made when there is none.
pub fn with_recovery_marker(xml: &str, from: &str) -> String {
    let marker = format!(
        "<rsr:recovery xmlns:rsr=\"{}\" from=\"{}\"/>",
        rackside_contract::RECOVERY_NS,
        escape_attr(from)
    );
    if let Some(i) = xml.find("<metadata>") {
        let at = i + "<metadata>".len();
        return format!("{}{marker}{}", &xml[..at], &xml[at..]);
    }
    if let Some(i) = xml.find("<metadata/>") {
        return format!(
            "{}<metadata>{marker}</metadata>{}",
            &xml[..i],
            &xml[i + "<metadata/>".len()..]
        );
    }
    match xml.rfind("</domain>") {
        Some(i) => format!("{}<metadata>{marker}</metadata>{}", &xml[..i], &xml[i..]),
        None => xml.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: &str = "<domain type='qemu'>\n  <name>c1</name>\n  <uuid>u</uuid>\n</domain>\n";

    #[test]
    fn a_vms_own_policy_is_read_and_a_bad_one_is_an_error() {
        assert_eq!(policy_of(BARE), Ok(None));
        let with = |p: &str| {
            format!(
                "<domain><name>c1</name><metadata><c:crash xmlns:c=\"{CRASH_NS}\" policy=\"{p}\"/></metadata></domain>"
            )
        };
        assert_eq!(policy_of(&with("leave")), Ok(Some(Policy::Leave)));
        assert_eq!(policy_of(&with("restart")), Ok(Some(Policy::Restart)));
        assert_eq!(
            policy_of(&with("reboot")),
            Err(CrashXmlError::BadPolicy("reboot".into()))
        );
        // Another namespace's element is not ours.
        let other = "<domain><metadata><c:crash xmlns:c=\"https://example.org/x\" policy=\"leave\"/></metadata></domain>";
        assert_eq!(policy_of(other), Ok(None));
        assert!(matches!(
            policy_of("<domain>"),
            Err(CrashXmlError::Parse(_))
        ));
    }

    /// The hook must find the marker whatever shape `<metadata>` had.
    #[test]
    fn the_recovery_marker_lands_in_metadata() {
        let shapes = [
            BARE.to_owned(),
            BARE.replace("</domain>", "  <metadata/>\n</domain>"),
            BARE.replace(
                "</domain>",
                "  <metadata>\n    <o:x xmlns:o=\"https://example.org/o\"/>\n  </metadata>\n</domain>",
            ),
        ];
        for xml in shapes {
            let marked = with_recovery_marker(&xml, "h\"a");
            let doc = roxmltree::Document::parse(&marked).expect(&marked);
            let metas: Vec<_> = doc
                .root_element()
                .children()
                .filter(|c| c.has_tag_name("metadata"))
                .collect();
            assert_eq!(metas.len(), 1, "{marked}");
            let r = metas[0]
                .children()
                .find(|c| c.has_tag_name((rackside_contract::RECOVERY_NS, "recovery")))
                .expect(&marked);
            assert_eq!(r.attribute("from"), Some("h\"a"));
        }
    }
}
