//! sha256 and a byte count over whatever passes through a writer.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

/// A finished sha256 and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub sha256: [u8; 32],
    pub bytes: u64,
}

impl Digest {
    /// Lower-case hex, exactly as `sha256sum` prints it.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    pub fn of(data: &[u8]) -> Digest {
        Digest {
            sha256: Sha256::digest(data).into(),
            bytes: data.len() as u64,
        }
    }
}

pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Ends hashing and hands back the inner writer, which the caller must finish itself.
    pub fn finish(self) -> (W, Digest) {
        (
            self.inner,
            Digest {
                sha256: self.hasher.finalize().into(),
                bytes: self.bytes,
            },
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Hash only what the inner writer accepted, so partial writes stay exact.
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The reading twin of [`HashingWriter`]: hashes every byte read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn finish(self) -> (R, Digest) {
        (
            self.inner,
            Digest {
                sha256: self.hasher.finalize().into(),
                bytes: self.bytes,
            },
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sha256sum_of_the_same_bytes() {
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(b"abc").unwrap();
        let (inner, digest) = writer.finish();
        assert_eq!(inner, b"abc");
        assert_eq!(digest.bytes, 3);
        assert_eq!(
            digest.sha256_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
