//! The feed engine: streams one stored object back out of the repository,
//!
//! ```text
//! store ─pump task─▶ bounded channel ─▶ [blocking thread] sha256(stored) → age → zstd
//!       → [sink thread] sha256(raw) → a sink
//! ```
//!
//! and checks both digests against what is known of the object (a dump's manifest, a WAL
//! file's name) before the caller lets the sink see the end of the stream. The sink is
//! anything that takes bytes: pg_restore's stdin, a nameless temporary file
//! (`to_temp_file`), a restored WAL file, a tar extractor. `restore` and `verify` drive
//! pg_restore through it (`pg_restore.rs`); `wal` restores WAL files with it.
//!
//! Failures are told apart by where they happened, because each means something different
//! to the operator: bytes that fail age authentication or the digests are a damaged backup
//! (`Integrity`); a download that broke off is the repository (`Repository`); the sink
//! closing its input means the consumer stopped ([`Fed::SinkClosed`]: its own error is the
//! cause); another sink write error is local I/O; a panic in one of vault's own threads is
//! a bug (`Internal`) and says nothing about the backup.

pub mod pg_restore;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::Serialize;

use crate::catalog::{Manifest, StoredObject};
use crate::error::{Error, Result};
use crate::keys::Identities;
use crate::keys::header::{HeaderCheck, NotVouched, Opener};
use crate::pipeline::{self, DownloadBroke, StreamSummary, ThreadPanicked};
use crate::progress::Progress;
use crate::storage::ObjectStore;

/// What the feed needs: where the object is, the key that opens it, where progress goes.
#[derive(Clone)]
pub struct Feed {
    pub store: Arc<dyn ObjectStore>,
    pub identities: Arc<Identities>,
    pub progress: Arc<dyn Progress>,
}

/// One stored object and what is known of it beforehand: everything given is checked.
#[derive(Clone)]
pub struct Source<'a> {
    /// What it is, for messages ("backup 2026…: its dump object").
    pub owner: String,
    pub key: &'a str,
    /// The stored (compressed, encrypted) bytes.
    pub stored: Known<'a>,
    /// During a key rotation: the stored bytes as rewritten (either is accepted).
    pub rotated: Option<&'a StoredObject>,
    /// The plain bytes.
    pub raw: Known<'a>,
    /// What the operator can do when it turns out damaged.
    pub if_damaged: &'static str,
    /// The commitment to its age file key that its writer signed: the payload is not read
    /// unless the header's file key matches it. `None`: no signature covers it.
    pub commitment: Option<[u8; 32]>,
    /// A check of its header's own stanzas (a WAL file's signature) before its payload.
    pub check: Option<Arc<HeaderCheck>>,
}

/// A size and a sha256 (hex), each if known.
#[derive(Clone, Copy)]
pub struct Known<'a> {
    pub bytes: Option<u64>,
    pub sha256: Option<&'a str>,
}

impl<'a> Source<'a> {
    /// A backup's dump object: its manifest gives every size and digest, and its accepted
    /// signature the file key commitment (an error if the backup was never judged).
    pub fn dump(backup: &'a Manifest) -> Result<Source<'a>> {
        let object = &backup.dump;
        Ok(Source {
            owner: format!("backup {}: its dump object", backup.id),
            key: &object.stored.key,
            stored: Known {
                bytes: Some(object.stored.size_bytes),
                sha256: Some(&object.stored.sha256),
            },
            rotated: backup.encryption.rotated(&object.stored.key),
            raw: Known {
                bytes: Some(object.raw_bytes),
                sha256: Some(&object.raw_sha256),
            },
            if_damaged: "restore an older backup (`vault list`) instead",
            commitment: backup.accepted.commitment(&object.stored.key)?,
            check: None,
        })
    }
}

/// How a feed into a sink ended, when nothing went wrong on vault's side.
pub enum Fed<W> {
    /// Every byte was read and both digests match the manifest; the sink is still open.
    Whole { sink: W, summary: StreamSummary },
    /// The sink stopped taking bytes (a closed pipe): the consumer's own error is the cause.
    SinkClosed,
}

/// Marks an error as the sink's, so it is not mistaken for damaged data.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SinkFailed(std::io::Error);

/// The sink's write errors, tagged as the sink's (kind kept).
struct TaggedSink<W>(W);

impl<W: Write> TaggedSink<W> {
    fn tag(e: std::io::Error) -> std::io::Error {
        std::io::Error::new(e.kind(), SinkFailed(e))
    }
}

impl<W: Write> Write for TaggedSink<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(Self::tag)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(Self::tag)
    }
}

