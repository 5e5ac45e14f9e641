//! Continuous WAL archiving: PostgreSQL's `archive_command` (`vault wal-push %p`) and
//! `restore_command` (`vault wal-fetch %f %p`).
//!
//! Each WAL file (segment, `.partial`, `.history`, `.backup`) is one object, through the same
//! stages as a dump (sha256 of the raw bytes → zstd → age to every recipient), under
//!
//! ```text
//! wal/<system identifier>/<timeline + log (16 hex)>/<file name>-<sha256 of the raw file>.zst.age
//! wal/<system identifier>/history/<timeline>.history-<sha256>.zst.age
//! ```
//!
//! The raw sha256 is in the name because the DB host cannot decrypt (it holds public keys
//! only) and age output differs on every run: the name is the one place to tell "the same
//! file again" (PostgreSQL retries a push whose exit it did not see: success) from "another
//! file under this name" (two clusters, or a restored copy, archiving into one place:
//! refused, the stored object untouched). Nothing is ever overwritten — `.history` files
//! above all, which a promotion probes for to choose its timeline.
//!
//! The system identifier comes from the cluster itself (`global/pg_control`, in the data
//! directory PostgreSQL runs these commands in), and a segment whose own header names
//! another cluster is refused.

pub mod archive;
pub mod chain;
pub mod position;
pub mod probe;
pub mod retention;
pub mod watch;

use crate::trust::{SigningKey, TrustList};
use age_core::format::Stanza;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::feed::{Fed, Feed, Known, PhaseClock, Source};
use crate::keys::Recipients;
use crate::pipeline::{self, ChunkSender, Compression, Digest};
use crate::progress::Silent;
use crate::storage::ObjectStore;

pub const WAL_PREFIX: &str = "wal/";

/// What kind of file PostgreSQL hands the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalKind {
    /// `000000010000000000000001`
    Segment,
    /// `000000010000000000000001.partial`: the last, unfinished segment of a timeline.
    Partial,
    /// `00000002.history`
    History,
    /// `000000010000000000000001.00000028.backup`: a base backup's label.
    BackupLabel,
}

/// A WAL file name, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalName {
    pub name: String,
    pub kind: WalKind,
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

impl WalName {
    pub fn parse(name: &str) -> Result<WalName> {
        let kind = if is_hex(name, 24) {
            Some(WalKind::Segment)
        } else if let Some(segment) = name.strip_suffix(".partial") {
            is_hex(segment, 24).then_some(WalKind::Partial)
        } else if let Some(timeline) = name.strip_suffix(".history") {
            is_hex(timeline, 8).then_some(WalKind::History)
        } else if let Some(label) = name.strip_suffix(".backup") {
            label
                .split_once('.')
                .filter(|(segment, offset)| is_hex(segment, 24) && is_hex(offset, 8))
                .map(|_| WalKind::BackupLabel)
        } else {
            None
        };
        kind.map(|kind| WalName {
            name: name.to_string(),
            kind,
        })
        .ok_or_else(|| {
            Error::Config(format!(
                "`{name}` is not a WAL file name (a segment, .partial, .history or .backup \
                 file); archive_command must pass %p and restore_command %f"
            ))
        })
    }

    /// The folder of its objects under the cluster's prefix.
    fn folder(&self) -> &str {
        match self.kind {
            WalKind::History => "history",
            _ => &self.name[..16],
        }
    }

    /// Whether the file starts with a WAL page header naming its cluster.
    fn has_page_header(&self) -> bool {
        matches!(self.kind, WalKind::Segment | WalKind::Partial)
    }
}

/// The key prefix every object of `name` in cluster `system_id` starts with.
pub fn object_prefix(system_id: u64, name: &WalName) -> String {
    format!("{WAL_PREFIX}{system_id}/{}/{}-", name.folder(), name.name)
}

/// The raw sha256 an object's key carries, if it is one of ours.
fn sha256_in_key<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    key.strip_prefix(prefix)?
        .strip_suffix(".zst.age")
        .filter(|sha| sha.len() == 64)
}

/// The cluster's system identifier, from `global/pg_control` in its data directory.
pub fn system_identifier(pgdata: &Path) -> Result<u64> {
    let path = pgdata.join("global/pg_control");
    let mut first = [0u8; 8];
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_exact(&mut first))
        .map_err(|e| {
            Error::io(
                format!(
                    "cannot read the cluster's system identifier from `{}` (vault runs in the \
                     data directory, as PostgreSQL runs archive_command and restore_command; \
                     elsewhere pass --pgdata)",
                    path.display()
                ),
                e,
            )
        })?;
    Ok(u64::from_le_bytes(first))
}

