//! `vault keys rotate`: makes existing backups readable by exactly the recipients configured
//! now, without re-encrypting their payloads. A large object (a dump, a base backup's tar)
//! gets a new age header wrapping the same file key ([`crate::keys::header`]) in front of its
//! untouched payload bytes, which S3 copies server-side ([`ObjectStore::replace_head`]); the
//! small sealed objects (facts, globals, verify reports) are decrypted and sealed again,
//! which for them is real revocation.
//!
//! Crash safety, per backup:
//! ```text
//! read every object whole: digest == the manifest's (else: damaged, not rotated),
//!     every age chunk authenticated, the new header built, the new digest known
//! manifest.encryption.rotation = {new recipients, new digests}   ← readers accept both
//! replace the objects (each atomically: old or new)
//! manifest: the new recipients and digests, no rotation          ← done
//! ```
//! A run killed anywhere leaves each object at its old or its new digest, both accepted;
//! the next rotation finds the pending rotation, keeps the objects already at their new
//! digest and finishes the others (then rotates again if the configuration changed since).
//! An unfinished S3 multipart upload it left is garbage `vault prune` removes.

pub mod audit;
pub mod wal;

use std::io::{self, Cursor, Read};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{PendingRotation, StoredBackup, StoredObject};
use crate::error::{Error, Result};
use crate::keys::header::{self, Header};
use crate::keys::{Identities, Recipients};
use crate::pipeline::{self, Digest, HashingReader};
use crate::progress::Progress;
use crate::storage::{ObjectHead, ObjectStore, Replaced};

/// What happened to one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "reason")]
pub enum Outcome {
    /// Rewritten: readable by exactly the configured recipients now.
    Rotated,
    /// Already readable by exactly the configured recipients.
    Unchanged,
    /// `--dry-run`: what a rotation would do.
    WouldRotate,
    /// Left as it is, and why (S3 Object Lock).
    Skipped(String),
    /// An error stopped it; the backup is as it was, or in the pending state readers accept.
    Failed(String),
}

/// One object of a rotated backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectRotation {
    pub key: String,
    pub stored_bytes: u64,
    /// `header` (new header, same payload), `sealed` (re-encrypted whole), `done` (a killed
    /// rotation had already replaced it).
    pub how: &'static str,
    #[serde(flatten)]
    pub replaced: Replaced,
}

/// The report of one backup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupRotation {
    pub kind: &'static str,
    /// The database, or `cluster <system identifier>`.
    pub owner: String,
    pub id: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// A pending rotation a killed run left was finished first.
    pub resumed: bool,
    pub objects: Vec<ObjectRotation>,
    pub seconds: f64,
    /// The exit code of the error behind `Failed`.
    #[serde(skip)]
    pub failure_code: Option<u8>,
}

impl BackupRotation {
    pub fn uploaded_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.replaced.uploaded_bytes).sum()
    }
    pub fn copied_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.replaced.copied_bytes).sum()
    }
}

/// Rotation of a repository's backups to `target`.
pub struct RotationJob {
    pub store: Arc<dyn ObjectStore>,
    pub identities: Arc<Identities>,
    pub target: Recipients,
    pub progress: Arc<dyn Progress>,
    pub dry_run: bool,
    pub now: DateTime<Utc>,
}

/// An object read whole and ready to be replaced.
enum Prepared {
    /// A killed rotation already replaced it: its digest is the pending one.
    Done,
    /// A new header before the payload that starts at `keep_from`.
    Header {
        head: Bytes,
        keep_from: u64,
        old: ObjectHead,
        new: StoredObject,
    },
    /// Sealed again whole.
    Sealed { bytes: Bytes, new: StoredObject },
}

/// Names rotation's fault-injection points (`VAULT_FAULT_KILL_AT`).
pub const AFTER_PENDING: &str = "rotate-pending";
pub const AFTER_REPLACED: &str = "rotate-replaced";

