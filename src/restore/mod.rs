//! Restoring a backup, end to end:
//!
//! 1. **plan**: choose the backup, check the identity can open it (on the small facts
//!    object, before anything heavy), check the target names on the server;
//! 2. apply the saved roles if asked (existing ones untouched, `postgres::globals`);
//! 3. create the database to restore into: the target, or with `--replace` a side database;
//! 4. stream the dump store → sha256 → age → zstd → `pg_restore` through `feed` (or, for
//!    `pg_restore -j`, into a nameless temporary file first: pg_restore needs to seek);
//! 5. compare the restored database with the dump-time facts (`postgres::comparison`: rows
//!    per table, large objects, sequences);
//! 6. with `--replace`, swap by renaming (`postgres::admin`): the live database is kept
//!    under `<db>_before_restore_<time>`, never dropped.
//!
//! Any failure in 3–6 drops what this restore created and leaves the live database as it
//! was. Nothing reads the clock here: `now` comes from the caller.
//!
//! A partial restore (`--table`, `--schema`, `--exclude-table`; `partial`) reads the
//! dump's table of contents in the plan, resolves the names against its relations and
//! chooses its entries from it (`toc`), restores only those with `pg_restore --use-list`, and compares just
//! what it restored; with `--into-schema` it restores into a scratch database and carries
//! the tables into a new schema of the live database in one transaction.

pub mod partial;
pub mod toc;

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
use crate::trust::{Accepted, TrustList};
use partial::{PartialRequest, SchemaMove};
use toc::{Choice, Toc};

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
    /// Only some tables (empty: the whole database).
    pub partial: PartialRequest,
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
    /// Restore some tables into `scratch`, check them, then carry them into the new
    /// `schema` of `live` in one transaction; `scratch` is dropped.
    IntoSchema {
        live: String,
        schema: String,
        scratch: String,
    },
}

