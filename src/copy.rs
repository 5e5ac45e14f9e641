//! `vault copy`: every complete backup the primary repository holds and a copy repository
//! lacks is streamed there as stored — ciphertext as is, no identity needed — with each
//! object's sha256 and size checked against the manifest on the way, and the manifest
//! written last, so a copy killed at any point leaves nothing listed there (an object
//! uploaded without its manifest is an orphan `vault prune` removes). A damaged object in
//! the primary is refused, never spread. Verify records and drills stay with the repository
//! they were made in. Archived WAL files are copied too, their push times recorded in the
//! copy's `pushed-at.json` first (the copy's objects are new, their times would be now).
//! A WAL object has no stored digest to check against; where an identity is configured (an
//! operator's host, not the DB host) each is opened on the way and its contents checked
//! against the sha256 its name records, otherwise only its size is checked.
//!
//! ```text
//! primary GET ─▶ sha256 + size ─▶ copy upload (commits only if both match the manifest)
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;

use crate::catalog::{StoredBackup, StoredObject};
use crate::error::{Error, Result};
use crate::keys::Identities;
use crate::progress::Progress;
use crate::storage::ObjectStore;
use crate::wal::archive::{Archive, ArchivedFile, PushTimes};
use sha2::Digest;

/// The fault-injection point (`VAULT_FAULT_KILL_AT`) after a backup's objects were copied
/// and before its manifest was.
pub const AFTER_OBJECTS: &str = "copy-objects";

/// A copy from the primary into one copy repository.
pub struct CopyJob {
    pub from: Arc<dyn ObjectStore>,
    pub to: Arc<dyn ObjectStore>,
    /// The copy repository's name (`[repositories.<name>]`).
    pub name: String,
    pub progress: Arc<dyn Progress>,
    /// When configured: WAL files are opened and checked against their names on the way.
    pub identities: Option<Arc<Identities>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyOutcome {
    Copied,
    /// The copy already has it.
    Present,
    /// Left for later, and why (a key rotation is pending).
    Skipped,
    Failed,
}

/// One backup's copy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopiedBackup {
    pub kind: &'static str,
    pub owner: String,
    pub id: String,
    pub outcome: CopyOutcome,
    pub reason: Option<String>,
    pub bytes: u64,
    pub seconds: f64,
    #[serde(skip)]
    pub failure_code: Option<u8>,
}

/// One cluster's WAL archive copied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopiedWal {
    pub system_identifier: String,
    pub files: usize,
    pub copied: usize,
    pub bytes: u64,
    /// Copied but checked by size only: no identity, or one the file is not sealed to.
    pub unchecked: usize,
    pub failed: Vec<String>,
}

/// How far one copy repository is behind the primary for one database.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopyLag {
    pub repository: String,
    pub database: String,
    pub newest_in_copy: Option<DateTime<Utc>>,
    /// 0 when the copy holds the primary's newest backup; else the time from the copy's
    /// newest backup to the primary's newest (with none in the copy: since the primary's
    /// newest was taken).
    pub lag_seconds: f64,
}