impl RotationJob {
    /// Rotates one backup (or says what it would do) and reports it; an error stops only
    /// this backup.
    pub async fn rotate<M: StoredBackup>(&self, manifest: M) -> BackupRotation {
        let started = Instant::now();
        let mut report = BackupRotation {
            kind: manifest.kind(),
            owner: manifest.owner(),
            id: manifest.id(),
            from: manifest.encryption().readers(),
            to: self.target.public_keys(),
            outcome: Outcome::Unchanged,
            resumed: manifest.encryption().rotation.is_some(),
            objects: Vec::new(),
            seconds: 0.0,
            failure_code: None,
        };
        report.outcome = match self.rotate_passes(manifest, &mut report.objects).await {
            Ok(outcome) => outcome,
            Err(e) => {
                report.failure_code = Some(e.exit_code());
                Outcome::Failed(e.to_string())
            }
        };
        report.seconds = started.elapsed().as_secs_f64();
        report
    }

    async fn rotate_passes<M: StoredBackup>(
        &self,
        mut manifest: M,
        objects: &mut Vec<ObjectRotation>,
    ) -> Result<Outcome> {
        let configured = self.target.public_keys();
        if manifest.encryption().rotation.is_none()
            && same_set(&manifest.encryption().recipients, &configured)
        {
            return Ok(Outcome::Unchanged);
        }
        if let Some(reason) = self.locked(&manifest).await? {
            return Ok(Outcome::Skipped(reason));
        }
        crate::catalog::sealed::check_recipients(
            &format!("{} backup {}", manifest.kind(), manifest.id()),
            &manifest.encryption().readers(),
            &self.identities,
        )?;
        if self.dry_run {
            return Ok(Outcome::WouldRotate);
        }
        // A pending rotation is finished to its own recipients first: its replaced objects
        // are only known by its digests. Then, if the configuration moved on, once more.
        loop {
            let pending = manifest.encryption().rotation.clone();
            let to = match &pending {
                Some(p) => Recipients::parse(&p.recipients, "the pending rotation")?,
                None => Recipients::parse(&configured, "the configuration")?,
            };
            self.progress.phase(&format!(
                "rotating {} backup {} of {}",
                manifest.kind(),
                manifest.id(),
                manifest.owner()
            ));
            objects.clear();
            manifest = self.one_pass(manifest, &to, objects).await?;
            if same_set(&manifest.encryption().recipients, &configured) {
                return Ok(Outcome::Rotated);
            }
        }
    }

    /// Until when Object Lock keeps the backup's large object, if that is still ahead.
    async fn locked<M: StoredBackup>(&self, manifest: &M) -> Result<Option<String>> {
        let mut locked = Vec::new();
        for object in manifest.objects() {
            if let Some(until) = self.store.locked_until(&object.key).await?
                && until > self.now
            {
                locked.push(format!("`{}` until {}", object.key, until.to_rfc3339()));
            }
        }
        Ok((!locked.is_empty()).then(|| {
            format!(
                "under S3 Object Lock: {}; a locked object cannot be replaced before its \
                 retention ends, so this backup stays readable by {} (run `vault keys rotate` \
                 again after that date)",
                locked.join(", "),
                manifest.encryption().recipients.join(", ")
            )
        }))
    }

