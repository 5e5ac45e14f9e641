//! WAL files in `vault keys rotate`. Each archived WAL object is small (a segment, zstd,
//! age) and its name carries the sha256 of the file as pushed, which restores check after
//! decrypting: so each is rewritten whole with one PUT (atomic: old or new), a new header
//! in front of the same payload, and needs no manifest and no pending state. The new header
//! carries vault's marker stanza naming the recipients, so a rotation run again skips what
//! an earlier (perhaps killed) one did without opening it. A rewrite would change the
//! object's modification time, which the archive reads as its push time, so the push times
//! are recorded first ([`PushTimes`]).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;

use super::RotationJob;
use crate::error::{Error, Result};
use crate::keys::header::{self, Header};
use crate::wal::archive::{Archive, ArchivedFile, PushTimes};

/// What a rotation did to one cluster's WAL archive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WalRotation {
    pub system_identifier: String,
    pub files: usize,
    pub rotated: usize,
    /// Already wrapped to exactly the configured recipients.
    pub unchanged: usize,
    pub uploaded_bytes: u64,
    /// A sentence per file left as it was because of an error (the file is unchanged).
    pub failed: Vec<String>,
    /// A sentence per file S3 Object Lock keeps as it is.
    pub locked: Vec<String>,
    pub seconds: f64,
    /// The exit code of the first failure.
    #[serde(skip)]
    pub failure_code: Option<u8>,
}

enum FileOutcome {
    Rotated(u64),
    Unchanged,
    Locked(String),
}

/// WAL objects rewritten at once: each is held whole in memory (a 16 MiB segment at most,
/// compressed), so this bounds memory to a few segments.
const FILES_IN_FLIGHT: usize = 4;

