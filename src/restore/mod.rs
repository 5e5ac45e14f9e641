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

pub mod globals;
pub(crate) mod server;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::cancel::Cancel;
use crate::catalog::{self, Manifest, Selector, StoredObject};
use crate::error::{Error, Result};
use crate::keys::Identities;
use crate::pipeline::{self, DownloadBroke, StreamSummary};
use crate::postgres::client::connect;
use crate::postgres::{ChildProcess, ConnInfo, DumpFacts, PgTools};
use crate::progress::Progress;
use crate::storage::ObjectStore;
use server::ServerAdmin;

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

/// One table's rows at dump time and after the restore.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TableCount {
    pub schema: String,
    pub name: String,
    pub expected: Option<i64>,
    pub restored: Option<i64>,
}

impl TableCount {
    pub fn matches(&self) -> bool {
        self.expected == self.restored
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

/// How pg_restore runs (see [`RestoreJob::pg_restore`]).
pub(crate) struct PgRestoreRun<'a> {
    /// The database to restore into (it exists and is empty).
    pub into: &'a str,
    pub jobs: Option<u32>,
    pub no_owner: bool,
    pub temp_dir: Option<&'a Path>,
    /// Stop at the first error (restore); otherwise restore what can be and report every
    /// error at the end (verify counts them).
    pub exit_on_error: bool,
    /// Put everything in the default tablespace (a scratch server has none of the originals).
    pub no_tablespaces: bool,
}

/// A dump fed to pg_restore, and how that went.
pub(crate) struct Restored {
    /// Bytes of pg_dump output.
    pub bytes: u64,
    pub timings: RestoreTimings,
    /// Every byte was read and matched the manifest; false when pg_restore stopped reading
    /// early (its error is then in `pg_restore`).
    pub read_whole: bool,
    /// How pg_restore ended (`Error::Source` with its errors).
    pub pg_restore: Result<()>,
}

/// How long the phases of getting a dump into pg_restore took, each measured from the
/// start of the download.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RestoreTimings {
    /// Until the first stored byte arrived.
    pub first_byte_seconds: Option<f64>,
    /// Until the whole dump was downloaded, checked and decrypted.
    pub download_decrypt_seconds: f64,
    /// Until pg_restore finished. Streamed, this includes the download, which overlaps it.
    pub restore_seconds: f64,
    /// Streamed into pg_restore (phases overlap) rather than via a temporary file.
    pub streamed: bool,
}

/// The start of a restore's download, and when its first byte arrived.
struct PhaseClock {
    start: Instant,
    first_byte: Arc<OnceLock<Instant>>,
}

impl PhaseClock {
    fn start() -> PhaseClock {
        PhaseClock {
            start: Instant::now(),
            first_byte: Arc::default(),
        }
    }

    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Wraps the download so its first byte is timed.
    fn watch<R: std::io::Read>(&self, inner: R) -> FirstByte<R> {
        FirstByte {
            inner,
            at: Arc::clone(&self.first_byte),
        }
    }

