//! Restoring a backup, end to end:
//!
//! 1. **plan**: choose the backup, check the identity can open it (on the small facts
//!    object, before anything heavy), check the target names on the server;
//! 2. apply the saved roles if asked (existing ones untouched, `globals`);
//! 3. create the database to restore into: the target, or with `--replace` a side database;
//! 4. stream the dump store → sha256 → age → zstd → `pg_restore` (or, for `pg_restore -j`,
//!    into a nameless temporary file first: pg_restore needs to seek);
//! 5. compare the restored database with the dump-time facts (rows per table, large
//!    objects, sequences);
//! 6. with `--replace`, swap by renaming: the live database is kept under
//!    `<db>_before_restore_<time>`, never dropped.
//!
//! Any failure in 3–6 drops what this restore created and leaves the live database as it
//! was. Nothing reads the clock here: `now` comes from the caller.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::cancel::Cancel;
use crate::catalog::{self, Manifest, Selector, sealed};
use crate::error::{Error, Result};
use crate::feed::Feed;
use crate::feed::pg_restore::PgRestoreRun;
use crate::keys::Identities;
use crate::postgres::admin::ServerAdmin;
use crate::postgres::client::connect;
use crate::postgres::comparison::{FactsComparison, TableCount};
use crate::postgres::{ConnInfo, DumpFacts};
use crate::progress::Progress;
use crate::storage::ObjectStore;

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// The database whose backups to choose from.
    pub database: String,
    pub selector: Selector,
    /// Name of the new database (default `<db>_restored_<backup time>`); not with `replace`.
    pub target_db: Option<String>,
    /// Roll back the live database by restoring beside it and swapping names.
    pub replace: bool,
    /// Apply the saved roles first (skipping roles that exist).
    pub globals: bool,
    /// `pg_restore -j N`: decrypt to a temporary file first.
    pub jobs: Option<u32>,
    /// `pg_restore --no-owner --no-acl`: everything owned by the restoring role.
    pub no_owner: bool,
    /// Where the temporary file for `jobs` goes (default: `$TMPDIR`).
    pub temp_dir: Option<PathBuf>,
}

/// Where the restored data ends up.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Target {
    /// A new database beside everything else; nothing existing is touched.
    NewDatabase { name: String },
    /// Restore into `side`, check it, then rename `live` → `kept` and `side` → `live`.
    Replace {
        live: String,
        side: String,
        kept: String,
    },
}

impl Target {
    /// The database pg_restore writes into.
    pub fn restore_into(&self) -> &str {
        match self {
            Target::NewDatabase { name } => name,
            Target::Replace { side, .. } => side,
        }
    }
}

/// Everything decided before a restore changes anything.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    #[serde(skip)]
    pub backup: Manifest,
    pub backup_id: String,
    pub backup_started_at: DateTime<Utc>,
    /// Writes after the backup's snapshot are not in it: from `backup_started_at` to now.
    pub data_loss_gap_seconds: i64,
    pub target: Target,
    pub server: String,
    pub globals: bool,
    pub jobs: Option<u32>,
    pub no_owner: bool,
    /// Sessions in the live database that the swap will end (replace only).
    pub live_sessions: Option<i64>,
    #[serde(skip)]
    facts: DumpFacts,
    #[serde(skip)]
    temp_dir: Option<PathBuf>,
}

impl RestorePlan {
    pub fn data_loss_gap(&self) -> Duration {
        Duration::seconds(self.data_loss_gap_seconds)
    }

    /// The steps, in order, as sentences.
    pub fn steps(&self) -> Vec<String> {
        let mut steps = Vec::new();
        if self.globals {
            steps.push(format!(
                "apply the roles saved with backup {} (existing roles are left as they are)",
                self.backup_id
            ));
        }
        let how = match self.jobs {
            Some(n) => {
                format!("decrypt it into a nameless temporary file, then pg_restore -j {n} from it")
            }
            None => "stream it through sha256, age and zstd into pg_restore".to_string(),
        };
        steps.push(format!(
            "create database `{}` and restore backup {} into it: {how}",
            self.target.restore_into(),
            self.backup_id
        ));
        if self.facts.database_properties.is_some() {
            steps.push(format!(
                "give `{}` the database's own settings, comment and grants from dump time",
                self.target.restore_into()
            ));
        }
        steps.push(
            "compare every table's row count, the large objects and the sequences with the \
             facts captured at dump time"
                .to_string(),
        );
        if let Target::Replace { live, side, kept } = &self.target {
            steps.push(format!(
                "refuse new connections to `{live}` and end its {} session(s)",
                self.live_sessions.unwrap_or(0)
            ));
            steps.push(format!(
                "in one transaction, rename `{live}` to `{kept}` (kept; vault never drops it) \
                 and `{side}` to `{live}`"
            ));
        }
        steps
    }
}

