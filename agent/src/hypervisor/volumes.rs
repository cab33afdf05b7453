//! Storage pools and volumes through libvirt's storage API: the room a
//! peer has for copied disks, and the volumes a migration copies into.
//!
//! Only pool metadata is read (virStoragePoolGetInfo gives libvirt's count
//! as of the pool's last refresh or volume change): no pool refresh, no
//! domain is touched, so a poll never waits on a busy QEMU.

use std::path::Path;

use virt::connect::Connect;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::sys;

use crate::libvirt_ffi;
use crate::storage::{domxml, Format, PoolRoom};

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum VolError {
    #[error("listing storage pools: {0}")]
    ListPools(String),
    #[error("no active storage pool with target path {0}")]
    NoPool(String),
    #[error("a volume {0} already exists: not overwritten")]
    Exists(String),
    #[error("creating volume {path}: {message}")]
    Create { path: String, message: String },
    #[error("deleting volume {path}: {message}")]
    Delete { path: String, message: String },
}

fn same_dir(a: &str, b: &str) -> bool {
    Path::new(a) == Path::new(b)
}

/// Active pools that have a target path (directory-like pools), with what
/// libvirt counts as available in each.
pub fn pools(conn: &Connect) -> Result<Vec<PoolRoom>, VolError> {
    let list = conn
        .list_all_storage_pools(sys::VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        .map_err(|e| VolError::ListPools(e.message().to_owned()))?;
    let mut out = Vec::new();
    for p in list {
        let target = p
            .xml_desc(0)
            .ok()
            .and_then(|x| domxml::pool_target(&x).ok().flatten());
        if let (Some(target), Ok(info)) = (target, p.info()) {
            out.push(PoolRoom {
                target,
                available: info.available,
            });
        }
        libvirt_ffi::release(p);
    }
    Ok(out)
}

/// The active pool whose target path is `dir`.
fn pool_at(conn: &Connect, dir: &str) -> Result<StoragePool, VolError> {
    let list = conn
        .list_all_storage_pools(sys::VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        .map_err(|e| VolError::ListPools(e.message().to_owned()))?;
    let mut found = None;
    for p in list {
        let here = found.is_none()
            && p.xml_desc(0)
                .ok()
                .and_then(|x| domxml::pool_target(&x).ok().flatten())
                .is_some_and(|t| same_dir(&t, dir));
        if here {
            found = Some(p);
        } else {
            libvirt_ffi::release(p);
        }
    }
    found.ok_or_else(|| VolError::NoPool(dir.to_owned()))
}

/// `s` with the five XML specials escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// A volume definition: sparse (allocation 0), `capacity` bytes.
pub fn volume_xml(name: &str, capacity: u64, format: &Format) -> String {
    format!(
        "<volume><name>{}</name><capacity unit='bytes'>{capacity}</capacity>\
         <allocation unit='bytes'>0</allocation><target><format type='{}'/></target></volume>",
        escape(name),
        escape(format.as_str())
    )
}

fn split(path: &str) -> (String, String) {
    let p = Path::new(path);
    (
        p.parent()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default(),
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )
}

/// Creates the volume `path` (in the pool whose target is its directory)
/// unless one is there already: that one could be another VM's disk.
pub fn create(conn: &Connect, path: &str, capacity: u64, format: &Format) -> Result<(), VolError> {
    let (dir, name) = split(path);
    let pool = pool_at(conn, &dir)?;
    // The pool's list may be stale: a file put there by hand is found only
    // after a refresh.
    let _ = pool.refresh(0);
    let r = match pool.lookup_storage_vol_by_name(&name) {
        Ok(v) => {
            libvirt_ffi::release(v);
            Err(VolError::Exists(path.to_owned()))
        }
        Err(_) => StorageVol::create_xml(&pool, &volume_xml(&name, capacity, format), 0)
            .map(libvirt_ffi::release)
            .map_err(|e| VolError::Create {
                path: path.to_owned(),
                message: e.message().to_owned(),
            }),
    };
    libvirt_ffi::release(pool);
    r
}

/// Deletes the volume `path` from the pool whose target is its directory.
pub fn delete(conn: &Connect, path: &str) -> Result<(), VolError> {
    let (dir, name) = split(path);
    let pool = pool_at(conn, &dir)?;
    let r = pool
        .lookup_storage_vol_by_name(&name)
        .and_then(|v| {
            let r = v.delete(0);
            libvirt_ffi::release(v);
            r
        })
        .map_err(|e| VolError::Delete {
            path: path.to_owned(),
            message: e.message().to_owned(),
        });
    libvirt_ffi::release(pool);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_definitions_escape_names() {
        assert_eq!(
            volume_xml("a'<b>&.qcow2", 1 << 30, &Format::Qcow2),
            "<volume><name>a&apos;&lt;b&gt;&amp;.qcow2</name>\
             <capacity unit='bytes'>1073741824</capacity><allocation unit='bytes'>0</allocation>\
             <target><format type='qcow2'/></target></volume>"
        );
        assert_eq!(
            split("/var/lib/libvirt/images/a.img"),
            ("/var/lib/libvirt/images".into(), "a.img".into())
        );
        assert!(same_dir(
            "/var/lib/libvirt/images/",
            "/var/lib/libvirt/images"
        ));
    }

    // The test driver has a storage driver with one pool, default-pool at
    // /default-pool: create, refuse a second, delete.
    #[test]
    fn volumes_on_the_test_driver() {
        let conn = match Connect::open(Some("test:///default")) {
            Ok(c) => c,
            Err(e) => panic!("test driver: {e}"),
        };
        let rooms = pools(&conn).unwrap_or_default();
        assert!(
            rooms
                .iter()
                .any(|p| p.target == "/default-pool" && p.available > 0),
            "{rooms:?}"
        );
        let path = "/default-pool/rackside-test.img";
        assert_eq!(create(&conn, path, 1 << 20, &Format::Raw), Ok(()));
        assert_eq!(
            create(&conn, path, 1 << 20, &Format::Raw),
            Err(VolError::Exists(path.into()))
        );
        assert_eq!(delete(&conn, path), Ok(()));
        assert!(matches!(delete(&conn, path), Err(VolError::Delete { .. })));
        assert_eq!(
            create(&conn, "/nowhere/x.img", 1, &Format::Raw),
            Err(VolError::NoPool("/nowhere".into()))
        );
        libvirt_ffi::close(conn);
    }
}