    /// One rotation of `manifest` to `to`: read and check everything, record the pending
    /// rotation, replace, record the result.
    async fn one_pass<M: StoredBackup>(
        &self,
        mut manifest: M,
        to: &Recipients,
        report: &mut Vec<ObjectRotation>,
    ) -> Result<M> {
        let encryption = manifest.encryption().clone();
        let mut prepared = Vec::new();
        for object in manifest.objects() {
            let rotated = encryption.rotated(&object.key);
            let large = prepared.is_empty();
            prepared.push(if large {
                self.prepare_large(object, rotated, to).await?
            } else {
                self.prepare_sealed(object, rotated, to).await?
            });
        }
        let reports = self
            .prepare_reports(&manifest, encryption.rotation.is_some(), to)
            .await?;

        let new_entries: Vec<StoredObject> = manifest
            .objects()
            .into_iter()
            .zip(&prepared)
            .map(|(object, prepared)| match prepared {
                Prepared::Done => encryption
                    .rotated(&object.key)
                    .cloned()
                    .expect("Done is only prepared for an object with a pending entry"),
                Prepared::Header { new, .. } | Prepared::Sealed { new, .. } => new.clone(),
            })
            .collect();
        manifest.encryption_mut().rotation = Some(PendingRotation {
            recipients: to.public_keys(),
            started_at: self.now,
            objects: new_entries.clone(),
        });
        self.write_manifest(&manifest).await?;
        crate::fault::point(AFTER_PENDING);

        for (entry, prepared) in new_entries.iter().zip(prepared) {
            let (how, replaced) = match prepared {
                Prepared::Done => ("done", Replaced::default()),
                Prepared::Header {
                    head,
                    keep_from,
                    old,
                    ..
                } => {
                    let replaced = self
                        .store
                        .replace_head(&entry.key, head, keep_from, &old)
                        .await?;
                    if !replaced.server_side {
                        self.progress.warn(&format!(
                            "{} cannot copy byte ranges itself (S3 UploadPartCopy); `{}` \
                             was written again whole ({} bytes)",
                            self.store.location(),
                            entry.key,
                            replaced.uploaded_bytes
                        ));
                    }
                    ("header", replaced)
                }
                Prepared::Sealed { bytes, .. } => {
                    let uploaded_bytes = bytes.len() as u64;
                    self.store.put(&entry.key, bytes).await?;
                    (
                        "sealed",
                        Replaced {
                            uploaded_bytes,
                            ..Replaced::default()
                        },
                    )
                }
            };
            report.push(ObjectRotation {
                key: entry.key.clone(),
                stored_bytes: entry.size_bytes,
                how,
                replaced,
            });
        }
        for (key, sealed) in reports {
            let uploaded_bytes = sealed.len() as u64;
            self.store.put(&key, sealed).await?;
            report.push(ObjectRotation {
                key,
                stored_bytes: uploaded_bytes,
                how: "sealed",
                replaced: Replaced {
                    uploaded_bytes,
                    ..Replaced::default()
                },
            });
        }
        crate::fault::point(AFTER_REPLACED);

        for (object, entry) in manifest.objects_mut().into_iter().zip(new_entries) {
            *object = entry;
        }
        let info = manifest.encryption_mut();
        info.recipients = to.public_keys();
        info.rotation = None;
        self.write_manifest(&manifest).await?;
        Ok(manifest)
    }

    async fn write_manifest<M: StoredBackup>(&self, manifest: &M) -> Result<()> {
        self.store
            .put(&manifest.manifest_key(), Bytes::from(manifest.to_json()))
            .await
    }

    /// Reads the large object whole once: its digest against the manifest, its header
    /// opened, every payload chunk authenticated behind the new header, the new digest.
    async fn prepare_large(
        &self,
        object: &StoredObject,
        rotated: Option<&StoredObject>,
        to: &Recipients,
    ) -> Result<Prepared> {
        let old = self.store.head(&object.key).await?;
        let (reader, pump) =
            pipeline::download_channel(Arc::clone(&self.store), object.key.clone()).await?;
        let pump = tokio::spawn(pump);
        let identities = Arc::clone(&self.identities);
        let wrap_to = to.clone();
        let progress = Arc::clone(&self.progress);
        let read = tokio::task::spawn_blocking(move || {
            rewrap_stream(reader, &identities, &wrap_to, progress.as_ref())
        })
        .await
        .map_err(|e| Error::task_failed("the rotation's read thread", e))?;
        pump.abort();
        let read = read.map_err(|e| damaged(object, &format!("reading it failed: {e}")))?;
        let digest = &read.old;
        if rotated.is_some_and(|r| r.size_bytes == digest.bytes && r.sha256 == digest.sha256_hex())
        {
            return Ok(Prepared::Done);
        }
        if !object.matches(None, digest.bytes, &digest.sha256_hex()) {
            return Err(mismatch(object, digest));
        }
        if old.size != digest.bytes {
            return Err(damaged(object, "it changed while it was read"));
        }
        let rewrapped = read.rewrapped.map_err(|e| damaged(object, &e))?;
        Ok(Prepared::Header {
            keep_from: rewrapped.old_header_len,
            new: StoredObject {
                key: object.key.clone(),
                size_bytes: rewrapped.new.bytes,
                sha256: rewrapped.new.sha256_hex(),
            },
            head: Bytes::from(rewrapped.head),
            old,
        })
    }

