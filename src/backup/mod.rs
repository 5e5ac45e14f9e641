//! One backup of one database, end to end:
//!
//! 1. open a REPEATABLE READ snapshot and export it;
//! 2. run `pg_dump -Fc -Z0 --snapshot=…` and stream its stdout through zstd, age and sha256
//!    into the repository, while the same snapshot yields the dump-time facts;
//! 3. commit the dump object only if pg_dump exited 0 and every stage finished;
//! 4. store the facts and `pg_dumpall --globals-only`, both encrypted;
//! 5. sign the statement of what was written (every object's key and file key commitment,
//!    `trust::statement`) and write the manifest with it, last. Until then the backup does
//!    not exist.
//!
//! Any failure leaves no manifest; objects already stored are deleted on a best-effort basis
//! (whatever remains is an orphan that pruning removes).

pub mod stream;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;

use crate::cancel::Cancel;
use crate::catalog::sealed::Sealed;
use crate::catalog::{
    self, BackupId, CompressionInfo, DumpObject, EncryptionInfo, MANIFEST_FORMAT, Manifest,
    StoredObject,
};
use crate::error::{Error, Result};
use crate::keys::Recipients;
use crate::pipeline::{Compression, Digest, StreamSummary};
use crate::postgres::{ChildProcess, ConnInfo, DumpFacts, PgTools, SnapshotSession};
use crate::progress::Progress;
use crate::storage::ObjectStore;
use crate::trust::{Signature, SigningKey, Statement};
use stream::ChildStream;

/// Everything a backup needs, shared by every database it backs up.
pub struct BackupJob {
    pub store: Arc<dyn ObjectStore>,
    pub source: ConnInfo,
    pub pg_bin_dir: Option<PathBuf>,
    pub recipients: Arc<Recipients>,
    pub compression: Compression,
    pub progress: Arc<dyn Progress>,
    /// Signs the statement that makes the backup verifiable (`trust`).
    pub signer: Arc<SigningKey>,
}

/// What pg_dump and the pipeline produced, before the small objects and the manifest.
struct DumpOutcome {
    summary: StreamSummary,
    facts: DumpFacts,
    pg_dump_warnings: String,
}

impl BackupJob {
    /// Backs up `database`; returns the manifest once it is stored. A `pinned` backup is a
    /// checkpoint retention never deletes (`vault snapshot`). A backup that failed because
    /// the server went away mid-dump is marked transient: the daemon retries it.
    pub async fn run(
        &self,
        database: &str,
        label: Option<String>,
        pinned: bool,
        cancel: Cancel,
    ) -> Result<Manifest> {
        self.run_once(database, label, pinned, cancel)
            .await
            .map_err(|e| match e {
                Error::Source(message) if crate::postgres::client::lost_connection(&message) => {
                    Error::transient(Error::Source(message))
                }
                other => other,
            })
    }

    async fn run_once(
        &self,
        database: &str,
        label: Option<String>,
        pinned: bool,
        cancel: Cancel,
    ) -> Result<Manifest> {
        let started_at = Utc::now();
        let id = BackupId::new(started_at);
        let shown = self.source.url_for(database);
        let progress = &self.progress;
        progress.phase(&format!("connecting to {shown}"));

        let session = SnapshotSession::open(&self.source, database).await?;
        let tools = PgTools::locate(self.pg_bin_dir.as_deref(), Some(session.server.major));
        let pg_dump_version = tools
            .pg_dump_for(session.server.major, &session.server.version, &shown)
            .await?;

        let data_prefix = catalog::data_prefix(database, &id);
        let dump_key = format!("{data_prefix}dump.pgdump.zst.age");
        let facts_key = format!("{data_prefix}facts.json.age");
        let globals_key = format!("{data_prefix}globals.sql.age");
        let mut warnings = Vec::new();

        let expected = self.expected_dump_size(&session, database).await;
        progress.phase(&format!("dumping {database}"));
        let dumped = self
            .dump(
                &tools,
                &session,
                database,
                &shown,
                &dump_key,
                expected,
                cancel.clone(),
            )
            .await;
        let server_version = session.server.version.clone();
        let can_read_role_passwords = session.server.can_read_role_passwords;
        session.close().await;
        let dumped = dumped?;
        if !dumped.pg_dump_warnings.is_empty() {
            warnings.push(format!("pg_dump: {}", dumped.pg_dump_warnings));
        }

        let side_objects = async {
            progress.phase(&format!("saving roles and facts of {database}"));
            let globals = self
                .dump_globals(&tools, &shown, can_read_role_passwords, &mut warnings)
                .await?;
            let globals = self.put_encrypted(&globals_key, &globals).await?;
            let facts_json = serde_json::to_vec(&dumped.facts).expect("facts serialize");
            let facts = self.put_encrypted(&facts_key, &facts_json).await?;
            let plain = BTreeMap::from([
                (facts.object.key.clone(), digest_pair(&facts.plain)),
                (globals.object.key.clone(), digest_pair(&globals.plain)),
            ]);
            let commitments = BTreeMap::from([
                (dump_key.clone(), dumped.summary.file_key_commitment),
                (facts.object.key.clone(), facts.file_key_commitment),
                (globals.object.key.clone(), globals.file_key_commitment),
            ]);
            for warning in &warnings {
                progress.warn(warning);
            }
            let mut manifest = Manifest {
                format_version: MANIFEST_FORMAT,
                tool: "vault".into(),
                tool_version: env!("CARGO_PKG_VERSION").into(),
                id: id.clone(),
                database: database.to_string(),
                label,
                pinned,
                started_at,
                finished_at: Utc::now(),
                server_version,
                pg_dump_version,
                compression: self.compression_info(),
                encryption: self.encryption_info(),
                dump: DumpObject {
                    stored: stored_object(&dump_key, &dumped.summary.stored),
                    raw_bytes: dumped.summary.raw.bytes,
                    raw_sha256: dumped.summary.raw.sha256_hex(),
                    format: "custom".into(),
                },
                facts: facts.object,
                globals: globals.object,
                warnings,
                signature: None,
                accepted: Default::default(),
            };
            let statement = Statement::for_dump(&manifest, &commitments)?.with_plain(&plain);
            manifest.signature = Some(Signature::sign(&statement, &self.signer)?);
            Ok(manifest)
        };
        let mut cancel = cancel;
        let prepared = tokio::select! {
            result = side_objects => result,
            _ = cancel.cancelled() => Err(Error::Interrupted(format!(
                "backup of {database} cancelled; no manifest was written"
            ))),
        };
        let manifest = match prepared {
            Ok(manifest) => manifest,
            Err(e) => {
                for key in [&dump_key, &facts_key, &globals_key] {
                    let _ = self.store.delete(key).await;
                }
                return Err(e);
            }
        };
        // The manifest write is not cancelled midway, and a failed one deletes nothing: it
        // may have reached the store anyway, and a manifest must never point at missing
        // data. Without a manifest, the objects are orphans that pruning removes.
        progress.phase(&format!("writing manifest of {database}"));
        self.store
            .put(
                &catalog::manifest_key(database, &id),
                Bytes::from(manifest.to_json()),
            )
            .await?;
        Ok(manifest)
    }