impl Target {
    /// Where `request` restores to: with `replace`, a side database and the name the live
    /// one is kept under, both stamped with the restore's start `now`; otherwise the name
    /// asked for, or `<db>_restored_<backup start>`.
    pub fn choose(
        request: &RestoreRequest,
        backup_started_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Target {
        let stamp = |t: DateTime<Utc>| t.format("%Y%m%d_%H%M%S").to_string();
        let db = &request.database;
        if let Some(schema) = &request.partial.into_schema {
            return Target::IntoSchema {
                live: db.clone(),
                schema: schema.clone(),
                scratch: format!("{db}_partial_{}", stamp(now)),
            };
        }
        if request.replace {
            Target::Replace {
                live: db.clone(),
                side: format!("{db}_restoring_{}", stamp(now)),
                kept: format!("{db}_before_restore_{}", stamp(now)),
            }
        } else {
            Target::NewDatabase {
                name: request
                    .target_db
                    .clone()
                    .unwrap_or_else(|| format!("{db}_restored_{}", stamp(backup_started_at))),
            }
        }
    }

    /// The database pg_restore writes into.
    pub fn restore_into(&self) -> &str {
        match self {
            Target::NewDatabase { name } => name,
            Target::Replace { side, .. } => side,
            Target::IntoSchema { scratch, .. } => scratch,
        }
    }
}

/// What a partial restore brings back, decided in the plan.
#[derive(Debug, Clone, Serialize)]
pub struct PartialPlan {
    /// The tables whose rows are restored, `schema.name`.
    pub tables: Vec<String>,
    /// What hangs on them but cannot come, and why.
    pub left_out: Vec<String>,
    #[serde(skip)]
    choice: Choice,
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
    /// Only some tables.
    pub partial: Option<PartialPlan>,
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
        let what = match &self.partial {
            Some(partial) => format!(
                "only {} table(s) ({}) with what they need",
                partial.tables.len(),
                partial.tables.join(", ")
            ),
            None => format!("backup {}", self.backup_id),
        };
        steps.push(format!(
            "create database `{}` and restore {what} into it: {how}",
            self.target.restore_into(),
        ));
        if self.facts.database_properties.is_some()
            && !matches!(self.target, Target::IntoSchema { .. })
        {
            steps.push(format!(
                "give `{}` the database's own settings, comment and grants from dump time",
                self.target.restore_into()
            ));
        }
        steps.push(if self.partial.is_some() {
            "compare the restored tables' row counts and their sequences with the facts \
             captured at dump time"
                .to_string()
        } else {
            "compare every table's row count, the large objects and the sequences with the \
             facts captured at dump time"
                .to_string()
        });
        if let Target::IntoSchema {
            live,
            schema,
            scratch,
        } = &self.target
        {
            steps.push(format!(
                "move the restored tables under a new schema `{schema}` in `{scratch}`"
            ));
            steps.push(format!(
                "carry schema `{schema}` into `{live}` in one transaction (nothing else in \
                 `{live}` is touched), check its row counts there, drop `{scratch}`"
            ));
        }
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
    /// With `--into-schema`: the schema of `database` holding the restored tables.
    pub schema: Option<String>,
    /// A partial restore: what hangs on the restored tables but could not come.
    pub left_out: Vec<String>,
    pub tables: Vec<TableCount>,
    pub large_objects_expected: i64,
    pub large_objects_restored: i64,
    pub sequences_match: bool,
    /// The schema fingerprint differs (e.g. a newer server describes an index differently);
    /// reported, not failed, since the data checks are what prove the restore. `None` for a
    /// partial restore (the fingerprint covers the whole database).
    pub schema_fingerprint_matches: Option<bool>,
    pub roles_created: Vec<String>,
    /// The database's own settings, comment and grants from dump time: `true` all applied,
    /// `false` some failed (warned), `null` the backup predates them (facts format 1).
    pub database_properties_restored: Option<bool>,
    pub restored_bytes: u64,
    pub seconds: f64,
}

impl RestoreReport {
    /// What the restore did and how it compares with the dump-time facts, as lines for a
    /// person: the outcome, the roles created, a table of row counts, then large objects,
    /// sequences and the database's own settings.
    pub fn summary(&self) -> Vec<String> {
        let mut lines = vec![match (&self.kept_as, &self.schema) {
            (_, Some(schema)) => format!(
                "restored {} table(s) of backup {} into schema `{schema}` of `{}` in {:.1}s",
                self.tables.len(),
                self.backup_id,
                self.database,
                self.seconds
            ),
            (Some(kept), None) => format!(
                "restored backup {} over `{}` in {:.1}s; the previous database is kept as `{kept}`",
                self.backup_id, self.database, self.seconds
            ),
            (None, None) => format!(
                "restored backup {} into `{}` in {:.1}s",
                self.backup_id, self.database, self.seconds
            ),
        }];
        if !self.roles_created.is_empty() {
            lines.push(format!("roles created: {}", self.roles_created.join(", ")));
        }
        let width = self
            .tables
            .iter()
            .map(|t| t.schema.len() + t.name.len() + 1)
            .max()
            .unwrap_or(5)
            .max(5);
        lines.push(format!(
            "{:<width$} {:>12} {:>12}",
            "TABLE", "DUMP TIME", "RESTORED"
        ));
        let show = |n: Option<i64>| n.map_or("-".to_string(), |n| n.to_string());
        for t in &self.tables {
            lines.push(format!(
                "{:<width$} {:>12} {:>12}  {}",
                format!("{}.{}", t.schema, t.name),
                show(t.expected),
                show(t.restored),
                if t.matches() { "ok" } else { "MISMATCH" }
            ));
        }
        for left in &self.left_out {
            lines.push(format!("left out: {left}"));
        }
        lines.push(format!(
            "large objects: {} at dump time, {} restored; sequences: {}; database settings, \
             comment and grants: {}",
            self.large_objects_expected,
            self.large_objects_restored,
            if self.sequences_match {
                "match"
            } else {
                "DIFFER"
            },
            match self.database_properties_restored {
                Some(true) => "restored",
                Some(false) => "partly restored (see the warnings above)",
                None => "not recorded in this (older) backup",
            }
        ));
        lines
    }
}

/// Everything a restore needs.
pub struct RestoreJob {
    pub store: Arc<dyn ObjectStore>,
    /// The server to restore into (the configured source server).
    pub target: ConnInfo,
    pub pg_bin_dir: Option<PathBuf>,
    pub identities: Arc<Identities>,
    pub progress: Arc<dyn Progress>,
    /// Whose backups this restore reads (`trust`): nothing else is read.
    pub trust: Arc<TrustList>,
    /// `--allow-unsigned`: the operator accepts backups without any signature.
    pub allow_unsigned: bool,
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
        let partial = &request.partial;
        if request.replace && !partial.is_empty() {
            return Err(Error::Config(
                "--replace rolls the whole database back; to put some tables back beside the \
                 live ones, drop --replace and add --into-schema NAME (or restore them into a \
                 new database)"
                    .into(),
            ));
        }
        if let Some(schema) = &partial.into_schema {
            if partial.is_empty() {
                return Err(Error::Config(
                    "--into-schema puts the tables named by --table, --schema or \
                     --exclude-table into the live database: name some"
                        .into(),
                ));
            }
            if request.target_db.is_some() {
                return Err(Error::Config(
                    "--into-schema restores into the live database itself; drop --target-db".into(),
                ));
            }
            partial::check_schema_name(schema)?;
        }
        let (backup, facts) = self.chosen(request).await?;
        let backup = &backup;

