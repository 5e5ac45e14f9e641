//! The streaming stages of a backup, as nested `std::io::Write` adapters on one blocking
//! thread:
//!
//! ```text
//! pg_dump stdout ─read─▶ HashingWriter(raw) ▶ zstd ▶ age ▶ HashingWriter(stored) ▶ ChunkSender ─channel─▶ upload
//! ```
//!
//! and of a restore, the same stages reversed (`decrypt_decompress`):
//!
//! ```text
//! download ─channel─▶ ChunkReader ▶ HashingReader(stored) ▶ age ▶ zstd ▶ HashingWriter(raw) ▶ pg_restore stdin / file
//! ```
//!
//! age authenticates every 64 KiB chunk before releasing it, so a flipped byte never
//! reaches the sink; age's final-chunk flag and the two sha256s catch truncation.
//!
//! Each stage is finished explicitly, innermost last, because an error at finish time (a
//! zstd flush, age's final chunk, a closed channel) must fail the backup; nothing relies on
//! `Drop`. Memory budget of this thread: the 256 KiB read buffer, zstd's job buffers
//! (about (2 × workers + 3) × `ZSTD_JOB_SIZE`), age's 64 KiB chunk, and one 1 MiB chunk
//! being filled; the channel holds at most `CHANNEL_CHUNKS` more.

mod chunk;
mod fetch;
mod hash;
mod offload;

use std::io::{Read, Write};

pub use chunk::{CHANNEL_CHUNKS, CHUNK_SIZE, ChunkSender};
pub use fetch::{ChunkReader, DownloadBroke, download_channel};
pub use hash::{Digest, HashingReader, HashingWriter};
pub use offload::ThreadPanicked;

use crate::keys::Recipients;
use crate::keys::header::{self, HeaderError, Opener};
use crate::progress::Progress;

/// What the stages measured about one streamed object.
#[derive(Debug, Clone)]
pub struct StreamSummary {
    /// The plain bytes read from the source (the dump before compression).
    pub raw: Digest,
    /// The bytes handed to the store (compressed and encrypted).
    pub stored: Digest,
    /// The commitment to the object's age file key (`keys::header::commitment`), which a
    /// signed statement binds the object by.
    pub file_key_commitment: [u8; 32],
}

/// Compression settings for [`compress_encrypt`].
#[derive(Debug, Clone, Copy)]
pub struct Compression {
    pub level: i32,
    pub threads: u32,
}

const READ_BUFFER: usize = 256 * 1024;

/// zstd's multithreaded mode buffers about 2 × workers + 3 jobs; its default job is 4 ×
/// the window (8 MiB at level 3, more above), which alone would exceed the 64 MiB budget.
/// 2 MiB jobs keep it near 15 MiB at every level, for a ratio cost under 1% (measured in
/// docs/benchmarks.md).
const ZSTD_JOB_SIZE: u32 = 2 * 1024 * 1024;

/// Streams `source` through zstd and age into `sink`, hashing before and after. Returns the
/// sink (still open: the caller decides whether the object is committed) and the digests.
pub fn compress_encrypt<R: Read, W: Write>(
    source: R,
    sink: W,
    recipients: &Recipients,
    compression: Compression,
    progress: &dyn Progress,
) -> std::io::Result<(W, StreamSummary)> {
    compress_encrypt_with(source, sink, recipients, compression, progress, Vec::new())
}

/// [`compress_encrypt`], the age header carrying `extra` stanzas too (a WAL file's
/// signature: `keys::header::SIGNATURE_TAG`).
pub fn compress_encrypt_with<R: Read, W: Write>(
    mut source: R,
    sink: W,
    recipients: &Recipients,
    compression: Compression,
    progress: &dyn Progress,
    extra: Vec<age_core::format::Stanza>,
) -> std::io::Result<(W, StreamSummary)> {
    let stored = HashingWriter::new(sink);
    let (encryptor, file_key_commitment) = recipients.encryptor_with(extra);
    let encrypted = encryptor.wrap_output(stored)?;
    let mut compressor = zstd::stream::write::Encoder::new(encrypted, compression.level)?;
    compressor.include_checksum(true)?;
    if compression.threads > 1 {
        compressor.multithread(compression.threads)?;
        compressor.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))?;
    }
    // The raw sha256 on a thread of its own: this thread reads, feeds zstd's workers and
    // encrypts what they give back; hashing every raw byte here too made it the bottleneck
    // of a base backup (perf: 13% of its time in sha256, most of it the raw side).
    let mut raw = Tee {
        first: compressor,
        second: offload::OffloadedHashingWriter::new(std::io::sink())?,
    };

    copy_counted(&mut source, &mut raw, progress, |e| e)?;

    let Tee {
        first: compressor,
        second: hasher,
    } = raw;
    let (_, raw_digest) = hasher.finish()?;
    let encrypted = compressor.finish()?;
    let stored = encrypted.finish()?;
    let (sink, stored_digest) = stored.finish();
    Ok((
        sink,
        StreamSummary {
            raw: raw_digest,
            stored: stored_digest,
            file_key_commitment,
        },
    ))
}