    /// A small sealed object: checked against its manifest entry, decrypted, sealed again.
    async fn prepare_sealed(
        &self,
        object: &StoredObject,
        rotated: Option<&StoredObject>,
        to: &Recipients,
    ) -> Result<Prepared> {
        let stored = self.store.get(&object.key).await?;
        let digest = Digest::of(&stored);
        if rotated.is_some_and(|r| r.size_bytes == digest.bytes && r.sha256 == digest.sha256_hex())
        {
            return Ok(Prepared::Done);
        }
        if !object.matches(None, digest.bytes, &digest.sha256_hex()) {
            return Err(mismatch(object, &digest));
        }
        let sealed = self.seal_again(&object.key, &stored, to)?;
        let digest = Digest::of(&sealed);
        Ok(Prepared::Sealed {
            new: StoredObject {
                key: object.key.clone(),
                size_bytes: digest.bytes,
                sha256: digest.sha256_hex(),
            },
            bytes: Bytes::from(sealed),
        })
    }

    /// A small sealed object wrapped to `to`: the same file key (so a signature's commitment
    /// to it still holds) and payload behind a new header, authenticated whole first.
    fn seal_again(&self, key: &str, stored: &[u8], to: &Recipients) -> Result<Vec<u8>> {
        let refused = |e: &dyn std::fmt::Display| {
            Error::Integrity(format!("cannot decrypt `{key}` to rotate it: {e}"))
        };
        let parsed = Header::parse(stored).map_err(|e| refused(&e))?;
        let old_len = parsed.len;
        let file_key = parsed
            .file_key(&self.identities, stored)
            .map_err(|e| refused(&e))?;
        header::authenticate(stored, &file_key).map_err(|e| refused(&e))?;
        let mut sealed = header::wrap(&file_key, to, Some(&parsed));
        sealed.extend_from_slice(&stored[old_len..]);
        Ok(sealed)
    }