    fn timings(&self, decrypted: f64, streamed: bool) -> RestoreTimings {
        RestoreTimings {
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
        let facts = read_facts(self.store.as_ref(), &self.identities, backup).await?;

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
            self.apply_globals(&admin, &plan.backup, false).await?
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
                into,
                jobs: plan.jobs,
                no_owner: plan.no_owner,
                temp_dir: plan.temp_dir.as_deref(),
                exit_on_error: true,
                no_tablespaces: false,
            };
            let restored = self.pg_restore(&plan.backup, &admin, &run).await?;
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

    /// Applies the roles (and, unless `skip_tablespaces`, tablespaces) saved with `backup`,
    /// leaving existing ones alone; returns the roles created.
    pub(crate) async fn apply_globals(
        &self,
        admin: &ServerAdmin,
        backup: &Manifest,
        skip_tablespaces: bool,
    ) -> Result<Vec<String>> {
        let sql = fetch_small(
            self.store.as_ref(),
            &self.identities,
            &backup.globals,
            "globals",
        )
        .await?;
        let sql = String::from_utf8_lossy(&sql);
        let (roles, tablespaces) = admin.roles_and_tablespaces().await?;
        let mut to_apply = globals::plan(&sql, &roles, &tablespaces);
        if skip_tablespaces {
            to_apply.drop_tablespaces();
        }
        for statement in &to_apply.statements {
            if let Err(message) = admin.execute_quietly(statement).await {
                // The first words name the statement; the rest may hold a password hash.
                let summary: Vec<&str> = statement.split_whitespace().take(3).collect();
                self.progress.warn(&format!(
                    "applying saved roles: `{} ...` failed: {message}",
                    summary.join(" ")
                ));
            }
        }
        let (roles, _) = admin.roles_and_tablespaces().await?;
        Ok(to_apply
            .creates_roles
            .into_iter()
            .filter(|r| roles.contains(r))
            .collect())
    }

    /// Runs pg_restore into `run.into`. An error means the dump could not be read and
    /// checked (`Integrity`, `Repository`) or pg_restore could not run; pg_restore's own
    /// verdict is in [`Restored::pg_restore`].
    pub(crate) async fn pg_restore(
        &self,
        backup: &Manifest,
        admin: &ServerAdmin,
        run: &PgRestoreRun<'_>,
    ) -> Result<Restored> {
        let tools = PgTools::locate(self.pg_bin_dir.as_deref(), Some(admin.server.major));
        let (version, major) = tools.version("pg_restore").await?;
        let dump_major =
            crate::postgres::tools::parse_version(&backup.pg_dump_version).map_or(0, |(_, m)| m);
        if major < admin.server.major.max(dump_major) {
            return Err(Error::Source(format!(
                "pg_restore {version} (`{}`) is older than the dump (pg_dump {}) or the server \
                 (PostgreSQL {}): install PostgreSQL {} client tools or set source.pg_bin_dir",
                tools.program("pg_restore").display(),
                backup.pg_dump_version,
                admin.server.version,
                admin.server.major.max(dump_major)
            )));
        }
        let into = run.into;
        let mut command = tools.command("pg_restore");
        command
            .arg("--no-password")
            .arg(format!("--dbname={}", self.target.url_for(into)));
        if run.exit_on_error {
            command.arg("--exit-on-error");
        }
        if run.no_owner {
            command.args(["--no-owner", "--no-acl"]);
        }
        if run.no_tablespaces {
            command.arg("--no-tablespaces");
        }
        if let Some(password) = self.target.explicit_password() {
            command.env("PGPASSWORD", password);
        }
        self.progress
            .phase(&format!("restoring backup {} into `{into}`", backup.id));
        let clock = PhaseClock::start();
        match run.jobs {
            None => self.stream_into_pg_restore(backup, command, clock).await,
            Some(jobs) => {
                let (file, summary) = self
                    .decrypt_to_temp_file(backup, run.temp_dir, &clock)
                    .await?;
                let decrypted = clock.elapsed();
                self.progress
                    .phase(&format!("pg_restore -j {jobs} into `{into}`"));
                pass_as_fd3(&mut command, &file);
                command.arg(format!("--jobs={jobs}")).arg("/dev/fd/3");
                let pg_restore = ChildProcess::spawn("pg_restore", command)?;
                let finished = pg_restore.wait().await;
                drop(file);
                Ok(Restored {
                    bytes: summary.raw.bytes,
                    timings: clock.timings(decrypted, false),
                    read_whole: true,
                    pg_restore: finished.map(drop).map_err(explain_pg_restore),
                })
            }
        }
    }

    async fn stream_into_pg_restore(
        &self,
        backup: &Manifest,
        command: tokio::process::Command,
        clock: PhaseClock,
    ) -> Result<Restored> {
        let (reader, pump) =
            pipeline::download_channel(Arc::clone(&self.store), backup.dump.stored.key.clone())
                .await?;
        let reader = clock.watch(reader);
        let pump = tokio::spawn(pump);
        let (pg_restore, stdin) = ChildProcess::spawn_with_stdin("pg_restore", command)?;
        // This function keeps its own handle on pg_restore's stdin, so the input closes
        // only when it says so: after the digests matched, or after pg_restore was killed.
        let stdin = Arc::new(std::fs::File::from(
            stdin
                .into_owned_fd()
                .map_err(|e| Error::io("cannot write to pg_restore", e))?,
        ));
        let sink = SharedFile(Arc::clone(&stdin));
        let identities = Arc::clone(&self.identities);
        let progress = Arc::clone(&self.progress);
        let stages = tokio::task::spawn_blocking(move || {
            pipeline::decrypt_decompress(reader, sink, &identities, progress.as_ref())
        })
        .await
        .map_err(|e| Error::Integrity(format!("the decrypt thread failed: {e}")))?;
        pump.abort();
        let decrypted = clock.elapsed();
        let (sink, summary) = match stages {
            Ok(done) => done,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                // pg_restore stopped reading: its own error is the cause.
                let failure = match pg_restore.wait().await {
                    Err(e) => explain_pg_restore(e),
                    Ok(_) => {
                        Error::Source("pg_restore exited before reading the whole dump".into())
                    }
                };
                return Ok(Restored {
                    bytes: 0,
                    timings: clock.timings(decrypted, true),
                    read_whole: false,
                    pg_restore: Err(failure),
                });
            }
            Err(e) => {
                // pg_restore is killed (dropped) before its input is closed, so it never
                // sees a clean end of a damaged stream.
                drop(pg_restore);
                drop(stdin);
                return Err(self.stream_error(backup, e));
            }
        };
        if let Err(e) = check_summary(backup, &summary) {
            drop(pg_restore);
            drop(stdin);
            return Err(e);
        }
        drop(sink);
        drop(stdin);
        let finished = pg_restore.wait().await;
        Ok(Restored {
            bytes: summary.raw.bytes,
            timings: clock.timings(decrypted, true),
            read_whole: true,
            pg_restore: finished.map(drop).map_err(explain_pg_restore),
        })
    }

