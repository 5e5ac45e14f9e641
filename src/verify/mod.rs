//! `vault verify`: prove a backup restores and equals what was dumped.
//!
//! 1. check the backup is signed by a writer this host trusts for its database (`trust`),
//!    the identity opens it, and read its dump-time facts (cheap, first);
//! 2. start the scratch PostgreSQL (`scratch.rs`): a throwaway cluster of the backup's major
//!    version, or a new database on the configured scratch server;
//! 3. apply the saved roles, then stream the dump store → sha256 → age → zstd → pg_restore
//!    (the feed engine, as restore uses it; every pg_restore error is collected, not just
//!    the first);
//! 4. run the checks (`checks.rs`): checksums, pg_restore errors, row counts, large objects,
//!    sequences, the schema fingerprint, amcheck, and the operator's `[[verify.checks]]`;
//! 5. remove the scratch database / cluster — also after a failure, the time limit or
//!    Ctrl-C — and store the record beside the backup (`record.rs`).
//!
//! A failing check is a result (a stored record, `passed: false`), not an error; errors are
//! what prevented a verdict (repository down, wrong key, no scratch server, interrupted).

pub mod base;
pub mod checks;
pub mod record;
pub mod scratch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use crate::cancel::Cancel;
use crate::catalog::Manifest;
use crate::catalog::sealed;
use crate::config::VerifyConfig;
use crate::error::{Error, Result};
use crate::feed::Feed;
use crate::feed::pg_restore::PgRestoreRun;
use crate::keys::Identities;
use crate::lock::{self, Lock};
use crate::postgres::admin::ServerAdmin;
use crate::postgres::client::{ServerInfo, connect};
use crate::postgres::comparison::{FactsComparison, TableCount};
use crate::postgres::tools::parse_version;
use crate::postgres::{DumpFacts, facts};
use crate::progress::Progress;
use crate::storage::ObjectStore;
use crate::trust::{Accepted, SigningKey, TrustList};
use checks::{CheckOutcome, CheckStatus};
use record::{Phases, ScratchInfo, VerifyReport};
use scratch::Scratch;

pub struct VerifyJob {
    pub store: Arc<dyn ObjectStore>,
    pub identities: Arc<Identities>,
    pub config: VerifyConfig,
    /// `source.pg_bin_dir`: pg_restore for a scratch server when `verify.pg_bin_dir` is unset.
    pub client_bin_dir: Option<PathBuf>,
    pub progress: Arc<dyn Progress>,
    /// Whose backups this verify reads (`trust`): anything else is refused before the
    /// scratch server starts, and no record is stored for it.
    pub trust: Arc<TrustList>,
    /// `--allow-unsigned`: the operator accepts backups without any signature.
    pub allow_unsigned: bool,
    /// Signs the verification record (retention counts only trusted records).
    pub signer: Arc<SigningKey>,
}

/// What a verify found, and where its record is stored.
pub struct Verified {
    pub report: VerifyReport,
    pub record_key: String,
}

/// What the checks collected so far; survives the work being cut off by the time limit.
#[derive(Default)]
struct Collected {
    checks: Vec<CheckOutcome>,
    tables: Vec<TableCount>,
    roles_created: Vec<String>,
    server_version: String,
    restored_bytes: u64,
    phases: Phases,
}

impl VerifyJob {
    /// Takes the host-wide lock for this job's scratch target (one verify per target).
    pub fn lock(&self, state_dir: &Path) -> Result<Lock> {
        let (name, what) = match self.config.scratch()? {
            crate::config::Scratch::Ephemeral => (
                "verify-ephemeral".to_string(),
                "verifying in an ephemeral scratch cluster on this host".to_string(),
            ),
            crate::config::Scratch::Server(url) => {
                let shown = crate::postgres::ConnInfo::parse(&url)?.url_for("");
                (
                    lock::name_for("verify", &shown.replace("postgresql://", "")),
                    format!("verifying on scratch server {shown}"),
                )
            }
        };
        Lock::try_acquire(state_dir, &name, &what)
    }

