//! `vault verify` of a base backup: prove it recovers.
//!
//! ```text
//! identity opens it? ─ before anything is created
//! wal_chain      the cluster's WAL chain (gaps, duplicates, timelines, this backup's own WAL)
//! recover it into a throwaway copy (pitr::scratch): the tar through the feed → checksum;
//!   pg_verifybackup of every file against backup_manifest → backup_manifest;
//!   replay to the backup's stop (recovery_target = immediate), or through the archive →
//!   recovery (consistent, promoted; the last replayed transaction)
//! amcheck in every database; [[verify.checks]] in the configured databases it holds
//! the copy removed; the record stored beside the base backup (base/<cluster>/<id>/verify/)
//! ```
//!
//! As for a dump, a failing check is a result (a stored record), and an error is what
//! prevented a verdict (the repository, the key, no server binaries, Ctrl-C, a bug).

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::Verified;
use super::checks::{self, CheckOutcome, CheckStatus};
use super::record::{self, Phases, ScratchInfo, VerifyReport};
use crate::cancel::Cancel;
use crate::catalog::base::{BaseManifest, cluster_group};
use crate::config::VerifyConfig;
use crate::error::{Error, Result};
use crate::feed::Feed;
use crate::keys::Identities;
use crate::lock::Lock;
use crate::pitr::cluster::SERVER_STOPPED;
use crate::pitr::plan::{self, RecoveryPlan};
use crate::pitr::scratch::{Server, ThrowawayCluster};
use crate::postgres::client::connect;
use crate::progress::Progress;
use crate::storage::ObjectStore;
use crate::trust::{SigningKey, TrustList};
use crate::wal::chain;

/// Names of the checks only a base backup's verify runs.
pub const WAL_CHAIN: &str = "wal_chain";
pub const BACKUP_MANIFEST: &str = "backup_manifest";
pub const RECOVERY: &str = "recovery";

pub struct BaseVerifyJob {
    pub store: Arc<dyn ObjectStore>,
    pub identities: Arc<Identities>,
    pub config: VerifyConfig,
    /// The configured databases: `[[verify.checks]]` without a `database` run in each of
    /// them that the cluster holds.
    pub databases: Vec<String>,
    /// A role the cluster had when backed up (the source's): vault connects to the copy as
    /// it, learns the bootstrap superuser and works as that.
    pub user: String,
    pub server: Server,
    pub progress: Arc<dyn Progress>,
    /// Signs the verification record (retention counts only trusted records).
    pub signer: Arc<SigningKey>,
    /// Whose base backups this verify reads: anything else is refused before anything is
    /// created, and no record is stored for it.
    pub trust: Arc<TrustList>,
    /// `--allow-unsigned`: the operator accepts base backups without any signature.
    pub allow_unsigned: bool,
}

/// How far to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// To the base backup's stop: the least that makes it consistent.
    OwnWal,
    /// Through the archive, as far as its WAL reaches without a gap.
    ThroughArchive,
}

/// What [`BaseVerifyJob::verify`] collected, so far as it got.
#[derive(Default)]
struct Collected {
    checks: Vec<CheckOutcome>,
    phases: Phases,
    server: String,
    server_version: String,
    tar_bytes: u64,
    replayed_to: Option<String>,
    last_transaction_at: Option<DateTime<Utc>>,
}

impl BaseVerifyJob {
    /// The host-wide lock of base backup verifies (one at a time; a restore is never
    /// blocked by one: it takes `pitr::RESTORE_LOCK`).
    pub const LOCK: (&str, &str) = ("verify-base", "verifying a base backup in a throwaway copy");

