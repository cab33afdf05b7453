//! libvirt refuses to migrate a VM whose interfaces reference an nwfilter
//! the destination does not have. Before a migration, every filter the
//! domain references (and every filter those reference) is defined on the
//! destination from the source's definition.

use std::collections::BTreeSet;

use virt::connect::Connect;

/// Filter names referenced by `<filterref filter='NAME'>` in a domain or
/// nwfilter XML. Names that could not be a filter's are skipped.
pub fn filter_refs(xml: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<filterref") {
        rest = &rest[i + "<filterref".len()..];
        let tag_end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..tag_end];
        if let Some(j) = tag.find("filter=") {
            let v = &tag[j + "filter=".len()..];
            let Some(q) = v.chars().next().filter(|c| *c == '\'' || *c == '"') else {
                continue;
            };
            if let Some(end) = v[1..].find(q) {
                let name = &v[1..1 + end];
                let ok = !name.is_empty()
                    && name.len() <= 128
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
                if ok {
                    out.insert(name.to_owned());
                }
            }
        }
    }
    out
}

/// Defines on `dest` every filter `domain_xml` needs that it lacks, from
/// `src`'s definitions. Returns the names copied.
pub fn ensure(src: &Connect, dest: &Connect, domain_xml: &str) -> Result<Vec<String>, String> {
    let mut todo: Vec<String> = filter_refs(domain_xml).into_iter().collect();
    let mut seen = BTreeSet::new();
    let mut copied = Vec::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if dest.lookup_nwfilter_by_name(&name).is_ok() {
            continue;
        }
        let xml = src
            .lookup_nwfilter_by_name(&name)
            .and_then(|f| f.xml_desc(0))
            .map_err(|e| {
                format!(
                    "nwfilter {name} is not defined here either: {}",
                    e.message()
                )
            })?;
        todo.extend(filter_refs(&xml));
        dest.define_nwfilter_xml(&xml).map_err(|e| {
            format!(
                "cannot define nwfilter {name} on the destination: {}",
                e.message()
            )
        })?;
        copied.push(name);
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_filter_references() {
        let xml = r#"<domain><devices>
            <interface type='ethernet'><filterref filter='clean-traffic'><parameter name='IP' value='1.2.3.4'/></filterref></interface>
            <interface><filterref filter="rs-web"/></interface>
            <interface><filterref filter='bad name'/></interface>
            <interface><filterref filter=unquoted/></interface>
        </devices></domain>"#;
        let got: Vec<String> = filter_refs(xml).into_iter().collect();
        assert_eq!(got, vec!["clean-traffic", "rs-web"]);
        assert!(filter_refs("<filterref").is_empty());
        assert!(filter_refs("<filterref filter='").is_empty());
    }
    // Copying between hosts needs real libvirtd (the test driver has no
    // nwfilter support): agent/tests/lab_hook.rs covers it.
}
