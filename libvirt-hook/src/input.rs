//! Reading the domain XML libvirt writes to our stdin: always to the end
//! (libvirt must never block on a full pipe), keeping at most a cap.

use std::io::{self, Read};

/// The most domain XML we keep. Real domain XML is a few KiB to a few
/// hundred KiB; more is not a domain we should spend memory on.
pub const MAX_XML_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read the domain XML")]
    Read(#[source] io::Error),
    #[error("domain XML larger than {MAX_XML_BYTES} bytes")]
    TooLarge,
}

/// Reads `r` to the end. Beyond `cap` bytes the rest is drained and
/// discarded and the result is [`InputError::TooLarge`].
pub fn read_capped(mut r: impl Read, cap: u64) -> Result<Vec<u8>, InputError> {
    let mut buf = Vec::new();
    (&mut r)
        .take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(InputError::Read)?;
    if buf.len() as u64 > cap {
        drop(buf);
        io::copy(&mut r, &mut io::sink()).map_err(InputError::Read)?;
        return Err(InputError::TooLarge);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_everything_under_the_cap() {
        assert_eq!(read_capped(&b"abc"[..], 3).unwrap(), b"abc");
        assert_eq!(read_capped(&b""[..], 3).unwrap(), b"");
    }

    #[test]
    fn drains_and_refuses_over_the_cap() {
        let data = vec![b'x'; 1000];
        let mut cur = io::Cursor::new(&data);
        assert!(matches!(
            read_capped(&mut cur, 10),
            Err(InputError::TooLarge)
        ));
        assert_eq!(cur.position(), 1000, "the rest was drained");
    }
}
