//! A domain's disks and passthrough devices, read from libvirt's domain
//! XML; a storage pool's target path, read from its XML. Pure.
//!
//! The XML comes from libvirt, but paths and names in it are written by
//! whoever defined the VM: parsing is bounded the way the hook's parser
//! is (`libvirt-hook/src/xml.rs`: no DTD, a node limit, roxmltree's
//! non-recursive parser), at most [`MAX_DISKS`] disks are kept, and values
//! come back raw.

/// More nodes than any real domain has; enough to stop a huge document
/// early (the hook's limit).
pub const NODES_LIMIT: u32 = 200_000;

/// Disks kept at most; a domain with more is unmovable (see
/// [`Devices::too_many_disks`]).
pub const MAX_DISKS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("cannot parse the XML")]
    Parse(#[source] roxmltree::Error),
    #[error("root element is not <{0}>")]
    WrongRoot(&'static str),
}

/// An image format, from `<driver type=...>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
    /// Anything else: the agent does not create such volumes.
    Other(String),
}

impl Format {
    fn from_driver(t: Option<&str>) -> Format {
        match t {
            // libvirt's default for a file without a driver type is raw.
            None | Some("raw") => Format::Raw,
            Some("qcow2") => Format::Qcow2,
            Some(other) => Format::Other(other.to_owned()),
        }
    }

    /// The name libvirt's storage volume XML uses.
    pub fn as_str(&self) -> &str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Other(s) => s,
        }
    }
}

/// Where a disk's data lives, as `<disk type=...>` and `<source>` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `type='network'` (NBD, RBD, iSCSI, ...): shared by nature.
    Network,
    /// `type='file'` with a source file.
    File { path: String, format: Format },
    /// No source at all (an empty CD-ROM or floppy drive).
    Empty,
    /// `type='block'`: a host block device.
    Block { path: String },
    /// Any other type (`volume`, `dir`, `nvme`, `vhostuser`, ...).
    Other { kind: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `<target dev=...>`: the name libvirt's migrate_disks takes.
    pub dev: String,
    /// `<readonly/>`: never copied (libvirt deems it safe to leave).
    pub readonly: bool,
    pub source: Source,
}

/// What decides whether and how a domain can move.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Devices {
    pub disks: Vec<Disk>,
    /// `<hostdev>` elements, and `<interface type='hostdev'>` (SR-IOV).
    pub hostdevs: usize,
    /// More than [`MAX_DISKS`] disks: the rest were not read.
    pub too_many_disks: bool,
}

pub(crate) fn parse_doc(text: &str) -> Result<roxmltree::Document<'_>, XmlError> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: NODES_LIMIT,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(text, opts).map_err(XmlError::Parse)
}

/// An element of libvirt's own (namespace-less) vocabulary.
pub(crate) fn is_plain(n: &roxmltree::Node<'_, '_>, name: &str) -> bool {
    n.is_element() && n.tag_name().namespace().is_none() && n.tag_name().name() == name
}

pub(crate) fn child<'a, 'i>(
    n: roxmltree::Node<'a, 'i>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| is_plain(c, name))
}

/// The disks and passthrough devices of a domain XML.
pub fn devices(xml: &str) -> Result<Devices, XmlError> {
    let doc = parse_doc(xml)?;
    let root = doc.root_element();
    if !is_plain(&root, "domain") {
        return Err(XmlError::WrongRoot("domain"));
    }
    let mut out = Devices::default();
    let Some(devs) = child(root, "devices") else {
        return Ok(out);
    };
    for n in devs.children().filter(|c| c.is_element()) {
        if is_plain(&n, "hostdev")
            || (is_plain(&n, "interface") && n.attribute("type") == Some("hostdev"))
        {
            out.hostdevs += 1;
        } else if is_plain(&n, "disk") {
            if out.disks.len() == MAX_DISKS {
                out.too_many_disks = true;
                continue;
            }
            out.disks.push(disk(n));
        }
    }
    Ok(out)
}

fn disk(n: roxmltree::Node<'_, '_>) -> Disk {
    let dev = child(n, "target")
        .and_then(|t| t.attribute("dev"))
        .unwrap_or("")
        .to_owned();
    let src = child(n, "source");
    let attr = |a: &str| src.and_then(|s| s.attribute(a)).map(str::to_owned);
    let source = match n.attribute("type").unwrap_or("file") {
        "network" => Source::Network,
        "file" => match attr("file") {
            Some(path) => Source::File {
                path,
                format: Format::from_driver(child(n, "driver").and_then(|d| d.attribute("type"))),
            },
            None => Source::Empty,
        },
        "block" => match attr("dev") {
            Some(path) => Source::Block { path },
            None => Source::Empty,
        },
        other => Source::Other {
            kind: other.to_owned(),
        },
    };
    Disk {
        dev,
        readonly: child(n, "readonly").is_some(),
        source,
    }
}