impl RotationJob {
    /// Rotates every WAL file of `system_id` (or, with `dry_run`, counts them).
    pub async fn rotate_wal(&self, system_id: u64) -> Result<WalRotation> {
        let started = Instant::now();
        let archive = Archive::list(self.store.as_ref(), system_id, None).await?;
        let files: Vec<ArchivedFile> = archive.files.into_values().flatten().collect();
        let mut report = WalRotation {
            system_identifier: system_id.to_string(),
            files: files.len(),
            rotated: 0,
            unchanged: 0,
            uploaded_bytes: 0,
            failed: Vec::new(),
            locked: Vec::new(),
            seconds: 0.0,
            failure_code: None,
        };
        if self.dry_run || files.is_empty() {
            return Ok(report);
        }
        self.progress.phase(&format!(
            "rotating {} WAL files of cluster {system_id}",
            files.len()
        ));
        // The push times first: a file rewritten before they are recorded would look
        // pushed now.
        let mut times = PushTimes::read(self.store.as_ref(), system_id).await?;
        times.format_version = 1;
        times
            .pushed_at
            .retain(|key, _| files.iter().any(|f| f.key == *key));
        for file in &files {
            if let Some(at) = file.archived_at {
                times.pushed_at.entry(file.key.clone()).or_insert(at);
            }
        }
        times.write(self.store.as_ref(), system_id).await?;

        let outcomes: Vec<(String, Result<FileOutcome>)> = futures_util::stream::iter(&files)
            .map(|file| async move { (file.key.clone(), self.rotate_wal_file(&file.key).await) })
            .buffer_unordered(FILES_IN_FLIGHT)
            .collect()
            .await;
        for (key, outcome) in outcomes {
            match outcome {
                Ok(FileOutcome::Rotated(bytes)) => {
                    report.rotated += 1;
                    report.uploaded_bytes += bytes;
                }
                Ok(FileOutcome::Unchanged) => report.unchanged += 1,
                Ok(FileOutcome::Locked(why)) => report.locked.push(why),
                Err(e) => {
                    report.failure_code.get_or_insert(e.exit_code());
                    report.failed.push(format!("`{key}`: {e}"));
                }
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    async fn rotate_wal_file(&self, key: &str) -> Result<FileOutcome> {
        let stored = self.store.get(key).await?;
        let header = Header::parse(&stored).map_err(|e| Error::Integrity(e.to_string()))?;
        let fingerprint = self.target.fingerprint();
        if header.marker() == Some(fingerprint.as_str()) {
            return Ok(FileOutcome::Unchanged);
        }
        if let Some(until) = self.store.locked_until(key).await?
            && until > self.now
        {
            return Ok(FileOutcome::Locked(format!(
                "`{key}` is under S3 Object Lock until {}",
                until.to_rfc3339()
            )));
        }
        let identities = Arc::clone(&self.identities);
        let target = self.target.clone();
        let rewritten = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            let file_key = header
                .file_key(&identities, &stored)
                .map_err(|e| Error::Key(format!("it cannot be rotated: {e}")))?;
            let mut new = header::wrap(&file_key, &target, Some(&header));
            new.extend_from_slice(&stored[header.len..]);
            header::authenticate(&new[..], &file_key).map_err(|e| {
                Error::Integrity(format!(
                    "it is damaged (its payload failed authentication: {e}); it was not \
                     rotated"
                ))
            })?;
            Ok(new)
        })
        .await
        .map_err(|e| Error::task_failed("a WAL rotation thread", e))??;
        let bytes = rewritten.len() as u64;
        self.progress.advance(bytes);
        self.store.put(key, Bytes::from(rewritten)).await?;
        Ok(FileOutcome::Rotated(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Identities, test_key};
    use crate::pipeline;
    use crate::progress::Silent;
    use crate::storage::ObjectStore;
    use crate::storage::memory::MemoryStore;

    #[tokio::test]
    async fn wal_files_are_rewrapped_once_and_keep_their_push_times() {
        let (a, only_a) = test_key();
        let (b, only_b) = test_key();
        let store = Arc::new(MemoryStore::default());
        let sha = |c: char| c.to_string().repeat(64);
        let keys = [
            format!(
                "wal/7/0000000100000000/000000010000000000000001-{}.zst.age",
                sha('a')
            ),
            format!(
                "wal/7/0000000100000000/000000010000000000000002-{}.zst.age",
                sha('b')
            ),
        ];
        for (n, key) in keys.iter().enumerate() {
            let (sealed, _) = pipeline::encrypt_small(&vec![n as u8; 100_000], &only_a).unwrap();
            store.put(key, sealed.into()).await.unwrap();
        }
        let mut damaged = store.get(&keys[1]).await.unwrap().to_vec();
        damaged[50_000] ^= 1;
        store.put(&keys[1], damaged.clone().into()).await.unwrap();
        let job = RotationJob {
            store: store.clone(),
            identities: Arc::new(Identities::from_keys(vec![a])),
            target: only_b.clone(),
            progress: Arc::new(Silent),
            dry_run: false,
            now: chrono::Utc::now(),
        };
        let report = job.rotate_wal(7).await.unwrap();
        assert_eq!((report.files, report.rotated, report.unchanged), (2, 1, 0));
        assert_eq!(report.failed.len(), 1);
        assert!(report.failed[0].contains("damaged"), "{:?}", report.failed);
        assert_eq!(
            &store.get(&keys[1]).await.unwrap()[..],
            &damaged[..],
            "left as it was"
        );
        let ids_b = Identities::from_keys(vec![b]);
        let opened = pipeline::decrypt_small(
            &store.get(&keys[0]).await.unwrap(),
            crate::keys::header::Opener::without_signature(&ids_b),
        );
        assert_eq!(opened.unwrap(), vec![0u8; 100_000]);

        // Again: the rotated file is recognised by its marker, without a key that opens it.
        let again = RotationJob {
            identities: Arc::new(Identities::from_keys(vec![test_key().0])),
            ..job
        };
        let report = again.rotate_wal(7).await.unwrap();
        assert_eq!((report.rotated, report.unchanged), (0, 1));
        let times = PushTimes::read(store.as_ref(), 7).await.unwrap();
        assert_eq!(times.format_version, 1);
    }
}