    /// Decrypts the dump into a file that has no name: created with O_TMPFILE inside a
    /// private (0700) directory that is removed at once, so nothing is left on disk even if
    /// vault is killed with SIGKILL; the space is freed when the last descriptor closes.
    async fn decrypt_to_temp_file(
        &self,
        backup: &Manifest,
        temp_dir: Option<&Path>,
        clock: &PhaseClock,
    ) -> Result<(std::fs::File, StreamSummary)> {
        let base = temp_dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let private = tempfile::Builder::new()
            .prefix("vault-restore-")
            .tempdir_in(&base)
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

        let (reader, pump) =
            pipeline::download_channel(Arc::clone(&self.store), backup.dump.stored.key.clone())
                .await?;
        let reader = clock.watch(reader);
        let pump = tokio::spawn(pump);
        let identities = Arc::clone(&self.identities);
        let progress = Arc::clone(&self.progress);
        let stages = tokio::task::spawn_blocking(move || {
            let sink = std::io::BufWriter::with_capacity(1024 * 1024, file);
            let (sink, summary) =
                pipeline::decrypt_decompress(reader, sink, &identities, progress.as_ref())?;
            let file = sink.into_inner().map_err(|e| e.into_error())?;
            Ok::<_, std::io::Error>((file, summary))
        })
        .await
        .map_err(|e| Error::Integrity(format!("the decrypt thread failed: {e}")))?;
        pump.abort();
        let (file, summary) = stages.map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData
                || e.get_ref().is_some_and(|inner| inner.is::<DownloadBroke>())
            {
                self.stream_error(backup, e)
            } else {
                Error::io(
                    format!("writing the decrypted dump into `{}`", base.display()),
                    e,
                )
            }
        })?;
        check_summary(backup, &summary)?;
        Ok((file, summary))
    }

    fn stream_error(&self, backup: &Manifest, e: std::io::Error) -> Error {
        let key = &backup.dump.stored.key;
        if let Some(broke) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<DownloadBroke>())
        {
            return Error::Repository(format!(
                "reading `{key}` from {} broke off: {}",
                self.store.location(),
                broke.0
            ));
        }
        Error::Integrity(format!(
            "backup {} is damaged: its dump object `{key}` failed authentication while \
             decrypting ({e}); the stored bytes were altered or truncated. Restore an older \
             backup (`vault list`) instead",
            backup.id
        ))
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
        let report = compare_facts(plan, &now, into, restored_bytes);
        let mismatched: Vec<String> = report
            .tables
            .iter()
            .filter(|t| !t.matches())
            .map(|t| {
                format!(
                    "{}.{}: {} row(s) restored, {} at dump time",
                    t.schema,
                    t.name,
                    t.restored.map_or("no table".into(), |n| n.to_string()),
                    t.expected.map_or("no table".into(), |n| n.to_string())
                )
            })
            .chain(
                (report.large_objects_expected != report.large_objects_restored).then(|| {
                    format!(
                        "{} large object(s) restored, {} at dump time",
                        report.large_objects_restored, report.large_objects_expected
                    )
                }),
            )
            .chain((!report.sequences_match).then(|| "sequence values differ".to_string()))
            .collect();
        if !mismatched.is_empty() {
            return Err(Error::Integrity(format!(
                "the restored database `{into}` does not match backup {}'s dump-time facts: {}",
                plan.backup_id,
                mismatched.join("; ")
            )));
        }
        if !report.schema_fingerprint_matches {
            self.progress.warn(&format!(
                "the schema of `{into}` is described differently than at dump time (schema \
                 fingerprint differs); the data checks passed"
            ));
        }
        Ok(report)
    }
}