/// The system identifier in a segment's first (long) page header, if it has one.
pub fn segment_system_identifier(head: &[u8]) -> Option<u64> {
    // XLogLongPageHeaderData: magic u16, info u16 (XLP_LONG_HEADER = 0x0002), tli u32,
    // pageaddr u64, rem_len u32 (+4 padding), then the system identifier u64 at 24.
    const XLP_LONG_HEADER: u16 = 0x0002;
    let info = u16::from_le_bytes(head.get(2..4)?.try_into().ok()?);
    if info & XLP_LONG_HEADER == 0 {
        return None;
    }
    Some(u64::from_le_bytes(head.get(24..32)?.try_into().ok()?))
}

/// How a push ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    Stored {
        key: String,
        stored_bytes: u64,
    },
    /// The same file was archived before (PostgreSQL retried): nothing to do.
    AlreadyArchived {
        key: String,
    },
}

/// Archives the WAL file at `path` of cluster `system_id`. Returns only once the object is
/// durably stored (or was already).
pub async fn push(
    store: Arc<dyn ObjectStore>,
    recipients: Arc<Recipients>,
    compression: Compression,
    path: &Path,
    system_id: u64,
    signer: &SigningKey,
) -> Result<Pushed> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = WalName::parse(&file_name)?;
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("cannot read WAL file `{}`", path.display()), e))?
        .len();
    // Hashed first: the signature in the age header names the contents' sha256. Then a
    // default 16 MiB segment is compressed and encrypted in memory (the second read comes
    // from the page cache); larger ones (wal_segment_size goes up to 1 GiB) are streamed.
    // Either way the contents must hash the same again.
    let (raw, head) = hash_file(path)?;
    if name.has_page_header() {
        match segment_system_identifier(&head) {
            Some(id) if id == system_id => {}
            Some(id) => {
                return Err(Error::Config(format!(
                    "`{file_name}` belongs to the cluster with system identifier {id}, but this \
                     cluster's is {system_id}: vault archives only the cluster it runs in \
                     (check archive_command and the data directory)"
                )));
            }
            None => {
                return Err(Error::Integrity(format!(
                    "`{}` does not start with a WAL page header, so it is not a WAL segment \
                     (nothing was stored): archive_command must pass PostgreSQL's own %p",
                    path.display()
                )));
            }
        }
    }
    let prefix = object_prefix(system_id, &name);
    let key = format!("{prefix}{}.zst.age", raw.sha256_hex());
    for existing in store.list(&prefix).await? {
        match sha256_in_key(&prefix, &existing.key) {
            Some(sha) if sha == raw.sha256_hex() => {
                return Ok(Pushed::AlreadyArchived { key: existing.key });
            }
            Some(sha) => {
                return Err(Error::Config(format!(
                    "`{file_name}` is already archived with other contents (sha256 {sha}, this \
                     file's is {}): two clusters, or a restored copy of this one, are archiving \
                     into the same place. The stored file was left as it is; give each cluster \
                     its own repository, and turn archive_mode off in restored copies",
                    raw.sha256_hex()
                )));
            }
            None => {}
        }
    }
    let signature =
        crate::trust::wal_signature(signer, system_id, &file_name, &key, &raw.sha256_hex())?;
    let stored_bytes = if size <= IN_MEMORY_MAX {
        let sealed = seal_in_memory(
            Arc::clone(&recipients),
            compression,
            path.to_path_buf(),
            signature,
            raw.clone(),
        )
        .await?;
        let bytes = sealed.len() as u64;
        store.put(&key, sealed.into()).await?;
        bytes
    } else {
        upload(store, recipients, compression, path, &key, &raw, signature).await?
    };
    Ok(Pushed::Stored { key, stored_bytes })
}

/// Files up to this size are sealed in memory in one pass (memory: the file's sealed bytes,
/// at most about its size, plus zstd's buffers).
const IN_MEMORY_MAX: u64 = 32 * 1024 * 1024;

/// Compresses and encrypts the file in memory, its header carrying `signature`; the
/// contents must still be `raw` (they must not change while archived).
async fn seal_in_memory(
    recipients: Arc<Recipients>,
    compression: Compression,
    path: std::path::PathBuf,
    signature: Stanza,
    raw: Digest,
) -> Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || {
        let context = || format!("cannot read WAL file `{}`", path.display());
        let file = std::fs::File::open(&path).map_err(|e| Error::io(context(), e))?;
        let (sealed, summary) = pipeline::compress_encrypt_with(
            file,
            Vec::new(),
            &recipients,
            compression,
            &Silent,
            vec![signature],
        )
        .map_err(|e| Error::io(context(), e))?;
        unchanged(&path, &raw, &summary.raw)?;
        Ok(sealed)
    })
    .await
    .map_err(|e| Error::task_failed("the WAL pipeline thread", e))?
}