impl Feed {
    /// Streams `source` into `sink` (named `sink_name` in messages). On `Whole`, the sink
    /// has every byte and nothing is flushed or closed: the caller decides what the
    /// consumer sees next.
    pub async fn to_sink<W: Write + Send + 'static>(
        &self,
        source: Source<'_>,
        sink: W,
        sink_name: &str,
        clock: &PhaseClock,
    ) -> Result<Fed<W>> {
        let (reader, pump) =
            pipeline::download_channel(Arc::clone(&self.store), source.key.to_string()).await?;
        let reader = clock.watch(reader);
        let pump = tokio::spawn(pump);
        let identities = Arc::clone(&self.identities);
        let progress = Arc::clone(&self.progress);
        let commitment = source.commitment;
        let check = source.check.clone();
        let stages = tokio::task::spawn_blocking(move || {
            let opener = Opener {
                identities: &identities,
                commitment,
                check: check.as_deref(),
            };
            pipeline::decrypt_decompress(reader, TaggedSink(sink), opener, progress.as_ref())
        })
        .await;
        pump.abort();
        let stages = stages.map_err(|e| Error::task_failed("the decrypt thread", e))?;
        match stages {
            Ok((TaggedSink(sink), summary)) => {
                check_summary(&source, &summary)?;
                Ok(Fed::Whole { sink, summary })
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe && is_sinks(&e) => {
                Ok(Fed::SinkClosed)
            }
            Err(e) => Err(self.stream_error(&source, sink_name, e)),
        }
    }

    /// Decrypts `source` into a file that has no name: created with O_TMPFILE inside a
    /// private (0700) directory that is removed at once, so nothing is left on disk even if
    /// vault is killed with SIGKILL; the space is freed when the last descriptor closes.
    pub async fn to_temp_file(
        &self,
        source: Source<'_>,
        temp_dir: Option<&Path>,
        clock: &PhaseClock,
    ) -> Result<(std::fs::File, StreamSummary)> {
        let base = temp_dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let file = nameless_file(&base)?;
        let sink = std::io::BufWriter::with_capacity(1024 * 1024, file);
        let sink_name = format!("a temporary file in `{}`", base.display());
        match self.to_sink(source, sink, &sink_name, clock).await? {
            Fed::Whole { sink, summary } => {
                let file = sink
                    .into_inner()
                    .map_err(|e| Error::io(format!("writing {sink_name}"), e.into_error()))?;
                Ok((file, summary))
            }
            Fed::SinkClosed => Err(Error::io(
                format!("writing {sink_name}"),
                std::io::ErrorKind::BrokenPipe.into(),
            )),
        }
    }

    fn stream_error(&self, source: &Source<'_>, sink_name: &str, e: std::io::Error) -> Error {
        let key = source.key;
        let inner = e.get_ref();
        if let Some(panicked) = inner.and_then(|i| i.downcast_ref::<ThreadPanicked>()) {
            return Error::Internal(format!("{panicked} while reading `{key}`"));
        }
        if let Some(SinkFailed(cause)) = inner.and_then(|i| i.downcast_ref::<SinkFailed>()) {
            return Error::io(
                format!("writing {sink_name}"),
                std::io::Error::new(cause.kind(), cause.to_string()),
            );
        }
        if inner.is_some_and(|i| i.is::<NotVouched>()) {
            return Error::Untrusted(format!(
                "{} `{key}` is refused: {e}. vault fed nothing of it to {sink_name}",
                source.owner
            ));
        }
        if let Some(broke) = inner.and_then(|i| i.downcast_ref::<DownloadBroke>()) {
            return Error::Repository(format!(
                "reading `{key}` from {} broke off: {}",
                self.store.location(),
                broke.0
            ));
        }
        Error::Integrity(format!(
            "{} `{key}` is damaged: it failed authentication while decrypting ({e}); the \
             stored bytes were altered or truncated: {}",
            source.owner, source.if_damaged
        ))
    }
}