/// Checks the identity opens `backup` and reads its dump-time facts. The facts object is
/// encrypted to the same recipients in the same run: opening it proves the key before
/// anything heavy starts.
pub(crate) async fn read_facts(
    store: &dyn ObjectStore,
    identities: &Identities,
    backup: &Manifest,
) -> Result<DumpFacts> {
    check_identity(backup, identities)?;
    let facts_json = fetch_small(store, identities, &backup.facts, "facts").await?;
    serde_json::from_slice(&facts_json).map_err(|e| {
        Error::Integrity(format!(
            "the facts of backup {} are not readable: {e}",
            backup.id
        ))
    })
}

/// Fetches a small object, checks it against its manifest entry and decrypts it.
async fn fetch_small(
    store: &dyn ObjectStore,
    identities: &Identities,
    object: &StoredObject,
    what: &str,
) -> Result<Vec<u8>> {
    let sealed = store.get(&object.key).await?;
    let digest = pipeline::Digest::of(&sealed);
    if digest.sha256_hex() != object.sha256 || digest.bytes != object.size_bytes {
        return Err(Error::Integrity(format!(
            "the {what} object `{}` does not match its manifest ({} bytes, sha256 {}; \
             expected {} bytes, sha256 {}): it was altered or damaged in the repository",
            object.key,
            digest.bytes,
            digest.sha256_hex(),
            object.size_bytes,
            object.sha256
        )));
    }
    pipeline::decrypt_small(&sealed, identities).map_err(|e| {
        Error::Integrity(format!(
            "cannot decrypt the {what} object `{}`: {e}",
            object.key
        ))
    })
}

/// Compares facts captured on the restored database with the dump-time ones.
fn compare_facts(
    plan: &RestorePlan,
    restored: &DumpFacts,
    into: &str,
    restored_bytes: u64,
) -> RestoreReport {
    let expected = &plan.facts;
    RestoreReport {
        backup_id: plan.backup_id.clone(),
        database: into.to_string(),
        kept_as: None,
        tables: table_counts(expected, restored),
        large_objects_expected: expected.large_objects,
        large_objects_restored: restored.large_objects,
        sequences_match: expected.sequences == restored.sequences,
        schema_fingerprint_matches: expected.schema_fingerprint == restored.schema_fingerprint,
        roles_created: Vec::new(),
        database_properties_restored: None,
        restored_bytes,
        seconds: 0.0,
    }
}