    /// The encrypted full verify reports beside the backup, sealed again. While a rotation
    /// is pending, one the identity cannot open was already rotated to keys it is not.
    async fn prepare_reports<M: StoredBackup>(
        &self,
        manifest: &M,
        pending: bool,
        to: &Recipients,
    ) -> Result<Vec<(String, Bytes)>> {
        let listed = self
            .store
            .list(&format!("{}verify/", manifest.prefix()))
            .await?;
        let mut out = Vec::new();
        for object in listed.iter().filter(|o| o.key.ends_with(".full.json.age")) {
            let stored = self.store.get(&object.key).await?;
            match self.seal_again(&object.key, &stored, to) {
                Ok(sealed) => out.push((object.key.clone(), Bytes::from(sealed))),
                Err(_) if pending => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// What reading a large object found.
struct StreamRead {
    old: Digest,
    /// The new header and what it makes, or why there is none (no identity opens it, not
    /// an age file, a chunk failed authentication).
    rewrapped: std::result::Result<Rewrapped, String>,
}

struct Rewrapped {
    old_header_len: u64,
    head: Vec<u8>,
    new: Digest,
}

/// Hashes every byte of `reader`; on the way, opens its header, wraps the file key to `to`
/// and authenticates the payload behind the new header (hashing that too).
fn rewrap_stream(
    reader: impl Read,
    identities: &Identities,
    to: &Recipients,
    progress: &dyn Progress,
) -> io::Result<StreamRead> {
    let mut old = HashingReader::new(reader);
    let (mut start, parsed) = header::read_start(&mut old)?;
    let opened = parsed.and_then(|h| Ok((h.file_key(identities, &start)?, h)));
    let (file_key, old_header) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            io::copy(&mut old, &mut io::sink())?;
            let (_, old) = old.finish();
            return Ok(StreamRead {
                old,
                rewrapped: Err(e.to_string()),
            });
        }
    };
    let head = header::wrap(&file_key, to, Some(&old_header));
    let old_header_len = old_header.len;
    let tail = start.split_off(old_header_len);
    let mut new = HashingReader::new(Cursor::new(head.clone()).chain(Cursor::new(tail)).chain(
        Counted {
            inner: old,
            progress,
        },
    ));
    let authenticated = header::authenticate(&mut new, &file_key);
    // Whatever follows (nothing, in an intact file) is still part of both digests.
    io::copy(&mut new, &mut io::sink())?;
    let (chain, new_digest) = new.finish();
    let (_, counted) = chain.into_inner();
    let (_, old) = counted.inner.finish();
    Ok(StreamRead {
        old,
        rewrapped: match authenticated {
            Ok(_) => Ok(Rewrapped {
                old_header_len: old_header_len as u64,
                head,
                new: new_digest,
            }),
            Err(e) => Err(format!("its payload failed authentication ({e})")),
        },
    })
}

/// Reports bytes read to the progress display.
struct Counted<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.iter().all(|k| b.contains(k)) && b.iter().all(|k| a.contains(k))
}

fn mismatch(object: &StoredObject, digest: &Digest) -> Error {
    damaged(
        object,
        &format!(
            "it is {} bytes with sha256 {}, but its manifest records {} bytes with sha256 {}",
            digest.bytes,
            digest.sha256_hex(),
            object.size_bytes,
            object.sha256
        ),
    )
}

fn damaged(object: &StoredObject, why: &str) -> Error {
    Error::Integrity(format!(
        "`{}` is damaged or was changed: {why}. It was not rotated; `vault verify` this \
         backup, and restore from another one if it is damaged",
        object.key
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Manifest, data_prefix, manifest_key};
    use crate::keys::header::Opener;
    use crate::keys::test_key;
    use crate::progress::Silent;
    use crate::storage::memory::MemoryStore;

    #[test]
    fn a_rewrapped_stream_opens_with_the_new_key_and_digests_both_versions() {
        let (a, only_a) = test_key();
        let (b, only_b) = test_key();
        let plain: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let (old, _) = pipeline::encrypt_small(&plain, &only_a).unwrap();
        let ids = Identities::from_keys(vec![a.clone()]);
        let read = rewrap_stream(&old[..], &ids, &only_b, &Silent).unwrap();
        assert_eq!(read.old, Digest::of(&old));
        let rewrapped = read.rewrapped.unwrap();
        let mut new = rewrapped.head.clone();
        new.extend_from_slice(&old[rewrapped.old_header_len as usize..]);
        assert_eq!(rewrapped.new, Digest::of(&new));
        let b_ids = Identities::from_keys(vec![b]);
        assert_eq!(
            pipeline::decrypt_small(&new, Opener::without_signature(&b_ids)).unwrap(),
            plain
        );
        assert!(pipeline::decrypt_small(&new, Opener::without_signature(&ids)).is_err());

        let mut flipped = old.clone();
        flipped[old.len() / 2] ^= 1;
        let read = rewrap_stream(&flipped[..], &ids, &only_b, &Silent).unwrap();
        assert_eq!(read.old, Digest::of(&flipped));
        let why = read.rewrapped.err().unwrap();
        assert!(why.contains("failed authentication"), "{why}");

        let read = rewrap_stream(&old[..], &b_ids, &only_b, &Silent).unwrap();
        assert_eq!(read.old, Digest::of(&old), "hashed whole without a key");
        assert!(
            read.rewrapped
                .err()
                .unwrap()
                .contains("none of the identities")
        );
    }

    /// A sealed object and its manifest entry in a memory store.
    async fn stored(store: &MemoryStore, key: &str, plain: &[u8], to: &Recipients) -> StoredObject {
        sealed(store, key, plain, to).await.object
    }

    async fn sealed(
        store: &MemoryStore,
        key: &str,
        plain: &[u8],
        to: &Recipients,
    ) -> crate::catalog::sealed::Sealed {
        crate::catalog::sealed::seal(store, key, plain, to)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_killed_rotation_is_finished_and_every_state_between_is_readable() {
        let (a, only_a) = test_key();
        let (b, only_b) = test_key();
        let store = Arc::new(MemoryStore::default());
        let mut manifest =
            Manifest::from_json(include_bytes!("../../fixtures/manifests/v1.json"), "v1").unwrap();
        let prefix = data_prefix(&manifest.database, &manifest.id);
        manifest.dump.stored = stored(
            &store,
            &format!("{prefix}dump.pgdump.zst.age"),
            &[1; 200_000],
            &only_a,
        )
        .await;
        let facts = sealed(&store, &format!("{prefix}facts.json.age"), b"{}", &only_a).await;
        let globals = sealed(&store, &format!("{prefix}globals.sql.age"), b"--", &only_a).await;
        // As a signed statement names them: the rotation must keep every file key.
        let signed = crate::trust::Accepted::Signed {
            signer: "db1".into(),
            commitments: [
                (facts.object.key.clone(), facts.file_key_commitment),
                (globals.object.key.clone(), globals.file_key_commitment),
            ]
            .into(),
        };
        manifest.facts = facts.object;
        manifest.globals = globals.object;
        manifest.encryption.recipients = only_a.public_keys();
        manifest.accepted = signed.clone();
        let job = RotationJob {
            store: store.clone(),
            identities: Arc::new(Identities::from_keys(vec![a.clone()])),
            target: only_b.clone(),
            progress: Arc::new(Silent),
            dry_run: false,
            now: Utc::now(),
        };

        // As a run killed after replacing the dump would leave it: the pending rotation in
        // the manifest, the dump at its new digest, facts and globals at their old ones.
        let mut objects = Vec::new();
        let Prepared::Header {
            head,
            keep_from,
            old,
            new,
        } = job
            .prepare_large(&manifest.dump.stored, None, &only_b)
            .await
            .unwrap()
        else {
            panic!("the dump gets a new header")
        };
        let mut sealed_anew = Vec::new();
        for object in [&manifest.facts, &manifest.globals] {
            let Prepared::Sealed { new, .. } =
                job.prepare_sealed(object, None, &only_b).await.unwrap()
            else {
                panic!("facts and globals are sealed again")
            };
            sealed_anew.push(new);
        }
        let mut pending = manifest.clone();
        let mut entries = vec![new.clone()];
        entries.extend(sealed_anew);
        pending.encryption.rotation = Some(PendingRotation {
            recipients: only_b.public_keys(),
            started_at: job.now,
            objects: entries,
        });
        store
            .replace_head(&new.key, head, keep_from, &old)
            .await
            .unwrap();
        let ids_b = Identities::from_keys(vec![b.clone()]);
        let dump = store.get(&new.key).await.unwrap();
        assert!(new.matches(None, dump.len() as u64, &Digest::of(&dump).sha256_hex()));
        assert_eq!(
            pipeline::decrypt_small(&dump, Opener::without_signature(&ids_b)).unwrap(),
            vec![1; 200_000]
        );
        // Readers accept the half-rotated backup: facts at the old digest still open.
        crate::catalog::sealed::read_globals(store.as_ref(), &job.identities, &pending)
            .await
            .unwrap();

        let report = job.rotate(pending).await;
        assert_eq!(report.outcome, Outcome::Rotated, "{report:?}");
        assert!(report.resumed);
        objects.extend(report.objects.iter().map(|o| (o.key.clone(), o.how)));
        assert_eq!(objects[0], (new.key.clone(), "done"), "{objects:?}");
        assert_eq!(objects[1].1, "sealed");
        let done: Manifest = Manifest::from_json(
            &store
                .get(&manifest_key(&manifest.database, &manifest.id))
                .await
                .unwrap(),
            "m",
        )
        .unwrap();
        assert_eq!(done.encryption.recipients, only_b.public_keys());
        assert!(done.encryption.rotation.is_none());
        assert_eq!(done.dump.stored, new);
        let mut done = done;
        done.accepted = signed;
        let globals = crate::catalog::sealed::read_globals(store.as_ref(), &ids_b, &done)
            .await
            .unwrap();
        assert_eq!(globals, "--");

        // Rotating again to the same keys changes nothing.
        let again = RotationJob {
            identities: Arc::new(ids_b),
            ..job
        };
        assert_eq!(again.rotate(done).await.outcome, Outcome::Unchanged);
    }
}