    /// Removes what a verify killed before it could clean up left behind (the notes in the
    /// lock it held): its scratch cluster, or its database on the scratch server. Returns a
    /// sentence for each thing removed or not removable.
    pub async fn remove_abandoned(&self, lock: &Lock) -> Vec<String> {
        if lock.previous_notes().is_empty() {
            return Vec::new();
        }
        Scratch::remove_abandoned(lock.previous_notes(), &self.config).await
    }

    /// Verifies one backup and stores the record. `Ok` whether or not the checks passed.
    /// `lock` (from [`Self::lock`]) carries notes of what to remove should this process die.
    pub async fn verify(&self, backup: &Manifest, lock: &Lock, cancel: Cancel) -> Result<Verified> {
        let started_at = Utc::now();
        let clock = Instant::now();
        self.progress.phase(&format!(
            "verifying backup {} of `{}`",
            backup.id, backup.database
        ));
        let backup = &self.trust.accept(backup.clone(), self.allow_unsigned)?;
        if backup.accepted == Accepted::Unsigned {
            self.progress.warn(&format!(
                "backup {} is unsigned and verified only because of --allow-unsigned: nothing \
                 proves who wrote it",
                backup.id
            ));
        }
        let facts = sealed::read_facts(self.store.as_ref(), &self.identities, backup).await?;
        let major = parse_version(&backup.server_version).map_or(0, |(_, m)| m);
        let limit = self.config.timeout()?;
        let scratch = Scratch::start(
            &self.config,
            major,
            self.client_bin_dir.as_deref(),
            self.progress.as_ref(),
            |dir| lock.note(&[Scratch::cluster_note(dir)]),
        )
        .await;
        let scratch = match scratch {
            Ok(scratch) => scratch,
            Err(e) => {
                // A cluster that failed to start has removed its directory.
                self.clear_notes(lock);
                return Err(e);
            }
        };
        let mut collected = Collected::default();
        collected.phases.scratch_start_seconds = Some(clock.elapsed().as_secs_f64());
        let database = format!(
            "vault_verify_{}_{:06x}",
            started_at.format("%Y%m%d%H%M%S"),
            rand::random::<u32>() & 0xff_ffff
        );

        // Nothing goes into the scratch that the lock file does not name: should this
        // process die, the next verify removes what the notes say.
        let noted = lock.note(&scratch.notes(&database, &[]));
        let mut cancelled = cancel.clone();
        let work = async {
            noted?;
            self.restore_and_check(&scratch, &database, backup, &facts, lock, &mut collected)
                .await
        };
        // Ok(Some(check)): the time limit cut the work off, and that check failed.
        let outcome: Result<Option<CheckOutcome>> = tokio::select! {
            outcome = tokio::time::timeout(limit.to_std().unwrap_or_default(), work) => {
                match outcome {
                    Ok(done) => done.map(|()| None),
                    Err(_) => Ok(Some(CheckOutcome::builtin(
                        checks::TIME_LIMIT,
                        CheckStatus::Fail,
                        format!(
                            "the verify did not finish within {} (verify.timeout)",
                            self.config.timeout
                        ),
                    ))),
                }
            }
            _ = cancelled.cancelled() => Err(Error::Interrupted(format!(
                "verify of backup {} cancelled", backup.id
            ))),
        };

        self.progress.phase("removing the scratch database");
        let (kind, shown) = (scratch.kind, scratch.shown.clone());
        let leftovers = scratch.remove(&database, &collected.roles_created).await;
        for leftover in &leftovers {
            self.progress.warn(&format!(
                "could not remove from the scratch server: {leftover}"
            ));
        }
        let cleanup_note = if leftovers.is_empty() {
            self.clear_notes(lock);
            let what = if kind == "server" {
                "database"
            } else {
                "cluster"
            };
            format!("; the scratch {what} was removed")
        } else {
            String::new()
        };
        match outcome {
            Ok(Some(time_limit)) => collected.checks.push(time_limit),
            Ok(None) => {}
            Err(e) => return Err(with_note(e, &cleanup_note)),
        }

        let finished_at = Utc::now();
        collected.phases.total_seconds = clock.elapsed().as_secs_f64();
        let report = VerifyReport {
            format_version: record::VERIFY_FORMAT,
            backup_id: backup.id.to_string(),
            database: backup.database.clone(),
            backup_started_at: backup.started_at,
            started_at,
            finished_at,
            passed: !collected.checks.is_empty() && !collected.checks.iter().any(|c| c.failed()),
            scratch: ScratchInfo {
                kind: kind.to_string(),
                server: shown,
                server_version: collected.server_version,
                database,
            },
            vault_version: env!("CARGO_PKG_VERSION").to_string(),
            phases: collected.phases,
            restored_bytes: collected.restored_bytes,
            checks: collected.checks,
            tables: collected.tables,
            summary_only: false,
            system_identifier: None,
            replayed_to: None,
            last_transaction_at: None,
            signature: None,
        };
        self.progress.phase("storing the verification record");
        let record_key = record::store(self.store.as_ref(), backup, &report, &self.signer).await?;
        Ok(Verified { report, record_key })
    }