/// What a finished restore did, and how the result compares with the dump-time facts.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup_id: String,
    /// The database now holding the restored data.
    pub database: String,
    /// With `--replace`: the name the previous live database is kept under.
    pub kept_as: Option<String>,
    pub tables: Vec<TableCount>,
    pub large_objects_expected: i64,
    pub large_objects_restored: i64,
    pub sequences_match: bool,
    /// The schema fingerprint differs (e.g. a newer server describes an index differently);
    /// reported, not failed, since the data checks are what prove the restore.
    pub schema_fingerprint_matches: bool,
    pub roles_created: Vec<String>,
    /// The database's own settings, comment and grants from dump time: `true` all applied,
    /// `false` some failed (warned), `null` the backup predates them (facts format 1).
    pub database_properties_restored: Option<bool>,
    pub restored_bytes: u64,
    pub seconds: f64,
}

/// Everything a restore needs.
pub struct RestoreJob {
    pub store: Arc<dyn ObjectStore>,
    /// The server to restore into (the configured source server).
    pub target: ConnInfo,
    pub pg_bin_dir: Option<PathBuf>,
    pub identities: Arc<Identities>,
    pub progress: Arc<dyn Progress>,
}

impl RestoreJob {
    /// Decides everything and checks what can be checked without changing anything.
    pub async fn plan(&self, request: &RestoreRequest, now: DateTime<Utc>) -> Result<RestorePlan> {
        if request.replace && request.target_db.is_some() {
            return Err(Error::Config(
                "--replace restores over the configured database itself; drop --target-db, \
                 or drop --replace to restore into a new database"
                    .into(),
            ));
        }
        if request.jobs == Some(0) {
            return Err(Error::Config("--jobs must be at least 1".into()));
        }
        let listing = catalog::list_backups(self.store.as_ref(), Some(&request.database)).await?;
        for problem in &listing.unreadable {
            self.progress
                .warn(&format!("not considered for the restore: {problem}"));
        }
        let backup = catalog::select(&listing.backups, &request.selector, &request.database)?;
        let facts = sealed::read_facts(self.store.as_ref(), &self.identities, backup).await?;

        let stamp = |t: DateTime<Utc>| t.format("%Y%m%d_%H%M%S").to_string();
        let target = if request.replace {
            Target::Replace {
                live: request.database.clone(),
                side: format!("{}_restoring_{}", request.database, stamp(now)),
                kept: format!("{}_before_restore_{}", request.database, stamp(now)),
            }
        } else {
            Target::NewDatabase {
                name: request.target_db.clone().unwrap_or_else(|| {
                    format!("{}_restored_{}", request.database, stamp(backup.started_at))
                }),
            }
        };
        let admin = ServerAdmin::connect(&self.target, &request.database).await?;
        // A side database only outlives its restore when vault was killed mid-way.
        let leftovers = admin
            .databases_starting_with(&format!("{}_restoring_", request.database))
            .await;
        for name in leftovers.iter().flatten() {
            self.progress.warn(&format!(
                "database `{name}` is left from a restore that was killed before it finished \
                 (it is not the live database); drop it when you no longer need it"
            ));
        }
        let live_sessions = check_names(&admin, &target).await;
        let server = admin.shown.clone();
        admin.close().await;
        let live_sessions = live_sessions?;

        Ok(RestorePlan {
            backup_id: backup.id.to_string(),
            backup_started_at: backup.started_at,
            data_loss_gap_seconds: (now - backup.started_at).num_seconds(),
            backup: backup.clone(),
            target,
            server,
            globals: request.globals,
            jobs: request.jobs,
            no_owner: request.no_owner,
            live_sessions,
            facts,
            temp_dir: request.temp_dir.clone(),
        })
    }