/// `<pool><target><path>` of a storage pool XML, when it has one.
pub fn pool_target(xml: &str) -> Result<Option<String>, XmlError> {
    let doc = parse_doc(xml)?;
    let root = doc.root_element();
    if !is_plain(&root, "pool") {
        return Err(XmlError::WrongRoot("pool"));
    }
    Ok(child(root, "target")
        .and_then(|t| child(t, "path"))
        .and_then(|p| p.text())
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dom(devices: &str) -> String {
        format!("<domain type='qemu'><name>a</name><devices>{devices}</devices></domain>")
    }

    #[test]
    fn disks_are_told_apart() {
        let d = devices(&dom(
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
               <source file='/var/lib/libvirt/images/a.qcow2'/><target dev='vda' bus='virtio'/></disk>\
             <disk type='file' device='disk'><source file='/img/b.img'/><target dev='hda'/></disk>\
             <disk type='network' device='disk'><source protocol='nbd' name='x'>\
               <host name='10.0.0.1' port='10809'/></source><target dev='vdb'/></disk>\
             <disk type='file' device='cdrom'><target dev='hdc'/><readonly/></disk>\
             <disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='hdd'/><readonly/></disk>\
             <disk type='block' device='disk'><source dev='/dev/loop3'/><target dev='vdc'/></disk>\
             <disk type='volume' device='disk'><source pool='p' volume='v'/><target dev='vdd'/></disk>\
             <disk type='file' device='disk'><driver type='vmdk'/><source file='/img/c.vmdk'/><target dev='vde'/></disk>",
        ))
        .unwrap();
        assert_eq!(d.hostdevs, 0);
        assert!(!d.too_many_disks);
        let got: Vec<(&str, bool, &Source)> = d
            .disks
            .iter()
            .map(|k| (k.dev.as_str(), k.readonly, &k.source))
            .collect();
        let file = |p: &str, f: Format| Source::File {
            path: p.into(),
            format: f,
        };
        assert_eq!(
            got,
            vec![
                (
                    "vda",
                    false,
                    &file("/var/lib/libvirt/images/a.qcow2", Format::Qcow2)
                ),
                ("hda", false, &file("/img/b.img", Format::Raw)),
                ("vdb", false, &Source::Network),
                ("hdc", true, &Source::Empty),
                ("hdd", true, &file("/iso/x.iso", Format::Raw)),
                (
                    "vdc",
                    false,
                    &Source::Block {
                        path: "/dev/loop3".into()
                    }
                ),
                (
                    "vdd",
                    false,
                    &Source::Other {
                        kind: "volume".into()
                    }
                ),
                (
                    "vde",
                    false,
                    &file("/img/c.vmdk", Format::Other("vmdk".into()))
                ),
            ]
        );
    }

    #[test]
    fn passthrough_is_counted() {
        let d = devices(&dom(
            "<hostdev mode='subsystem' type='pci' managed='yes'><source>\
               <address domain='0' bus='3' slot='0' function='0'/></source></hostdev>\
             <interface type='hostdev'><source><address type='pci' bus='4'/></source></interface>\
             <interface type='bridge'><source bridge='br0'/></interface>",
        ))
        .unwrap();
        assert_eq!(d.hostdevs, 2);
        assert!(d.disks.is_empty());
    }

    #[test]
    fn namespaced_look_alikes_are_not_devices() {
        let d = devices(
            "<domain xmlns:x='urn:x'><devices><x:hostdev/><x:disk type='block'/></devices>\
             <metadata><hostdev/></metadata></domain>",
        )
        .unwrap();
        assert_eq!(d, Devices::default());
    }

    #[test]
    fn the_disk_list_is_bounded() {
        let many: String = (0..MAX_DISKS + 3)
            .map(|i| format!("<disk type='network'><target dev='d{i}'/></disk>"))
            .collect();
        let d = devices(&dom(&many)).unwrap();
        assert_eq!(d.disks.len(), MAX_DISKS);
        assert!(d.too_many_disks);
    }

    #[test]
    fn hostile_documents_are_refused_not_followed() {
        assert!(matches!(
            devices("<pool/>"),
            Err(XmlError::WrongRoot("domain"))
        ));
        assert!(matches!(devices("<domain>"), Err(XmlError::Parse(_))));
        let dtd = "<!DOCTYPE d [<!ENTITY a 'aaaa'>]><domain>&a;</domain>";
        assert!(matches!(devices(dtd), Err(XmlError::Parse(_))));
        let huge: String = std::iter::repeat_n("<x/>", NODES_LIMIT as usize + 1).collect();
        assert!(matches!(
            devices(&format!("<domain>{huge}</domain>")),
            Err(XmlError::Parse(_))
        ));
    }

    #[test]
    fn pool_targets() {
        let x = "<pool type='dir'><name>default</name><target><path>/var/lib/libvirt/images</path>\
                 </target></pool>";
        assert_eq!(
            pool_target(x).unwrap().as_deref(),
            Some("/var/lib/libvirt/images")
        );
        assert_eq!(
            pool_target("<pool type='rbd'><source/></pool>").unwrap(),
            None
        );
        assert!(pool_target("<domain/>").is_err());
    }
}