    /// Verifies `base` and stores the record; `Ok` whether or not the checks passed.
    pub async fn verify(
        &self,
        base: &BaseManifest,
        replay: Replay,
        lock: &Lock,
        mut cancel: Cancel,
    ) -> Result<Verified> {
        let started_at = Utc::now();
        let clock = Instant::now();
        self.progress.phase(&format!(
            "verifying base backup {} of cluster {}",
            base.id, base.system_identifier
        ));
        let base = &self.trust.accept(base.clone(), self.allow_unsigned)?;
        crate::catalog::sealed::check_recipients(
            &format!("base backup {}", base.id),
            &base.encryption.readers(),
            &self.identities,
        )?;
        let mut collected = Collected::default();
        let (reports, _) = chain::survey(self.store.as_ref()).await?;
        let report = reports
            .into_iter()
            .find(|r| r.system_identifier == base.system_identifier.to_string())
            .ok_or_else(|| {
                Error::Internal(format!(
                    "no chain report of cluster {}",
                    base.system_identifier
                ))
            })?;
        collected.checks.push(chain_outcome(&report));
        let limit = self.config.timeout()?;
        match plan::of_base(&report, base, replay == Replay::ThroughArchive) {
            Err(e) => collected.checks.push(CheckOutcome::builtin(
                RECOVERY,
                CheckStatus::Skipped,
                e.to_string(),
            )),
            Ok(plan) => {
                let work = self.recover_and_check(base, &plan, lock, &mut collected);
                // Ok(true): the time limit cut the work off.
                let outcome: Result<bool> = tokio::select! {
                    done = tokio::time::timeout(limit.to_std().unwrap_or_default(), work) => {
                        done.map_or(Ok(true), |done| done.map(|()| false))
                    }
                    _ = cancel.cancelled() => Err(Error::Interrupted(format!(
                        "verify of base backup {} cancelled; its copy was removed",
                        base.id
                    ))),
                };
                if outcome? {
                    collected.checks.push(CheckOutcome::builtin(
                        checks::TIME_LIMIT,
                        CheckStatus::Fail,
                        format!(
                            "the verify did not finish within {} (verify.timeout)",
                            self.config.timeout
                        ),
                    ));
                }
            }
        }
        // The copy is gone (dropped in recover_and_check, or by the time limit or Ctrl-C).
        if let Err(e) = lock.note(&[]) {
            self.progress.warn(&e.to_string());
        }
        collected.phases.total_seconds = clock.elapsed().as_secs_f64();
        let checks = collected.checks;
        let report = VerifyReport {
            format_version: record::VERIFY_FORMAT,
            backup_id: base.id.to_string(),
            database: cluster_group(base.system_identifier),
            backup_started_at: base.started_at,
            started_at,
            finished_at: Utc::now(),
            passed: !checks.is_empty() && !checks.iter().any(CheckOutcome::failed),
            scratch: ScratchInfo {
                kind: "ephemeral".into(),
                server: collected.server,
                server_version: collected.server_version,
                database: String::new(),
            },
            vault_version: env!("CARGO_PKG_VERSION").to_string(),
            phases: collected.phases,
            restored_bytes: collected.tar_bytes,
            checks,
            tables: Vec::new(),
            summary_only: false,
            system_identifier: Some(base.system_identifier.to_string()),
            replayed_to: collected.replayed_to,
            last_transaction_at: collected.last_transaction_at,
            signature: None,
        };
        self.progress.phase("storing the verification record");
        let record_key =
            record::store_base(self.store.as_ref(), base, &report, &self.signer).await?;
        Ok(Verified { report, record_key })
    }