/// The digests of what was read must match what was known of it exactly.
fn check_summary(source: &Source<'_>, summary: &StreamSummary) -> Result<()> {
    let checks = [
        ("stored", &summary.stored, source.stored),
        ("decompressed", &summary.raw, source.raw),
    ];
    for (what, digest, known) in checks {
        if what == "stored"
            && source
                .rotated
                .is_some_and(|r| r.size_bytes == digest.bytes && r.sha256 == digest.sha256_hex())
        {
            continue;
        }
        let size_differs = known.bytes.is_some_and(|b| b != digest.bytes);
        let hash_differs = known.sha256.is_some_and(|s| s != digest.sha256_hex());
        if size_differs || hash_differs {
            return Err(Error::Integrity(format!(
                "{}: the {what} object is {} bytes with sha256 {}, but {} bytes with sha256 {} \
                 were stored; it was altered or truncated: {}",
                source.owner,
                digest.bytes,
                digest.sha256_hex(),
                known.bytes.map_or("?".to_string(), |b| b.to_string()),
                known.sha256.unwrap_or("?"),
                source.if_damaged
            )));
        }
    }
    Ok(())
}

/// Whether a stream error came from the sink (not from reading or decrypting).
fn is_sinks(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<SinkFailed>())
}

/// An O_TMPFILE file in a private directory under `base` that is removed at once.
fn nameless_file(base: &Path) -> Result<std::fs::File> {
    let private = tempfile::Builder::new()
        .prefix("vault-restore-")
        .tempdir_in(base)
        .map_err(|e| {
            Error::io(
                format!("cannot create a private directory in `{}`", base.display()),
                e,
            )
        })?;
    let file = tempfile::tempfile_in(private.path()).map_err(|e| {
        Error::io(
            format!("cannot create a temporary file in `{}`", base.display()),
            e,
        )
    })?;
    private.close().map_err(|e| {
        Error::io(
            format!(
                "cannot remove the private directory in `{}`",
                base.display()
            ),
            e,
        )
    })?;
    Ok(file)
}

/// How long the phases of getting an object into its sink took, each measured from the
/// start of the download.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FeedTimings {
    /// Until the first stored byte arrived.
    pub first_byte_seconds: Option<f64>,
    /// Until the whole object was downloaded, checked and decrypted.
    pub download_decrypt_seconds: f64,
    /// Until the consumer finished. Streamed, this includes the download, which overlaps it.
    pub restore_seconds: f64,
    /// Streamed into the consumer (phases overlap) rather than via a temporary file.
    pub streamed: bool,
}

/// The start of a feed's download, and when its first byte arrived.
pub struct PhaseClock {
    start: Instant,
    first_byte: Arc<OnceLock<Instant>>,
}

impl PhaseClock {
    pub fn start() -> PhaseClock {
        PhaseClock {
            start: Instant::now(),
            first_byte: Arc::default(),
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Wraps the download so its first byte is timed.
    fn watch<R: std::io::Read>(&self, inner: R) -> FirstByte<R> {
        FirstByte {
            inner,
            at: Arc::clone(&self.first_byte),
        }
    }

    pub fn timings(&self, decrypted: f64, streamed: bool) -> FeedTimings {
        FeedTimings {
            first_byte_seconds: self
                .first_byte
                .get()
                .map(|at| at.duration_since(self.start).as_secs_f64()),
            download_decrypt_seconds: decrypted,
            restore_seconds: self.elapsed(),
            streamed,
        }
    }
}

struct FirstByte<R> {
    inner: R,
    at: Arc<OnceLock<Instant>>,
}

impl<R: std::io::Read> std::io::Read for FirstByte<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 && self.at.get().is_none() {
            let _ = self.at.set(Instant::now());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::StoredObject;
    use crate::pipeline::{Compression, Digest};
    use crate::progress::Silent;
    use crate::storage::memory::MemoryStore;

    /// A stored object in a memory store, the manifest entry that describes it, and a feed
    /// that reads it with `progress`.
    struct Fixture {
        feed: Feed,
        plain: Vec<u8>,
        backup: Manifest,
    }

    impl Fixture {
        async fn new(progress: Arc<dyn Progress>) -> Fixture {
            let (identity, recipients) = crate::keys::test_key();
            let plain: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
            let compression = Compression {
                level: 1,
                threads: 1,
            };
            let (stored, summary) = pipeline::compress_encrypt(
                &plain[..],
                Vec::new(),
                &recipients,
                compression,
                &Silent,
            )
            .unwrap();
            let key = "data/app/x/dump.pgdump.zst.age";
            let store = MemoryStore::default();
            store.put(key, stored.into()).await.unwrap();
            let mut backup =
                Manifest::from_json(include_bytes!("../../fixtures/manifests/v1.json"), "v1")
                    .unwrap();
            backup.dump = crate::catalog::DumpObject {
                stored: StoredObject {
                    key: key.into(),
                    size_bytes: summary.stored.bytes,
                    sha256: summary.stored.sha256_hex(),
                },
                raw_bytes: summary.raw.bytes,
                raw_sha256: summary.raw.sha256_hex(),
                format: "custom".into(),
            };
            backup.accepted = crate::trust::Accepted::Signed {
                signer: "test".into(),
                commitments: [(key.to_string(), summary.file_key_commitment)].into(),
            };
            Fixture {
                feed: Feed {
                    store: Arc::new(store),
                    identities: Arc::new(Identities::from_keys(vec![identity])),
                    progress,
                },
                plain,
                backup,
            }
        }

        fn source(&self) -> Source<'_> {
            Source::dump(&self.backup).unwrap()
        }

        async fn to_sink<W: Write + Send + 'static>(&self, sink: W) -> Result<Fed<W>> {
            self.feed
                .to_sink(self.source(), sink, "the sink", &PhaseClock::start())
                .await
        }
    }