        let target = Target::choose(request, backup.started_at, now);
        let admin = ServerAdmin::connect(&self.target, &request.database).await?;
        let checked = async {
            // A side or scratch database only outlives its restore when vault was killed
            // mid-way. A failing look-up is reported, not taken for "none left".
            for kind in ["restoring", "partial"] {
                let prefix = format!("{}_{kind}_", request.database);
                for name in admin.databases_starting_with(&prefix).await? {
                    self.progress.warn(&format!(
                        "database `{name}` is left from a restore that was killed before it \
                         finished (it is not the live database); drop it when you no longer \
                         need it"
                    ));
                }
            }
            let live_sessions = check_names(&admin, &target).await?;
            let partial = if partial.is_empty() {
                None
            } else {
                Some(
                    self.choose_entries(&admin, backup, &facts, partial, &target)
                        .await?,
                )
            };
            Ok::<_, Error>((live_sessions, partial))
        }
        .await;
        let server = admin.shown.clone();
        admin.close().await;
        let (live_sessions, partial) = checked?;

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
            partial,
            facts,
            temp_dir: request.temp_dir.clone(),
        })
    }

    /// What the backup `request` chooses holds (`--list`): its tables per schema with
    /// their rows at dump time, from its facts alone (the dump is not read).
    pub async fn contents(
        &self,
        request: &RestoreRequest,
    ) -> Result<(Manifest, Vec<partial::SchemaContents>)> {
        let (backup, facts) = self.chosen(request).await?;
        Ok((backup, partial::contents(&facts)))
    }

    /// The backup `request` chooses and its dump-time facts (which prove the key opens it).
    async fn chosen(&self, request: &RestoreRequest) -> Result<(Manifest, DumpFacts)> {
        let listing = catalog::list_backups(self.store.as_ref(), Some(&request.database)).await?;
        for problem in &listing.unreadable {
            self.progress
                .warn(&format!("not considered for the restore: {problem}"));
        }
        let chosen = catalog::select(&listing.backups, &request.selector, &request.database)?;
        let backup = self
            .trust
            .accept_chosen(&listing.backups, chosen, self.allow_unsigned)?;
        if backup.accepted == Accepted::Unsigned {
            self.progress.warn(&format!(
                "backup {} is unsigned and read only because of --allow-unsigned: nothing \
                 proves who wrote it",
                backup.id
            ));
        }
        let facts = sealed::read_facts(self.store.as_ref(), &self.identities, &backup).await?;
        Ok((backup, facts))
    }

    /// A partial restore's entries, from the dump's table of contents (the names resolved
    /// against it: a partitioned table has no rows of its own in the facts); with
    /// `--into-schema`, the schema must be new to the live database and the tables' names
    /// distinct in it.
    async fn choose_entries(
        &self,
        admin: &ServerAdmin,
        backup: &Manifest,
        facts: &DumpFacts,
        request: &PartialRequest,
        target: &Target,
    ) -> Result<PartialPlan> {
        let run = PgRestoreRun {
            target: &self.target,
            server: &admin.server,
            pg_bin_dir: self.pg_bin_dir.as_deref(),
            into: "",
            jobs: None,
            no_owner: false,
            temp_dir: None,
            exit_on_error: true,
            no_tablespaces: false,
            use_list: None,
        };
        self.progress
            .phase(&format!("reading backup {}'s table of contents", backup.id));
        let listing = self.feed().pg_restore_list(backup, &run).await?;
        let known: Vec<toc::QualifiedName> = facts
            .tables
            .iter()
            .map(|t| (t.schema.clone(), t.name.clone()))
            .collect();
        let toc = Toc::parse(&listing)?;
        let names = request.resolve(&toc.relations(&known), &backup.id.to_string())?;
        let choice = toc.choose(&names, &known)?;
        if let Target::IntoSchema { live, schema, .. } = target {
            let mut seen = std::collections::BTreeMap::new();
            for (_, (from, name)) in &choice.relations {
                if let Some(other) = seen.insert(name.clone(), from.clone()) {
                    return Err(Error::Config(format!(
                        "{other}.{name} and {from}.{name} would both be {schema}.{name}: \
                         restore them with separate --into-schema names"
                    )));
                }
            }
            if partial::schema_exists(&self.target, live, schema).await? {
                return Err(Error::Config(format!(
                    "schema `{schema}` already exists in `{live}`; vault restores only into a \
                     new schema: choose another --into-schema, or drop it first"
                )));
            }
        }
        Ok(PartialPlan {
            tables: choice
                .tables
                .iter()
                .map(|(schema, name)| format!("{schema}.{name}"))
                .collect(),
            left_out: choice.left_out.clone(),
            choice,
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
                use_list: plan.partial.as_ref().map(|p| p.choice.use_list.as_str()),
            };
            let restored = self.feed().pg_restore(&plan.backup, &run).await?;
            restored.pg_restore?;
            let restored_bytes = restored.bytes;
            let properties_restored = match &plan.facts.database_properties {
                // The scratch database goes; the live one keeps its own.
                _ if matches!(plan.target, Target::IntoSchema { .. }) => None,
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
                // One transaction into the live database: not cancelled midway either.
                Target::IntoSchema {
                    live,
                    schema,
                    scratch,
                } => self
                    .carry_into_schema(&admin, plan, live, schema, scratch)
                    .await
                    .map(|()| report),
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
                    // The schema is carried in one transaction and dropped again after a
                    // failed check: say what is there, not what should be.
                    Target::IntoSchema { live, schema, .. } => {
                        match partial::schema_exists(&self.target, live, schema).await {
                            Ok(false) => format!("; `{live}` was not changed"),
                            Ok(true) => format!(
                                "; schema `{schema}` is left in `{live}`: drop it by hand \
                                 (DROP SCHEMA {} CASCADE)",
                                crate::postgres::facts::quote_ident(schema)
                            ),
                            Err(e) => format!(
                                "; whether schema `{schema}` is left in `{live}` could not be \
                                 checked ({e})"
                            ),
                        }
                    }
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
        match &plan.target {
            Target::Replace { live, kept, .. } => {
                report.database = live.clone();
                report.kept_as = Some(kept.clone());
            }
            Target::IntoSchema {
                live,
                schema,
                scratch,
            } => {
                if let Err(e) = admin.drop_database(scratch).await {
                    self.progress.warn(&format!(
                        "the restore into `{live}` is done, but its scratch database could \
                         not be dropped ({e}): drop `{scratch}` by hand"
                    ));
                }
                report.database = live.clone();
                report.schema = Some(schema.clone());
            }
            Target::NewDatabase { .. } => {}
        }
        admin.close().await;
        report.roles_created = roles_created;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// The checked tables of `scratch` under a new `schema` of `live`, in one transaction,
    /// then their rows there against the dump-time facts; a mismatch drops the schema
    /// again (this restore created it).
    async fn carry_into_schema(
        &self,
        admin: &ServerAdmin,
        plan: &RestorePlan,
        live: &str,
        schema: &str,
        scratch: &str,
    ) -> Result<()> {
        let partial = plan
            .partial
            .as_ref()
            .expect("an into-schema restore is partial");
        let carry = SchemaMove {
            target: &self.target,
            server: &admin.server,
            pg_bin_dir: self.pg_bin_dir.as_deref(),
            scratch,
            live,
            schema,
            relations: &partial.choice.relations,
            no_owner: plan.no_owner,
        };
        self.progress
            .phase(&format!("moving the restored tables under `{schema}`"));
        carry.gather().await?;
        self.progress
            .phase(&format!("carrying schema `{schema}` into `{live}`"));
        carry.carry().await?;
        // From here the schema is in the live database: any failure drops it again (the
        // caller then says whether that worked).
        let counts = match carry.count(&partial.choice.tables).await {
            Ok(counts) => counts,
            Err(e) => {
                let _ = carry.undo().await;
                return Err(e);
            }
        };
        let wrong: Vec<String> = counts
            .iter()
            .filter_map(|((from, name), rows)| {
                let then = plan
                    .facts
                    .tables
                    .iter()
                    .find(|t| &t.schema == from && &t.name == name)
                    .map(|t| t.rows);
                (then != Some(*rows)).then(|| {
                    format!(
                        "{schema}.{name}: {rows} rows, {} at dump time",
                        then.map_or("none".to_string(), |n| n.to_string())
                    )
                })
            })
            .collect();
        if wrong.is_empty() {
            return Ok(());
        }
        let _ = carry.undo().await;
        Err(Error::Integrity(format!(
            "the tables carried into `{live}` do not match backup {}'s dump-time facts: {}",
            plan.backup_id,
            wrong.join("; ")
        )))
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
        let comparison = match &plan.partial {
            Some(partial) => {
                let c = &partial.choice;
                FactsComparison::new(
                    &partial::narrowed(&plan.facts, &c.tables, &c.sequences, c.large_objects),
                    &partial::narrowed(&now, &c.tables, &c.sequences, c.large_objects),
                )
            }
            None => FactsComparison::new(&plan.facts, &now),
        };
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
            schema: None,
            left_out: plan
                .partial
                .as_ref()
                .map(|p| p.left_out.clone())
                .unwrap_or_default(),
            large_objects_expected: comparison.large_objects_expected,
            large_objects_restored: comparison.large_objects_restored,
            sequences_match: comparison.sequence_differences.is_empty(),
            schema_fingerprint_matches: plan.partial.is_none().then(|| comparison.schema_matches()),
            tables: comparison.tables,
            roles_created: Vec::new(),
            database_properties_restored: None,
            restored_bytes,
            seconds: 0.0,
        };
        if report.schema_fingerprint_matches == Some(false) {
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
        Target::IntoSchema { live, scratch, .. } => {
            if !admin.database_exists(live).await? {
                return Err(Error::Config(format!(
                    "database `{live}` does not exist on {}, so it has no schema to restore \
                     into: drop --into-schema to restore into a new database",
                    admin.shown
                )));
            }
            if let Some(e) = too_long(scratch) {
                return Err(e);
            }
            if admin.database_exists(scratch).await? {
                return Err(Error::Config(format!(
                    "database `{scratch}` already exists on {}; wait a second and retry, or \
                     drop it",
                    admin.shown
                )));
            }
            Ok(None)
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
        Error::Untrusted(m) => Error::Untrusted(m + suffix),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn request(replace: bool, target_db: Option<&str>) -> RestoreRequest {
        RestoreRequest {
            database: "app".into(),
            selector: Selector::Latest,
            target_db: target_db.map(str::to_string),
            replace,
            globals: false,
            jobs: None,
            no_owner: false,
            temp_dir: None,
            partial: PartialRequest::default(),
        }
    }

    #[test]
    fn targets_are_named_from_the_backup_or_the_restore_time() {
        let backup = at("2026-11-27T03:00:00Z");
        let now = at("2026-12-01T09:15:30Z");
        assert_eq!(
            Target::choose(&request(false, None), backup, now),
            Target::NewDatabase {
                name: "app_restored_20261127_030000".into()
            }
        );
        assert_eq!(
            Target::choose(&request(false, Some("scratch")), backup, now),
            Target::NewDatabase {
                name: "scratch".into()
            }
        );
        let replace = Target::choose(&request(true, None), backup, now);
        assert_eq!(
            replace,
            Target::Replace {
                live: "app".into(),
                side: "app_restoring_20261201_091530".into(),
                kept: "app_before_restore_20261201_091530".into(),
            }
        );
        assert_eq!(replace.restore_into(), "app_restoring_20261201_091530");
    }

    fn plan(target: Target, globals: bool, jobs: Option<u32>) -> RestorePlan {
        let backup =
            Manifest::from_json(include_bytes!("../../fixtures/manifests/v1.json"), "v1").unwrap();
        RestorePlan {
            backup_id: backup.id.to_string(),
            backup_started_at: backup.started_at,
            data_loss_gap_seconds: 60,
            backup,
            target,
            server: "postgresql://backup@db:5432/".into(),
            globals,
            jobs,
            no_owner: false,
            live_sessions: Some(3),
            partial: None,
            facts: DumpFacts::sample(),
            temp_dir: None,
        }
    }

    #[test]
    fn a_replace_plan_restores_beside_checks_then_swaps_keeping_the_live_database() {
        let target = Target::Replace {
            live: "app".into(),
            side: "app_restoring_x".into(),
            kept: "app_before_restore_x".into(),
        };
        let steps = plan(target, true, None).steps();
        assert_eq!(steps.len(), 5, "{steps:#?}");
        assert!(steps[0].starts_with("apply the roles saved with backup"));
        assert!(steps[1].starts_with("create database `app_restoring_x`"));
        assert!(steps[1].ends_with("stream it through sha256, age and zstd into pg_restore"));
        assert!(steps[2].starts_with("compare every table's row count"));
        assert_eq!(
            steps[3],
            "refuse new connections to `app` and end its 3 session(s)"
        );
        assert!(
            steps[4]
                .contains("rename `app` to `app_before_restore_x` (kept; vault never drops it)")
        );
    }

    #[test]
    fn a_new_database_plan_with_jobs_decrypts_to_a_nameless_file_and_swaps_nothing() {
        let target = Target::NewDatabase {
            name: "app_copy".into(),
        };
        let steps = plan(target, false, Some(4)).steps();
        assert_eq!(steps.len(), 2, "{steps:#?}");
        assert!(
            steps[0].ends_with("then pg_restore -j 4 from it"),
            "{steps:#?}"
        );
        assert!(!steps.iter().any(|s| s.contains("rename")));
    }

    #[test]
    fn the_summary_marks_mismatches_and_says_what_was_kept() {
        let report = RestoreReport {
            backup_id: "20261127T030000Z-abcdef".into(),
            database: "app".into(),
            kept_as: Some("app_before_restore_x".into()),
            schema: None,
            left_out: Vec::new(),
            tables: vec![
                TableCount {
                    schema: "shop".into(),
                    name: "orders".into(),
                    expected: Some(3000),
                    restored: Some(3000),
                },
                TableCount {
                    schema: "shop".into(),
                    name: "customers".into(),
                    expected: Some(503),
                    restored: None,
                },
            ],
            large_objects_expected: 2,
            large_objects_restored: 2,
            sequences_match: true,
            schema_fingerprint_matches: Some(true),
            roles_created: vec!["reporting".into()],
            database_properties_restored: None,
            restored_bytes: 1,
            seconds: 1.5,
        };
        let lines = report.summary();
        assert_eq!(
            lines[0],
            "restored backup 20261127T030000Z-abcdef over `app` in 1.5s; the previous \
             database is kept as `app_before_restore_x`"
        );
        assert_eq!(lines[1], "roles created: reporting");
        assert!(lines[3].starts_with("shop.orders") && lines[3].ends_with("  ok"));
        assert!(lines[4].ends_with("-  MISMATCH"), "{lines:#?}");
        assert!(lines[5].contains("not recorded in this (older) backup"));
    }
}