    /// Empties the lock's notes once their work is undone; failing that, the next verify
    /// looks for a scratch that is gone, which is harmless: a warning.
    fn clear_notes(&self, lock: &Lock) {
        if let Err(e) = lock.note(&[]) {
            self.progress.warn(&e.to_string());
        }
    }

    /// Restores into `database` on the scratch server and runs every check, pushing outcomes
    /// into `collected` as they come (so a time limit keeps what was found); errors are
    /// operational failures (no verdict). The roles it creates are noted in `lock`.
    async fn restore_and_check(
        &self,
        scratch: &Scratch,
        database: &str,
        backup: &Manifest,
        facts: &DumpFacts,
        lock: &Lock,
        collected: &mut Collected,
    ) -> Result<()> {
        let admin = ServerAdmin::connect(&scratch.conn, database).await?;
        collected.server_version = admin.server.version.clone();
        if admin.database_exists(database).await? {
            return Err(Error::Config(format!(
                "database `{database}` already exists on the scratch server {}",
                scratch.shown
            )));
        }
        let feed = Feed {
            store: Arc::clone(&self.store),
            identities: Arc::clone(&self.identities),
            progress: Arc::clone(&self.progress),
        };
        let restored = async {
            // Roles first, so restored objects get their owners and grants.
            self.progress
                .phase("applying the backup's roles to the scratch server");
            let sql = sealed::read_globals(self.store.as_ref(), &self.identities, backup).await?;
            collected.roles_created = admin
                .apply_globals(&sql, true, self.progress.as_ref())
                .await?;
            lock.note(&scratch.notes(database, &collected.roles_created))?;
            admin.create_database(database, &backup.database).await?;
            let run = PgRestoreRun {
                target: &scratch.conn,
                server: &admin.server,
                pg_bin_dir: scratch.bin_dir.as_deref(),
                into: database,
                jobs: None,
                no_owner: false,
                temp_dir: None,
                exit_on_error: false,
                no_tablespaces: true,
                use_list: None,
            };
            feed.pg_restore(backup, &run).await
        }
        .await;
        let restored = match restored {
            Ok(restored) => restored,
            Err(e) => {
                admin.close().await;
                collected.checks.push(failed_checksum(e)?);
                return Ok(());
            }
        };
        if !restored.read_whole {
            collected.checks.push(CheckOutcome::builtin(
                checks::CHECKSUM,
                CheckStatus::Skipped,
                "pg_restore stopped reading before the end of the dump",
            ));
            let failure = restored.pg_restore.err().map(|e| e.to_string());
            collected
                .checks
                .push(checks::pg_restore_failed(failure.as_deref().unwrap_or("")));
            admin.close().await;
            return Ok(());
        }
        collected.restored_bytes = restored.bytes;
        collected.phases.time_to_first_byte_seconds = restored.timings.first_byte_seconds;
        collected.phases.download_decrypt_seconds = Some(restored.timings.download_decrypt_seconds);
        collected.phases.restore_seconds = Some(restored.timings.restore_seconds);
        collected.phases.streamed = restored.timings.streamed;
        collected.checks.push(CheckOutcome::builtin(
            checks::CHECKSUM,
            CheckStatus::Pass,
            format!(
                "{} stored bytes and {} dump bytes match the manifest's sha256; every age \
                 chunk authenticated",
                backup.dump.stored.size_bytes, restored.bytes
            ),
        ));
        collected.checks.push(match &restored.pg_restore {
            Ok(()) => CheckOutcome::builtin(checks::PG_RESTORE, CheckStatus::Pass, "no errors"),
            Err(e) => checks::pg_restore_failed(&e.to_string()),
        });
        if let Some(props) = &facts.database_properties {
            for failure in admin.apply_properties(database, props).await {
                self.progress.warn(&format!(
                    "a database setting could not be applied to the scratch database: {failure}"
                ));
            }
        }
        let server = admin.server.clone();
        admin.close().await;

        let checks_started = Instant::now();
        self.progress.phase("comparing with the dump-time facts");
        let (client, task) = connect(&scratch.conn, database).await?;
        let result = self
            .run_checks(&client, &server, backup, facts, collected)
            .await;
        drop(client);
        let _ = task.await;
        collected.phases.checks_seconds = Some(checks_started.elapsed().as_secs_f64());
        result
    }

