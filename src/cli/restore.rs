//! `vault restore`: put a backup back. By default into a new database beside the source;
//! with `--replace`, over the live database (which is kept under another name). Prints the
//! chosen backup and the data-loss gap before acting, and a per-table report after.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use vault::catalog::Manifest;
use vault::catalog::base::BaseManifest;
use vault::catalog::{self, Selector};
use vault::feed::Feed;
use vault::keys::Identities;
use vault::pitr::logical;
use vault::pitr::plan::{RecoveryPlan, Target as PitrTarget};
use vault::postgres::ConnInfo;
use vault::restore::partial::{PartialRequest, SchemaContents};
use vault::restore::{RestoreJob, RestorePlan, RestoreReport, RestoreRequest, Target};
use vault::timespec::{self, rfc3339};

use super::exit::{self, Exit};

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["at", "id", "latest"]))]
pub struct Args {
    /// The newest complete backup that started at or before TIME: RFC 3339
    /// (2026-11-27T03:00:00Z, or with an offset) or how long ago (90m, 2h, 3d).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Exactly this backup (as `vault list` shows it).
    #[arg(long)]
    pub id: Option<String>,
    /// The newest complete backup.
    #[arg(long)]
    pub latest: bool,
    /// Which database's backups (needed when the config has several).
    #[arg(long)]
    pub database: Option<String>,
    /// Restore into this new database (default: <db>_restored_<backup time>).
    #[arg(long, value_name = "NAME")]
    pub target_db: Option<String>,
    /// Roll back the live database: restore beside it, check, then swap names; the live
    /// database is kept as <db>_before_restore_<time>.
    #[arg(long)]
    pub replace: bool,
    /// Do not ask for confirmation (--replace asks on a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Create the roles saved with the backup first (existing roles are left alone).
    #[arg(long)]
    pub globals: bool,
    /// Parallel pg_restore jobs; decrypts into a nameless temporary file first.
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,
    /// Give every restored object to the restoring role (pg_restore --no-owner --no-acl).
    #[arg(long)]
    pub no_owner: bool,
    /// Directory for the temporary file of --jobs (default: $TMPDIR or /tmp).
    #[arg(long, value_name = "DIR")]
    pub temp_dir: Option<PathBuf>,
    /// Restore from the logical backups even when the WAL archive covers --at (by default
    /// --at recovers the cluster to that second from a base backup and the archive, when it
    /// can, and restores the database from that).
    #[arg(long)]
    pub logical: bool,
    /// Restore only this table (schema.name, or a name only one schema has), with its
    /// indexes, constraints, triggers, owned sequences and data; repeatable.
    #[arg(long = "table", value_name = "NAME")]
    pub tables: Vec<String>,
    /// Restore only the tables (and views) of this schema; repeatable.
    #[arg(long = "schema", value_name = "NAME")]
    pub schemas: Vec<String>,
    /// Leave this table out; repeatable (alone: everything else).
    #[arg(long = "exclude-table", value_name = "NAME")]
    pub exclude_tables: Vec<String>,
    /// Put the restored tables into this new schema of the live database (beside the live
    /// tables, which are not touched) instead of a new database.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["replace", "target_db"])]
    pub into_schema: Option<String>,
    /// Print what the backup holds (schemas, tables and their rows at dump time, from its
    /// facts; with --at, the logical backup it chooses) and restore nothing.
    #[arg(
        long,
        conflicts_with_all = [
            "replace", "dry_run", "into_schema", "tables", "schemas", "exclude_tables",
            "target_db",
        ]
    )]
    pub list: bool,
    /// Print the plan and the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Accept a backup that carries no signature at all (one written before signing was set
    /// up). Prints a warning; a backup signed by an untrusted key is refused regardless.
    #[arg(long)]
    pub allow_unsigned: bool,
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let now = Utc::now();
    let selector = match (&args.at, &args.id) {
        (Some(at), _) => Selector::At(timespec::parse_point_in_time(at, now)?),
        (_, Some(id)) => Selector::Id(id.clone()),
        _ => Selector::Latest,
    };
    let identity_file = config.identity_file().ok_or_else(|| {
        vault::Error::Key(
            "no identity to decrypt backups with: set encryption.identity_file or \
             VAULT_IDENTITY_FILE to the file `vault keygen` wrote"
                .into(),
        )
    })?;
    let identities = Arc::new(Identities::load(&identity_file)?);
    let trust = Arc::new(config.trust_list()?);
    let target = ConnInfo::parse(&config.source.url)?;
    let store: Arc<dyn vault::storage::ObjectStore> =
        Arc::from(vault::storage::open(&config.repository).await?);
    let database = match (&args.database, &args.id) {
        (Some(db), _) => db.clone(),
        (None, Some(id)) => catalog::find(store.as_ref(), id).await?.database,
        (None, None) => {
            let configured = config.databases()?;
            match configured.as_slice() {
                [only] => only.clone(),
                _ => {
                    return Err(vault::Error::Config(format!(
                        "the config backs up several databases ({}): say which with --database",
                        configured.join(", ")
                    ))
                    .into());
                }
            }
        }
    };
    let request = RestoreRequest {
        database,
        selector,
        target_db: args.target_db.clone(),
        replace: args.replace,
        globals: args.globals,
        jobs: args.jobs,
        no_owner: args.no_owner,
        temp_dir: args.temp_dir.clone(),
        partial: PartialRequest {
            tables: args.tables.clone(),
            schemas: args.schemas.clone(),
            exclude_tables: args.exclude_tables.clone(),
            into_schema: args.into_schema.clone(),
        },
    };
    let progress = super::progress::for_stderr();
    if args.list {
        let job = RestoreJob {
            store,
            target,
            pg_bin_dir: config.source.pg_bin_dir.clone(),
            identities,
            progress,
            trust,
            allow_unsigned: args.allow_unsigned,
        };
        let (backup, schemas) = job.contents(&request).await?;
        return print_contents(&backup, &schemas, args.json);
    }
    let mut request = request;
    // The path taken is said on stdout, or on stderr when stdout is JSON.
    let say = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let point_in_time = match (&request.selector, args.logical) {
        (Selector::At(at), false) => {
            let counting = vault::trust::Counting {
                trust: &trust,
                allow_unsigned: args.allow_unsigned,
            };
            match choose_point_in_time(store.as_ref(), &target, &request.database, *at, counting)
                .await
            {
                Ok(chosen) => Some(chosen),
                Err(Some(why)) => {
                    say(format!("path:          logical: {why}"));
                    None
                }
                Err(None) => None,
            }
        }
        _ => None,
    };
    let path = if point_in_time.is_some() {
        "point_in_time"
    } else {
        "logical"
    };
    let lock;
    let mut dumped = None;
    let (store, identities, trust) = match point_in_time {
        None => (store, identities, trust),
        Some((recovery, base)) => {
            say(format!(
                "path:          point in time, from base backup {} and the archived WAL",
                base.id
            ));
            for note in &recovery.notes {
                say(format!("               {note}"));
            }
            if args.dry_run {
                say(format!(
                    "plan (dry run, nothing changed): recover the cluster to that time in a \
                     throwaway directory, dump `{}` from it, restore that as below{}",
                    request.database,
                    if request.replace {
                        " and swap it in"
                    } else {
                        ""
                    }
                ));
                return Ok(());
            }
            if request.replace && !args.yes {
                // Before recovering a whole cluster only to be refused at the swap.
                can_confirm(&request.database)?;
            }
            let prepared =
                vault::pitr::prepare(&config, &base, &identities, progress.as_ref()).await?;
            for note in &prepared.cleaned {
                progress.warn(note);
            }
            lock = prepared.lock;
            let bin_dir = prepared.bin_dir;
            let feed = Feed {
                store: Arc::clone(&store),
                identities: Arc::clone(&identities),
                progress: Arc::clone(&progress),
            };
            let dump = logical::dump_at(logical::DumpAt {
                feed: &feed,
                base: &base,
                plan: &recovery,
                database: &request.database,
                source: &target,
                server: super::verify::recovery_server(
                    &config,
                    config_path,
                    bin_dir,
                    ("restore", args.allow_unsigned),
                )?,
                compression: config.compression(),
                lock: &lock,
                cancel: super::cancel_on_signal(),
                asked: match &request.selector {
                    Selector::At(at) => PitrTarget::At(*at),
                    _ => PitrTarget::Latest,
                },
            })
            .await?;
            request.selector = Selector::Latest;
            let chosen = (
                Arc::clone(&dump.store),
                Arc::clone(&dump.identities),
                Arc::clone(&dump.trust),
            );
            dumped = Some(dump);
            chosen
        }
    };
    let job = RestoreJob {
        store,
        target,
        pg_bin_dir: config.source.pg_bin_dir.clone(),
        identities,
        progress: Arc::clone(&progress),
        trust,
        allow_unsigned: args.allow_unsigned,
    };
    let plan = job.plan(&request, now).await?;
    if !args.json {
        print_plan(
            &plan,
            args.dry_run,
            dumped.as_ref().map(|d| d.data_loss_seconds),
        );
    }
    if args.dry_run {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "plan": plan }))?
            );
        }
        return Ok(());
    }
    if let Target::Replace { live, .. } = &plan.target
        && !args.yes
    {
        confirm(live, &plan)?;
    }

    let cancel = super::cancel_on_signal();
    let result = job.execute(&plan, cancel).await;
    progress.finish();
    // The throwaway recovered cluster goes now (it is not needed past the restore).
    drop(dumped);
    let report = result?;
    tracing::info!(
        id = %report.backup_id,
        database = %report.database,
        kept_as = report.kept_as.as_deref().unwrap_or(""),
        seconds = report.seconds,
        "restore complete"
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "path": path, "plan": plan, "report": report })
            )?
        );
    } else {
        print_report(&report);
    }
    Ok(())
}

