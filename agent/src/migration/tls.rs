//! Migration TLS: is this host able to encrypt, and which host lacks
//! certificates when libvirt says one does.
//!
//! libvirt's own answer for a host without certificates is QEMU's
//! "Unable to access credentials /etc/pki/qemu/ca-cert.pem: No such file
//! or directory", naming a path but no host. The agent checks its own
//! certificate directory (from this host's qemu.conf) before starting,
//! so when libvirt still names a missing file, it is the destination's.

use std::path::{Path, PathBuf};

/// Where libvirt's QEMU driver keeps certificates when qemu.conf says nothing.
pub const DEFAULT_CERT_DIR: &str = "/etc/pki/qemu";

/// The files a host needs to both send and receive encrypted migrations.
pub const CERT_FILES: [&str; 5] = [
    "ca-cert.pem",
    "server-cert.pem",
    "server-key.pem",
    "client-cert.pem",
    "client-key.pem",
];

/// The migration certificate directory qemu.conf names:
/// `migrate_tls_x509_cert_dir`, else `default_tls_x509_cert_dir`, else
/// [`DEFAULT_CERT_DIR`].
pub fn cert_dir(qemu_conf: &str) -> PathBuf {
    let value = |key: &str| {
        qemu_conf.lines().find_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix(key)?.trim_start().strip_prefix('=')?;
            let v = rest.trim().strip_prefix('"')?;
            let v = &v[..v.find('"')?];
            (!v.is_empty()).then(|| PathBuf::from(v))
        })
    };
    value("migrate_tls_x509_cert_dir")
        .or_else(|| value("default_tls_x509_cert_dir"))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CERT_DIR))
}

/// The certificate files missing from `dir`.
pub fn missing_files(dir: &Path) -> Vec<&'static str> {
    CERT_FILES
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect()
}

/// This host's check before an encrypted migration: None when ready,
/// else the message to fail with. An unreadable qemu.conf is not a
/// reason to refuse (libvirt will answer for itself).
pub fn local_problem(qemu_conf_path: &Path) -> Option<String> {
    let conf = std::fs::read_to_string(qemu_conf_path).ok()?;
    let dir = cert_dir(&conf);
    let missing = missing_files(&dir);
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "migration TLS: this host has no certificates in {} (missing {}); \
         provision them or set [migration] tls = false",
        dir.display(),
        missing.join(", ")
    ))
}

/// Rewrites libvirt's "Unable to access credentials PATH" into a message
/// that names the host lacking them; any other error is returned as is.
pub fn explain(error: &str, dest: &str) -> String {
    const NEEDLE: &str = "Unable to access credentials ";
    let Some(at) = error.find(NEEDLE) else {
        return error.to_owned();
    };
    let path = error[at + NEEDLE.len()..]
        .split(':')
        .next()
        .unwrap_or("")
        .trim();
    let dir = Path::new(path)
        .parent()
        .map_or_else(|| path.to_owned(), |d| d.display().to_string());
    format!("migration TLS: host {dest} has no certificates in {dir} (libvirt: {error})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cert_dir_follows_qemu_conf() {
        assert_eq!(cert_dir(""), PathBuf::from("/etc/pki/qemu"));
        assert_eq!(
            cert_dir("#migrate_tls_x509_cert_dir = \"/etc/pki/libvirt-migrate\"\n"),
            PathBuf::from("/etc/pki/qemu"),
            "a comment is not a setting"
        );
        assert_eq!(
            cert_dir("default_tls_x509_cert_dir = \"/pki\"\n"),
            PathBuf::from("/pki")
        );
        assert_eq!(
            cert_dir(
                "default_tls_x509_cert_dir = \"/pki\"\n  migrate_tls_x509_cert_dir=\"/m\" # x\n"
            ),
            PathBuf::from("/m")
        );
        assert_eq!(
            cert_dir("migrate_tls_x509_cert_dir_other = \"/no\"\n"),
            PathBuf::from("/etc/pki/qemu")
        );
    }

    #[test]
    fn missing_files_are_named() {
        let dir = std::env::temp_dir().join(format!("rackside-tls-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        assert_eq!(missing_files(&dir), CERT_FILES.to_vec());
        for f in CERT_FILES {
            let _ = std::fs::write(dir.join(f), "x");
        }
        assert!(missing_files(&dir).is_empty());
        let conf = dir.join("qemu.conf");
        let _ = std::fs::write(
            &conf,
            format!("migrate_tls_x509_cert_dir = \"{}\"\n", dir.display()),
        );
        assert_eq!(local_problem(&conf), None);
        let _ = std::fs::remove_file(dir.join("client-key.pem"));
        let p = local_problem(&conf).unwrap_or_default();
        assert!(
            p.starts_with("migration TLS: this host has no certificates in "),
            "{p}"
        );
        assert!(p.contains("(missing client-key.pem)"), "{p}");
        assert_eq!(local_problem(&dir.join("nosuch.conf")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn libvirts_missing_credentials_name_the_destination() {
        // libvirt 9.0's words, seen on the lab.
        let e = "internal error: unable to execute QEMU command 'object-add': Unable to \
                 access credentials /etc/pki/qemu/ca-cert.pem: No such file or directory";
        assert_eq!(
            explain(e, "hb"),
            format!("migration TLS: host hb has no certificates in /etc/pki/qemu (libvirt: {e})")
        );
        assert_eq!(explain("boom", "hb"), "boom");
    }
}