    async fn run_checks(
        &self,
        client: &tokio_postgres::Client,
        server: &ServerInfo,
        backup: &Manifest,
        expected: &DumpFacts,
        collected: &mut Collected,
    ) -> Result<()> {
        let restored = facts::capture(client, &backup.database).await?;
        let comparison = FactsComparison::new(expected, &restored);
        collected.checks.extend(checks::facts_outcomes(&comparison));
        collected.tables = comparison.tables;
        if self.config.amcheck {
            self.progress.phase("amcheck: checking every B-tree index");
            collected
                .checks
                .push(checks::amcheck(client, server.major).await);
        }
        // The operator's queries only read (each also runs inside BEGIN READ ONLY).
        client
            .batch_execute("SET default_transaction_read_only = on")
            .await
            .map_err(|e| {
                Error::Source(format!(
                    "cannot make the scratch session read-only: {}",
                    crate::postgres::client::describe_pg_error(&e)
                ))
            })?;
        for check in &self.config.checks {
            if check
                .database
                .as_deref()
                .is_some_and(|db| db != backup.database)
            {
                continue;
            }
            self.progress.phase(&format!("check `{}`", check.name));
            collected
                .checks
                .push(checks::user_check(client, check).await);
        }
        Ok(())
    }
}

/// For `vault check`: whether verify can get a scratch server for the newest backup.
pub async fn probe(config: &crate::config::Config) -> Result<String> {
    let store = crate::storage::open(&config.repository).await?;
    let listing = crate::catalog::list_backups(store.as_ref(), None).await?;
    let major = listing
        .backups
        .first()
        .and_then(|b| parse_version(&b.server_version))
        .map_or(0, |(_, m)| m);
    scratch::probe(&config.verify, major).await
}

/// A restore that could not be fed: damaged data (`Integrity`) is the backup's failed
/// checksum check, a verdict; anything else — the repository, pg_restore not starting, a bug
/// in vault (`Internal`) — says nothing about the backup and prevents a verdict.
fn failed_checksum(error: Error) -> Result<CheckOutcome> {
    match error {
        Error::Integrity(message) => Ok(CheckOutcome::builtin(
            checks::CHECKSUM,
            CheckStatus::Fail,
            "the stored dump does not match its manifest or fails age authentication",
        )
        .with_details(vec![message])),
        other => Err(other),
    }
}

fn with_note(e: Error, note: &str) -> Error {
    match e {
        Error::Interrupted(m) => Error::Interrupted(m + note),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a panic in vault's own threads came back as `Integrity`, and verify
    /// stored a failed checksum record against a backup that was fine.
    #[test]
    fn only_damaged_data_is_a_failed_checksum_and_a_bug_is_no_verdict() {
        let damaged = failed_checksum(Error::Integrity("chunk 3 failed".into())).unwrap();
        assert_eq!(damaged.name, checks::CHECKSUM);
        assert!(damaged.failed());
        for no_verdict in [
            Error::Internal("the decrypt thread failed".into()),
            Error::Repository("the download broke off".into()),
        ] {
            assert!(failed_checksum(no_verdict).is_err());
        }
    }
}