impl CopyLag {
    /// The judgement for `primary_newest` and `copy_newest` (start times); `None` when the
    /// primary holds no backup of the database.
    pub fn of(
        repository: &str,
        database: &str,
        primary_newest: Option<DateTime<Utc>>,
        copy_newest: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<CopyLag> {
        let primary = primary_newest?;
        let behind = match copy_newest {
            Some(copy) if copy >= primary => chrono::Duration::zero(),
            Some(copy) => primary - copy,
            None => now - primary,
        };
        Some(CopyLag {
            repository: repository.to_string(),
            database: database.to_string(),
            newest_in_copy: copy_newest,
            lag_seconds: behind.num_milliseconds().max(0) as f64 / 1000.0,
        })
    }

    /// The alert's sentence when the lag is over `limit`.
    pub fn problem(&self, limit: chrono::Duration) -> Option<String> {
        if self.lag_seconds <= limit.num_seconds() as f64 {
            return None;
        }
        let hours = self.lag_seconds / 3600.0;
        Some(match self.newest_in_copy {
            Some(at) => format!(
                "copy repository {} is {hours:.1} h behind the primary for {}: its newest \
                 backup started {}; check the `copy` job and that the copy is reachable \
                 (`vault copy --to {}`)",
                self.repository,
                self.database,
                at.to_rfc3339(),
                self.repository
            ),
            None => format!(
                "copy repository {} holds no backup of {}, {hours:.1} h after the primary's \
                 newest; run `vault copy --to {}`",
                self.repository, self.database, self.repository
            ),
        })
    }
}

/// Each copy's lag for each of `databases` (one listing per repository and database).
pub async fn lags(
    primary: &dyn ObjectStore,
    copies: &[(String, Arc<dyn ObjectStore>)],
    databases: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<CopyLag>> {
    let mut out = Vec::new();
    for database in databases {
        let newest = crate::catalog::newest_backup(primary, database)
            .await?
            .map(|m| m.started_at);
        for (name, copy) in copies {
            let in_copy = crate::catalog::newest_backup(copy.as_ref(), database)
                .await?
                .map(|m| m.started_at);
            out.extend(CopyLag::of(name, database, newest, in_copy, now));
        }
    }
    Ok(out)
}

/// WAL objects copied at once (each held whole: a segment at most, compressed).
const WAL_IN_FLIGHT: usize = 4;

impl CopyJob {
    /// Copies `backup` unless `present` (its manifest is in the copy already).
    pub async fn copy_backup<M: StoredBackup>(&self, backup: &M, present: bool) -> CopiedBackup {
        let started = Instant::now();
        let mut report = CopiedBackup {
            kind: backup.kind(),
            owner: backup.owner(),
            id: backup.id(),
            outcome: CopyOutcome::Present,
            reason: None,
            bytes: 0,
            seconds: 0.0,
            failure_code: None,
        };
        if present {
            return report;
        }
        if backup.encryption().rotation.is_some() {
            report.outcome = CopyOutcome::Skipped;
            report.reason = Some(
                "a key rotation of it is unfinished: `vault keys rotate` finishes it, then \
                 copy it"
                    .into(),
            );
            return report;
        }
        self.progress.phase(&format!(
            "copying {} backup {} of {} to repository {}",
            backup.kind(),
            backup.id(),
            backup.owner(),
            self.name
        ));
        let copied = async {
            let mut bytes = 0;
            for object in backup.objects() {
                bytes += self.copy_object(object).await?;
            }
            crate::fault::point(AFTER_OBJECTS);
            self.to
                .put(&backup.manifest_key(), Bytes::from(backup.to_json()))
                .await?;
            Ok::<u64, Error>(bytes)
        }
        .await;
        match copied {
            Ok(bytes) => {
                report.outcome = CopyOutcome::Copied;
                report.bytes = bytes;
            }
            Err(e) => {
                report.outcome = CopyOutcome::Failed;
                report.failure_code = Some(e.exit_code());
                report.reason = Some(e.to_string());
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        report
    }

    /// Streams one object across; the copy commits only if its size and sha256 are the
    /// manifest's.
    async fn copy_object(&self, object: &StoredObject) -> Result<u64> {
        let body = self.from.download(&object.key, 0).await?;
        let key = &object.key;
        crate::storage::stream_into(
            self.to.as_ref(),
            key,
            object.size_bytes,
            Bytes::new(),
            body,
            |n| self.progress.advance(n),
            |read, sha256| {
                if read == object.size_bytes && sha256 == object.sha256 {
                    return Ok(());
                }
                Err(Error::Integrity(format!(
                    "`{key}` in the primary is {read} bytes with sha256 {sha256}, but its \
                     manifest records {} bytes with sha256 {}: it is damaged and was not \
                     copied; `vault verify` that backup",
                    object.size_bytes, object.sha256
                )))
            },
        )
        .await
    }

    /// Copies every archived WAL file of `system_id` the copy lacks.
    pub async fn copy_wal(&self, system_id: u64) -> Result<CopiedWal> {
        let source = Archive::list(self.from.as_ref(), system_id, None).await?;
        let present: HashSet<String> = Archive::list(self.to.as_ref(), system_id, None)
            .await?
            .files
            .into_values()
            .flatten()
            .map(|f| f.key)
            .collect();
        let missing: Vec<_> = source
            .files
            .into_values()
            .flatten()
            .filter(|f| !present.contains(&f.key))
            .collect();
        let mut report = CopiedWal {
            system_identifier: system_id.to_string(),
            files: present.len() + missing.len(),
            copied: 0,
            bytes: 0,
            unchecked: 0,
            failed: Vec::new(),
        };
        if missing.is_empty() {
            return Ok(report);
        }
        self.progress.phase(&format!(
            "copying {} WAL files of cluster {system_id} to repository {}",
            missing.len(),
            self.name
        ));
        let mut times = PushTimes::read(self.to.as_ref(), system_id).await?;
        times.format_version = 1;
        for file in &missing {
            if let Some(at) = file.archived_at {
                times.pushed_at.insert(file.key.clone(), at);
            }
        }
        times.write(self.to.as_ref(), system_id).await?;
        let results: Vec<(String, Result<(u64, bool)>)> = futures_util::stream::iter(&missing)
            .map(|file| async move {
                let copied = async {
                    let body = self.from.get(&file.key).await?;
                    if body.len() as u64 != file.stored_bytes {
                        return Err(Error::Repository(format!(
                            "`{}` changed while it was copied",
                            file.key
                        )));
                    }
                    let checked = match &self.identities {
                        Some(identities) => check_wal(identities, file, body.clone()).await?,
                        None => false,
                    };
                    let n = body.len() as u64;
                    self.to.put(&file.key, body).await?;
                    Ok((n, checked))
                }
                .await;
                (file.key.clone(), copied)
            })
            .buffer_unordered(WAL_IN_FLIGHT)
            .collect()
            .await;
        for (key, result) in results {
            match result {
                Ok((n, checked)) => {
                    report.copied += 1;
                    report.bytes += n;
                    report.unchecked += usize::from(!checked);
                }
                Err(e) => report.failed.push(format!("`{key}`: {e}")),
            }
        }
        Ok(report)
    }
}

/// A WAL file as read from the primary, opened and decompressed: its sha256 must be the one
/// its name carries, or it is damaged and not copied. `false` when the identity is not one
/// the file is sealed to (it cannot be checked, which is not damage).
async fn check_wal(identities: &Arc<Identities>, file: &ArchivedFile, body: Bytes) -> Result<bool> {
    let identities = Arc::clone(identities);
    let key = file.key.clone();
    let sha256 = tokio::task::spawn_blocking(move || {
        // The name's sha256 is what is checked here: no signed commitment is needed for it.
        let opener = crate::keys::header::Opener::without_signature(&identities);
        let compressed = crate::pipeline::decrypt_small(&body, opener)?;
        let raw = zstd::stream::decode_all(compressed.as_slice())?;
        Ok::<_, std::io::Error>(hex::encode(sha2::Sha256::digest(&raw)))
    })
    .await
    .map_err(|e| Error::task_failed("the WAL check", e))?;
    let not_for_us = |e: &std::io::Error| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::keys::header::HeaderError>())
            .is_some_and(|h| *h == crate::keys::header::HeaderError::NoIdentity)
    };
    match sha256 {
        Ok(sha256) if sha256 == file.sha256 => Ok(true),
        Err(e) if not_for_us(&e) => Ok(false),
        Ok(sha256) => Err(Error::Integrity(format!(
            "`{key}` in the primary holds a file with sha256 {sha256}, not the {} its name \
             records: it is damaged and was not copied",
            file.sha256
        ))),
        Err(e) => Err(Error::Integrity(format!(
            "`{key}` in the primary cannot be opened ({e}): it is damaged and was not copied"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn a_copy_lags_by_the_time_between_its_newest_backup_and_the_primarys() {
        let now = at("2026-12-02T12:00:00Z");
        let primary = Some(at("2026-12-02T06:00:00Z"));
        let lag =
            |copy: Option<&str>| CopyLag::of("dr", "app", primary, copy.map(at), now).unwrap();
        assert_eq!(lag(Some("2026-12-02T06:00:00Z")).lag_seconds, 0.0);
        let behind = lag(Some("2026-12-01T18:00:00Z"));
        assert_eq!(behind.lag_seconds, 12.0 * 3600.0);
        assert_eq!(
            behind.problem(chrono::Duration::hours(12)),
            None,
            "at the limit"
        );
        let said = behind.problem(chrono::Duration::hours(6)).unwrap();
        assert!(said.contains("12.0 h behind the primary for app"), "{said}");
        let none = lag(None);
        assert_eq!(none.lag_seconds, 6.0 * 3600.0);
        assert!(
            none.problem(chrono::Duration::hours(1))
                .unwrap()
                .contains("holds no backup")
        );
        assert_eq!(CopyLag::of("dr", "app", None, None, now), None);
    }
}
