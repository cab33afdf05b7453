//! Facts about disk files on this host: their sizes, and whether they sit
//! on a filesystem libvirt counts as shared. Reads only metadata and a
//! qcow2 image's first 32 bytes; never waits on libvirt or QEMU.

use std::io::Read;
use std::os::unix::fs::MetadataExt;

use super::{FileFacts, Format};

/// Filesystem magic numbers (statfs f_type) of the filesystems libvirt's
/// virFileIsSharedFS counts as shared: NFS, GFS2, OCFS2, AFS, SMB/CIFS,
/// CephFS, GPFS. FUSE ones (GlusterFS, Quobyte) are not recognised:
/// libvirt tells them by the FUSE subtype, which statfs does not give. An
/// image there is taken for local; the destination then already has its
/// file, and the agent refuses the migration rather than copy over it.
const SHARED_FS_MAGICS: [i64; 8] = [
    0x6969,      // NFS
    0x0116_1970, // GFS2
    0x7461_636f, // OCFS2
    0x5346_414f, // AFS
    0xFF53_4D42, // CIFS
    0xFE53_4D42, // SMB2
    0x00c3_6400, // CephFS
    0x4750_4653, // GPFS
];

pub fn is_shared_fs(magic: i64) -> bool {
    SHARED_FS_MAGICS.contains(&magic)
}

/// A qcow2 header's virtual size (bytes 24..32, big endian), if `head`
/// starts with the qcow2 magic.
pub fn qcow2_virtual_size(head: &[u8]) -> Option<u64> {
    if head.len() < 32 || &head[..4] != b"QFI\xfb" {
        return None;
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&head[24..32]);
    Some(u64::from_be_bytes(size))
}

/// Sizes and filesystem of one disk file.
pub fn file_facts(path: &str, format: &Format) -> Result<FileFacts, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let fs = nix::sys::statfs::statfs(path).map_err(|e| e.to_string())?;
    #[allow(clippy::useless_conversion)] // f_type's width differs by target
    let magic = i64::from(fs.filesystem_type().0);
    let allocation = meta.blocks().saturating_mul(512);
    let capacity = match format {
        Format::Qcow2 => {
            let mut head = [0u8; 32];
            std::fs::File::open(path)
                .and_then(|mut f| f.read_exact(&mut head))
                .map_err(|e| e.to_string())?;
            qcow2_virtual_size(&head).ok_or("not a qcow2 image")?
        }
        _ => meta.len(),
    };
    Ok(FileFacts {
        shared_fs: is_shared_fs(magic),
        capacity,
        allocation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qcow2_headers() {
        let mut h = vec![0u8; 72];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[24..32].copy_from_slice(&(5u64 << 30).to_be_bytes());
        assert_eq!(qcow2_virtual_size(&h), Some(5 << 30));
        assert_eq!(qcow2_virtual_size(&h[..31]), None);
        h[0] = b'X';
        assert_eq!(qcow2_virtual_size(&h), None);
    }

    #[test]
    fn shared_filesystems() {
        assert!(is_shared_fs(0x6969));
        assert!(is_shared_fs(0xFF53_4D42));
        assert!(!is_shared_fs(0xEF53)); // ext4
        assert!(!is_shared_fs(0x0102_1994)); // tmpfs
    }

    #[test]
    fn a_raw_file_here() {
        let dir = std::env::temp_dir().join(format!("rackside-probe-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join("d.img");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(3 << 20).unwrap();
        let facts = file_facts(&p.to_string_lossy(), &Format::Raw).unwrap();
        assert_eq!(facts.capacity, 3 << 20);
        assert!(facts.allocation < 3 << 20, "sparse: {facts:?}");
        assert!(file_facts(&p.to_string_lossy(), &Format::Qcow2).is_err());
        assert!(file_facts("/nonexistent/x.img", &Format::Raw).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