/// The file hashed as `first` before and `then` while sealed: it must not have changed.
fn unchanged(path: &Path, first: &Digest, then: &Digest) -> Result<()> {
    if first == then {
        return Ok(());
    }
    Err(Error::Source(format!(
        "`{}` changed while it was archived ({} bytes with sha256 {}, then {} bytes with \
         sha256 {}): nothing was stored",
        path.display(),
        first.bytes,
        first.sha256_hex(),
        then.bytes,
        then.sha256_hex()
    )))
}

/// Bytes of a file's start kept for its page header.
const HEAD: usize = 64;

/// Keeps the first [`HEAD`] bytes read through it.
struct HeadOf<R> {
    inner: R,
    head: Vec<u8>,
}

impl<R: Read> Read for HeadOf<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let keep = (HEAD - self.head.len()).min(n);
        self.head.extend_from_slice(&buf[..keep]);
        Ok(n)
    }
}

/// The sha256 of the whole file and its first bytes (for the page header).
fn hash_file(path: &Path) -> Result<(Digest, Vec<u8>)> {
    let context = || format!("cannot read WAL file `{}`", path.display());
    let file = std::fs::File::open(path).map_err(|e| Error::io(context(), e))?;
    let mut reader = HeadOf {
        inner: pipeline::HashingReader::new(file),
        head: Vec::with_capacity(HEAD),
    };
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| Error::io(context(), e))?;
    let (_, digest) = reader.inner.finish();
    Ok((digest, reader.head))
}

/// Streams the file through zstd and age into `key`; committed only if every stage
/// succeeded and the file still hashes the same (it must not change while archived).
async fn upload(
    store: Arc<dyn ObjectStore>,
    recipients: Arc<Recipients>,
    compression: Compression,
    path: &Path,
    key: &str,
    raw: &Digest,
    signature: Stanza,
) -> Result<u64> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("cannot read WAL file `{}`", path.display()), e))?;
    let (sender, receiver) = ChunkSender::channel();
    let uploading = store.upload(key, Some(raw.bytes), receiver);
    let stages = tokio::task::spawn_blocking(move || {
        let (mut sender, summary) = pipeline::compress_encrypt_with(
            file,
            sender,
            &recipients,
            compression,
            &Silent,
            vec![signature],
        )?;
        sender.flush_buffered()?;
        Ok::<_, std::io::Error>((sender, summary))
    });
    let committing = async {
        let (sender, summary) = stages
            .await
            .map_err(|e| Error::task_failed("the WAL pipeline thread", e))?
            .map_err(|e| Error::io(format!("compressing and encrypting `{key}`"), e))?;
        // Dropping the sender aborts the upload.
        unchanged(path, raw, &summary.raw)?;
        sender
            .commit()
            .await
            .map_err(|()| Error::Repository(format!("the upload of `{key}` stopped early")))
    };
    let (uploaded, committed) = tokio::join!(uploading, committing);
    match (committed, uploaded) {
        (Ok(()), Ok(stored)) => Ok(stored),
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
    }
}

/// Whose WAL files a fetch accepts: signed by a writer trusted for the cluster, or unsigned
/// (an archive from before signing) when the operator allowed it.
#[derive(Clone)]
pub struct WalTrust {
    pub list: Arc<TrustList>,
    pub allow_unsigned: bool,
    /// This host's own public signing key, handed to the `restore_command` of a copy vault
    /// recovers (`VAULT_SIGNING_PUBLIC_KEY`): its OS user cannot read the private key.
    pub own: Option<String>,
}

/// How a fetch ended, when the repository answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Restored {
        bytes: u64,
    },
    /// The repository holds no such file: recovery has reached the end of the archive.
    Missing,
}

