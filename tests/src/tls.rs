//! Certificates for encrypted migration in the lab: one CA per lab, and
//! for each host the server and client pair libvirt's QEMU driver reads
//! from `migrate_tls_x509_cert_dir` (the layout of /etc/pki/qemu on a
//! real host).
//!
//! The server certificate names the host by the address the migration
//! URI uses (`tcp://10.77.0.N`): QEMU checks the destination's
//! certificate against that, as a real host's would be checked.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{self, CmdError};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("openssl could not make {what}")]
    Openssl {
        what: String,
        #[source]
        source: CmdError,
    },
}

/// The files libvirt expects in a migration certificate directory.
pub const CERT_FILES: [&str; 5] = [
    "ca-cert.pem",
    "server-cert.pem",
    "server-key.pem",
    "client-cert.pem",
    "client-key.pem",
];

/// A lab's certificate authority: its certificate and key in `dir`.
#[derive(Debug, Clone)]
pub struct Ca {
    pub cert: PathBuf,
    key: PathBuf,
}

fn openssl(what: &str, args: &[&str]) -> Result<(), TlsError> {
    cmd::run(Command::new("openssl").args(args))
        .map(drop)
        .map_err(|source| TlsError::Openssl {
            what: what.to_owned(),
            source,
        })
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// EC P-256 keys: quick to make (a lab of three hosts makes seven), and
/// GnuTLS in QEMU accepts them.
const KEY_ALG: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/// Makes a self-signed CA in `dir` (created if needed).
pub fn make_ca(dir: &Path, lab: &str) -> Result<Ca, TlsError> {
    fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let ca = Ca {
        cert: dir.join("ca-cert.pem"),
        key: dir.join("ca-key.pem"),
    };
    let (cert, key) = (path_str(&ca.cert), path_str(&ca.key));
    let subj = format!("/CN=rackside lab {lab} CA");
    let mut args = vec!["req", "-x509", "-nodes", "-days", "30"];
    args.extend(KEY_ALG);
    args.extend([
        "-keyout",
        &key,
        "-out",
        &cert,
        "-subj",
        &subj,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl("the lab CA", &args)?;
    Ok(ca)
}

/// The subjectAltName of a host's certificates: its lab address (what the
/// migration URI names) and its name.
pub fn subject_alt_name(host: &str, addr: &str) -> String {
    format!("subjectAltName=IP:{addr},DNS:{host}")
}

/// Fills `dir` with [`CERT_FILES`] for host `host` at `addr`, signed by `ca`.
pub fn make_host_certs(ca: &Ca, dir: &Path, host: &str, addr: &str) -> Result<(), TlsError> {
    fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let dest = dir.join("ca-cert.pem");
    fs::copy(&ca.cert, &dest).map_err(|source| TlsError::Write { path: dest, source })?;
    let (ca_cert, ca_key) = (path_str(&ca.cert), path_str(&ca.key));
    let san = subject_alt_name(host, addr);
    let subj = format!("/CN={host}");
    for (role, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let cert = path_str(&dir.join(format!("{role}-cert.pem")));
        let key = path_str(&dir.join(format!("{role}-key.pem")));
        let eku = format!("extendedKeyUsage={usage}");
        let mut args = vec!["req", "-x509", "-nodes", "-days", "30"];
        args.extend(KEY_ALG);
        args.extend([
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-keyout",
            &key,
            "-out",
            &cert,
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "-addext",
            &eku,
            "-addext",
            &san,
        ]);
        openssl(&format!("the {role} certificate of {host}"), &args)?;
    }
    Ok(())
}

/// qemu.conf lines that make QEMU encrypt migrations with the
/// certificates in `dir`, and check the peer's (both ways).
pub fn qemu_conf_lines(dir: &Path) -> String {
    format!(
        "migrate_tls_x509_cert_dir = \"{}\"\nmigrate_tls_x509_verify = 1\n",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_names_the_migration_address() {
        assert_eq!(
            subject_alt_name("hb", "10.77.0.2"),
            "subjectAltName=IP:10.77.0.2,DNS:hb"
        );
    }

    #[test]
    fn qemu_conf_points_at_the_dir_and_verifies() {
        let l = qemu_conf_lines(Path::new("/x/pki"));
        assert!(l.contains("migrate_tls_x509_cert_dir = \"/x/pki\"\n"));
        assert!(l.contains("migrate_tls_x509_verify = 1\n"));
    }

    /// openssl is a dependency of the lab (installed with the machine):
    /// the certificates it makes carry what libvirt and GnuTLS check.
    #[test]
    fn certificates_are_made_and_chain_to_the_ca() {
        let dir = std::env::temp_dir().join(format!("rackside-tls-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ca = make_ca(&dir.join("ca"), "t").unwrap_or_else(|e| panic!("{e:?}"));
        let host = dir.join("hb");
        make_host_certs(&ca, &host, "hb", "10.77.0.2").unwrap_or_else(|e| panic!("{e:?}"));
        for f in CERT_FILES {
            assert!(host.join(f).is_file(), "{f}");
        }
        let verify = cmd::stdout(
            "openssl",
            [
                "verify".as_ref(),
                "-CAfile".as_ref(),
                ca.cert.as_os_str(),
                host.join("server-cert.pem").as_os_str(),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(verify.contains(": OK"), "{verify}");
        let text = cmd::stdout(
            "openssl",
            [
                "x509".as_ref(),
                "-noout".as_ref(),
                "-text".as_ref(),
                "-in".as_ref(),
                host.join("server-cert.pem").as_os_str(),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains("IP Address:10.77.0.2"), "{text}");
        assert!(text.contains("TLS Web Server Authentication"), "{text}");
        let _ = fs::remove_dir_all(&dir);
    }
}