    /// What the dump object will probably hold, for the store to size its upload: the
    /// previous backup's stored size, else the database's size on disk. Unknown (`None`)
    /// only when neither can be read, which is a warning, not a failure.
    async fn expected_dump_size(&self, session: &SnapshotSession, database: &str) -> Option<u64> {
        match catalog::newest_backup(self.store.as_ref(), database).await {
            Ok(Some(previous)) => return Some(previous.dump.stored.size_bytes),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the previous backup's size"),
        }
        match session.database_size(database).await {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.progress.warn(&format!(
                    "{e}; the upload uses repository.part_size_mib parts, which limits the \
                     dump to 10,000 of them"
                ));
                None
            }
        }
    }

    /// Streams pg_dump into the store; the object is committed only if everything succeeded.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; each is a distinct input"
    )]
    async fn dump(
        &self,
        tools: &PgTools,
        session: &SnapshotSession,
        database: &str,
        shown: &str,
        key: &str,
        expected: Option<u64>,
        cancel: Cancel,
    ) -> Result<DumpOutcome> {
        let mut command = tools.command("pg_dump");
        command
            .args(["--format=custom", "--compress=0", "--no-password"])
            .arg(format!("--snapshot={}", session.snapshot_id))
            .arg(format!("--dbname={shown}"));
        self.source.pass_secrets(&mut command)?;
        let pg_dump = ChildProcess::spawn("pg_dump", command)?;
        let streamed = ChildStream {
            store: self.store.as_ref(),
            key,
            expected,
            recipients: Arc::clone(&self.recipients),
            compression: self.compression,
            progress: Arc::clone(&self.progress),
            what: format!("the dump of {database}"),
        }
        .run(
            pg_dump,
            |stdout| stdout,
            session.capture_facts(database),
            cancel,
        )
        .await?;
        Ok(DumpOutcome {
            summary: streamed.summary,
            facts: streamed.alongside,
            pg_dump_warnings: streamed.stderr,
        })
    }

    async fn dump_globals(
        &self,
        tools: &PgTools,
        shown: &str,
        can_read_role_passwords: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<u8>> {
        let mut command = tools.command("pg_dumpall");
        command
            .args(["--globals-only", "--no-password"])
            .arg(format!("--dbname={shown}"));
        if !can_read_role_passwords {
            command.arg("--no-role-passwords");
            warnings.push(
                "the backup role cannot read pg_authid, so roles were saved without their \
                 passwords (pg_dumpall --no-role-passwords); restored roles need new passwords"
                    .into(),
            );
        }
        self.source.pass_secrets(&mut command)?;
        let (globals, _) = ChildProcess::spawn("pg_dumpall", command)?.output().await?;
        Ok(globals)
    }

    /// How this job compresses, as its manifests record it.
    pub(crate) fn compression_info(&self) -> CompressionInfo {
        CompressionInfo {
            algorithm: "zstd".into(),
            level: self.compression.level,
            threads: self.compression.threads,
        }
    }

    /// Whom this job encrypts to, as its manifests record it.
    pub(crate) fn encryption_info(&self) -> EncryptionInfo {
        EncryptionInfo {
            algorithm: "age-x25519".into(),
            recipients: self.recipients.public_keys(),
            rotation: None,
        }
    }

    async fn put_encrypted(&self, key: &str, plain: &[u8]) -> Result<Sealed> {
        catalog::sealed::seal(self.store.as_ref(), key, plain, &self.recipients).await
    }
}

/// A digest as a statement records it: (bytes, sha256 hex).
fn digest_pair(digest: &Digest) -> (u64, String) {
    (digest.bytes, digest.sha256_hex())
}

pub(crate) fn stored_object(key: &str, digest: &Digest) -> StoredObject {
    StoredObject {
        key: key.to_string(),
        size_bytes: digest.bytes,
        sha256: digest.sha256_hex(),
    }
}