    /// A sink that fails every write with `kind` (or panics, as a bug on the sink thread).
    enum Refusing {
        With(std::io::ErrorKind),
        Panic,
    }

    impl Write for Refusing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            match self {
                Refusing::With(kind) => Err((*kind).into()),
                Refusing::Panic => panic!("a bug in the sink"),
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn every_byte_reaches_the_sink_and_both_digests_are_checked() {
        let mut fixture = Fixture::new(Arc::new(Silent)).await;
        match fixture.to_sink(Vec::new()).await {
            Ok(Fed::Whole { sink, summary }) => {
                assert!(sink == fixture.plain);
                assert_eq!(summary.raw, Digest::of(&fixture.plain));
            }
            Ok(Fed::SinkClosed) => panic!("a buffer never closes"),
            Err(e) => panic!("{e}"),
        }
        let (mut file, _) = fixture
            .feed
            .to_temp_file(fixture.source(), None, &PhaseClock::start())
            .await
            .unwrap();
        let mut back = Vec::new();
        use std::io::{Read, Seek};
        file.rewind().unwrap();
        file.read_to_end(&mut back).unwrap();
        assert!(back == fixture.plain);

        fixture.backup.dump.raw_sha256 = "0".repeat(64);
        let err = fixture.to_sink(Vec::new()).await.map(drop).unwrap_err();
        assert!(matches!(err, Error::Integrity(_)), "{err}");
    }

    /// Progress that panics, as a bug on the decrypt thread would.
    struct PanickingProgress;

    impl Progress for PanickingProgress {
        fn phase(&self, _: &str) {}
        fn advance(&self, _: u64) {
            panic!("a bug in a progress display");
        }
        fn warn(&self, _: &str) {}
        fn finish(&self) {}
    }

    /// Regression: a panic on the decrypt thread (or the sink thread) was reported as a
    /// damaged backup (`Integrity`, exit 6), and verify stored a failed checksum record
    /// against a backup that was fine.
    #[tokio::test]
    async fn a_panic_in_vaults_own_threads_is_an_internal_error_not_damage() {
        let panicking = Fixture::new(Arc::new(PanickingProgress)).await;
        let err = panicking
            .feed
            .to_temp_file(panicking.source(), None, &PhaseClock::start())
            .await
            .map(drop)
            .unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "decrypt thread: {err}");
        assert_eq!(err.exit_code(), crate::error::code::INTERNAL);

        let fixture = Fixture::new(Arc::new(Silent)).await;
        let err = fixture
            .to_sink(Refusing::Panic)
            .await
            .map(drop)
            .unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "sink thread: {err}");
    }

    #[tokio::test]
    async fn a_closed_sink_is_the_consumers_failure_and_other_sink_errors_are_local_io() {
        let fixture = Fixture::new(Arc::new(Silent)).await;
        let closed = fixture
            .to_sink(Refusing::With(std::io::ErrorKind::BrokenPipe))
            .await
            .unwrap();
        assert!(matches!(closed, Fed::SinkClosed));
        let err = fixture
            .to_sink(Refusing::With(std::io::ErrorKind::StorageFull))
            .await
            .map(drop)
            .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("the sink"), "{err}");
    }
}