/// Every table's rows at dump time beside its rows now: the dump's tables in order, then
/// tables that exist only now.
pub(crate) fn table_counts(expected: &DumpFacts, restored: &DumpFacts) -> Vec<TableCount> {
    let mut tables: Vec<TableCount> = expected
        .tables
        .iter()
        .map(|t| TableCount {
            schema: t.schema.clone(),
            name: t.name.clone(),
            expected: Some(t.rows),
            restored: restored
                .tables
                .iter()
                .find(|r| r.schema == t.schema && r.name == t.name)
                .map(|r| r.rows),
        })
        .collect();
    for r in &restored.tables {
        if !expected
            .tables
            .iter()
            .any(|t| t.schema == r.schema && t.name == r.name)
        {
            tables.push(TableCount {
                schema: r.schema.clone(),
                name: r.name.clone(),
                expected: None,
                restored: Some(r.rows),
            });
        }
    }
    tables
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

/// The identity must match one of the backup's recipients; says which keys would.
pub(crate) fn check_identity(backup: &Manifest, identities: &Identities) -> Result<()> {
    let mine = identities.public_keys();
    let recipients = &backup.encryption.recipients;
    if recipients.iter().any(|r| mine.contains(r)) {
        return Ok(());
    }
    Err(Error::Key(format!(
        "backup {} is encrypted to recipients {}; your identity is {}: use the identity file \
         of one of those recipients (encryption.identity_file or VAULT_IDENTITY_FILE)",
        backup.id,
        recipients.join(", "),
        mine.join(", ")
    )))
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

/// The digests of what was read must match the manifest exactly.
fn check_summary(backup: &Manifest, summary: &StreamSummary) -> Result<()> {
    let dump = &backup.dump;
    let checks = [
        (
            "stored",
            &summary.stored,
            dump.stored.size_bytes,
            &dump.stored.sha256,
        ),
        (
            "decompressed",
            &summary.raw,
            dump.raw_bytes,
            &dump.raw_sha256,
        ),
    ];
    for (what, digest, bytes, sha256) in checks {
        if digest.bytes != bytes || &digest.sha256_hex() != sha256 {
            return Err(Error::Integrity(format!(
                "backup {}: the {what} dump is {} bytes with sha256 {}, but the manifest says \
                 {bytes} bytes with sha256 {sha256}; the object was altered or truncated",
                backup.id,
                digest.bytes,
                digest.sha256_hex()
            )));
        }
    }
    Ok(())
}

/// pg_restore's failure, with the fix for the most common one.
fn explain_pg_restore(e: Error) -> Error {
    let text = e.to_string();
    if text.contains("role") && text.contains("does not exist") {
        return Error::Source(format!(
            "{text}\nhint: the backup's objects belong to roles this server lacks: add \
             --globals to create them from the backup, or --no-owner to give everything to \
             the restoring role"
        ));
    }
    e
}

fn with_suffix(e: Error, suffix: &str) -> Error {
    match e {
        Error::Config(m) => Error::Config(m + suffix),
        Error::Key(m) => Error::Key(m + suffix),
        Error::Source(m) => Error::Source(m + suffix),
        Error::Repository(m) => Error::Repository(m + suffix),
        Error::Integrity(m) => Error::Integrity(m + suffix),
        Error::Interrupted(m) => Error::Interrupted(m + suffix),
        Error::Busy(m) => Error::Busy(m + suffix),
        Error::Io { context, source } => Error::Io {
            context: context + suffix,
            source,
        },
        Error::Transient(inner) => Error::transient(with_suffix(*inner, suffix)),
    }
}

/// Makes `file` the child's descriptor 3, so `pg_restore /dev/fd/3` (and its parallel
/// workers, which reopen the path) can read a file that has no name.
fn pass_as_fd3(command: &mut tokio::process::Command, file: &std::fs::File) {
    let fd = file.as_raw_fd();
    // SAFETY: only async-signal-safe calls (dup2, fcntl) run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A writer over a file that others hold too: the descriptor closes with the last holder.
struct SharedFile(Arc<std::fs::File>);

impl std::io::Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}