    /// Recovers the copy and runs the checks on it; the copy is removed on return.
    async fn recover_and_check(
        &self,
        base: &BaseManifest,
        plan: &RecoveryPlan,
        lock: &Lock,
        collected: &mut Collected,
    ) -> Result<()> {
        let feed = Feed {
            store: Arc::clone(&self.store),
            identities: Arc::clone(&self.identities),
            progress: Arc::clone(&self.progress),
        };
        let copy =
            match ThrowawayCluster::recover(&feed, base, plan, &self.server, lock, true).await {
                Ok(copy) => copy,
                Err(Error::Integrity(message)) => {
                    collected.checks.push(
                        CheckOutcome::builtin(
                            checks::CHECKSUM,
                            CheckStatus::Fail,
                            "the stored base backup or a WAL file does not match its checksum or \
                         fails age authentication",
                        )
                        .with_details(vec![message]),
                    );
                    return Ok(());
                }
                Err(Error::Source(message)) if message.starts_with(SERVER_STOPPED) => {
                    collected.checks.push(
                        CheckOutcome::builtin(
                            RECOVERY,
                            CheckStatus::Fail,
                            "the server stopped during recovery",
                        )
                        .with_details(message.lines().map(str::to_string).collect()),
                    );
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
        let recovered = &copy.recovered;
        let t = &recovered.timings;
        collected.phases.download_decrypt_seconds = Some(t.extract_seconds);
        collected.phases.scratch_start_seconds = t.server_start_seconds;
        collected.phases.wal_replay_seconds = Some(t.replay_seconds);
        collected.server = format!("127.0.0.1:{} (throwaway copy)", recovered.port);
        collected.tar_bytes = recovered.tar_bytes;
        collected.replayed_to = Some(plan.newest_wal.clone());
        collected.last_transaction_at = recovered
            .last_transaction
            .as_deref()
            .and_then(parse_log_time);
        collected.checks.push(CheckOutcome::builtin(
            checks::CHECKSUM,
            CheckStatus::Pass,
            format!(
                "{} stored bytes and {} tar bytes match the manifest's sha256; every age chunk \
                 authenticated; every WAL file matched the sha256 in its name",
                base.data.stored.size_bytes, recovered.tar_bytes
            ),
        ));
        let checks_started = Instant::now();
        collected.checks.push(match &recovered.files_check {
            None => CheckOutcome::builtin(
                BACKUP_MANIFEST,
                CheckStatus::Skipped,
                "pg_verifybackup is not available (PostgreSQL before 13)",
            ),
            Some(f) if f.passed => CheckOutcome::builtin(
                BACKUP_MANIFEST,
                CheckStatus::Pass,
                format!(
                    "{} files match backup_manifest (pg_verifybackup)",
                    base.files
                ),
            ),
            Some(f) => CheckOutcome::builtin(
                BACKUP_MANIFEST,
                CheckStatus::Fail,
                "pg_verifybackup found files that differ from backup_manifest",
            )
            .with_details(f.output.lines().map(str::to_string).collect()),
        });
        collected.checks.push(recovery_outcome(plan, recovered));
        let result = self.run_checks(base, &copy, collected).await;
        let files_seconds = recovered.files_check.as_ref().map_or(0.0, |f| f.seconds);
        collected.phases.checks_seconds =
            Some(checks_started.elapsed().as_secs_f64() + files_seconds);
        self.progress.phase("removing the throwaway copy");
        drop(copy);
        result
    }

    /// amcheck in every database, then the operator's queries where they apply.
    async fn run_checks(
        &self,
        base: &BaseManifest,
        copy: &ThrowawayCluster,
        collected: &mut Collected,
    ) -> Result<()> {
        let first = base
            .databases
            .iter()
            .find(|d| *d == "postgres")
            .or(base.databases.first())
            .cloned()
            .unwrap_or_else(|| "postgres".into());
        let (client, task) = connect(&copy.conn(&self.user, &first)?, &first).await?;
        let superuser: String = client
            .query_one("SELECT rolname::text FROM pg_roles WHERE oid = 10", &[])
            .await
            .map_err(|e| Error::Source(crate::postgres::client::describe_pg_error(&e)))?
            .get(0);
        collected.server_version = client
            .query_one("SELECT current_setting('server_version')", &[])
            .await
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_default();
        drop(client);
        let _ = task.await;
        let major = base.server_version_num / 10000;

        let mut amchecked: Vec<(String, CheckOutcome)> = Vec::new();
        for database in &base.databases {
            let checks_here: Vec<_> = self
                .config
                .checks
                .iter()
                .filter(|c| match &c.database {
                    Some(db) => db == database,
                    None => self.databases.contains(database),
                })
                .collect();
            if !self.config.amcheck && checks_here.is_empty() {
                continue;
            }
            let (client, task) = connect(&copy.conn(&superuser, database)?, database).await?;
            if self.config.amcheck {
                self.progress
                    .phase(&format!("amcheck: every B-tree index of `{database}`"));
                amchecked.push((database.clone(), checks::amcheck(&client, major).await));
            }
            for check in checks_here {
                self.progress
                    .phase(&format!("check `{}` in `{database}`", check.name));
                let mut outcome = checks::user_check(&client, check).await;
                outcome.summary = format!("in `{database}`: {}", outcome.summary);
                collected.checks.push(outcome);
            }
            drop(client);
            let _ = task.await;
        }
        if self.config.amcheck {
            collected.checks.push(merge_amcheck(amchecked));
        }
        Ok(())
    }
}

/// The chain check: the whole archive of the cluster, as `vault check --wal` judges it.
fn chain_outcome(report: &chain::ChainReport) -> CheckOutcome {
    let window = report
        .window
        .last()
        .map(|w| {
            format!(
                "recoverable to {} ({})",
                crate::timespec::rfc3339(w.to),
                w.to_wal
            )
        })
        .unwrap_or_else(|| "not recoverable to a point in time".into());
    if report.is_whole() {
        CheckOutcome::builtin(
            WAL_CHAIN,
            CheckStatus::Pass,
            format!("no gap, duplicate or dead-end timeline; {window}"),
        )
    } else {
        CheckOutcome::builtin(
            WAL_CHAIN,
            CheckStatus::Fail,
            format!("the cluster's WAL chain has problems; {window}"),
        )
        .with_details(report.lines().into_iter().skip(1).collect())
    }
}

fn recovery_outcome(
    plan: &RecoveryPlan,
    recovered: &crate::pitr::cluster::Recovered,
) -> CheckOutcome {
    let reached = if plan.stop_at_consistency {
        format!("consistent at the backup's stop ({})", plan.newest_wal)
    } else {
        format!("replayed through the archive to {}", plan.newest_wal)
    };
    CheckOutcome::builtin(
        RECOVERY,
        CheckStatus::Pass,
        format!(
            "{reached}; promoted{}; {}",
            recovered
                .timeline
                .map(|t| format!(" on timeline {t}"))
                .unwrap_or_default(),
            match &recovered.last_transaction {
                Some(at) => format!("last replayed transaction at {at}"),
                None => "no transaction replayed".into(),
            }
        ),
    )
}

/// One amcheck outcome for the whole cluster: each database's failures, named.
fn merge_amcheck(per_database: Vec<(String, CheckOutcome)>) -> CheckOutcome {
    let failed: Vec<&(String, CheckOutcome)> =
        per_database.iter().filter(|(_, o)| o.failed()).collect();
    if failed.is_empty() {
        let summaries: Vec<String> = per_database
            .iter()
            .map(|(db, o)| format!("`{db}`: {}", o.summary))
            .collect();
        return CheckOutcome::builtin(checks::AMCHECK, CheckStatus::Pass, summaries.join("; "));
    }
    let details = failed
        .iter()
        .flat_map(|(db, o)| {
            std::iter::once(format!("`{db}`: {}", o.summary))
                .chain(o.details.iter().map(move |d| format!("`{db}`: {d}")))
        })
        .collect();
    CheckOutcome::builtin(
        checks::AMCHECK,
        CheckStatus::Fail,
        format!(
            "{} of {} databases fail amcheck",
            failed.len(),
            per_database.len()
        ),
    )
    .with_details(details)
}

/// A time as PostgreSQL logs it (`2026-12-01 10:14:58.1+00`).
pub fn parse_log_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f%#z")
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_log_times_parse() {
        assert_eq!(
            parse_log_time("2026-12-01 10:14:58.1+00"),
            "2026-12-01T10:14:58.1Z".parse().ok()
        );
        assert_eq!(
            parse_log_time("2026-12-01 12:14:58.123456+02"),
            "2026-12-01T10:14:58.123456Z".parse().ok()
        );
        assert_eq!(parse_log_time("yesterday"), None);
    }

    #[test]
    fn amcheck_of_a_cluster_names_the_failing_database() {
        let pass = |s: &str| CheckOutcome::builtin(checks::AMCHECK, CheckStatus::Pass, s);
        let fail = CheckOutcome::builtin(checks::AMCHECK, CheckStatus::Fail, "1 of 2 fail")
            .with_details(vec!["public.orders_pkey: corrupt".into()]);
        let merged = merge_amcheck(vec![("app".into(), pass("2 pass")), ("shop".into(), fail)]);
        assert!(merged.failed());
        assert_eq!(
            merged.details,
            vec!["`shop`: 1 of 2 fail", "`shop`: public.orders_pkey: corrupt"]
        );
        let merged = merge_amcheck(vec![("app".into(), pass("2 pass"))]);
        assert!(!merged.failed());
        assert_eq!(merged.summary, "`app`: 2 pass");
    }
}
