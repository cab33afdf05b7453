//! `RUN_DIR/hook.sock`, bound so that the agent only ever removes a socket
//! it made: a socket nobody serves is stale and replaced; one another
//! process serves, or anything that is not a socket, is left alone and the
//! listener does not start. On drop the file goes only if it is still the
//! one bound here (same device and inode).

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{path} is served by another process")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket")]
    NotASocket { path: PathBuf },
    #[error("cannot tell whether {path} is in use")]
    Probe {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot inspect {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove the stale socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Which file a path named when we looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// A datagram socket bound at a path this agent created.
#[derive(Debug)]
pub struct OwnedSocket {
    sock: UnixDatagram,
    path: PathBuf,
    id: FileId,
}

/// What sits at the path before we bind.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Nothing,
    StaleSocket,
}

/// A socket file nobody is bound to refuses a connection; anything else
/// (accepted, wrong socket type, no permission) is someone else's.
fn inspect(path: &Path) -> Result<Found, SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(source) => {
            return Err(SocketError::Inspect {
                path: path.to_owned(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket {
            path: path.to_owned(),
        });
    }
    let probe = UnixDatagram::unbound().map_err(|source| SocketError::Probe {
        path: path.to_owned(),
        source,
    })?;
    match probe.connect(path) {
        Ok(()) => Err(SocketError::InUse {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(Found::StaleSocket),
        // A stream or seqpacket socket someone listens on.
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => Err(SocketError::InUse {
            path: path.to_owned(),
        }),
        Err(source) => Err(SocketError::Probe {
            path: path.to_owned(),
            source,
        }),
    }
}

impl OwnedSocket {
    pub fn bind(path: &Path) -> Result<OwnedSocket, SocketError> {
        if inspect(path)? == Found::StaleSocket {
            tracing::info!(path = %path.display(), "replacing a stale hook socket");
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(SocketError::RemoveStale {
                        path: path.to_owned(),
                        source,
                    })
                }
            }
        }
        // bind() never replaces a file: whatever appeared since we looked
        // makes it fail rather than disappear.
        let sock = UnixDatagram::bind(path).map_err(|source| SocketError::Bind {
            path: path.to_owned(),
            source,
        })?;
        let meta = std::fs::symlink_metadata(path).map_err(|source| SocketError::Inspect {
            path: path.to_owned(),
            source,
        })?;
        Ok(OwnedSocket {
            sock,
            path: path.to_owned(),
            id: FileId::of(&meta),
        })
    }

    pub fn socket(&self) -> &UnixDatagram {
        &self.sock
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Still the file we bound.
    fn still_ours(&self) -> bool {
        std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && FileId::of(&m) == self.id)
    }
}

impl Drop for OwnedSocket {
    fn drop(&mut self) {
        if self.still_ours() {
            let _ = std::fs::remove_file(&self.path);
        } else {
            tracing::info!(path = %self.path.display(), "hook socket replaced by another; left in place");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("rackside-sock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn receives(sock: &UnixDatagram, path: &Path) -> bool {
        let tx = UnixDatagram::unbound().unwrap();
        tx.send_to(b"x", path).unwrap();
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4];
        sock.recv(&mut buf).is_ok_and(|n| n == 1)
    }

    #[test]
    fn binds_a_fresh_path_and_removes_it_on_drop() {
        let d = dir("fresh");
        let p = d.0.join("hook.sock");
        let s = OwnedSocket::bind(&p).unwrap();
        assert!(receives(s.socket(), &p));
        drop(s);
        assert!(!p.exists());
    }

    #[test]
    fn a_stale_socket_is_replaced() {
        let d = dir("stale");
        let p = d.0.join("hook.sock");
        drop(UnixDatagram::bind(&p).unwrap());
        assert!(
            std::fs::symlink_metadata(&p).is_ok(),
            "the file outlives its socket"
        );
        let s = OwnedSocket::bind(&p).unwrap();
        assert!(receives(s.socket(), &p));
    }

    #[test]
    fn a_socket_someone_serves_is_left_alone() {
        let d = dir("live");
        let p = d.0.join("hook.sock");
        let other = UnixDatagram::bind(&p).unwrap();
        let e = OwnedSocket::bind(&p).unwrap_err();
        assert!(matches!(e, SocketError::InUse { .. }), "{e:?}");
        assert!(
            receives(&other, &p),
            "the other process still gets its datagrams"
        );
    }

    #[test]
    fn a_stream_socket_someone_listens_on_is_left_alone() {
        let d = dir("stream");
        let p = d.0.join("hook.sock");
        let _other = std::os::unix::net::UnixListener::bind(&p).unwrap();
        let e = OwnedSocket::bind(&p).unwrap_err();
        assert!(matches!(e, SocketError::InUse { .. }), "{e:?}");
        assert!(std::fs::symlink_metadata(&p)
            .unwrap()
            .file_type()
            .is_socket());
    }

    #[test]
    fn a_file_directory_or_link_is_never_removed() {
        let d = dir("notsock");
        let p = d.0.join("hook.sock");
        std::fs::write(&p, b"precious").unwrap();
        let e = OwnedSocket::bind(&p).unwrap_err();
        assert!(matches!(e, SocketError::NotASocket { .. }), "{e:?}");
        assert_eq!(std::fs::read(&p).unwrap(), b"precious");
        std::fs::remove_file(&p).unwrap();

        std::fs::create_dir(&p).unwrap();
        assert!(matches!(
            OwnedSocket::bind(&p),
            Err(SocketError::NotASocket { .. })
        ));
        assert!(p.is_dir());
        std::fs::remove_dir(&p).unwrap();

        // A link to a stale socket is still not ours to follow or remove.
        let target = d.0.join("elsewhere.sock");
        drop(UnixDatagram::bind(&target).unwrap());
        std::os::unix::fs::symlink(&target, &p).unwrap();
        assert!(matches!(
            OwnedSocket::bind(&p),
            Err(SocketError::NotASocket { .. })
        ));
        assert!(std::fs::symlink_metadata(&p)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(std::fs::symlink_metadata(&target).is_ok());
    }

    #[test]
    fn drop_leaves_a_socket_that_replaced_ours() {
        let d = dir("replaced");
        let p = d.0.join("hook.sock");
        let ours = OwnedSocket::bind(&p).unwrap();
        // Another agent (or an operator) took the path over meanwhile;
        // bound beside ours first, so the two cannot share an inode.
        let beside = d.0.join("theirs.sock");
        let theirs = UnixDatagram::bind(&beside).unwrap();
        std::fs::rename(&beside, &p).unwrap();
        drop(ours);
        assert!(receives(&theirs, &p), "their socket is still there");
    }
}