/// Streams a stored object from `source` through age and zstd into `sink`, hashing what was
/// stored and what comes out. Reads `source` to its very end, so the stored digest covers
/// every byte of the object (bytes after age's final chunk are an error). The sink is
/// returned unflushed and open: the caller decides, after checking the digests, whether the
/// consumer may see the end of the stream.
pub fn decrypt_decompress<R: Read, W: Write + Send + 'static>(
    source: R,
    sink: W,
    opener: Opener<'_>,
    progress: &dyn Progress,
) -> std::io::Result<(W, StreamSummary)> {
    let mut stored = HashingReader::new(source);
    // The file key first, from the header alone: when the object is signed, nothing of its
    // payload is decrypted before the key is proven to be the one its writer signed.
    let (start, parsed) = header::read_start(&mut stored).map_err(damaged)?;
    let file_key = parsed
        .and_then(|h| opener.file_key(h, &start))
        .map_err(HeaderError::into_io)?;
    let file_key_commitment = header::commitment(&file_key);
    let (sink, raw_digest) = {
        let plain = header::decrypt_with(std::io::Cursor::new(start).chain(&mut stored), &file_key)
            .map_err(damaged)?;
        let mut decoder = zstd::stream::read::Decoder::new(plain)?;
        let mut raw = offload::OffloadedHashingWriter::new(sink)?;
        copy_counted(&mut decoder, &mut raw, progress, damaged)?;
        raw.finish()?
    };
    let trailing = std::io::copy(&mut stored, &mut std::io::sink())?;
    if trailing > 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{trailing} bytes follow the end of the encrypted stream"),
        ));
    }
    let (_, stored_digest) = stored.finish();
    Ok((
        sink,
        StreamSummary {
            raw: raw_digest,
            stored: stored_digest,
            file_key_commitment,
        },
    ))
}

/// Writes what `first` takes to `second` as well.
struct Tee<A, B> {
    first: A,
    second: B,
}

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.first.write(buf)?;
        self.second.write_all(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.first.flush()?;
        self.second.flush()
    }
}

/// Decrypts a small in-memory object (facts, globals, a WAL file read whole).
pub fn decrypt_small(sealed: &[u8], opener: Opener<'_>) -> std::io::Result<Vec<u8>> {
    opener.decrypt(sealed)
}

/// Copies `source` into `sink` in `READ_BUFFER` blocks, reporting the bytes as progress.
/// `on_read_error` classifies failures of the reading side.
fn copy_counted<R: Read, W: Write>(
    source: &mut R,
    sink: &mut W,
    progress: &dyn Progress,
    on_read_error: fn(std::io::Error) -> std::io::Error,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; READ_BUFFER];
    loop {
        let n = match source.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(on_read_error(e)),
        };
        sink.write_all(&buffer[..n])?;
        progress.advance(n as u64);
    }
}

