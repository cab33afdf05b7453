//! rackside-hook: installed in /etc/libvirt/hooks/qemu.d/. libvirt runs it
//! synchronously inside its own locks, so it never blocks, never calls
//! libvirt and never fails a guest's start by accident.
//!
//! Until the hook's own issue lands it only answers `--help`/`--version`
//! and otherwise does nothing, successfully: that is the one behaviour a
//! hook may always safely have.

use std::io::Read;

const USAGE: &str =
    "rackside-hook OBJECT OPERATION SUBOP EXTRA  (run by libvirt, domain XML on stdin)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--help") | Some("-h") => println!("{USAGE}"),
        Some("--version") | Some("-V") => println!("rackside-hook {}", env!("CARGO_PKG_VERSION")),
        _ => {
            // libvirt writes the domain XML to our stdin; read it all so
            // libvirt never blocks on a full pipe.
            let _ = std::io::copy(
                &mut std::io::stdin().lock().take(64 << 20),
                &mut std::io::sink(),
            );
        }
    }
}