/// The recovery to `at` through the archive, when the repository has base backups of the
/// live server's cluster that reach it and hold `database`; otherwise says why the logical
/// backups serve.
async fn choose_point_in_time(
    store: &dyn vault::storage::ObjectStore,
    source: &ConnInfo,
    database: &str,
    at: chrono::DateTime<Utc>,
    counting: vault::trust::Counting<'_>,
) -> Result<(RecoveryPlan, BaseManifest), Option<String>> {
    let bases = vault::catalog::base::list_base_backups(store, None)
        .await
        .map_err(|e| Some(e.to_string()))?;
    if bases.backups.is_empty() {
        return Err(None);
    }
    let system_id = live_system_identifier(source, database).await;
    match vault::pitr::plan_for(store, system_id, PitrTarget::At(at), counting).await {
        Ok((plan, base)) if base.databases.iter().any(|d| d == database) => Ok((plan, base)),
        Ok((_, base)) => Err(Some(format!(
            "base backup {} holds no database `{database}`",
            base.id
        ))),
        Err(e) => Err(Some(format!("no point-in-time recovery to that time: {e}"))),
    }
}

/// The live server's system identifier, when it answers (it may be down: that is often why
/// one restores).
async fn live_system_identifier(source: &ConnInfo, database: &str) -> Option<u64> {
    let (client, connection) = vault::postgres::client::connect(source, database)
        .await
        .ok()?;
    let row = client
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
        .ok();
    drop(client);
    connection.abort();
    row?.get::<_, String>(0).parse().ok()
}

