//! Guests' disks: shared ones served over NBD by one qemu-storage-daemon
//! per lab (in its own namespace on the migration network, so libvirt
//! counts them as shared storage), local ones as qcow2 images in a host's
//! private images directory, and the counter the guest's disk workload
//! keeps in the first block.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cmd::{self, CmdError};
use crate::desc::StorageDesc;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("could not prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start qemu-storage-daemon")]
    Start(#[source] CmdError),
    #[error("qemu-storage-daemon did not open its QMP socket within {secs} s; log:\n{log}")]
    NotUp { secs: u64, log: String },
    #[error("QMP {command} on qemu-storage-daemon")]
    QmpIo {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP {command} refused: {error}")]
    Qmp { command: String, error: String },
    #[error("could not create image {path}")]
    QemuImg {
        path: PathBuf,
        #[source]
        source: CmdError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Starts the lab's storage daemon in its namespace; it serves NBD on
/// `addr:nbd_port` and takes exports over QMP.
pub fn start_daemon(s: &StorageDesc) -> Result<(), StorageError> {
    fs::create_dir_all(&s.dir).map_err(io_err(&s.dir))?;
    let out = fs::File::create(&s.log).map_err(io_err(&s.log))?;
    let _ = fs::remove_file(&s.qmp_socket);
    cmd::run(
        cmd::no_inherited_fds(&mut Command::new("setsid"))
            .args(["-f", "ip", "netns", "exec", &s.netns, "qemu-storage-daemon"])
            .arg("--chardev")
            .arg(format!(
                "socket,id=qmp0,path={},server=on,wait=off",
                s.qmp_socket.display()
            ))
            .args(["--monitor", "chardev=qmp0"])
            .arg("--nbd-server")
            .arg(format!(
                "addr.type=inet,addr.host={},addr.port={}",
                s.addr, s.nbd_port
            ))
            .arg("--pidfile")
            .arg(&s.pid_file)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(io_err(&s.log))?)
            .stderr(out),
    )
    .map_err(StorageError::Start)?;
    let limit = Duration::from_secs(20);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if Qmp::connect(&s.qmp_socket).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(StorageError::NotUp {
        secs: limit.as_secs(),
        log: fs::read_to_string(&s.log).unwrap_or_default(),
    })
}

/// A QMP session: greeting read, capabilities negotiated.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Result<Qmp, StorageError> {
        let err = |source| StorageError::QmpIo {
            command: "connect".into(),
            source,
        };
        let writer = UnixStream::connect(path).map_err(err)?;
        writer
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(err)?;
        let mut q = Qmp {
            reader: BufReader::new(writer.try_clone().map_err(err)?),
            writer,
        };
        q.read_reply("greeting")?;
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    /// The next non-event message.
    fn read_reply(&mut self, command: &str) -> Result<Value, StorageError> {
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|source| StorageError::QmpIo {
                    command: command.into(),
                    source,
                })?;
            if n == 0 {
                return Err(StorageError::QmpIo {
                    command: command.into(),
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }

    fn execute(&mut self, command: &str, args: Value) -> Result<Value, StorageError> {
        let msg = json!({"execute": command, "arguments": args});
        writeln!(self.writer, "{msg}").map_err(|source| StorageError::QmpIo {
            command: command.into(),
            source,
        })?;
        let reply = self.read_reply(command)?;
        match reply.get("error") {
            Some(e) => Err(StorageError::Qmp {
                command: command.into(),
                error: e["desc"].as_str().unwrap_or("?").to_owned(),
            }),
            None => Ok(reply["return"].clone()),
        }
    }
}

/// The image file behind export `export`.
pub fn export_image(s: &StorageDesc, export: &str) -> PathBuf {
    s.dir.join(format!("{export}.raw"))
}

/// Makes a `mib`-MiB raw image and exports it over NBD as `export`
/// (writable). An export that already exists is left as it is: a guest
/// defined again (on another host, say) finds its disk as it left it.
pub fn add_export(s: &StorageDesc, export: &str, mib: u64) -> Result<(), StorageError> {
    let mut q = Qmp::connect(&s.qmp_socket)?;
    let exports = q.execute("query-block-exports", json!({}))?;
    let id = format!("e-{export}");
    if exports
        .as_array()
        .is_some_and(|a| a.iter().any(|e| e["id"] == id.as_str()))
    {
        return Ok(());
    }
    let image = export_image(s, export);
    let f = fs::File::create(&image).map_err(io_err(&image))?;
    f.set_len(mib * 1024 * 1024).map_err(io_err(&image))?;
    let node = format!("n-{export}");
    q.execute(
        "blockdev-add",
        json!({"driver": "file", "node-name": node, "filename": image}),
    )?;
    q.execute(
        "block-export-add",
        json!({"type": "nbd", "id": id, "node-name": node, "name": export, "writable": true}),
    )?;
    Ok(())
}

/// Creates a qcow2 image of `mib` MiB (qemu-img, from qemu-utils).
pub fn create_qcow2(path: &Path, mib: u64) -> Result<(), StorageError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let _ = fs::remove_file(path);
    cmd::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(path)
            .arg(format!("{mib}M")),
    )
    .map(|_| ())
    .map_err(|source| StorageError::QemuImg {
        path: path.to_owned(),
        source,
    })
}

/// The first block of an image as raw bytes (qcow2 read through qemu-img,
/// so clusters are mapped): where the guest keeps its disk counter.
pub fn first_block(path: &Path, qcow2: bool) -> Result<Vec<u8>, StorageError> {
    if !qcow2 {
        let mut b = fs::read(path).map_err(io_err(path))?;
        b.truncate(512);
        return Ok(b);
    }
    let tmp = path.with_extension("block0");
    let _ = fs::remove_file(&tmp);
    cmd::run(
        Command::new("qemu-img")
            .args(["dd", "-f", "qcow2", "-O", "raw", "bs=512", "count=1"])
            .arg(format!("if={}", path.display()))
            .arg(format!("of={}", tmp.display())),
    )
    .map_err(|source| StorageError::QemuImg {
        path: path.to_owned(),
        source,
    })?;
    let b = fs::read(&tmp).map_err(io_err(&tmp));
    let _ = fs::remove_file(&tmp);
    b
}

/// The counter the guest's disk workload wrote in a first block
/// (`rackside-disk N` then padding), if any.
pub fn disk_counter(block: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(block);
    let line = text.trim_start_matches('\0').lines().next()?;
    line.trim_matches('\0')
        .trim()
        .strip_prefix("rackside-disk ")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_is_read_from_a_padded_block() {
        let mut b = b"rackside-disk 42\n".to_vec();
        b.resize(512, 0);
        assert_eq!(disk_counter(&b), Some(42));
        assert_eq!(disk_counter(&[0; 512]), None);
        assert_eq!(disk_counter(b"rackside-disk x\n"), None);
        assert_eq!(disk_counter(b"garbage\n"), None);
    }

    #[test]
    fn a_raw_image_gives_its_first_block() {
        let dir = std::env::temp_dir().join(format!("rs-storage-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.raw");
        let mut data = b"rackside-disk 7\n".to_vec();
        data.resize(4096, 0);
        fs::write(&p, &data).unwrap();
        let b = first_block(&p, false).unwrap();
        assert_eq!(b.len(), 512);
        assert_eq!(disk_counter(&b), Some(7));
        fs::remove_dir_all(&dir).unwrap();
    }
}