/// Restores WAL file `file_name` of cluster `system_id` to `dest`: written under a
/// temporary name beside it, its sha256 checked, synced, then renamed into place.
pub async fn fetch(
    feed: &Feed,
    system_id: u64,
    file_name: &str,
    dest: &Path,
    trust: &WalTrust,
) -> Result<Fetched> {
    let name = WalName::parse(file_name)?;
    let prefix = object_prefix(system_id, &name);
    let listed = feed.store.list(&prefix).await?;
    let mut found = listed
        .iter()
        .filter_map(|o| sha256_in_key(&prefix, &o.key).map(|sha| (o, sha)));
    let Some((object, sha)) = found.next() else {
        return Ok(Fetched::Missing);
    };
    if let Some((other, _)) = found.next() {
        return Err(Error::Integrity(format!(
            "`{file_name}` is archived twice with different contents (`{}` and `{}`): two \
             servers with this system identifier archived here (a restored copy with \
             archive_mode on?). Recovery stops rather than guess; move the object that \
             belongs to the other server's history out of the repository, then retry",
            object.key, other.key
        )));
    }
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(".vault-wal-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("cannot create a file in `{}`", dir.display()), e))?;
    // The name stays here and the file goes to the sink: whatever happens to the sink's
    // thread, a failed fetch removes the temporary file before it returns.
    let (file, temp_path) = temp.into_parts();
    let sink = std::io::BufWriter::with_capacity(1024 * 1024, file);
    let source = Source {
        owner: format!("WAL file {file_name}"),
        key: &object.key,
        rotated: None,
        stored: Known {
            bytes: Some(object.size),
            sha256: None,
        },
        // Its name carries the sha256 of the file as it was pushed.
        raw: Known {
            bytes: None,
            sha256: Some(sha),
        },
        if_damaged: "recovery cannot replay past it; recover to a time before this file was \
                     written, or from another copy of the archive",
        // The name's sha256 is checked before the file is put in place; the signature in
        // its header, before anything of it is decrypted.
        commitment: None,
        check: Some(trust.list.wal_check(
            system_id,
            file_name,
            &object.key,
            sha,
            trust.allow_unsigned,
        )),
    };
    let written = match feed
        .to_sink(source, sink, "the restored WAL file", &PhaseClock::start())
        .await?
    {
        Fed::Whole { sink, summary } => {
            let file = sink
                .into_inner()
                .map_err(|e| Error::io("writing the restored WAL file", e.into_error()))?;
            file.sync_all()
                .map_err(|e| Error::io("syncing the restored WAL file", e))?;
            drop(file);
            temp_path.persist(dest).map_err(|e| {
                Error::io(
                    format!("cannot move the WAL file into `{}`", dest.display()),
                    e.error,
                )
            })?;
            summary.raw.bytes
        }
        Fed::SinkClosed => {
            return Err(Error::io(
                "writing the restored WAL file",
                std::io::ErrorKind::BrokenPipe.into(),
            ));
        }
    };
    Ok(Fetched::Restored { bytes: written })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_wal_file_is_named_and_anything_else_refused() {
        for (name, kind, folder) in [
            (
                "000000010000000000000001",
                WalKind::Segment,
                "0000000100000000",
            ),
            (
                "0000000100000002000000FF.partial",
                WalKind::Partial,
                "0000000100000002",
            ),
            ("00000002.history", WalKind::History, "history"),
            (
                "000000010000000000000002.00000028.backup",
                WalKind::BackupLabel,
                "0000000100000000",
            ),
        ] {
            let parsed = WalName::parse(name).unwrap();
            assert_eq!(parsed.kind, kind, "{name}");
            assert_eq!(parsed.folder(), folder, "{name}");
        }
        for bad in [
            "pg_wal/000000010000000000000001",
            "00000001000000000000000g",
            "0000000100000000000000011",
            "000000010000000000000001.partial.x",
            "2.history",
            "",
        ] {
            assert!(WalName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_raw_sha256_is_read_back_from_keys_of_this_file_only() {
        let name = WalName::parse("00000002.history").unwrap();
        let prefix = object_prefix(7, &name);
        assert_eq!(prefix, "wal/7/history/00000002.history-");
        let sha = "a".repeat(64);
        assert_eq!(
            sha256_in_key(&prefix, &format!("{prefix}{sha}.zst.age")),
            Some(sha.as_str())
        );
        assert_eq!(sha256_in_key(&prefix, &format!("{prefix}{sha}")), None);
        assert_eq!(sha256_in_key(&prefix, "wal/7/history/other"), None);
    }

    #[test]
    fn a_long_page_header_names_its_cluster() {
        let mut head = vec![0u8; 40];
        head[0..2].copy_from_slice(&0xd110u16.to_le_bytes());
        head[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
        head[24..32].copy_from_slice(&7_383_900_000_000_000_001u64.to_le_bytes());
        assert_eq!(
            segment_system_identifier(&head),
            Some(7_383_900_000_000_000_001)
        );
        head[2..4].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(segment_system_identifier(&head), None, "a short header");
        assert_eq!(segment_system_identifier(&[0u8; 10]), None);
    }
}