/// `point_in_time`: the data-loss gap of a recovery through the archive (seconds of commits
/// before the target the archive lacks; 0 inside the window).
fn print_plan(plan: &RestorePlan, dry_run: bool, point_in_time: Option<i64>) {
    let backup = &plan.backup;
    match point_in_time {
        Some(gap) => {
            println!(
                "recovered:     `{}` as it was at {}",
                backup.database,
                rfc3339(backup.started_at)
            );
            println!(
                "data-loss gap: {} s before {}; everything written to `{}` after it is not \
                 restored",
                gap,
                rfc3339(backup.started_at),
                backup.database
            );
        }
        None => {
            println!(
                "backup:        {} of `{}`, started {}{}",
                backup.id,
                backup.database,
                rfc3339(backup.started_at),
                backup
                    .label
                    .as_deref()
                    .map(|l| format!(" (label: {l})"))
                    .unwrap_or_default()
            );
            println!(
                "data-loss gap: {}: everything written to `{}` after {} is not in this backup",
                timespec::describe(plan.data_loss_gap()),
                backup.database,
                rfc3339(backup.started_at)
            );
        }
    }
    println!("server:        {}", plan.server);
    println!(
        "{}",
        if dry_run {
            "plan (dry run, nothing changed):"
        } else {
            "plan:"
        }
    );
    for (n, step) in plan.steps().iter().enumerate() {
        println!("  {}. {step}", n + 1);
    }
    if let Some(partial) = &plan.partial {
        for left in &partial.left_out {
            println!("left out:      {left}");
        }
    }
}

/// `--list`: the backup's tables per schema, with their rows at dump time.
fn print_contents(backup: &Manifest, schemas: &[SchemaContents], json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "backup_id": backup.id.to_string(),
                "database": backup.database,
                "started_at": rfc3339(backup.started_at),
                "schemas": schemas,
            }))?
        );
        return Ok(());
    }
    println!(
        "backup {} of `{}`, started {}: rows at dump time",
        backup.id,
        backup.database,
        rfc3339(backup.started_at)
    );
    let width = schemas
        .iter()
        .flat_map(|s| s.tables.iter().map(|t| t.name.len()))
        .max()
        .unwrap_or(0);
    for schema in schemas {
        let rows: i64 = schema.tables.iter().map(|t| t.rows).sum();
        println!(
            "schema {} ({} table(s), {rows} rows)",
            schema.schema,
            schema.tables.len()
        );
        for table in &schema.tables {
            println!("  {:<width$} {:>12}", table.name, table.rows);
        }
    }
    Ok(())
}

/// Off a terminal, `--replace` needs `--yes`: said before any work is done.
fn can_confirm(live: &str) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(vault::Error::Config(format!(
            "--replace would replace database `{live}` and end its sessions; pass --yes to \
             confirm when not on a terminal (nothing was changed)"
        ))
        .into());
    }
    Ok(())
}

/// `--replace` on a terminal asks for the database name; elsewhere it needs `--yes`.
fn confirm(live: &str, plan: &RestorePlan) -> anyhow::Result<()> {
    can_confirm(live)?;
    eprint!(
        "Replace `{live}` on {} with backup {}? Type the database name to confirm: ",
        plan.server, plan.backup_id
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != live {
        return Err(Exit {
            code: exit::FAILURE,
            transient: false,
            message: "not confirmed; nothing was changed".into(),
        }
        .into());
    }
    Ok(())
}

fn print_report(report: &RestoreReport) {
    for line in report.summary() {
        println!("{line}");
    }
}