    /// Carries out a plan. On any failure, the databases this restore created are dropped
    /// and the live database is as it was.
    pub async fn execute(&self, plan: &RestorePlan, cancel: Cancel) -> Result<RestoreReport> {
        let started = Instant::now();
        let live = plan.backup.database.as_str();
        let admin = ServerAdmin::connect(&self.target, live).await?;
        let roles_created = if plan.globals {
            self.progress.phase("applying saved roles");
            self.apply_globals(&admin, &plan.backup).await?
        } else {
            Vec::new()
        };
        let into = plan.target.restore_into();
        self.progress.phase(&format!("creating database `{into}`"));
        if let Err(e) = admin.create_database(into, live).await {
            let roles = undo_roles(&admin, &roles_created).await;
            admin.close().await;
            return Err(with_suffix(e, &roles));
        }

        let mut cancelled = cancel.clone();
        let work = async {
            let run = PgRestoreRun {
                target: &self.target,
                server: &admin.server,
                pg_bin_dir: self.pg_bin_dir.as_deref(),
                into,
                jobs: plan.jobs,
                no_owner: plan.no_owner,
                temp_dir: plan.temp_dir.as_deref(),
                exit_on_error: true,
                no_tablespaces: false,
            };
            let restored = self.feed().pg_restore(&plan.backup, &run).await?;
            restored.pg_restore?;
            let restored_bytes = restored.bytes;
            let properties_restored = match &plan.facts.database_properties {
                Some(props) => {
                    let failures = admin.apply_properties(into, props).await;
                    for failure in &failures {
                        self.progress.warn(&format!(
                            "a database setting of `{into}` could not be restored: {failure}"
                        ));
                    }
                    Some(failures.is_empty())
                }
                None => None,
            };
            self.progress
                .phase(&format!("comparing `{into}` with the dump-time facts"));
            let mut report = self.compare(plan, into, restored_bytes).await?;
            report.database_properties_restored = properties_restored;
            Ok::<_, Error>(report)
        };
        let outcome = tokio::select! {
            result = work => result,
            _ = cancelled.cancelled() => Err(Error::Interrupted(format!(
                "restore of backup {} cancelled", plan.backup_id
            ))),
        };
        let outcome = match outcome {
            Ok(report) => match &plan.target {
                // The swap is short and is not cancelled midway.
                Target::Replace { live, side, kept } => {
                    self.progress
                        .phase(&format!("swapping `{side}` in place of `{live}`"));
                    admin.swap(live, side, kept).await.map(|()| report)
                }
                Target::NewDatabase { .. } => Ok(report),
            },
            Err(e) => Err(e),
        };
        let mut report = match outcome {
            Ok(report) => report,
            Err(e) => {
                let cleanup = admin.drop_database(into).await;
                let roles = if cleanup.is_ok() {
                    undo_roles(&admin, &roles_created).await
                } else {
                    String::new()
                };
                admin.close().await;
                let untouched = match &plan.target {
                    Target::Replace { live, .. } => format!("; `{live}` was not changed"),
                    Target::NewDatabase { .. } => String::new(),
                };
                return Err(with_suffix(
                    e,
                    &match cleanup {
                        Ok(()) => {
                            format!("; the partial restore `{into}` was dropped{roles}{untouched}")
                        }
                        Err(drop_error) => format!(
                            "; dropping the partial restore `{into}` also failed ({drop_error}): \
                             drop it by hand{untouched}"
                        ),
                    },
                ));
            }
        };
        admin.close().await;
        if let Target::Replace { live, kept, .. } = &plan.target {
            report.database = live.clone();
            report.kept_as = Some(kept.clone());
        }
        report.roles_created = roles_created;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    fn feed(&self) -> Feed {
        Feed {
            store: Arc::clone(&self.store),
            identities: Arc::clone(&self.identities),
            progress: Arc::clone(&self.progress),
        }
    }

    /// Applies the roles (and tablespaces) saved with `backup`, leaving existing ones
    /// alone; returns the roles created.
    async fn apply_globals(&self, admin: &ServerAdmin, backup: &Manifest) -> Result<Vec<String>> {
        let sql = sealed::read_globals(self.store.as_ref(), &self.identities, backup).await?;
        admin
            .apply_globals(&sql, false, self.progress.as_ref())
            .await
    }

    async fn compare(
        &self,
        plan: &RestorePlan,
        into: &str,
        restored_bytes: u64,
    ) -> Result<RestoreReport> {
        let (client, task) = connect(&self.target, into).await?;
        let now = crate::postgres::facts::capture(&client, into).await;
        drop(client);
        let _ = task.await;
        let now = now?;
        let comparison = FactsComparison::new(&plan.facts, &now);
        let differences = comparison.data_differences();
        if !differences.is_empty() {
            return Err(Error::Integrity(format!(
                "the restored database `{into}` does not match backup {}'s dump-time facts: {}",
                plan.backup_id,
                differences.join("; ")
            )));
        }
        let report = RestoreReport {
            backup_id: plan.backup_id.clone(),
            database: into.to_string(),
            kept_as: None,
            large_objects_expected: comparison.large_objects_expected,
            large_objects_restored: comparison.large_objects_restored,
            sequences_match: comparison.sequence_differences.is_empty(),
            schema_fingerprint_matches: comparison.schema_matches(),
            tables: comparison.tables,
            roles_created: Vec::new(),
            database_properties_restored: None,
            restored_bytes,
            seconds: 0.0,
        };
        if !report.schema_fingerprint_matches {
            self.progress.warn(&format!(
                "the schema of `{into}` is described differently than at dump time (schema \
                 fingerprint differs); the data checks passed"
            ));
        }
        Ok(report)
    }
}

/// Drops the roles a failed restore created; says what happened, for the error message.
async fn undo_roles(admin: &ServerAdmin, roles: &[String]) -> String {
    if roles.is_empty() {
        return String::new();
    }
    let failures = admin.drop_roles(roles).await;
    if failures.is_empty() {
        format!("; the roles it created ({}) were dropped", roles.join(", "))
    } else {
        format!(
            "; some roles it created could not be dropped ({})",
            failures.join("; ")
        )
    }
}

/// The names a target needs must be free (and the live database must exist for a swap);
/// returns the live database's session count for a replace.
async fn check_names(admin: &ServerAdmin, target: &Target) -> Result<Option<i64>> {
    let too_long = |name: &str| {
        (name.len() > 63).then(|| {
            Error::Config(format!(
                "database name `{name}` is longer than PostgreSQL's 63-byte limit"
            ))
        })
    };
    match target {
        Target::NewDatabase { name } => {
            if let Some(e) = too_long(name) {
                return Err(e);
            }
            if admin.database_exists(name).await? {
                return Err(Error::Config(format!(
                    "database `{name}` already exists on {}; vault restores only into a new \
                     database: choose another --target-db, or drop it first",
                    admin.shown
                )));
            }
            Ok(None)
        }
        Target::Replace { live, side, kept } => {
            if !admin.database_exists(live).await? {
                return Err(Error::Config(format!(
                    "database `{live}` does not exist on {}, so there is nothing to replace: \
                     restore without --replace (add --target-db {live} to use its name)",
                    admin.shown
                )));
            }
            for name in [side, kept] {
                if let Some(e) = too_long(name) {
                    return Err(e);
                }
                if admin.database_exists(name).await? {
                    return Err(Error::Config(format!(
                        "database `{name}` already exists on {}; wait a second and retry, or \
                         drop it",
                        admin.shown
                    )));
                }
            }
            Ok(Some(admin.sessions_in(live).await?))
        }
    }
}

fn with_suffix(e: Error, suffix: &str) -> Error {
    match e {
        Error::Config(m) => Error::Config(m + suffix),
        Error::Key(m) => Error::Key(m + suffix),
        Error::Source(m) => Error::Source(m + suffix),
        Error::Repository(m) => Error::Repository(m + suffix),
        Error::Integrity(m) => Error::Integrity(m + suffix),
        Error::Interrupted(m) => Error::Interrupted(m + suffix),
        Error::Internal(m) => Error::Internal(m + suffix),
        Error::Busy(m) => Error::Busy(m + suffix),
        Error::Io { context, source } => Error::Io {
            context: context + suffix,
            source,
        },
        Error::Transient(inner) => Error::transient(with_suffix(*inner, suffix)),
    }
}