/// Errors on the reading side of a restore are damaged data (`InvalidData`), whatever kind
/// age or zstd gave them (a cut at a chunk boundary is an `UnexpectedEof`), except a broken
/// download, which stays a repository failure. Errors writing to the sink keep their kind.
fn damaged(e: std::io::Error) -> std::io::Error {
    let download = e.get_ref().is_some_and(|inner| inner.is::<DownloadBroke>());
    if download || e.kind() == std::io::ErrorKind::InvalidData {
        e
    } else {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// Encrypts a small in-memory object (facts, globals) to every recipient; returns it and the
/// commitment to its file key.
pub fn encrypt_small(
    plain: &[u8],
    recipients: &Recipients,
) -> std::io::Result<(Vec<u8>, [u8; 32])> {
    let mut out = Vec::with_capacity(plain.len() + 512);
    let (encryptor, commitment) = recipients.encryptor();
    let mut writer = encryptor.wrap_output(&mut out)?;
    writer.write_all(plain)?;
    writer.finish()?;
    Ok((out, commitment))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Identities;
    use crate::progress::Silent;

    use crate::keys::test_key as new_key;

    #[test]
    fn round_trip_through_the_stages_keeps_every_byte_and_hashes_both_sides() {
        let (identity, recipients) = new_key();
        let plain: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let (stored, summary) = compress_encrypt(
            &plain[..],
            Vec::new(),
            &recipients,
            Compression {
                level: 3,
                threads: 2,
            },
            &Silent,
        )
        .unwrap();
        assert_eq!(summary.raw.bytes, plain.len() as u64);
        assert_eq!(summary.stored.bytes, stored.len() as u64);
        assert_eq!(
            summary.stored.sha256_hex(),
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stored))
        );
        assert!(stored.len() < plain.len() / 4, "compressible input shrinks");

        let decryptor = age::Decryptor::new(&stored[..]).unwrap();
        let reader = decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .unwrap();
        let mut round = Vec::new();
        zstd::stream::read::Decoder::new(reader)
            .unwrap()
            .read_to_end(&mut round)
            .unwrap();
        assert_eq!(round, plain);
    }

    fn sealed_sample() -> (age::x25519::Identity, Identities, Vec<u8>, Vec<u8>) {
        let (identity, recipients) = new_key();
        // Incompressible (an LCG), so the stored object spans several 64 KiB age chunks.
        let mut state = 0x2545_f491_u32;
        let plain: Vec<u8> = (0..300_000)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        let compression = Compression {
            level: 1,
            threads: 1,
        };
        let (stored, _) =
            compress_encrypt(&plain[..], Vec::new(), &recipients, compression, &Silent).unwrap();
        let identities = Identities::from_keys(vec![identity.clone()]);
        (identity, identities, plain, stored)
    }

    #[test]
    fn decrypt_decompress_restores_every_byte_and_the_backup_digests() {
        let (_, identities, plain, stored) = sealed_sample();
        let (out, summary) = decrypt_decompress(
            &stored[..],
            Vec::new(),
            Opener::without_signature(&identities),
            &Silent,
        )
        .unwrap();
        assert_eq!(out, plain);
        assert_eq!(summary.raw, Digest::of(&plain));
        assert_eq!(summary.stored, Digest::of(&stored));
    }

    #[test]
    fn flipped_truncated_or_extended_objects_are_refused() {
        let (_, identities, _, stored) = sealed_sample();
        let mut flipped = stored.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x20;
        let truncated = &stored[..stored.len() - 100];
        // Cut exactly after a full chunk too: only age's final-chunk flag can catch that.
        // The payload starts after the header's "--- mac" line and a 16-byte nonce; each
        // chunk is 64 KiB of ciphertext plus a 16-byte tag.
        let mac_line = stored.windows(4).position(|w| w == b"\n---").unwrap() + 1;
        let header_end =
            mac_line + stored[mac_line..].iter().position(|&b| b == b'\n').unwrap() + 1;
        let chunks_start = header_end + 16;
        let full_chunks = (stored.len() - chunks_start) / 65_552;
        assert!(
            full_chunks >= 3,
            "the sample spans several chunks: {} bytes, payload at {chunks_start}",
            stored.len()
        );
        let at_boundary = &stored[..chunks_start + 2 * 65_552];
        let mut extended = stored.clone();
        extended.extend_from_slice(b"appended");
        for (what, bytes) in [
            ("flipped", &flipped[..]),
            ("truncated", truncated),
            ("cut at a chunk", at_boundary),
            ("extended", &extended[..]),
        ] {
            let err = decrypt_decompress(
                bytes,
                Vec::new(),
                Opener::without_signature(&identities),
                &Silent,
            )
            .map(|_| ())
            .unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{what}: {err}");
        }
    }

    #[test]
    fn another_identity_cannot_decrypt() {
        let (_, _, _, stored) = sealed_sample();
        let other = Identities::from_keys(vec![age::x25519::Identity::generate()]);
        let err = decrypt_decompress(
            &stored[..],
            Vec::new(),
            Opener::without_signature(&other),
            &Silent,
        )
        .map(|_| ())
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    }

    /// A signed object opens only with the file key its statement commits to, and nothing
    /// of its payload reaches the sink otherwise.
    #[test]
    fn a_file_key_other_than_the_committed_one_is_refused_before_the_payload() {
        let (identity, recipients) = new_key();
        let identities = Identities::from_keys(vec![identity]);
        let compression = Compression {
            level: 1,
            threads: 1,
        };
        let (stored, summary) = compress_encrypt(
            &[7u8; 100_000][..],
            Vec::new(),
            &recipients,
            compression,
            &Silent,
        )
        .unwrap();
        let committed = Opener {
            identities: &identities,
            commitment: Some(summary.file_key_commitment),
            check: None,
        };
        let (out, read) = decrypt_decompress(&stored[..], Vec::new(), committed, &Silent).unwrap();
        assert_eq!(out.len(), 100_000);
        assert_eq!(read.file_key_commitment, summary.file_key_commitment);

        // A forger's file: same recipients, its own file key.
        let (forged, _) = compress_encrypt(
            &[7u8; 100_000][..],
            Vec::new(),
            &recipients,
            compression,
            &Silent,
        )
        .unwrap();
        let sink = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let err = decrypt_decompress(&forged[..], Shared(sink.clone()), committed, &Silent)
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.get_ref()
                .is_some_and(|e| e.is::<crate::keys::header::NotVouched>()),
            "{err}"
        );
        assert!(sink.lock().unwrap().is_empty(), "no byte reached the sink");
    }
}
